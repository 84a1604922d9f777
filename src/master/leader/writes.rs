//! Fenced writes: every write the leader makes is nested, with its own compares, in an etcd
//! txn whose outer compare is our leader key's create revision (several writes may share one
//! such txn: see `commit`).
//!
//! The nesting tells the two failures apart in one round trip: the outer compare failing means
//! we were deposed (step down, answer 503); the inner one failing means the write's own
//! condition did not hold (the name exists, a resource changed under us).

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use crate::etcd::{EtcdError, timed};
use crate::master::leadership::Fence;

/// Why a leader write did not apply.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This master is not the leader.
    #[error("this master is not the leader")]
    NotLeader,
    /// This master won the election and is still taking over.
    #[error("the leader is taking over; retry shortly")]
    TakingOver,
    /// The fence compare failed: another master leads now.
    #[error("this master was deposed")]
    Deposed,
    /// The resource already exists.
    #[error("resource already exists")]
    Exists,
    /// The resource does not exist.
    #[error("resource not found")]
    NotFound,
    /// `If-Match` named a version that is not the current one.
    #[error("the resource changed since the version given in If-Match")]
    PreconditionFailed,
    /// The named worker is not registered.
    #[error("no such worker: {0}")]
    UnknownWorker(String),
    /// The named worker does not meet the resource's placement.
    #[error("worker {0} does not meet the resource's placement")]
    Unfit(String),
    /// The requested change breaks a rule (the field, what is wrong).
    #[error("{1}")]
    Invalid(&'static str, String),
    /// The resource kept changing under a read-modify-write.
    #[error("the resource kept changing; retry")]
    Contended,
    /// etcd failed or did not answer in time.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// No ID could be made.
    #[error(transparent)]
    Id(#[from] crate::model::snowflake::SnowflakeError),
    /// A value could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The result of a fenced txn that was not refused by the fence.
#[derive(Debug)]
pub struct Written {
    /// Whether the inner compares held (and so the inner operations applied).
    pub applied: bool,
    /// The revision after the txn.
    pub revision: i64,
    /// Responses of the inner operations.
    pub responses: Vec<TxnOpResponse>,
}

/// Runs each of `writes` (nested txns) if its own compares hold, all in one txn fenced by
/// `fence`. Answers each write in order; an error is the whole txn's.
pub async fn fenced(
    client: &Client,
    fence: &Fence,
    deadline: Duration,
    writes: Vec<TxnOp>,
) -> Result<Vec<Written>, WriteError> {
    let n = writes.len();
    let outer = Txn::new()
        .when([Compare::create_revision(
            fence.key.as_bytes(),
            CompareOp::Equal,
            fence.create_revision,
        )])
        .and_then(writes);
    let mut kv = client.kv_client();
    let resp = timed(deadline, kv.txn(outer)).await?;
    if !resp.succeeded() {
        return Err(WriteError::Deposed);
    }
    let revision = resp.header().map_or(0, |h| h.revision());
    let answers: Vec<Written> = resp
        .op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Txn(t) => Some(Written {
                applied: t.succeeded(),
                revision,
                responses: t.op_responses(),
            }),
            _ => None,
        })
        .collect();
    if answers.len() != n {
        return Err(WriteError::Etcd(EtcdError::Malformed(format!(
            "a fenced txn of {n} writes answered {} of them",
            answers.len()
        ))));
    }
    Ok(answers)
}
