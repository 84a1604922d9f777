//! The data both roles share, as stored in etcd: resources in the Go crawler's JSON
//! ([`resource`]), workers in go-micro's registry format ([`registry`]), the rules for
//! resource names ([`name`]), snowflake IDs ([`snowflake`]), and task statuses as workers
//! report them ([`status`]), and the fleet's scheduling state and assignment histories
//! ([`schedule`]), each resource's history of assignments and runs ([`history`]), and
//! recurring crawls' schedules ([`recurrence`]), tasks' checkpoints ([`checkpoint`]), where a
//! task may run ([`constraints`]), why one waits ([`waiting`]), politeness budgets, what
//! workers want of them and the leader's shares ([`politeness`]), and the API's roles
//! ([`role`]).
//!
//! Codecs and pure rules only: nothing here does I/O, and nothing here knows which process it
//! runs in.

pub mod audit;
pub mod checkpoint;
pub mod constraints;
pub mod history;
pub mod intern;
pub mod invalid;
pub mod name;
pub mod politeness;
pub mod recurrence;
pub mod registry;
pub mod resource;
pub mod role;
pub mod schedule;
pub mod snowflake;
pub mod status;
pub mod waiting;
