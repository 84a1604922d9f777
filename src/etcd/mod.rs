//! Everything that talks to etcd and is shared by both roles: the connection and its request
//! deadline ([`client`]), keeping the channel on members that answer ([`endpoints`]), paged lists, leases kept alive by this code ([`lease`]), retry
//! backoff ([`backoff`]), the key layout ([`keys`], the only place a key is spelled), and the
//! generic watch-driven cache ([`cache`]).
//!
//! What does *not* live here: what the values mean (see [`crate::model`]) and what a role does
//! with them (see [`crate::master`] and [`crate::worker`]). Both roles depend on this part;
//! it depends on neither.

pub mod backoff;
pub mod cache;
pub mod client;
pub mod endpoints;
pub mod keys;
pub mod lease;

pub use client::{EtcdError, connect, list_keys, list_prefix, timed};
