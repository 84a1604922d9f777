//! The etcd key layout, in one place.
//!
//! Every key the project reads or writes is built here, so that the layout can be changed by
//! configuration and audited by reading a single file.

use serde::Deserialize;

/// Key remainder, under the schedule prefix, of operators' state for a worker.
pub const SCHEDULE_CONTROL: &str = "worker:";
/// Key remainder, under the schedule prefix, of a worker's departure record.
pub const SCHEDULE_DEPARTED: &str = "departed:";
/// Key remainder, under the schedule prefix, of the storm guard's record.
pub const SCHEDULE_STORM: &str = "storm";

/// Where workers, resources and the election live in etcd.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct KeyLayout {
    /// Prefix of worker registrations (go-micro's `/micro/registry/<service>/`).
    pub worker_prefix: String,
    /// Prefix of resources: `/resources/<name>`.
    pub resources_prefix: String,
    /// Name of the master election.
    pub election: String,
    /// Prefix of task statuses, written by workers on their own lease: `<status_prefix><name>`.
    pub status_prefix: String,
    /// Prefix of the scheduling state every master caches: operators' cordons and drains
    /// (`worker:<node-id>`), departures (`departed:<node-id>`); one level, as the caches
    /// take only direct children and the storm guard (`storm`).
    pub schedule_prefix: String,
    /// Prefix of assignment histories, one key per resource: `<history_prefix><name>`.
    pub history_prefix: String,
    /// Prefix of per-worker assignments: `<assignments_prefix><node-id>/<name>` holds the
    /// resource while `<node-id>` is assigned it, written in the same txn as the resource, so
    /// that a worker watches its own tasks and nothing else.
    pub assignments_prefix: String,
    /// Prefix of task checkpoints, one key per resource: `<checkpoint_prefix><name>`, written
    /// by the worker that runs the task, fenced on its assignment key.
    pub checkpoint_prefix: String,
    /// Prefix of politeness state: budgets set through the API (`budget:<domain>`), each
    /// worker's demand on its lease (`demand:<node-id>`) and the leader's shares for it
    /// (`shares:<node-id>`).
    pub politeness_prefix: String,
    /// Prefix of the audit trail: `<audit_prefix><unix ms, 13 digits>-<master id>.<count>-
    /// <request id>`, so that keys sort by time and never collide.
    pub audit_prefix: String,
}

impl Default for KeyLayout {
    fn default() -> Self {
        Self {
            worker_prefix: "/micro/registry/go.micro.server.worker/".to_owned(),
            resources_prefix: "/resources/".to_owned(),
            election: "/crawler/election".to_owned(),
            status_prefix: "/crawler/status/".to_owned(),
            schedule_prefix: "/crawler/schedule/".to_owned(),
            history_prefix: "/crawler/history/".to_owned(),
            assignments_prefix: "/crawler/assignments/".to_owned(),
            checkpoint_prefix: "/crawler/checkpoints/".to_owned(),
            politeness_prefix: "/crawler/politeness/".to_owned(),
            audit_prefix: "/crawler/audit/".to_owned(),
        }
    }
}

impl KeyLayout {
    /// Checks that prefixes end in `/` and do not overlap.
    pub fn validate(&self) -> Result<(), String> {
        let prefixes = [
            ("keys.worker_prefix", &self.worker_prefix),
            ("keys.resources_prefix", &self.resources_prefix),
            ("keys.status_prefix", &self.status_prefix),
            ("keys.schedule_prefix", &self.schedule_prefix),
            ("keys.history_prefix", &self.history_prefix),
            ("keys.assignments_prefix", &self.assignments_prefix),
            ("keys.checkpoint_prefix", &self.checkpoint_prefix),
            ("keys.politeness_prefix", &self.politeness_prefix),
            ("keys.audit_prefix", &self.audit_prefix),
        ];
        for (what, prefix) in prefixes {
            if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() < 3 {
                return Err(format!("{what} must start and end with '/'"));
            }
        }
        for (i, (a, pa)) in prefixes.iter().enumerate() {
            for (b, pb) in &prefixes[i + 1..] {
                if pa.starts_with(pb.as_str()) || pb.starts_with(pa.as_str()) {
                    return Err(format!("{a} and {b} overlap"));
                }
            }
        }
        if self.election.is_empty() {
            return Err("keys.election is empty".into());
        }
        Ok(())
    }

    /// Key of one worker's registration.
    pub fn worker_key(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.worker_prefix)
    }

    /// Key of one resource. The name must have passed [`crate::model::name::validate`].
    pub fn resource_key(&self, name: &str) -> String {
        format!("{}{name}", self.resources_prefix)
    }

    /// Key of one task's status.
    pub fn status_key(&self, name: &str) -> String {
        format!("{}{name}", self.status_prefix)
    }

    /// Key of operators' state (cordon, drain) for one worker.
    pub fn control_key(&self, node_id: &str) -> String {
        format!("{}{}{node_id}", self.schedule_prefix, SCHEDULE_CONTROL)
    }

    /// Key of the record of one worker's departure.
    pub fn departure_key(&self, node_id: &str) -> String {
        format!("{}{}{node_id}", self.schedule_prefix, SCHEDULE_DEPARTED)
    }

    /// Key of the storm guard's record.
    pub fn storm_key(&self) -> String {
        format!("{}{}", self.schedule_prefix, SCHEDULE_STORM)
    }

    /// Key of one resource's assignment history.
    pub fn history_key(&self, name: &str) -> String {
        format!("{}{name}", self.history_prefix)
    }

    /// Key of one audit entry: its time, then what makes it unique (`<master id>.<count>`),
    /// then its request id.
    pub fn audit_key(&self, at_ms: i64, writer: &str, request_id: &str) -> String {
        format!(
            "{}{:013}-{writer}-{request_id}",
            self.audit_prefix,
            at_ms.max(0)
        )
    }

    /// The first audit key at or after `at_ms` (every entry before it sorts lower).
    pub fn audit_from(&self, at_ms: i64) -> String {
        format!("{}{:013}", self.audit_prefix, at_ms.max(0))
    }

    /// Key of one task's checkpoint.
    pub fn checkpoint_key(&self, name: &str) -> String {
        format!("{}{name}", self.checkpoint_prefix)
    }

    /// Prefix of the budgets operators set, by domain.
    pub fn budget_prefix(&self) -> String {
        format!("{}budget:", self.politeness_prefix)
    }

    /// Key of the budget set for `domain`.
    pub fn budget_key(&self, domain: &str) -> String {
        format!("{}{domain}", self.budget_prefix())
    }

    /// Prefix of workers' demands, by node id.
    pub fn demand_prefix(&self) -> String {
        format!("{}demand:", self.politeness_prefix)
    }

    /// Key of worker `node_id`'s demand.
    pub fn demand_key(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.demand_prefix())
    }

    /// Prefix of the leader's shares, by node id.
    pub fn shares_prefix(&self) -> String {
        format!("{}shares:", self.politeness_prefix)
    }

    /// Key of the shares granted to worker `node_id`.
    pub fn shares_key(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.shares_prefix())
    }

    /// The prefix worker `node_id` watches: its assignments.
    pub fn assignment_prefix(&self, node_id: &str) -> String {
        format!("{}{node_id}/", self.assignments_prefix)
    }

    /// Key of resource `name`'s assignment to worker `node_id`.
    pub fn assignment_key(&self, node_id: &str, name: &str) -> String {
        format!("{}{node_id}/{name}", self.assignments_prefix)
    }

    /// The worker and resource of an assignment key. A resource name has no `/`, so the last
    /// one separates them.
    pub fn parse_assignment_key<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(self.assignments_prefix.as_str())?;
        let (worker, name) = rest.rsplit_once('/')?;
        (!worker.is_empty() && !name.is_empty()).then_some((worker, name))
    }

    /// The key a member's health probe reads (count only): the resources prefix itself, which
    /// both roles may read and no resource has as its key.
    pub fn health_probe_key(&self) -> String {
        self.resources_prefix.clone()
    }

    /// Prefix under which the election's candidates put their keys.
    pub fn election_prefix(&self) -> String {
        format!("{}/", self.election)
    }

    /// Key of the masters' compaction clock: its version counts the compaction rounds, its
    /// value is the revision the last round compacts to next. Beside the election's
    /// candidates, not under their prefix.
    pub fn compaction_key(&self) -> String {
        format!("{}-compaction", self.election)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_go_layout() {
        let k = KeyLayout::default();
        assert_eq!(
            k.worker_key("go.micro.server.worker-2"),
            "/micro/registry/go.micro.server.worker/go.micro.server.worker-2"
        );
        assert_eq!(k.resource_key("douban"), "/resources/douban");
        let key = k.assignment_key("go.micro.server.worker-2", "douban");
        assert_eq!(key, "/crawler/assignments/go.micro.server.worker-2/douban");
        assert!(key.starts_with(&k.assignment_prefix("go.micro.server.worker-2")));
        assert_eq!(
            k.parse_assignment_key(&key),
            Some(("go.micro.server.worker-2", "douban"))
        );
        assert_eq!(k.parse_assignment_key("/crawler/assignments/douban"), None);
        assert_eq!(k.parse_assignment_key("/resources/douban"), None);
        assert_eq!(k.status_key("douban"), "/crawler/status/douban");
        assert_eq!(k.control_key("w-1"), "/crawler/schedule/worker:w-1");
        assert_eq!(k.departure_key("w-1"), "/crawler/schedule/departed:w-1");
        assert_eq!(k.storm_key(), "/crawler/schedule/storm");
        assert_eq!(k.history_key("douban"), "/crawler/history/douban");
        assert_eq!(k.checkpoint_key("douban"), "/crawler/checkpoints/douban");
        assert_eq!(
            k.budget_key("example.com"),
            "/crawler/politeness/budget:example.com"
        );
        assert_eq!(k.demand_key("w-1"), "/crawler/politeness/demand:w-1");
        assert_eq!(k.shares_key("w-1"), "/crawler/politeness/shares:w-1");
        assert_eq!(k.compaction_key(), "/crawler/election-compaction");
        assert!(!k.compaction_key().starts_with(&k.election_prefix()));
        assert!(k.validate().is_ok());
    }

    #[test]
    fn overlapping_prefixes_are_rejected() {
        let k = KeyLayout {
            resources_prefix: "/micro/".into(),
            ..KeyLayout::default()
        };
        assert!(k.validate().is_err());
        let k = KeyLayout {
            status_prefix: "/resources/status/".into(),
            ..KeyLayout::default()
        };
        assert!(k.validate().is_err());
    }
}
