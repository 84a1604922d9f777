//! The integration tests, as one binary: each file is a module, so the suite links once
//! instead of once per file, and libtest spreads every file's tests over its threads.
//! `cargo test --test integration <file>::` runs one file's tests. The fault tests, which hold
//! timings to bounds, run alone in `tests/isolated.rs`.

mod support;

mod assignments;
mod audit;
mod bench_smoke;
mod bodies;
mod browser;
mod checkpoints;
mod compose;
mod contract;
mod ctl;
mod dev;
mod discovery;
mod docs;
mod flood;
mod gateway;
mod hostile_input;
mod kubernetes;
mod layout;
mod monitoring;
mod openapi;
mod partitions;
mod placement;
mod politeness;
mod quotas;
mod recurring;
mod resources;
mod roles;
mod scheduling;
mod secured_etcd;
mod tasks;
mod tls;
