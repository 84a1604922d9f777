//! The master's HTTPS. The server configuration is built from the files and replaced whenever
//! they change (a renewed certificate, a new client CA) while the master runs; each new
//! connection's handshake uses the configuration current when it arrives, and connections
//! already open keep theirs. A change that does not make a usable configuration (a key that is
//! not the certificate's, as between writing one file and the other) is refused, logged once,
//! and the old configuration stays until the files are right.
//!
//! Handshakes run concurrently and off the accept loop (tls-listener), bounded by a timeout,
//! so a slow or silent client cannot hold up others.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use rustls::ServerConfig;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use tls_listener::{AsyncTls, TlsListener};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Fixed, TlsError, certified, read, roots};
use crate::config::TlsConfig;
use crate::metrics::Metrics;

/// The files as last read.
#[derive(Debug, PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Files {
    fn read(config: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&config.cert)?,
            key: read(&config.key)?,
            client_ca: config.client_ca.as_deref().map(read).transpose()?,
        })
    }
}

/// A configuration built from one reading of the files.
struct Loaded {
    server: Arc<ServerConfig>,
    identity: Arc<CertifiedKey>,
}

fn build(
    config: &TlsConfig,
    provider: &Arc<CryptoProvider>,
    files: &Files,
) -> Result<Loaded, TlsError> {
    let identity = certified(
        (&config.cert, &files.cert),
        (&config.key, &files.key),
        provider,
    )?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (&config.client_ca, &files.client_ca) {
        (Some(path), Some(pem)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                roots(path, pem)?,
                Arc::clone(provider),
            )
            .build()
            .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut server = builder.with_cert_resolver(Arc::new(Fixed(Arc::clone(&identity))));
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        server: Arc::new(server),
        identity,
    })
}

struct Inner {
    config: TlsConfig,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
    /// The files' contents last tried, applied or refused: each change is tried once.
    tried: Mutex<Files>,
}

/// The master's TLS: its current server configuration, replaced as the files change. Cheap
/// to clone.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.inner.config.cert)
            .finish_non_exhaustive()
    }
}

/// What a check of the files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// They are as last tried.
    Unchanged,
    /// They changed, and new handshakes use them.
    Applied,
    /// They changed into something unusable; the old configuration stays.
    Refused(String),
    /// One cannot be read (it may be missing for a moment while it is replaced); the old
    /// configuration stays.
    Unreadable(String),
}

impl ServerTls {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let provider = super::provider();
        let files = Files::read(config)?;
        let loaded = build(config, &provider, &files)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                provider,
                current: RwLock::new(loaded),
                tried: Mutex::new(files),
            }),
        })
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        match self.inner.current.read() {
            Ok(current) => Arc::clone(&current.server),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().server),
        }
    }

    fn identity(&self) -> Arc<CertifiedKey> {
        match self.inner.current.read() {
            Ok(current) => Arc::clone(&current.identity),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().identity),
        }
    }

    /// Reads the files and, when they changed since last tried, builds and applies them.
    pub fn reload(&self) -> Reload {
        let files = match Files::read(&self.inner.config) {
            Ok(files) => files,
            Err(e) => return Reload::Unreadable(e.to_string()),
        };
        let mut tried = match self.inner.tried.lock() {
            Ok(tried) => tried,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *tried == files {
            return Reload::Unchanged;
        }
        let built = build(&self.inner.config, &self.inner.provider, &files);
        *tried = files;
        match built {
            Ok(loaded) => {
                match self.inner.current.write() {
                    Ok(mut current) => *current = loaded,
                    Err(poisoned) => *poisoned.into_inner() = loaded,
                }
                Reload::Applied
            }
            Err(e) => Reload::Refused(e.to_string()),
        }
    }

    /// Checks the files every `http.tls.reload_interval` until `cancel`.
    pub async fn run_reload(self, metrics: Arc<Metrics>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.config.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A file that cannot be read is logged once until it reads again.
        let mut unreadable: Option<String> = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let reload = self.reload();
            match reload {
                Reload::Unchanged => unreadable = None,
                Reload::Applied => {
                    unreadable = None;
                    metrics.tls.reloaded(true);
                    info!(cert = %self.inner.config.cert.display(), "TLS certificate reloaded");
                }
                Reload::Unreadable(reason) => {
                    if unreadable.as_deref() != Some(reason.as_str()) {
                        warn!(%reason, "TLS files cannot be read; the current certificate stays");
                        unreadable = Some(reason);
                    }
                }
                Reload::Refused(reason) => {
                    unreadable = None;
                    metrics.tls.reloaded(false);
                    warn!(%reason, "TLS files changed into an unusable configuration; the current certificate stays");
                }
            }
        }
    }

    /// `listener` serving TLS: handshakes concurrent and bounded by `http.tls.handshake_timeout`.
    pub fn listen(&self, listener: TcpListener, metrics: Arc<Metrics>) -> Incoming {
        let listener = tls_listener::builder(Acceptor(self.clone()))
            .handshake_timeout(self.inner.config.handshake_timeout)
            .listen(listener);
        Incoming { listener, metrics }
    }

    /// This master's certificate as a client's: what it presents when it forwards a write to
    /// a leader that asks for client certificates. Follows the reloads.
    pub fn client_identity(&self) -> Arc<dyn ResolvesClientCert> {
        Arc::new(Identity(self.clone()))
    }
}

/// Hands each connection the current configuration.
#[derive(Clone)]
struct Acceptor(ServerTls);

impl AsyncTls<TcpStream> for Acceptor {
    type Stream = TlsStream<TcpStream>;
    type Error = io::Error;
    type AcceptFuture = tokio_rustls::Accept<TcpStream>;

    fn accept(&self, stream: TcpStream) -> Self::AcceptFuture {
        // Small responses and event-stream frames go out at once, not after Nagle's delay.
        let _ = stream.set_nodelay(true);
        tokio_rustls::TlsAcceptor::from(self.0.server_config()).accept(stream)
    }
}

/// The connections whose handshakes succeeded, for `axum::serve`. A failed handshake is the
/// client's business: counted and logged at debug, never an error of the server's.
pub struct Incoming {
    listener: TlsListener<TcpListener, Acceptor>,
    metrics: Arc<Metrics>,
}

impl axum::serve::Listener for Incoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok(accepted) => return accepted,
                Err(tls_listener::Error::ListenerError(e)) => {
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) {
                        // As axum's own listener: out of file descriptors, say; wait a little.
                        error!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
                Err(e) => {
                    self.metrics.tls.handshake_failures.inc();
                    debug!(peer = ?e.peer_addr(), error = %e, "TLS handshake failed");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.listener().local_addr()
    }
}

/// The master's current certificate, offered to a leader asking for a client certificate.
#[derive(Debug)]
struct Identity(ServerTls);

impl ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.identity())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tls::authority::Authority;

    fn config(dir: &std::path::Path) -> TlsConfig {
        TlsConfig {
            cert: dir.join("tls.pem"),
            key: dir.join("tls-key.pem"),
            client_ca: None,
            ca: None,
            reload_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
        }
    }

    fn served(tls: &ServerTls) -> Vec<u8> {
        tls.identity().cert[0].to_vec()
    }

    #[test]
    fn a_change_is_applied_once_and_a_mismatch_or_a_missing_file_keeps_the_old() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = Authority::new("test").expect("ca");
        ca.issue(&["a"])
            .expect("issue")
            .write(dir.path(), "tls")
            .expect("write");
        let config = config(dir.path());
        let tls = ServerTls::load(&config).expect("loads");
        let first = served(&tls);
        assert_eq!(tls.reload(), Reload::Unchanged);

        let next = ca.issue(&["a"]).expect("issue");
        std::fs::write(&config.cert, &next.cert).expect("write");
        assert!(
            matches!(tls.reload(), Reload::Refused(r) if r.contains("do not make a certificate"))
        );
        assert_eq!(served(&tls), first, "the old certificate stays");
        assert_eq!(
            tls.reload(),
            Reload::Unchanged,
            "a refused change is tried once"
        );

        std::fs::write(&config.key, &next.key).expect("write");
        assert_eq!(tls.reload(), Reload::Applied);
        assert_ne!(served(&tls), first);
        assert_eq!(tls.reload(), Reload::Unchanged);

        let current = served(&tls);
        std::fs::remove_file(&config.key).expect("remove");
        assert!(matches!(tls.reload(), Reload::Unreadable(r) if r.contains("tls-key.pem")));
        assert_eq!(served(&tls), current);
        std::fs::write(&config.key, "not a key").expect("write");
        assert!(
            matches!(tls.reload(), Reload::Refused(r) if r.contains("no usable PEM private key"))
        );
        assert_eq!(served(&tls), current);
    }

    #[test]
    fn load_names_the_file_that_is_wrong() {
        let dir = tempfile::tempdir().expect("dir");
        let config = config(dir.path());
        let missing = ServerTls::load(&config).expect_err("no files");
        assert!(missing.to_string().contains("tls.pem"), "{missing}");
        std::fs::write(&config.cert, "garbage").expect("write");
        std::fs::write(&config.key, "garbage").expect("write");
        let garbage = ServerTls::load(&config).expect_err("no certificate");
        assert!(
            garbage.to_string().contains("holds no PEM certificate"),
            "{garbage}"
        );
    }
}
