//! The soak's traffic: clients that create, PATCH, restart and delete their own resources, and
//! the book of what was acknowledged, to find acknowledged writes lost at the end.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt;
use serde_json::json;

use super::super::harness::get_json;
use crate::tools::procs::ToolError;

/// Clients, each owning its own names, so that each name's writes come one after another.
pub(super) const CLIENTS: usize = 4;
/// Most live resources per client.
pub(super) const LIVE: usize = 50;
/// Between one client's requests.
const PACE: Duration = Duration::from_millis(100);

/// What a client last had acknowledged for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expected {
    /// Created (or changed) and not deleted; the label `v` last set, if any.
    Present(Option<u64>),
    /// Deleted.
    Absent,
    /// A write whose answer never came: either outcome is right.
    Unknown,
}

/// The clients' book of acknowledged writes.
#[derive(Default)]
pub(super) struct Book {
    pub(super) expected: HashMap<String, Expected>,
    pub(super) acknowledged: u64,
    pub(super) unanswered: u64,
    /// Answers that contradict an acknowledged write (a 404 for a name that exists).
    pub(super) contradictions: Vec<String>,
}

/// One client's loop until `until`: creates, PATCHes, restarts and deletes its own names,
/// each through a master picked at random (followers forward writes).
pub(super) async fn client_loop(
    client: reqwest::Client,
    masters: Vec<String>,
    id: usize,
    book: Arc<Mutex<Book>>,
    until: Instant,
) {
    let mut live: Vec<String> = Vec::new();
    let mut next = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(PACE).await;
        let (master, roll) = {
            let mut rng = rand::rng();
            (
                masters[rng.random_range(0..masters.len())].clone(),
                rng.random_range(0..100u32),
            )
        };
        let api = format!("{master}/api/v1/resources");
        let create = live.len() < LIVE / 2 || (live.len() < LIVE && roll < 40);
        if create || live.is_empty() {
            next += 1;
            let name = format!("soak-{id}-{next}");
            let answer = client
                .post(&api)
                .json(&json!({ "name": name }))
                .send()
                .await;
            let outcome = match answer.ok().map(|r| r.status().as_u16()) {
                Some(201) => Some(Expected::Present(None)),
                _ => None,
            };
            record(&book, &name, outcome, false);
            if book_says(&book, &name) == Some(Expected::Present(None)) {
                live.push(name);
            }
            continue;
        }
        let index = rand::rng().random_range(0..live.len());
        let name = live[index].clone();
        let url = format!("{api}/{name}");
        if roll < 65 {
            next += 1;
            let answer = client
                .patch(&url)
                .json(&json!({ "labels": { "v": next.to_string() } }))
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            record(
                &book,
                &name,
                ok_then(answer, Expected::Present(Some(next))),
                answer == Some(404),
            );
        } else if roll < 80 {
            let answer = client
                .post(format!("{url}/restart"))
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            let kept = book_says(&book, &name).unwrap_or(Expected::Unknown);
            record(&book, &name, ok_then(answer, kept), answer == Some(404));
        } else {
            let answer = client
                .delete(&url)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            let gone = matches!(answer, Some(200 | 204));
            record(
                &book,
                &name,
                gone.then_some(Expected::Absent),
                answer == Some(404),
            );
            live.swap_remove(index);
            continue;
        }
        // A name whose last write went unanswered is left alone from now on.
        if book_says(&book, &name) == Some(Expected::Unknown) {
            live.retain(|n| *n != name);
        }
    }
}

/// `then` when the answer was a success, `None` (not acknowledged) otherwise.
fn ok_then(answer: Option<u16>, then: Expected) -> Option<Expected> {
    answer
        .is_some_and(|code| (200..300).contains(&code))
        .then_some(then)
}

fn book_says(book: &Arc<Mutex<Book>>, name: &str) -> Option<Expected> {
    book.lock().ok()?.expected.get(name).cloned()
}

/// Notes the answer to a write of `name`: `Some` when acknowledged, `None` when not (the
/// write may or may not have happened). A 404 for a name acknowledged present is a lost write.
fn record(book: &Arc<Mutex<Book>>, name: &str, outcome: Option<Expected>, not_found: bool) {
    let Ok(mut book) = book.lock() else {
        return;
    };
    let before = book.expected.get(name).cloned();
    if not_found && matches!(before, Some(Expected::Present(_))) {
        book.contradictions
            .push(format!("{name}: 404 after an acknowledged write"));
    }
    match outcome {
        Some(expected) => {
            book.acknowledged += 1;
            book.expected.insert(name.to_owned(), expected);
        }
        None => {
            book.unanswered += 1;
            book.expected.insert(name.to_owned(), Expected::Unknown);
        }
    }
}

/// Every resource a master lists (paged), by name: its label `v` and its worker.
pub(super) async fn listed(
    client: &reqwest::Client,
    master: &str,
) -> Result<BTreeMap<String, (Option<u64>, Option<String>)>, ToolError> {
    let mut out = BTreeMap::new();
    let mut next: Option<String> = None;
    loop {
        let mut url = format!("{master}/api/v1/resources?limit=500");
        if let Some(token) = &next {
            url.push_str(&format!("&continue={token}"));
        }
        let page: serde_json::Value = client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for item in page["items"].as_array().into_iter().flatten() {
            let Some(name) = item["name"].as_str() else {
                continue;
            };
            let v = item["labels"]["v"].as_str().and_then(|v| v.parse().ok());
            let worker = item["assigned_node"]["id"].as_str().map(str::to_owned);
            out.insert(name.to_owned(), (v, worker));
        }
        next = page["continue"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if next.is_none() {
            return Ok(out);
        }
    }
}

/// The node ids of the registered workers.
pub(super) async fn workers(client: &reqwest::Client, master: &str) -> Vec<String> {
    let body = get_json(client, &format!("{master}/api/v1/workers"))
        .await
        .unwrap_or_default();
    body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["id"].as_str().map(str::to_owned))
        .collect()
}
