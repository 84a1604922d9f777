//! Tasks' checkpoints as the masters show them: read from etcd on any master (they are large
//! and rarely read, so no cache holds them), and cleared by an operator through the leader.
//! Workers write them ([`crate::keys::KeyLayout::checkpoint_key`]); a resource's delete takes
//! its checkpoint in the same txn.

use etcd_client::TxnOp;

use super::{Leader, WriteError};
use crate::etcd::timed;
use crate::model::checkpoint::Checkpoint;

/// A stored checkpoint and the revision that wrote it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// What is stored.
    pub checkpoint: Checkpoint,
    /// The revision of its last write.
    pub revision: i64,
}

impl Leader {
    /// The checkpoint of `name`; `None` when it has none (or what is there is not one). Any
    /// master may read it.
    pub async fn checkpoint(&self, name: &str) -> Result<Option<Stored>, WriteError> {
        let key = self.inner.config.keys.checkpoint_key(name);
        let mut kv = self.inner.client.kv_client();
        let resp = timed(self.inner.config.request_timeout, kv.get(key, None)).await?;
        Ok(resp.kvs().first().and_then(|kv| {
            Checkpoint::decode(kv.value())
                .ok()
                .map(|checkpoint| Stored {
                    checkpoint,
                    revision: kv.mod_revision(),
                })
        }))
    }

    /// Clears the checkpoint of `name`, so that its next run starts over. Returns the write's
    /// revision.
    pub async fn clear_checkpoint(&self, name: &str) -> Result<i64, WriteError> {
        let fence = self.fence()?;
        let key = self.inner.config.keys.checkpoint_key(name);
        let written = self
            .write(&fence, vec![], vec![TxnOp::delete(key, None)])
            .await?;
        Ok(written.revision)
    }
}
