//! The master's domain: the election and the leadership value ([`election`], [`leadership`]),
//! the leader's duties split by kind ([`leader`]), the masters' compaction of etcd's history
//! ([`compactor`]), where resources go ([`placement`],
//! [`assigner`], [`policy`]), how politeness budgets are split among workers ([`budgets`]),
//! and what the master logs and measures of the caches ([`membership`], [`start_latency`]).
//!
//! What does not live here: the process wiring ([`crate::server`]), the HTTP handlers
//! ([`crate::api`], which stands on this part), etcd plumbing and the generic cache
//! ([`crate::etcd`]), and the stored formats ([`crate::model`]).

pub mod assigner;
pub mod budgets;
pub mod compactor;
pub mod election;
pub mod leader;
pub mod leadership;
pub mod membership;
pub mod placement;
pub mod policy;
pub mod start_latency;
pub mod trends;
