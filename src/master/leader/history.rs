//! Histories ([`crate::model::history`]): every write that assigns a resource or starts a run
//! of its task records it in `/crawler/history/<name>` in the same fenced txn, compared on the
//! version it read, so that two writes of the leader never lose each other's records.
//! Histories are not cached: they are read from etcd when asked for, by any master.

use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use super::{Leader, WriteError};
use crate::etcd::timed;
use crate::model::history::{History, Run, Start};
use crate::model::schedule::Assignment;
use crate::model::status::now_ms;

/// A stored history and its version (its key's mod revision; 0 when there is none).
#[derive(Debug, Default)]
pub(super) struct Stored {
    pub history: History,
    pub version: i64,
}

impl Leader {
    /// The stored histories of `names` (an absent one is empty, at version 0), in one read.
    pub(super) async fn histories(
        &self,
        names: &[&str],
    ) -> Result<HashMap<String, Stored>, WriteError> {
        let keys = &self.inner.config.keys;
        let gets: Vec<TxnOp> = names
            .iter()
            .map(|n| TxnOp::get(keys.history_key(n), None))
            .collect();
        let mut kv = self.inner.client.kv_client();
        let resp = timed(
            self.inner.config.request_timeout,
            kv.txn(Txn::new().and_then(gets)),
        )
        .await?;
        let mut found = HashMap::new();
        for (name, op) in names.iter().zip(resp.op_responses()) {
            let kv = match &op {
                TxnOpResponse::Get(get) => get.kvs().first(),
                _ => None,
            };
            let stored = kv.map_or_else(Stored::default, |kv| Stored {
                history: History::decode(Some(kv.value()), kv.mod_revision()),
                version: kv.mod_revision(),
            });
            found.insert((*name).to_owned(), stored);
        }
        Ok(found)
    }

    /// The put that stores `history` as the history of `name`.
    pub(super) fn history_put(&self, name: &str, history: &History) -> Result<TxnOp, WriteError> {
        Ok(TxnOp::put(
            self.inner.config.keys.history_key(name),
            serde_json::to_vec(history)?,
            None,
        ))
    }

    /// The compare that holds while the history of `name` is at `version` (0: absent).
    pub(super) fn history_unchanged(&self, name: &str, version: i64) -> Compare {
        let key = self.inner.config.keys.history_key(name);
        if version == 0 {
            Compare::create_revision(key, CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, version)
        }
    }

    /// Records in `history` an assignment of `name` and the run it starts.
    pub(super) fn record_assignment(&self, history: &mut History, name: &str, entry: Assignment) {
        let run = Run::new(Start::of(entry.reason), entry.to.as_deref(), entry.at_ms);
        history.assign(entry);
        self.record_run(history, name, run);
    }

    /// Records in `history` that `run` of `name` starts, ending the one still going with what
    /// its worker last reported.
    pub(super) fn record_run(&self, history: &mut History, name: &str, run: Run) {
        let status = self.inner.statuses.get(name);
        history.start(
            run,
            status.as_ref().map(|e| &*e.value),
            now_ms(),
            self.inner.config.scheduling.runs_kept,
        );
    }

    /// The history of resource `name`; `None` when it has none. Any master may read it.
    pub async fn history(&self, name: &str) -> Result<Option<History>, WriteError> {
        let key = self.inner.config.keys.history_key(name);
        let mut kv = self.inner.client.kv_client();
        let resp = timed(self.inner.config.request_timeout, kv.get(key, None)).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| History::decode(Some(kv.value()), kv.mod_revision())))
    }
}
