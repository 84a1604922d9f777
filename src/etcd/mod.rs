//! Everything that talks to etcd and is shared by both roles: the connection and its request
//! deadline ([`client`]), keeping the channel on members that answer ([`endpoints`]), paged
//! lists, leases kept alive by this code ([`lease`]), retry backoff ([`backoff`]), and the
//! generic watch-driven cache ([`cache`]).
//!
//! What does *not* live here: the key layout ([`crate::keys`]), what the values mean
//! ([`crate::model`]) and what a role does with them. Both roles depend on this part; it
//! depends on neither, nor on the model.

pub mod backoff;
pub mod cache;
pub mod client;
pub mod endpoints;
pub mod lease;

pub use client::{EtcdError, connect, list_keys, list_prefix, timed};
