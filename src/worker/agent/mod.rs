//! The task agent: what a worker serves to its own task processes, on a loopback port.
//!
//! Each start of a task's process is a run with a secret of its own (`CRAWLER_AGENT_TOKEN`)
//! and the agent's URL (`CRAWLER_AGENT_URL`); the secret is forgotten when the process ends, so
//! a stray child of an old run, or a run whose task moved or restarted, is refused. The agent
//! answers from this worker's memory and its assignments cache; only a checkpoint's write goes
//! to etcd, coalesced ([`checkpoints`]).
//!
//! A run starts with its task's last checkpoint in its work dir (`CRAWLER_CHECKPOINT_FILE`),
//! whichever worker wrote it.
//!
//! Before each fetch a run asks for a slot of the site's politeness budget ([`pacer`]); the
//! worker's shares of the fleet's budgets are renewed in the background ([`shares`]).

mod acquire;
pub mod checkpoints;
pub mod pacer;
mod refusal;
mod serve;
pub mod shares;

pub use serve::AgentApi;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::Client;
use rand::RngExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::runner::TaskSpec;
use crate::config::Config;
use crate::etcd::cache::Store;
use crate::etcd::timed;
use crate::keys::KeyLayout;
use crate::model::checkpoint::Checkpoint;
use crate::model::politeness::Budget;
use crate::model::resource::Resource;
use checkpoints::Slots;
use pacer::Pacer;

/// The file in a task's working directory that holds its last checkpoint at start.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// The agent's routes sit under this path.
pub const BASE_PATH: &str = "/agent/v1";

/// The run a secret belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The task's name.
    pub name: String,
    /// The assignment epoch it runs at.
    pub epoch: i64,
    /// The create revision of its assignment key (see [`TaskSpec::assigned_at`]).
    pub assigned_at: i64,
}

struct Inner {
    url: String,
    node_id: String,
    keys: KeyLayout,
    client: Client,
    timeout: Duration,
    checkpoint_bytes: usize,
    interval: Duration,
    resources: Store<Resource>,
    /// Secret → the live run it belongs to.
    runs: Mutex<HashMap<String, Ticket>>,
    slots: Slots,
    pacer: Arc<Pacer>,
}

/// What the agent serves from.
pub struct AgentParts<'a> {
    /// The worker's etcd client.
    pub client: &'a Client,
    /// The worker's configuration.
    pub config: &'a Config,
    /// This worker's node id.
    pub node_id: &'a str,
    /// This worker's assignments.
    pub resources: Store<Resource>,
    /// The budgets set through the API.
    pub budgets: Store<Budget>,
    /// The worker's registration lease, which its demand lives on.
    pub lease: watch::Receiver<Option<i64>>,
}

/// The agent's OpenAPI document as pretty JSON (`openapi/agent.json`).
pub fn spec_json() -> String {
    use utoipa::OpenApi;
    AgentApi::openapi().to_pretty_json().unwrap_or_default()
}

/// The agent. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

/// One run's hold on the agent; its secret is forgotten when this is dropped.
pub struct Run {
    agent: Agent,
    token: String,
    file: std::path::PathBuf,
}

impl Run {
    /// The environment the run's process gets.
    pub fn env(&self) -> [(String, String); 3] {
        [
            ("CRAWLER_AGENT_URL".to_owned(), self.agent.inner.url.clone()),
            ("CRAWLER_AGENT_TOKEN".to_owned(), self.token.clone()),
            (
                "CRAWLER_CHECKPOINT_FILE".to_owned(),
                self.file.display().to_string(),
            ),
        ]
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.agent.runs().remove(&self.token);
        self.agent.inner.pacer.release_run(&self.token);
    }
}

impl Agent {
    /// Serves the agent on `listener` (loopback), and keeps the worker's shares renewed, until
    /// `cancel` fires.
    pub fn spawn(
        listener: TcpListener,
        parts: AgentParts<'_>,
        cancel: CancellationToken,
    ) -> std::io::Result<(Self, tokio::task::JoinHandle<()>)> {
        let AgentParts {
            client,
            config,
            node_id,
            resources,
            budgets,
            lease,
        } = parts;
        let address = listener.local_addr()?;
        let pacer = Arc::new(Pacer::new(config.politeness.clone(), budgets));
        let agent = Self {
            inner: Arc::new(Inner {
                url: format!("http://{address}{BASE_PATH}"),
                node_id: node_id.to_owned(),
                keys: config.keys.clone(),
                client: client.clone(),
                timeout: config.etcd.request_timeout(),
                checkpoint_bytes: config.worker.checkpoint_bytes,
                interval: checkpoints::interval(config.worker.checkpoint_interval),
                resources,
                runs: Mutex::default(),
                slots: Slots::default(),
                pacer: Arc::clone(&pacer),
            }),
        };
        let renewed = tokio::spawn(shares::run(
            pacer,
            client.clone(),
            shares::Keys::of(&config.keys, node_id),
            lease,
            config.politeness.renew_interval,
            config.etcd.request_timeout(),
            cancel.clone(),
        ));
        let app = serve::routes(agent.clone());
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            let _ = renewed.await;
        });
        Ok((agent, handle))
    }

    /// The worker's shares of politeness budgets.
    pub fn pacer(&self) -> &Pacer {
        &self.inner.pacer
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ticket>> {
        self.inner.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a run of `spec` whose process works in `work`: its last checkpoint is put in the
    /// work dir, and it gets a secret of its own. Fails when the checkpoint cannot be read
    /// (etcd unreachable): a run that would start over is not started.
    pub async fn open(&self, spec: &TaskSpec, work: &Path) -> Result<Run, String> {
        let file = work.join(CHECKPOINT_FILE);
        let _ = tokio::fs::remove_file(&file).await;
        let data = match self.inner.slots.newest(&spec.name, spec.assigned_at) {
            Some(data) => Some(data.to_vec()),
            None => self.stored(&spec.name).await?.map(|c| c.data),
        };
        if let Some(data) = data {
            tokio::fs::write(&file, data)
                .await
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        }
        let bytes: [u8; 24] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.runs().insert(
            token.clone(),
            Ticket {
                name: spec.name.clone(),
                epoch: spec.epoch,
                assigned_at: spec.assigned_at,
            },
        );
        Ok(Run {
            agent: self.clone(),
            token,
            file,
        })
    }

    /// The checkpoint of `name` in etcd.
    async fn stored(&self, name: &str) -> Result<Option<Checkpoint>, String> {
        let key = self.inner.keys.checkpoint_key(name);
        let mut kv = self.inner.client.kv_client();
        let got = timed(self.inner.timeout, kv.get(key, None))
            .await
            .map_err(|e| format!("cannot read the task's checkpoint: {e}"))?;
        Ok(got
            .kvs()
            .first()
            .and_then(|kv| Checkpoint::decode(kv.value()).ok()))
    }

    /// The live run `token` names, if it still holds the task's current assignment here.
    fn ticket(&self, token: &str) -> Option<Result<Ticket, Ticket>> {
        let ticket = self.runs().get(token).cloned()?;
        let current = self.inner.resources.with(|objects, _| {
            objects.get(ticket.name.as_str()).is_some_and(|e| {
                e.value.assigned_worker() == Some(self.inner.node_id.as_str())
                    && e.create_revision == ticket.assigned_at
                    && e.value.epoch(e.mod_revision) == ticket.epoch
            })
        });
        Some(if current { Ok(ticket) } else { Err(ticket) })
    }
}
