//! The audit trail in etcd: entries stored after their answer (a write that stored nothing,
//! or was refused), pages of it for the API, and its retention, by count and by age, which
//! the leader keeps.

use std::time::Duration;

use etcd_client::{GetOptions, SortOrder, SortTarget, TxnOp};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::commit::Write;
use super::{Leader, WriteError};
use crate::etcd::timed;
use crate::master::leadership::{Fence, Term};
use crate::model::audit::Entry;
use crate::model::status::now_ms;

/// How long the trail keeps entries, and how many.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// The most entries kept.
    pub max_entries: usize,
    /// The oldest entry kept.
    pub max_age: Duration,
}

/// How often the leader trims the trail.
const TRIM_EVERY: Duration = Duration::from_secs(10);

impl Leader {
    /// The key an entry made at `at_ms` for `request_id` is stored under: unique, since it
    /// names this master and a count of the entries it keyed (clients choose request ids, and
    /// may repeat one).
    pub fn audit_key(&self, at_ms: i64, request_id: &str) -> String {
        let seq = self
            .inner
            .audit_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let writer = format!("{}.{seq}", self.inner.ids.node());
        self.inner.config.keys.audit_key(at_ms, &writer, request_id)
    }

    /// Stores `entry` under `key` in a fenced txn of its own: a write that stored nothing.
    pub async fn record(&self, key: String, entry: &Entry) -> Result<(), WriteError> {
        let fence = self.fence()?;
        let put = TxnOp::put(key, entry.encode(), None);
        self.commit(&fence, Write::new(Vec::new(), vec![put]))
            .await
            .map(|_| ())
    }

    /// Trims the trail while this master leads: entries older than the retention's age, then
    /// the oldest beyond its count. Until `cancel`.
    pub async fn run_audit_retention(self, retention: Retention, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !matches!(self.inner.leadership.term(), Term::Ready(_)) {
                continue;
            }
            match self.trim(retention).await {
                Ok(0) => {}
                Ok(n) => info!(deleted = n, "audit trail trimmed"),
                Err(error) => debug!(%error, "audit trail not trimmed this time"),
            }
        }
    }

    /// One trim; returns how many entries it deleted.
    async fn trim(&self, retention: Retention) -> Result<i64, WriteError> {
        let fence = self.fence()?;
        let keys = &self.inner.config.keys;
        let prefix = keys.audit_prefix.clone();
        let oldest = now_ms() - retention.max_age.as_millis() as i64;
        let mut deleted = 0;
        // By age: every key below the first one at or after the oldest time kept.
        deleted += self
            .delete_range(&fence, &prefix, keys.audit_from(oldest).into_bytes())
            .await?;
        // By count: the keys past the newest `max_entries`, oldest first, a page at a time.
        let mut kv = self.inner.client.kv_client();
        let count = timed(
            self.inner.config.request_timeout,
            kv.get(
                prefix.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ),
        )
        .await?
        .count();
        let excess = count - retention.max_entries as i64;
        if excess > 0 {
            let page = timed(
                self.inner.config.request_timeout,
                kv.get(
                    prefix.clone(),
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_keys_only()
                            .with_sort(SortTarget::Key, SortOrder::Ascend)
                            .with_limit(excess.min(1_000)),
                    ),
                ),
            )
            .await?;
            if let Some(last) = page.kvs().last() {
                let mut end = last.key().to_vec();
                end.push(0);
                deleted += self.delete_range(&fence, &prefix, end).await?;
            }
        }
        Ok(deleted)
    }

    /// Deletes the keys from `from` up to `end` (excluded) in a fenced txn; returns how many.
    async fn delete_range(
        &self,
        fence: &Fence,
        from: &str,
        end: Vec<u8>,
    ) -> Result<i64, WriteError> {
        let delete = TxnOp::delete(
            from.to_owned(),
            Some(etcd_client::DeleteOptions::new().with_range(end)),
        );
        let written = self
            .commit(fence, Write::new(Vec::new(), vec![delete]))
            .await?;
        Ok(match written.responses.first() {
            Some(etcd_client::TxnOpResponse::Delete(d)) => d.deleted(),
            _ => 0,
        })
    }
}

impl Leader {
    /// Up to `limit` entries, newest first, from before the key suffix `before` (all when
    /// `None`), read from etcd; and whether more are older.
    pub async fn audit_page(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, Entry)>, bool), WriteError> {
        let prefix = &self.inner.config.keys.audit_prefix;
        let end = match before {
            Some(suffix) => format!("{prefix}{suffix}"),
            None => {
                let mut end = prefix.clone().into_bytes();
                if let Some(last) = end.last_mut() {
                    *last += 1;
                }
                String::from_utf8(end).unwrap_or_default()
            }
        };
        let mut kv = self.inner.client.kv_client();
        let resp = timed(
            self.inner.config.request_timeout,
            kv.get(
                prefix.clone(),
                Some(
                    GetOptions::new()
                        .with_range(end)
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(limit as i64),
                ),
            ),
        )
        .await?;
        let entries = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let suffix = kv.key_str().ok()?.strip_prefix(prefix.as_str())?.to_owned();
                Some((suffix, Entry::decode(kv.value())?))
            })
            .collect();
        Ok((entries, resp.more()))
    }
}
