//! A task's checkpoint as stored under `/crawler/checkpoints/<name>`: what its process last
//! asked to keep (its frontier, a cursor), so that a run that moves to another worker resumes
//! instead of starting over.
//!
//! The value is one line of JSON saying who wrote it, at which assignment epoch and when, then
//! the task's bytes as they were given: no base64 in etcd, and a reader that wants only the
//! header stops at the first newline.

use serde::{Deserialize, Serialize};

/// Who wrote a checkpoint, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The worker that wrote it.
    pub worker: String,
    /// The assignment epoch of the run that wrote it.
    pub epoch: i64,
    /// When the task gave it, in ms since the Unix epoch.
    pub written_ms: i64,
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Who wrote it, and when.
    pub header: Header,
    /// The task's bytes.
    pub data: Vec<u8>,
}

/// Why a stored value is not a checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("not a checkpoint: {0}")]
pub struct NotACheckpoint(String);

impl Checkpoint {
    /// The stored form: the header's JSON, a newline, the bytes.
    pub fn encode(header: &Header, data: &[u8]) -> Vec<u8> {
        let mut out = serde_json::to_vec(header).unwrap_or_default();
        out.push(b'\n');
        out.extend_from_slice(data);
        out
    }

    /// Reads a stored value.
    pub fn decode(stored: &[u8]) -> Result<Self, NotACheckpoint> {
        let newline = stored
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| NotACheckpoint("no header line".into()))?;
        let header: Header = serde_json::from_slice(&stored[..newline])
            .map_err(|e| NotACheckpoint(e.to_string()))?;
        Ok(Self {
            header,
            data: stored[newline + 1..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_of_any_kind_round_trip_after_the_header() {
        let header = Header {
            worker: "w-1".into(),
            epoch: 42,
            written_ms: 1_700_000_000_000,
        };
        for data in [&b""[..], b"{\"queue\":[]}", b"\n\n\0\xff binary\n"] {
            let stored = Checkpoint::encode(&header, data);
            let back = Checkpoint::decode(&stored).expect("decodes");
            assert_eq!(back.header, header);
            assert_eq!(back.data, data);
        }
    }

    #[test]
    fn a_value_without_a_header_is_refused() {
        assert!(Checkpoint::decode(b"just bytes").is_err());
        assert!(Checkpoint::decode(b"{\"worker\":1}\nx").is_err());
    }
}
