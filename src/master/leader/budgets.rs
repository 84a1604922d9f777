//! Budgets operators set through the API, one key per domain: fenced writes of the leader.
//! Workers and masters cache them; the config's budgets apply where none is set.

use etcd_client::TxnOp;

use super::{Leader, WriteError};
use crate::model::politeness::Budget;

impl Leader {
    /// Sets the budget of `domain` (checked by the caller). Returns the write's revision.
    pub async fn set_budget(&self, domain: &str, budget: &Budget) -> Result<i64, WriteError> {
        let fence = self.fence()?;
        let key = self.inner.config.keys.budget_key(domain);
        let value = serde_json::to_vec(budget).unwrap_or_default();
        let written = self
            .write(&fence, vec![], vec![TxnOp::put(key, value, None)])
            .await?;
        Ok(written.revision)
    }

    /// Removes the budget set for `domain`. Returns the write's revision.
    pub async fn clear_budget(&self, domain: &str) -> Result<i64, WriteError> {
        let fence = self.fence()?;
        let key = self.inner.config.keys.budget_key(domain);
        let written = self
            .write(&fence, vec![], vec![TxnOp::delete(key, None)])
            .await?;
        Ok(written.revision)
    }
}
