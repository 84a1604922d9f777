//! `crawler`: the control plane ("master") of a distributed web crawler, and its worker agent.
//!
//! The parts, from the bottom up:
//! - [`etcd`]: connection, leases, the key layout and the generic watch-driven cache;
//! - [`model`]: resources, go-micro worker records, names and snowflake IDs;
//! - [`master`]: the master process: election, leadership, the leader's duties and placement;
//! - [`api`]: the master's REST API, event stream, dashboard and gateway;
//! - [`worker`]: the worker agent;
//! - [`tools`]: `crawler dev` and `crawler bench`;
//! - process plumbing shared by every command: [`cli`], [`config`], [`logging`], [`metrics`],
//!   [`shutdown`].
//!
//! The worker and the master both depend on `etcd` and `model`, never on each other.

pub mod api;
pub mod cli;
pub mod config;
pub mod etcd;
pub mod keys;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod model;
pub mod object;
pub mod server;
pub mod shutdown;
pub mod tools;
pub mod worker;
