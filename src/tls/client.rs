//! TLS for clients of the API: the forwarding master, `crawler ctl` and the tools. A client
//! trusts the CA it is given (or else the system's trust store), and presents a certificate
//! when it has one.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::ResolvesClientCert;

use super::{Fixed, TlsError, certified, read, roots};

/// A reqwest client builder for the cluster's own endpoints: ring installed as the process's
/// crypto provider (reqwest brings none), and no proxy from the environment.
pub fn builder() -> reqwest::ClientBuilder {
    super::install_provider();
    reqwest::Client::builder().no_proxy()
}

/// A client configuration trusting the CA certificates in `ca`, presenting `identity` when a
/// server asks for a certificate.
pub fn trusting(
    ca: &Path,
    identity: Option<Arc<dyn ResolvesClientCert>>,
) -> Result<ClientConfig, TlsError> {
    let roots = roots(ca, &read(ca)?)?;
    let builder = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    Ok(match identity {
        Some(identity) => builder.with_client_cert_resolver(identity),
        None => builder.with_no_client_auth(),
    })
}

/// A client certificate read once from PEM files.
pub fn identity(cert: &Path, key: &Path) -> Result<Arc<dyn ResolvesClientCert>, TlsError> {
    let certified = certified((cert, &read(cert)?), (key, &read(key)?), &super::provider())?;
    Ok(Arc::new(Fixed(certified)))
}

/// Why a request failed, as its innermost cause says it (a certificate refused, a connection
/// refused), rather than reqwest's "error sending request".
pub fn cause(error: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}
