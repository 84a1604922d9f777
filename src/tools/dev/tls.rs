//! `crawler dev --tls`: a local CA made at start, and one certificate for `localhost` and
//! `127.0.0.1` that every process uses: the masters serve it (and present it when they
//! forward), and when dev starts etcd, etcd serves it too and every process presents it to
//! etcd. A copy of the config turns both on.

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::config::EtcdTls;
use crate::tls::authority::Authority;
use crate::tools::member::EtcdServerTls;
use crate::tools::procs::ToolError;

/// The local CA's files.
pub(super) struct DevTls {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The certificate every process serves and presents.
    cert: PathBuf,
    /// Its key.
    key: PathBuf,
}

fn setup(e: impl std::fmt::Display) -> ToolError {
    ToolError::Setup(format!("--tls: {e}"))
}

fn mapping(pairs: &[(&str, &Path)]) -> Value {
    let mut map = Mapping::new();
    for (name, path) in pairs {
        map.insert((*name).into(), path.display().to_string().into());
    }
    Value::Mapping(map)
}

/// The section `name` of `doc`, made a mapping if it is not one.
fn section<'a>(doc: &'a mut Mapping, name: &str) -> Option<&'a mut Mapping> {
    if !doc.get(name).is_some_and(Value::is_mapping) {
        doc.insert(name.into(), Value::Mapping(Mapping::new()));
    }
    doc.get_mut(name).and_then(Value::as_mapping_mut)
}

impl DevTls {
    /// Makes the CA and the certificate in `dir/tls`.
    pub(super) fn prepare(dir: &Path) -> Result<Self, ToolError> {
        let tls_dir = dir.join("tls");
        std::fs::create_dir_all(&tls_dir)?;
        let authority = Authority::new("crawler dev CA").map_err(setup)?;
        let ca = tls_dir.join("ca.pem");
        std::fs::write(&ca, authority.pem())?;
        let (cert, key) = authority
            .issue(&["localhost", "127.0.0.1"])
            .map_err(setup)?
            .write(&tls_dir, "cluster")?;
        Ok(Self { ca, cert, key })
    }

    /// What an etcd dev starts serves.
    pub(super) fn etcd_server(&self) -> EtcdServerTls<'_> {
        EtcdServerTls {
            ca: &self.ca,
            cert: &self.cert,
            key: &self.key,
        }
    }

    /// How a process reaches that etcd.
    pub(super) fn etcd_client(&self) -> EtcdTls {
        EtcdTls {
            ca_file: Some(self.ca.clone()),
            cert_file: Some(self.cert.clone()),
            key_file: Some(self.key.clone()),
            domain: None,
        }
    }

    /// Writes `dir/config-tls.yaml`: the file at `config` with `http.tls` set, and
    /// `etcd.tls` when `etcd` (dev started etcd, over TLS).
    pub(super) fn config_file(
        &self,
        dir: &Path,
        config: &Path,
        etcd: bool,
    ) -> Result<PathBuf, ToolError> {
        let text = std::fs::read_to_string(config)?;
        let mut doc: Value = serde_yaml_ng::from_str(&text).map_err(setup)?;
        if !doc.is_mapping() {
            doc = Value::Mapping(Mapping::new());
        }
        let root = doc
            .as_mapping_mut()
            .ok_or_else(|| setup("the config is not a mapping"))?;
        let http = section(root, "http").ok_or_else(|| setup("http is not a mapping"))?;
        http.insert(
            "tls".into(),
            mapping(&[("cert", &self.cert), ("key", &self.key), ("ca", &self.ca)]),
        );
        if etcd {
            let section = section(root, "etcd").ok_or_else(|| setup("etcd is not a mapping"))?;
            section.insert(
                "tls".into(),
                mapping(&[
                    ("ca_file", &self.ca),
                    ("cert_file", &self.cert),
                    ("key_file", &self.key),
                ]),
            );
        }
        let path = dir.join("config-tls.yaml");
        std::fs::write(&path, serde_yaml_ng::to_string(&doc).map_err(setup)?)?;
        Ok(path)
    }
}

/// The client dev checks the cluster with: trusting the local CA when there is one.
pub(super) fn client(tls: Option<&DevTls>) -> Result<reqwest::Client, ToolError> {
    let mut builder = crate::tls::client::builder().timeout(std::time::Duration::from_secs(2));
    if let Some(tls) = tls {
        builder = builder
            .tls_backend_preconfigured(crate::tls::client::trusting(&tls.ca, None).map_err(setup)?);
    }
    Ok(builder.build()?)
}
