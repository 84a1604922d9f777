//! What operators ask of the leader: cordon, uncordon and drain a worker, thaw a storm
//! freeze, and preview a placement. Each change is one fenced write under the schedule
//! prefix, adopted by the leader's scheduling and placement once written.

use std::time::Duration;

use etcd_client::TxnOp;
use tracing::info;

use super::{Leader, WriteError};
use crate::model::schedule::{Control, Drain, Storm};
use crate::model::status::now_ms;

pub use crate::master::placement::Preview;

impl Leader {
    /// True when worker `id` is registered (as the workers cache shows it).
    fn registered(&self, id: &str) -> bool {
        self.inner
            .workers
            .with(|objects, _| objects.values().any(|e| e.value.id == id))
    }

    async fn put_control(&self, id: &str, control: Control) -> Result<Control, WriteError> {
        let fence = self.fence()?;
        let key = self.inner.config.keys.control_key(id);
        self.write(
            &fence,
            vec![],
            vec![TxnOp::put(key, serde_json::to_vec(&control)?, None)],
        )
        .await?;
        self.placement().set_cordoned(id, true);
        self.scheduling()
            .controls
            .insert(id.to_owned(), control.clone());
        self.inner.kick.notify_one();
        Ok(control)
    }

    /// Cordons registered worker `id`: it takes no new task. A drain under way goes on.
    pub async fn cordon(&self, id: &str) -> Result<Control, WriteError> {
        self.fence()?;
        if !self.registered(id) {
            return Err(WriteError::UnknownWorker(id.to_owned()));
        }
        let existing = self.scheduling().controls.get(id).cloned();
        let control = existing.unwrap_or(Control {
            cordoned_at_ms: now_ms(),
            drain: None,
        });
        info!(worker = %id, "cordoned");
        self.put_control(id, control).await
    }

    /// Drains registered worker `id`: cordons it and moves its tasks away at the reassignment
    /// rate, all remaining ones once `deadline` (from now) has passed.
    pub async fn drain(&self, id: &str, deadline: Option<Duration>) -> Result<Control, WriteError> {
        self.fence()?;
        if !self.registered(id) {
            return Err(WriteError::UnknownWorker(id.to_owned()));
        }
        let now = now_ms();
        let cordoned_at_ms = self
            .scheduling()
            .controls
            .get(id)
            .map_or(now, |c| c.cordoned_at_ms);
        let deadline_ms =
            deadline.map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
        info!(worker = %id, ?deadline_ms, tasks = self.placement().held_by(id), "draining");
        self.put_control(
            id,
            Control {
                cordoned_at_ms,
                drain: Some(Drain {
                    since_ms: now,
                    deadline_ms,
                    by: super::audit::actor(),
                }),
            },
        )
        .await
    }

    /// Lifts the cordon (and any drain) of worker `id`. Unknown when it is neither registered
    /// nor cordoned.
    pub async fn uncordon(&self, id: &str) -> Result<(), WriteError> {
        let fence = self.fence()?;
        let cordoned = self.scheduling().controls.contains_key(id);
        if !cordoned && !self.registered(id) {
            return Err(WriteError::UnknownWorker(id.to_owned()));
        }
        if cordoned {
            let key = self.inner.config.keys.control_key(id);
            self.write(&fence, vec![], vec![TxnOp::delete(key, None)])
                .await?;
            self.scheduling().controls.remove(id);
            info!(worker = %id, "uncordoned");
        }
        self.placement().set_cordoned(id, false);
        self.inner.kick.notify_one();
        Ok(())
    }

    /// Ends a storm freeze now. Returns the storm record after the call (`None`: there never
    /// was a storm).
    pub async fn thaw(&self) -> Result<Option<Storm>, WriteError> {
        let fence = self.fence()?;
        let current = self.scheduling().storm.clone();
        let Some(storm) = current.filter(|s| s.frozen) else {
            return Ok(self.scheduling().storm.clone());
        };
        let thawed = Storm {
            frozen: false,
            thawed_at_ms: Some(now_ms()),
            thawed_by: Some("operator".to_owned()),
            ..storm
        };
        self.write_storm(&fence, &thawed).await?;
        info!("storm guard: reassignment thawed by an operator");
        self.inner.kick.notify_one();
        Ok(Some(thawed))
    }

    /// How many tasks wait for a worker, by why (none unless this master leads).
    pub fn waiting(&self) -> std::collections::BTreeMap<crate::model::waiting::Wait, usize> {
        match self.fence() {
            Ok(_) => self.placement().waiting(),
            Err(_) => Default::default(),
        }
    }

    /// What would move where if the workers in `drain` were drained and those in `remove`
    /// left for good, planned by the placement code that plans real moves, on a copy. Every
    /// named worker must be registered or hold resources.
    pub fn preview(&self, drain: &[String], remove: &[String]) -> Result<Preview, WriteError> {
        self.fence()?;
        let placement = self.placement();
        if let Some(unknown) = drain
            .iter()
            .chain(remove)
            .find(|id| !placement.has_worker(id) && placement.held_by(id) == 0)
        {
            return Err(WriteError::UnknownWorker(unknown.clone()));
        }
        Ok(placement.preview(drain, remove))
    }
}
