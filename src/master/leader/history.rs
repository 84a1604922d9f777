//! Assignment histories: every write that assigns a resource appends why, when, from where and
//! to where to `/crawler/history/<name>` in the same fenced txn, keeping the last twenty.
//!
//! Only the leader writes a history, and always together with the resource in a txn compared
//! on the resource's version; so a history read at or after that version is current when the
//! txn applies, and needs no compare of its own. Histories are not cached: they are read from
//! etcd when asked for, by any master.

use std::collections::HashMap;

use etcd_client::{Txn, TxnOp, TxnOpResponse};

use super::{Leader, WriteError};
use crate::etcd::timed;
use crate::model::schedule::{Assignment, append};

impl Leader {
    /// The stored histories of `names` (absent ones are missing from the map), in one read.
    pub(super) async fn histories(
        &self,
        names: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>, WriteError> {
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
            if let TxnOpResponse::Get(get) = op
                && let Some(kv) = get.kvs().first()
            {
                found.insert((*name).to_owned(), kv.value().to_vec());
            }
        }
        Ok(found)
    }

    /// The put that appends `entry` to the history of `name`, stored as `stored`.
    pub(super) fn history_op(
        &self,
        name: &str,
        stored: Option<&[u8]>,
        entry: Assignment,
    ) -> Result<TxnOp, WriteError> {
        let all = append(stored, entry);
        Ok(TxnOp::put(
            self.inner.config.keys.history_key(name),
            serde_json::to_vec(&all)?,
            None,
        ))
    }

    /// The history of resource `name`, oldest first; `None` when it has none. Any master may
    /// read it.
    pub async fn history(&self, name: &str) -> Result<Option<Vec<Assignment>>, WriteError> {
        let key = self.inner.config.keys.history_key(name);
        let mut kv = self.inner.client.kv_client();
        let resp = timed(self.inner.config.request_timeout, kv.get(key, None)).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| serde_json::from_slice(kv.value()).unwrap_or_default()))
    }
}
