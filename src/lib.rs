//! `crawler`: the control plane ("master") of a distributed web crawler, and its worker agent.
//!
//! Workers register in etcd in go-micro's format; masters mirror workers and resources into
//! watch-driven caches ([`cache`]) and serve a REST API from them ([`api`]).

pub mod api;
pub mod assigner;
pub mod backoff;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dev;
pub mod election;
pub mod etcd;
pub mod keys;
pub mod leader;
pub mod leadership;
pub mod lease;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod name;
pub mod placement;
pub mod procs;
pub mod registry;
pub mod resource;
pub mod shutdown;
pub mod snowflake;
pub mod worker;
