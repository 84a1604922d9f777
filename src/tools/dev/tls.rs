//! `crawler dev --tls`: a local CA made at start, one certificate every master serves (and
//! presents when it forwards), for `localhost` and `127.0.0.1`, and a copy of the config that
//! turns HTTPS on with them.

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::tls::authority::Authority;
use crate::tools::procs::ToolError;

/// The local CA's files and the config that uses them.
pub(super) struct DevTls {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The config the processes run with.
    pub config: PathBuf,
}

fn setup(e: impl std::fmt::Display) -> ToolError {
    ToolError::Setup(format!("--tls: {e}"))
}

/// Makes the CA and the masters' certificate in `dir/tls`, and `dir/config-tls.yaml`: the
/// file at `config` with `http.tls` set.
pub(super) fn prepare(dir: &Path, config: &Path) -> Result<DevTls, ToolError> {
    let tls_dir = dir.join("tls");
    std::fs::create_dir_all(&tls_dir)?;
    let authority = Authority::new("crawler dev CA").map_err(setup)?;
    let ca = tls_dir.join("ca.pem");
    std::fs::write(&ca, authority.pem())?;
    let (cert, key) = authority
        .issue(&["localhost", "127.0.0.1"])
        .map_err(setup)?
        .write(&tls_dir, "master")?;
    let text = std::fs::read_to_string(config)?;
    let mut doc: Value = serde_yaml_ng::from_str(&text).map_err(setup)?;
    if !doc.is_mapping() {
        doc = Value::Mapping(Mapping::new());
    }
    let mut tls = Mapping::new();
    for (name, path) in [("cert", &cert), ("key", &key), ("ca", &ca)] {
        tls.insert(name.into(), path.display().to_string().into());
    }
    let http = doc
        .as_mapping_mut()
        .and_then(|m| {
            if !m.get("http").is_some_and(Value::is_mapping) {
                m.insert("http".into(), Value::Mapping(Mapping::new()));
            }
            m.get_mut("http")
        })
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| setup("the config's http section is not a mapping"))?;
    http.insert("tls".into(), Value::Mapping(tls));
    let path = dir.join("config-tls.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&doc).map_err(setup)?)?;
    Ok(DevTls { ca, config: path })
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
