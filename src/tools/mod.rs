//! Tools shipped in the same binary that are not the product: `crawler dev` ([`dev`], a local
//! cluster for a first look), `crawler bench` ([`mod@bench`], the benchmarks), and the child
//! processes both start ([`procs`], and etcd: [`member`]) on ports no connection takes ([`ports`]), a proxy that
//! partitions ([`proxy`]), what task runners record of their runs ([`runs`]), and the small
//! local site the demo's tasks crawl ([`site`]).
//!
//! Nothing in the master or the worker depends on this part.

pub mod bench;
pub mod dev;
pub mod member;
pub mod ports;
pub mod procs;
pub mod proxy;
pub mod runs;
pub mod site;
