//! A TCP proxy on loopback that partitions what goes through it, either way a network does:
//! connections refused ([`Proxy::cut`]), or packets silently dropped on connections that stay
//! open ([`Proxy::blackhole`]), until [`Proxy::restore`]. The fault tests and the soak
//! benchmark put it between a process and etcd.

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards it.
    Open,
    /// Drops every connection and refuses new ones.
    Refuse,
    /// Holds every connection open, old and new, and forwards nothing.
    Blackhole,
}

/// A proxy to one upstream address that can partition it.
pub struct Proxy {
    /// URL to give clients, `http://127.0.0.1:<port>`.
    pub url: String,
    mode: watch::Sender<Mode>,
    accept: JoinHandle<()>,
}

/// Holds a client's connection, reading and discarding what it sends, until the proxy opens
/// again; then closes it (the client reconnects).
async fn hold(mut inbound: TcpStream, mut mode: watch::Receiver<Mode>) {
    let mut sink = tokio::io::sink();
    tokio::select! {
        _ = tokio::io::copy(&mut inbound, &mut sink) => {}
        _ = mode.wait_for(|m| *m != Mode::Blackhole) => {}
    }
    let _ = inbound.shutdown().await;
}

async fn forward(inbound: TcpStream, upstream: String, mut mode: watch::Receiver<Mode>) {
    let Ok(outbound) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut ri, mut wi) = inbound.into_split();
    let (mut ro, mut wo) = outbound.into_split();
    tokio::select! {
        _ = tokio::io::copy(&mut ri, &mut wo) => return,
        _ = tokio::io::copy(&mut ro, &mut wi) => return,
        _ = mode.wait_for(|m| *m != Mode::Open) => {}
    }
    drop((ro, wo));
    let blackhole = *mode.borrow() == Mode::Blackhole;
    if blackhole && let Ok(inbound) = ri.reunite(wi) {
        hold(inbound, mode).await;
    }
}

impl Proxy {
    /// Starts a proxy to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Open);
        let upstream = upstream.to_owned();
        let accept = {
            let mode = mode.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        return;
                    };
                    let now = *mode.borrow();
                    match now {
                        Mode::Refuse => drop(inbound),
                        Mode::Blackhole => {
                            tokio::spawn(hold(inbound, mode.subscribe()));
                        }
                        Mode::Open => {
                            tokio::spawn(forward(inbound, upstream.clone(), mode.subscribe()));
                        }
                    }
                }
            })
        };
        Ok(Proxy {
            url: format!("http://{addr}"),
            mode,
            accept,
        })
    }

    /// Drops every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Refuse);
    }

    /// Forwards nothing, while holding every connection open and accepting new ones, as a
    /// network that drops packets silently does, until [`Proxy::restore`].
    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    /// Forwards again (connections held by a black hole are closed, so clients reconnect).
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Open);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
