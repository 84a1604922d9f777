//! Keeps the worker's shares current: every `politeness.renew_interval` it reads its shares
//! (a linearizable read, whose start begins the lease it grants) and, when what its tasks want
//! has changed, puts its demand on its registration lease in the same txn. A worker that
//! wants nothing and changed nothing costs etcd one read per period and no write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions, Txn, TxnOp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::pacer::Pacer;
use crate::etcd::timed;
use crate::keys::KeyLayout;
use crate::model::politeness::{Demand, Shares, Want};
use crate::object::Object;

/// How often the shares are read while a task waits for a domain with no share.
const HUNGRY: Duration = Duration::from_millis(100);

/// Where the loop reads and writes.
pub struct Keys {
    /// This worker's demand key.
    pub demand: String,
    /// This worker's shares key.
    pub shares: String,
}

impl Keys {
    /// The keys of worker `node_id`.
    pub fn of(keys: &KeyLayout, node_id: &str) -> Self {
        Self {
            demand: keys.demand_key(node_id),
            shares: keys.shares_key(node_id),
        }
    }
}

/// Renews until `cancel` fires.
pub async fn run(
    pacer: Arc<Pacer>,
    client: Client,
    keys: Keys,
    mut lease: watch::Receiver<Option<i64>>,
    period: Duration,
    timeout: Duration,
    cancel: CancellationToken,
) {
    let mut written: Option<(i64, Demand)> = None;
    let mut last = Instant::now();
    loop {
        // Every period; sooner while a task waits for a domain with no share yet, so that a
        // new domain is granted within a few round trips rather than a few periods.
        let pause = if pacer.starving() { HUNGRY } else { period };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
            () = pacer.hungry() => tokio::time::sleep(HUNGRY).await,
        }
        let demand = pacer.demand(last.elapsed());
        last = Instant::now();
        let lease_id = *lease.borrow_and_update();
        // Nothing is written until a task has wanted something.
        let put = lease_id.filter(|id| match &written {
            None => demand != Demand::default(),
            Some((at, last)) => at != id || !alike(last, &demand),
        });
        let read_at = Instant::now();
        let mut kv = client.kv_client();
        let got = match put {
            Some(id) => {
                let value = serde_json::to_vec(&demand).unwrap_or_default();
                let txn = Txn::new().and_then([
                    TxnOp::put(
                        keys.demand.as_str(),
                        value,
                        Some(PutOptions::new().with_lease(id)),
                    ),
                    TxnOp::get(keys.shares.as_str(), None),
                ]);
                timed(timeout, kv.txn(txn)).await.map(|resp| {
                    resp.op_responses().into_iter().find_map(|op| match op {
                        etcd_client::TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                        _ => None,
                    })
                })
            }
            None => timed(timeout, kv.get(keys.shares.as_str(), None))
                .await
                .map(|resp| resp.kvs().first().cloned()),
        };
        match got {
            Ok(kv) => {
                if let Some(id) = put {
                    written = Some((id, demand));
                }
                let revision = kv.as_ref().map_or(0, |kv| kv.mod_revision());
                let shares = kv.and_then(|kv| Shares::decode("", kv.value()).ok());
                pacer.apply(shares, revision, read_at);
            }
            Err(error) => debug!(%error, "shares not renewed"),
        }
    }
}

/// Whether the leader would split the same way for `b` as for `a`: what changed is only the
/// rate used, by less than a quarter (or both under 0.5 req/s).
fn alike(a: &Demand, b: &Demand) -> bool {
    a.seen == b.seen
        && a.domains.len() == b.domains.len()
        && a.domains
            .iter()
            .zip(&b.domains)
            .all(|((da, wa), (db, wb))| da == db && same_want(wa, wb))
}

fn same_want(a: &Want, b: &Want) -> bool {
    let close =
        (a.used < 0.5 && b.used < 0.5) || (a.used - b.used).abs() <= a.used.max(b.used) / 4.0;
    a.tasks == b.tasks
        && a.saturated == b.saturated
        && (a.waiting > 0) == (b.waiting > 0)
        && a.throttled == b.throttled
        && a.crawl_delay_ms == b.crawl_delay_ms
        && close
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(used: f64, tasks: u32) -> Demand {
        let mut d = Demand::default();
        d.domains.insert(
            "example.com".into(),
            Want {
                tasks,
                used,
                ..Want::default()
            },
        );
        d
    }

    #[test]
    fn small_changes_in_use_are_not_written_again() {
        assert!(alike(&demand(10.0, 2), &demand(11.0, 2)));
        assert!(alike(&demand(0.1, 2), &demand(0.4, 2)));
        assert!(!alike(&demand(10.0, 2), &demand(14.0, 2)));
        assert!(!alike(&demand(10.0, 2), &demand(10.0, 3)));
        let mut seen = demand(10.0, 2);
        seen.seen = 7;
        assert!(!alike(&demand(10.0, 2), &seen));
    }
}
