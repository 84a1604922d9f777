//! A task's output, bounded: two files, `output.log` and the older `output.log.1`, each at most
//! half of `worker.log_bytes`. When the current file is full it becomes the older one, so a
//! task that floods its output costs a fixed amount of disk and the newest output is kept.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The output log of one task.
#[derive(Debug, Clone)]
pub struct TaskLog {
    current: PathBuf,
    older: PathBuf,
    /// Most bytes per file.
    half: u64,
}

impl TaskLog {
    /// The log in `dir`, keeping at most `limit` bytes in all.
    pub fn new(dir: &Path, limit: u64) -> Self {
        Self {
            current: dir.join("output.log"),
            older: dir.join("output.log.1"),
            half: (limit / 2).max(1024),
        }
    }

    /// Appends `bytes`, rolling the files over when the current one is full. One blocking
    /// call on tokio's pool, not one per file operation.
    pub async fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let log = self.clone();
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || log.append_now(&bytes))
            .await
            .map_err(std::io::Error::other)?
    }

    fn append_now(&self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let size = std::fs::metadata(&self.current).map_or(0, |m| m.len());
        if size + bytes.len() as u64 > self.half && size > 0 {
            std::fs::rename(&self.current, &self.older)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.current)?;
        // A single write larger than a file keeps only its newest part.
        let start = bytes.len().saturating_sub(self.half as usize);
        file.write_all(&bytes[start..])
    }

    /// Appends one line written by the worker itself (start, exit), marked as such.
    pub async fn note(&self, line: &str) {
        let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let _ = self
            .append(format!("[crawler {stamp}] {line}\n").as_bytes())
            .await;
    }

    /// Copies everything `source` produces into the log until it ends.
    pub async fn copy_from(&self, mut source: impl AsyncRead + Unpin) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match source.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if self.append(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The last `lines` lines, oldest first.
    pub async fn tail(&self, lines: usize) -> String {
        let mut all = tokio::fs::read(&self.older).await.unwrap_or_default();
        all.extend(tokio::fs::read(&self.current).await.unwrap_or_default());
        let text = String::from_utf8_lossy(&all);
        let kept: Vec<&str> = text.lines().rev().take(lines).collect();
        let mut out: String = kept.into_iter().rev().collect::<Vec<_>>().join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        out
    }

    /// Bytes in the older and the current file.
    pub async fn position(&self) -> (u64, u64) {
        let older = tokio::fs::metadata(&self.older)
            .await
            .map_or(0, |m| m.len());
        let current = tokio::fs::metadata(&self.current)
            .await
            .map_or(0, |m| m.len());
        (older, current)
    }

    /// Where a follower of the log is now: the end of the current file.
    pub async fn end(&self) -> Cursor {
        let meta = tokio::fs::metadata(&self.current).await.ok();
        Cursor {
            file: meta.as_ref().map_or(0, std::os::unix::fs::MetadataExt::ino),
            at: meta.map_or(0, |m| m.len()),
        }
    }

    /// What was appended after `from`, and the new cursor. After a roll-over (the current file
    /// is another file now) it reads what the old one got since, then the new one whole.
    pub async fn read_from(&self, from: Cursor) -> (Vec<u8>, Cursor) {
        let now = self.end().await;
        if now.file == from.file {
            let bytes = tokio::fs::read(&self.current).await.unwrap_or_default();
            let start = (from.at as usize).min(bytes.len());
            let at = bytes.len() as u64;
            return (bytes[start..].to_vec(), Cursor { at, ..now });
        }
        let mut out = Vec::new();
        let older = tokio::fs::metadata(&self.older).await.ok();
        if older
            .as_ref()
            .is_some_and(|m| std::os::unix::fs::MetadataExt::ino(m) == from.file)
        {
            let bytes = tokio::fs::read(&self.older).await.unwrap_or_default();
            out.extend_from_slice(&bytes[(from.at as usize).min(bytes.len())..]);
        }
        let bytes = tokio::fs::read(&self.current).await.unwrap_or_default();
        let at = bytes.len() as u64;
        out.extend(bytes);
        (out, Cursor { at, ..now })
    }
}

/// A position in the log: which file (its inode) and how far into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    file: u64,
    at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_is_bounded_and_the_newest_output_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let log = TaskLog::new(dir.path(), 4096);
        for i in 0..2_000 {
            log.append(format!("line {i}\n").as_bytes())
                .await
                .expect("append");
        }
        let (older, current) = log.position().await;
        assert!(older + current <= 4096, "{older} + {current}");
        let tail = log.tail(3).await;
        assert_eq!(tail, "line 1997\nline 1998\nline 1999\n");
        // One write larger than the bound keeps its newest part only.
        log.append(&vec![b'x'; 10_000]).await.expect("append");
        let (older, current) = log.position().await;
        assert!(older + current <= 4096);
    }

    #[tokio::test]
    async fn a_reader_follows_and_survives_a_roll_over() {
        let dir = tempfile::tempdir().expect("dir");
        let log = TaskLog::new(dir.path(), 2048);
        log.append(b"one\n").await.expect("append");
        let (chunk, at) = log.read_from(Cursor::default()).await;
        assert_eq!(chunk, b"one\n");
        log.append(b"two\n").await.expect("append");
        let (chunk, at) = log.read_from(at).await;
        assert_eq!(chunk, b"two\n");
        log.append(&vec![b'y'; 1500]).await.expect("append");
        let (chunk, _) = log.read_from(at).await;
        assert_eq!(
            chunk.len(),
            1024,
            "after a roll-over it reads the new file whole"
        );
    }
}
