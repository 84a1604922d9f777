//! The master process: the composition root that wires the master's domain ([`crate::master`])
//! to its HTTP face ([`crate::api`]): caches fed by etcd watches, the election, the leader's
//! duties, the event feed, and the API over them.
//!
//! Shutdown order: report not ready, stop accepting and drain in-flight requests, then resign
//! and revoke the session lease (so another master takes over at once), then stop the caches.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::auth::Auth;
use crate::api::events::{self, Feed};
use crate::api::proxy::Forwarder;
use crate::api::{AppParts, AppState, router};
use crate::config::Config;
use crate::etcd::cache::{self, Store};
use crate::master::compactor::{self, CompactorConfig};
use crate::master::election::{self, Candidate, ElectionConfig};
use crate::master::leader::politeness::PolitenessCaches;
use crate::master::leader::{self, Leader, LeaderConfig};
use crate::master::leadership::Leadership;
use crate::master::{membership, start_latency};
use crate::metrics::Metrics;
use crate::model::politeness::Shares;
use crate::model::registry::Worker;
use crate::model::resource::Resource;
use crate::model::snowflake::Generator;
use crate::model::status::TaskStatus;
use crate::tls::server::ServerTls;

/// Changes kept for `Last-Event-ID` resumption.
const FEED_HISTORY: usize = 10_000;
/// Live changes a slow event-stream client may fall behind before it is dropped.
const FEED_BUFFER: usize = 1_024;

/// Who this master is.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// Master id, 0..=1023 (also the snowflake node id).
    pub id: u16,
    /// URL other masters and clients use to reach this one.
    pub advertise: String,
}

/// Why a master stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// etcd could not be set up.
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    /// Serving HTTP failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
    /// The HTTP client for forwarding could not be built.
    #[error("http client: {0}")]
    Http(String),
    /// The master id does not fit a snowflake node id.
    #[error(transparent)]
    Id(#[from] crate::model::snowflake::SnowflakeError),
    /// `http.tls` names files that do not make a TLS configuration.
    #[error("http.tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A started master: caches, election and the leader's duties are running; [`Master::serve`]
/// serves the API until shutdown.
pub struct Master {
    state: AppState,
    /// Stops the election and the leader's duties (resign, revoke).
    campaign: CancellationToken,
    duties: JoinSet<()>,
    /// Stops the caches and the event feed.
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    drain: Duration,
    /// HTTPS, when configured.
    tls: Option<ServerTls>,
}

impl Master {
    /// Connects to etcd and starts the caches, the election and the leader's duties.
    pub async fn start(config: Config, options: MasterOptions) -> Result<Self, MasterError> {
        // Unusable TLS files stop the master before it joins the cluster.
        let tls = config.http.tls.as_ref().map(ServerTls::load).transpose()?;
        let client = crate::etcd::connect(&config.etcd).await?;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        crate::etcd::endpoints::spawn(&client, &config, &cancel, &mut tasks);
        let workers: Store<Worker> = cache::spawn(
            "workers",
            &client,
            &config,
            &config.keys.worker_prefix,
            &cancel,
            &mut tasks,
        );
        let resources: Store<Resource> = cache::spawn(
            "resources",
            &client,
            &config,
            &config.keys.resources_prefix,
            &cancel,
            &mut tasks,
        );
        let candidates: Store<Candidate> = cache::spawn(
            "masters",
            &client,
            &config,
            &config.keys.election_prefix(),
            &cancel,
            &mut tasks,
        );
        let statuses: Store<TaskStatus> = cache::spawn(
            "statuses",
            &client,
            &config,
            &config.keys.status_prefix,
            &cancel,
            &mut tasks,
        );
        let schedule: Store<crate::model::schedule::Record> = cache::spawn(
            "schedule",
            &client,
            &config,
            &config.keys.schedule_prefix,
            &cancel,
            &mut tasks,
        );
        let politeness = PolitenessCaches {
            budgets: cache::spawn(
                "budgets",
                &client,
                &config,
                &config.keys.budget_prefix(),
                &cancel,
                &mut tasks,
            ),
            demand: cache::spawn(
                "demand",
                &client,
                &config,
                &config.keys.demand_prefix(),
                &cancel,
                &mut tasks,
            ),
        };
        let shares: Store<Shares> = cache::spawn(
            "shares",
            &client,
            &config,
            &config.keys.shares_prefix(),
            &cancel,
            &mut tasks,
        );
        tasks.spawn(membership::run(workers.clone(), cancel.clone()));

        let me = Candidate {
            id: options.id,
            url: options.advertise.clone(),
        };
        let leadership = Leadership::new();
        let metrics = Arc::new(Metrics::new());
        let leader = Leader::new(
            client.clone(),
            LeaderConfig {
                keys: config.keys.clone(),
                seeds: config.tasks.clone(),
                request_timeout: config.etcd.request_timeout(),
                scheduling: config.scheduling.clone(),
            },
            leadership.clone(),
            leader::LeaderCaches {
                resources: resources.clone(),
                workers: workers.clone(),
                statuses: statuses.clone(),
            },
            Generator::new(u32::from(options.id))?,
            Arc::clone(&metrics),
        );
        // The election and the leader's duties stop after the HTTP server has drained, so
        // that in-flight writes finish before we resign.
        let campaign = CancellationToken::new();
        let mut duties = JoinSet::new();
        duties.spawn(leader.clone().run(campaign.clone()));
        duties.spawn(leader.clone().run_politeness(
            politeness.clone(),
            config.politeness.clone(),
            campaign.clone(),
        ));
        duties.spawn(leader.clone().run_audit_retention(
            crate::master::leader::Retention {
                max_entries: config.audit.max_entries,
                max_age: config.audit.max_age,
            },
            campaign.clone(),
        ));
        duties.spawn(election::run(
            client.clone(),
            ElectionConfig {
                name: config.keys.election.clone(),
                me: me.clone(),
                ttl_secs: config.master.session_ttl_secs,
                request_timeout: config.etcd.request_timeout(),
            },
            leadership,
            candidates.clone(),
            campaign.clone(),
        ));

        tasks.spawn(compactor::run(
            client.clone(),
            CompactorConfig {
                interval: Duration::from_secs(config.master.compaction_interval_secs),
                key: config.keys.compaction_key(),
                request_timeout: config.etcd.request_timeout(),
            },
            Arc::clone(&metrics),
            cancel.clone(),
        ));
        tasks.spawn(start_latency::run(
            resources.clone(),
            statuses.clone(),
            Arc::clone(&metrics),
            cancel.clone(),
        ));
        let trends = crate::master::trends::Trends::new(Duration::from_millis(
            config.master.trends_sample_ms,
        ));
        tasks.spawn(crate::master::trends::run(
            trends.clone(),
            resources.clone(),
            statuses.clone(),
            cancel.clone(),
        ));
        let feed = Feed::new(FEED_HISTORY, FEED_BUFFER);
        tasks.spawn(events::run(
            feed.clone(),
            workers.clone(),
            resources.clone(),
            statuses.clone(),
            cancel.clone(),
        ));
        let forwarder = Forwarder::new(
            Duration::from_millis(config.http.proxy_connect_timeout_ms),
            Duration::from_millis(config.http.proxy_timeout_ms),
            forwarding_tls(&config, tls.as_ref())?,
        )
        .map_err(|e| MasterError::Http(e.to_string()))?;
        if let Some(tls) = &tls {
            tasks.spawn(tls.clone().run_reload(Arc::clone(&metrics), cancel.clone()));
        }
        let auth = Auth::from_config(&config.auth);
        if auth.is_open() {
            warn!("no API tokens are configured: the API is open to anyone who can reach it");
        }
        let state = AppState::new(AppParts {
            me,
            workers,
            resources,
            candidates,
            statuses,
            schedule,
            politeness: crate::api::domains::Politeness {
                budgets: politeness.budgets.clone(),
                demand: politeness.demand.clone(),
                shares,
                config: config.politeness.clone(),
            },
            scheduling: config.scheduling.clone(),
            leader,
            feed,
            rendered: crate::api::rendered::Rendered::new(config.http.rendered_cache_bytes),
            trends,
            forwarder,
            auth,
            quotas: crate::api::quotas::Quotas::new(&config.quotas),
            metrics,
            http: config.http.clone(),
            draining: CancellationToken::new(),
        });
        Ok(Self {
            state,
            campaign,
            duties,
            cancel,
            tasks,
            drain: Duration::from_millis(config.http.drain_timeout_ms),
            tls,
        })
    }

    /// The state the API serves from; `router(master.state())` can be driven without a socket.
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves the API on `listener` until `shutdown` completes, then, in order: reports not
    /// ready, stops accepting, drains in-flight requests (bounded), resigns, revokes the
    /// session lease and stops the caches.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MasterError> {
        let draining = self.state.draining.clone();
        info!(id = self.state.me.id, advertise = %self.state.me.url, addr = ?listener.local_addr().ok(), "master serving");
        let app = router(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let signal = {
            let draining = draining.clone();
            async move {
                shutdown.await;
                // Not ready first (and event streams end), then the server stops accepting.
                draining.cancel();
                info!("shutting down: draining requests");
            }
        };
        let mut server = match &self.tls {
            Some(tls) => {
                let incoming = tls.listen(listener, Arc::clone(&self.state.metrics));
                // A no-op tap: axum gives a tapped listener's connections their peer address.
                let incoming = incoming.tap_io(|_| {});
                tokio::spawn(
                    axum::serve(incoming, app)
                        .with_graceful_shutdown(signal)
                        .into_future(),
                )
            }
            // Small responses and event-stream frames go out at once, not after Nagle's delay.
            None => {
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                tokio::spawn(
                    axum::serve(listener, app)
                        .with_graceful_shutdown(signal)
                        .into_future(),
                )
            }
        };
        let served = tokio::select! {
            r = &mut server => r,
            () = draining.cancelled() => match tokio::time::timeout(self.drain, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    warn!(drain_ms = self.drain.as_millis() as u64, "drain timed out; closing the remaining connections");
                    server.abort();
                    Ok(Ok(()))
                }
            },
        };
        self.stop().await;
        match served {
            Ok(result) => result.map_err(MasterError::Serve),
            Err(join) => Err(MasterError::Serve(std::io::Error::other(join.to_string()))),
        }
    }

    /// Resigns, revokes the session lease, and stops the caches.
    pub async fn stop(mut self) {
        self.state.draining.cancel();
        self.campaign.cancel();
        while self.duties.join_next().await.is_some() {}
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        info!("master stopped");
    }
}

/// The client side of forwarding: trusting `http.tls.ca`, and presenting this master's
/// certificate when the leader asks for one (`http.tls.client_ca`). None: reqwest's defaults
/// (the system's trust store), or plain HTTP.
fn forwarding_tls(
    config: &Config,
    tls: Option<&ServerTls>,
) -> Result<Option<rustls::ClientConfig>, MasterError> {
    let (Some(settings), Some(tls)) = (&config.http.tls, tls) else {
        return Ok(None);
    };
    let Some(ca) = &settings.ca else {
        return Ok(None);
    };
    let identity = settings.client_ca.as_ref().map(|_| tls.client_identity());
    Ok(Some(crate::tls::client::trusting(ca, identity)?))
}

/// Runs a master on an already-bound listener until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    options: MasterOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    Master::start(config, options)
        .await?
        .serve(listener, shutdown)
        .await
}
