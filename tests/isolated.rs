//! The fault tests, as a binary of their own: they measure how long a fault stalls writes and
//! hold it to a bound (`faults::losing_any_etcd_member_stalls_writes_for_less_than_1_5_s`), so
//! no other file's tests share the two cores with them. In the shared binary, a neighbour's
//! load once stretched a raft election's stall from its usual ~1.03 s to 1.79 s.
//! `cargo test --test isolated` runs them.

mod faults;
mod support;
