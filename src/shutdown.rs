//! Process signals: the first SIGTERM or SIGINT starts a graceful shutdown; a second one exits
//! at once.

use tracing::warn;

/// Completes on the first SIGTERM or SIGINT, and arms a second-signal handler that exits the
/// process immediately.
pub async fn signal() {
    wait_for_signal().await;
    tokio::spawn(async {
        wait_for_signal().await;
        warn!("second signal: exiting at once");
        std::process::exit(130);
    });
}

/// Completes on the next SIGTERM or SIGINT (no second-signal handler).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
