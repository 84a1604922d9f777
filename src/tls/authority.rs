//! A certificate authority made on the spot with rcgen, for `crawler dev --tls` (and the
//! tests): its certificates name the hosts given and serve as both server and client
//! certificates, so that masters can also present them to each other.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::TlsError;

fn failed(e: rcgen::Error) -> TlsError {
    TlsError::Config(format!("cannot make a certificate: {e}"))
}

/// A certificate and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

impl Issued {
    /// Writes `<stem>.pem` and `<stem>-key.pem` (readable by the owner only) into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        std::fs::write(&cert, &self.cert)?;
        write_private(&key, &self.key)?;
        Ok((cert, key))
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// A self-signed CA.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Authority {
    /// A new CA, its name as the certificate's common name.
    pub fn new(name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(failed)?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        })
    }

    /// The CA's certificate, what clients trust.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A certificate for `hosts` (names and IP addresses), valid from long ago for centuries.
    pub fn issue(&self, hosts: &[&str]) -> Result<Issued, TlsError> {
        self.sign(hosts, |_| {})
    }

    /// A certificate for `hosts` that expired in 2000: what a client must refuse.
    pub fn issue_expired(&self, hosts: &[&str]) -> Result<Issued, TlsError> {
        self.sign(hosts, |params| {
            params.not_before = rcgen::date_time_ymd(1999, 1, 1);
            params.not_after = rcgen::date_time_ymd(2000, 1, 1);
        })
    }

    fn sign(
        &self,
        hosts: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Result<Issued, TlsError> {
        let key = KeyPair::generate().map_err(failed)?;
        let names: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(failed)?;
        if let Some(first) = hosts.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).map_err(failed)?;
        Ok(Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}
