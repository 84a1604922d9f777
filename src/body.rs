//! Reading a request body whole within a limit, and discarding the rest of a refused one, for
//! every HTTP server here (the master's API, a worker's task agent).
//!
//! A server that answers before reading the request and closes makes the kernel reset the
//! connection, and the client may lose the answer: before a 413 the rest is read and discarded
//! (nginx's lingering close), within [`DRAIN_MAX_BYTES`] and [`DRAIN_MAX_TIME`].

use std::time::Duration;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};

/// Most bytes read and discarded from a refused body before the connection is closed instead.
pub const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Longest time spent discarding a refused body.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// A body as read by [`read_up_to`].
pub enum Read {
    /// All of it, within the limit.
    Whole(Vec<u8>),
    /// More than the limit.
    Over,
    /// The connection failed.
    Broken(String),
}

/// Reads a body up to `limit` bytes: whole, or over it (the rest still unread).
pub async fn read_up_to<S>(stream: &mut S, limit: usize) -> Read
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) if buf.len() + chunk.len() > limit => return Read::Over,
            Ok(chunk) => buf.extend_from_slice(&chunk),
            Err(error) => return Read::Broken(error.to_string()),
        }
    }
    Read::Whole(buf)
}

/// Reads and discards the rest of a body, within the bounds. True when it reached the end.
pub async fn drain<S>(mut stream: S) -> bool
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    let discard = async {
        let mut seen = 0u64;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    seen += chunk.len() as u64;
                    if seen > DRAIN_MAX_BYTES {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_MAX_TIME, discard)
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(sizes: Vec<usize>) -> impl Stream<Item = Result<Bytes, axum::Error>> + Unpin {
        futures_util::stream::iter(sizes.into_iter().map(|n| Ok(Bytes::from(vec![b'x'; n]))))
    }

    #[tokio::test]
    async fn a_growing_body_is_refused_past_the_limit_and_drained() {
        let mut s = chunks(vec![4, 4, 4]);
        assert!(matches!(read_up_to(&mut s, 10).await, Read::Over));
        assert!(drain(s).await, "the rest was read to the end");
        let mut s = chunks(vec![4, 4, 2]);
        assert!(matches!(read_up_to(&mut s, 10).await, Read::Whole(b) if b.len() == 10));
    }

    #[tokio::test]
    async fn draining_stops_at_its_byte_bound() {
        let big = (DRAIN_MAX_BYTES / (1024 * 1024) + 1) as usize;
        let s = chunks(vec![1024 * 1024; big]);
        assert!(!drain(s).await);
    }
}
