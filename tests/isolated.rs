//! The fault tests, as a binary of their own: they hold masters to their session TTL (a
//! master cut off or paused steps down within it) while killing etcd members and masters
//! under load, so no other file's tests share the two cores with them.
//! `cargo test --test isolated` runs them.

mod faults;
mod support;
