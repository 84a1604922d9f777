//! `crawler`: the control plane ("master") of a distributed web crawler, and its worker agent.
//!
//! The parts, bottom up; each imports only parts below it (`tests/layout.rs` checks):
//! 1. [`object`] (what a stored value is to a cache) and [`keys`] (the etcd key layout);
//! 2. [`model`]: the stored formats and their rules: resources, worker records, statuses;
//! 3. [`config`], [`metrics`], [`logging`], [`shutdown`], [`body`], [`tls`]: what every process
//!    shares;
//! 4. [`etcd`]: the connection, leases, paged lists and the generic watch-driven cache;
//! 5. the roles, which never import each other: [`master`] (election, the leader's duties,
//!    placement) and [`worker`] (the agent that runs tasks);
//! 6. [`api`]: the master's HTTP face, over `master`;
//! 7. [`server`]: the master process, wiring `master` and `api` together;
//! 8. [`ctl`] (`crawler ctl`, a client of the API over HTTP only), [`tools`] (`crawler dev`,
//!    `crawler bench`, child processes) and [`cli`], used by `main`.

pub mod api;
pub mod body;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod etcd;
pub mod keys;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod model;
pub mod object;
pub mod server;
pub mod shutdown;
pub mod tls;
pub mod tools;
pub mod worker;
