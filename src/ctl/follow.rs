//! What `crawler ctl` follows: the event stream (`get --watch`) and a task's output
//! (`logs -f`). A master can die under either; the follower moves to the next one and picks
//! up where it was: the event stream from the last revision it saw (`Last-Event-ID`), the log
//! from the lines it already printed (it asks for the tail again and skips what overlaps).

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::Value;

use super::args::{Format, Kind};
use super::client::{Client, CtlError, checked, segment};
use super::show;

/// Between a broken stream and the next try.
const RETRY: Duration = Duration::from_millis(200);

/// What `get --watch` shows of each change.
pub struct Watch<'a> {
    /// Workers or resources.
    pub kind: Kind,
    /// How to print.
    pub format: Format,
    /// Which objects to show.
    pub keep: &'a dyn Fn(&Value) -> bool,
}

/// Follows the event stream from `revision` until the process is stopped, printing each change
/// of `watch.kind` as a row (`table`, `wide`) or as `{"type", "object"}` (JSON lines, YAML
/// documents). `relist` lists and prints everything again when the stream's history no longer
/// reaches back to the last revision seen, and returns the list's revision.
pub async fn watch(
    client: &Client,
    watch: Watch<'_>,
    mut revision: i64,
    relist: impl AsyncFn() -> Result<i64, CtlError>,
) -> Result<(), CtlError> {
    loop {
        let headers = [("last-event-id", revision.to_string())];
        let response = match client
            .send(Method::GET, "/api/v1/events", None, &headers, true)
            .await
            .map(checked)
        {
            Ok(answer) => answer.await,
            Err(error) => Err(error),
        };
        let response = match response {
            Ok(response) => response,
            // Only what may pass is tried again: a refusal (401, 403) would be refused forever.
            Err(CtlError::Unavailable(_)) => {
                client.rotate();
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            if let Ok(id) = event.id.parse::<i64>() {
                revision = revision.max(id);
            }
            match event.event.as_str() {
                "relist" => revision = relist().await?,
                "added" | "modified" | "deleted" => {
                    let Ok(change) = serde_json::from_str::<Value>(&event.data) else {
                        continue;
                    };
                    show_change(client, &watch, &change).await?;
                }
                // `dropped`: this client fell behind; reconnect from the last revision.
                _ => break,
            }
        }
        client.rotate();
        tokio::time::sleep(RETRY).await;
    }
}

/// Prints one change of the stream, if it is of the watched kind and kept.
async fn show_change(client: &Client, watch: &Watch<'_>, change: &Value) -> Result<(), CtlError> {
    let kind = change["kind"].as_str().unwrap_or_default();
    let name = change["name"].as_str().unwrap_or_default();
    let mut action = change["action"].as_str().unwrap_or_default().to_owned();
    let object = match (watch.kind, kind) {
        (Kind::Workers, "workers") if action == "deleted" => serde_json::json!({ "id": name }),
        (Kind::Workers, "workers") => {
            // The stream carries the registration; the API's view adds load and state.
            let path = format!("/api/v1/workers/{}", segment(name));
            client
                .get(&path)
                .await
                .unwrap_or_else(|_| change["object"].clone())
        }
        (Kind::Resources, "resources" | "statuses") => {
            let revision = change["revision"].as_i64().unwrap_or(0);
            let path = format!(
                "/api/v1/resources/{}?min_revision={revision}",
                segment(name)
            );
            match client.get(&path).await {
                Ok(view) => {
                    if kind == "statuses" {
                        action = "modified".into();
                    }
                    view
                }
                Err(CtlError::NotFound(_)) if kind == "resources" => {
                    action = "deleted".into();
                    serde_json::json!({ "name": name })
                }
                Err(_) => return Ok(()),
            }
        }
        _ => return Ok(()),
    };
    if action != "deleted" && !(watch.keep)(&object) {
        return Ok(());
    }
    let text = match watch.format {
        Format::Table | Format::Wide => {
            let mut cells = show::row(watch.kind, &object, watch.format == Format::Wide);
            if action == "deleted" {
                cells.truncate(1);
                cells.push("deleted".into());
            }
            cells.join("   ") + "\n"
        }
        Format::Json => {
            serde_json::to_string(&serde_json::json!({ "type": action, "object": object }))
                .map_err(|e| CtlError::Failed(e.to_string()))?
                + "\n"
        }
        Format::Yaml => {
            let doc = serde_json::json!({ "type": action, "object": object });
            format!("---\n{}", show::encode(&doc, Format::Yaml)?)
        }
    };
    print_flushed(&text);
    Ok(())
}

/// Prints and flushes, so that a reader of a pipe sees each change at once.
pub fn print_flushed(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Most printed lines kept to find where a resumed log overlaps, and the tail read again.
const KEPT_LINES: usize = 1_000;
/// A resumed log's tail comes at once: what came within this long is where the overlap is
/// looked for.
const HEAD_WAIT: Duration = Duration::from_secs(1);

/// Follows task `name`'s output from its last `tail` lines until the process is stopped or the
/// resource is deleted (exit 3), across masters.
pub async fn logs(client: &Client, name: &str, tail: u16) -> Result<(), CtlError> {
    let mut printed: VecDeque<String> = VecDeque::new();
    let mut first = true;
    loop {
        let ask = if first { usize::from(tail) } else { KEPT_LINES };
        let path = format!(
            "/api/v1/resources/{}/logs?tail={ask}&follow=true",
            segment(name)
        );
        let response = match client.send(Method::GET, &path, None, &[], true).await {
            Ok(response) => checked(response).await,
            Err(error) => Err(error),
        };
        let response = match response {
            Ok(response) => response,
            // Once following, a refusal is a task between workers (409 not-assigned), which
            // has a log again soon.
            Err(error @ (CtlError::Unavailable(_) | CtlError::Failed(_)))
                if !first || matches!(error, CtlError::Unavailable(_)) =>
            {
                client.rotate();
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        let mut body = response.bytes_stream();
        let mut partial = Vec::new();
        // On a resume, the first lines are held until the tail has come, then only those
        // after what was printed are shown.
        let mut head: Option<Vec<String>> = (!first).then(Vec::new);
        let head_until = tokio::time::Instant::now() + HEAD_WAIT;
        first = false;
        loop {
            let next = if head.is_some() {
                match tokio::time::timeout_at(head_until, body.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let lines = head.take().unwrap_or_default();
                        let new = skip_overlap(&printed, &lines).to_vec();
                        emit(&mut printed, &new);
                        continue;
                    }
                }
            } else {
                body.next().await
            };
            let Some(Ok(chunk)) = next else { break };
            partial.extend_from_slice(&chunk);
            let mut lines = Vec::new();
            while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                lines.push(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            match head.as_mut() {
                Some(held) => {
                    held.extend(lines);
                    if held.len() >= ask {
                        let held = head.take().unwrap_or_default();
                        let new = skip_overlap(&printed, &held).to_vec();
                        emit(&mut printed, &new);
                    }
                }
                None => emit(&mut printed, &lines),
            }
        }
        client.rotate();
        tokio::time::sleep(RETRY).await;
    }
}

/// Prints `lines` and remembers the last [`KEPT_LINES`] of them.
fn emit(printed: &mut VecDeque<String>, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
        printed.push_back(line.clone());
        if printed.len() > KEPT_LINES {
            printed.pop_front();
        }
    }
    print_flushed(&text);
}

/// The part of `head` (a log's last lines, read again) after what `printed` already showed:
/// after the last place where `head` holds `printed`'s last line preceded by the lines printed
/// before it (as many as both have). With no such place, the log moved past everything kept,
/// and all of `head` is new.
fn skip_overlap<'a>(printed: &VecDeque<String>, head: &'a [String]) -> &'a [String] {
    let Some(last) = printed.back() else {
        return head;
    };
    for i in (0..head.len()).rev() {
        if &head[i] != last {
            continue;
        }
        let n = (i + 1).min(printed.len());
        if head[i + 1 - n..=i]
            .iter()
            .eq(printed.iter().skip(printed.len() - n))
        {
            return &head[i + 1..];
        }
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn a_resumed_log_skips_what_was_printed() {
        let printed: VecDeque<String> = lines("t1 t2 t3 t4").into();
        // The tail read again overlaps the last two printed lines.
        assert_eq!(
            skip_overlap(&printed, &lines("t3 t4 t5 t6")),
            lines("t5 t6")
        );
        // It holds older lines too, and only the last printed one of the overlap.
        assert_eq!(
            skip_overlap(&printed, &lines("t0 t1 t2 t3 t4 t5")),
            lines("t5")
        );
        assert_eq!(skip_overlap(&printed, &lines("t4 t5")), lines("t5"));
        // A line equal to the last printed one, with other lines before it, is not the overlap.
        assert_eq!(skip_overlap(&printed, &lines("x t4 t5")), lines("x t4 t5"));
        // Nothing new yet.
        assert!(skip_overlap(&printed, &lines("t2 t3 t4")).is_empty());
        // The log moved on past everything printed: all of it is new.
        assert_eq!(skip_overlap(&printed, &lines("t9 t10")), lines("t9 t10"));
        assert_eq!(skip_overlap(&VecDeque::new(), &lines("a")), lines("a"));
    }
}
