//! The API's TLS: certificate reloads and failed handshakes, so that an operator sees a renewal
//! that did not take, or clients that cannot connect.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::OutcomeLabels;

/// The TLS metrics of one master.
#[derive(Default)]
pub struct TlsMetrics {
    /// Changes of the certificate files seen, by outcome: `applied`, or `refused` (the old
    /// certificate stays).
    pub reloads: Family<OutcomeLabels, Counter>,
    /// Connections closed because their handshake failed or timed out.
    pub handshake_failures: Counter,
}

impl TlsMetrics {
    /// Registers them in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tls_reloads",
            "Changes of the TLS certificate files seen, by outcome (applied, refused)",
            self.reloads.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Connections closed because their TLS handshake failed or timed out",
            self.handshake_failures.clone(),
        );
    }

    /// Counts a change of the files.
    pub fn reloaded(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "refused" };
        self.reloads
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }
}
