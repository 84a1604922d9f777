//! The one line a task may leave about its run (e.g. "412 pages, 3 errors"), which its status
//! and the run history show.

/// The file in a task's working directory where its runner may leave one line about its run
/// (e.g. "412 pages, 3 errors"); its path is `CRAWLER_SUMMARY_FILE`.
pub const SUMMARY_FILE: &str = "summary";
/// Longest summary kept, in characters.
const SUMMARY_CHARS: usize = 200;

/// The first line of a summary file, without control characters, at most
/// [`SUMMARY_CHARS`]; `None` when there is none.
pub async fn read_summary(path: &std::path::Path) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let file = tokio::fs::File::open(path).await.ok()?;
    file.take(4096).read_to_end(&mut head).await.ok()?;
    let text = String::from_utf8_lossy(&head);
    let line: String = text
        .lines()
        .next()?
        .chars()
        .filter(|c| !c.is_control())
        .take(SUMMARY_CHARS)
        .collect();
    let line = line.trim();
    (!line.is_empty()).then(|| line.to_owned())
}
