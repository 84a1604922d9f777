//! The commands that change something (and `cluster`, `preview`, `logs`), each one request or
//! two. Idempotent ones read first and exit 0 without writing when nothing would change.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::args::{CtlCommand, Format};
use super::client::{Client, CtlError, checked, segment};
use super::follow::{self, print_flushed};
use super::show::{self, text};

/// Runs a command other than `get`, `describe` and `completion`.
pub async fn run(client: &Client, command: CtlCommand) -> Result<(), CtlError> {
    match command {
        CtlCommand::Create {
            name,
            labels,
            schedule,
        } => {
            let mut body = json!({ "name": name });
            let mut set = BTreeMap::new();
            for (key, value) in label_changes(&labels)? {
                let value = value.ok_or_else(|| {
                    CtlError::Usage(format!("{key}-: a new resource has no label to remove"))
                })?;
                set.insert(key, value);
            }
            let labels = set;
            if !labels.is_empty() {
                body["labels"] = json!(labels);
            }
            if let Some(schedule) = schedule.body()? {
                body["schedule"] = schedule;
            }
            let created = client
                .json(Method::POST, "/api/v1/resources", Some(&body))
                .await?;
            say(&format!("resource/{} created", text(&created["name"])));
        }
        CtlCommand::Runs { name, output } => {
            print_flushed(&super::schedule::runs(client, &name, output).await?);
        }
        CtlCommand::Suspend { name } => {
            say(&super::schedule::set_suspended(client, &name, true).await?);
        }
        CtlCommand::Resume { name } => {
            say(&super::schedule::set_suspended(client, &name, false).await?);
        }
        CtlCommand::Delete {
            name,
            ignore_not_found,
        } => {
            let path = format!("/api/v1/resources/{}", segment(&name));
            let response = client.send(Method::DELETE, &path, None, &[], false).await?;
            match checked(response).await {
                Ok(_) => say(&format!("resource/{name} deleted")),
                Err(CtlError::NotFound(_)) if ignore_not_found => {
                    say(&format!("resource/{name} not found: nothing to delete"));
                }
                Err(error) => return Err(error),
            }
        }
        CtlCommand::Label { name, changes } => label(client, &name, &changes).await?,
        CtlCommand::Restart { name } => {
            let path = format!("/api/v1/resources/{}/restart", segment(&name));
            client.json(Method::POST, &path, None).await?;
            say(&format!("resource/{name} restarted"));
        }
        CtlCommand::Checkpoint { name, raw, clear } => {
            checkpoint(client, &name, raw, clear).await?
        }
        CtlCommand::Logs { name, follow, tail } => {
            if follow {
                return follow::logs(client, &name, tail).await;
            }
            let path = format!("/api/v1/resources/{}/logs?tail={tail}", segment(&name));
            let response =
                checked(client.send(Method::GET, &path, None, &[], false).await?).await?;
            let body = response
                .text()
                .await
                .map_err(|e| CtlError::Failed(format!("reading the log: {e}")))?;
            print_flushed(&body);
        }
        CtlCommand::Cordon { node } => control(client, &node, "cordon").await?,
        CtlCommand::Uncordon { node } => control(client, &node, "uncordon").await?,
        CtlCommand::Drain {
            node,
            deadline,
            wait,
        } => {
            let path = format!("/api/v1/workers/{}/drain", segment(&node));
            let body = deadline.map(|d| json!({ "deadline": d }));
            let answer = client.json(Method::POST, &path, body.as_ref()).await?;
            let left = answer["drain"]["remaining"].as_u64().unwrap_or(0);
            say(&format!("worker/{node} draining: {left} tasks to move"));
            if wait {
                wait_drained(client, &node).await?;
            }
        }
        CtlCommand::Preview {
            drain,
            remove,
            output,
        } => {
            let body = json!({ "drain": drain, "remove": remove });
            let plan = client
                .json(Method::POST, "/api/v1/placement/preview", Some(&body))
                .await?;
            print_flushed(&preview_text(&plan, output)?);
        }
        CtlCommand::Thaw => {
            let cluster = client.get("/api/v1/cluster").await?;
            if cluster["scheduling"]["frozen"] != true {
                say("cluster unchanged: no storm freeze to lift");
            } else {
                client
                    .json(Method::POST, "/api/v1/cluster/thaw", None)
                    .await?;
                say("cluster thawed: tasks of departed workers move again");
            }
        }
        CtlCommand::Cluster { output } => {
            let cluster = client.get("/api/v1/cluster").await?;
            print_flushed(&cluster_text(&cluster, output)?);
        }
        CtlCommand::Get(_) | CtlCommand::Describe { .. } | CtlCommand::Completion { .. } => {
            return Err(CtlError::Usage("not a command of this part".into()));
        }
    }
    Ok(())
}

fn say(line: &str) {
    print_flushed(&format!("{line}\n"));
}

/// The label changes of `key=value` and `key-` arguments: a value to set, or `None` to remove.
fn label_changes(changes: &[String]) -> Result<BTreeMap<String, Option<String>>, CtlError> {
    let mut out = BTreeMap::new();
    for change in changes {
        let (key, value) = if let Some((key, value)) = change.split_once('=') {
            (key, Some(value.to_owned()))
        } else if let Some(key) = change.strip_suffix('-') {
            (key, None)
        } else {
            return Err(CtlError::Usage(format!(
                "{change:?}: expected key=value to set a label or key- to remove one"
            )));
        };
        if key.is_empty() {
            return Err(CtlError::Usage(format!("{change:?}: the key is empty")));
        }
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

/// `label NAME k=v k2-`: a merge patch of the labels that would change, guarded by the version
/// read (`If-Match`), and nothing when none would.
async fn label(client: &Client, name: &str, changes: &[String]) -> Result<(), CtlError> {
    let changes = label_changes(changes)?;
    let path = format!("/api/v1/resources/{}", segment(name));
    let (resource, _, etag) = client.get_versioned(&path).await?;
    let current = &resource["labels"];
    let patch: serde_json::Map<String, Value> = changes
        .into_iter()
        .filter(|(key, value)| current.get(key).and_then(Value::as_str) != value.as_deref())
        .map(|(key, value)| (key, value.map_or(Value::Null, Value::String)))
        .collect();
    if patch.is_empty() {
        say(&format!("resource/{name} unchanged"));
        return Ok(());
    }
    let body = json!({ "labels": patch });
    let response = client
        .send(
            Method::PATCH,
            &path,
            Some(&body),
            &[("if-match", etag)],
            false,
        )
        .await?;
    checked(response).await?;
    say(&format!("resource/{name} labeled"));
    Ok(())
}

/// `cordon`/`uncordon`: nothing is written when the worker is already so.
async fn control(client: &Client, node: &str, verb: &str) -> Result<(), CtlError> {
    let worker = format!("/api/v1/workers/{}", segment(node));
    let state = match client.get(&worker).await {
        Ok(view) => view["state"].as_str().unwrap_or_default().to_owned(),
        // An uncordon may lift the cordon of a worker that has left.
        Err(CtlError::NotFound(_)) if verb == "uncordon" => String::new(),
        Err(error) => return Err(error),
    };
    let already = match verb {
        "cordon" => state != "ready" && !state.is_empty(),
        _ => state == "ready",
    };
    if already {
        say(&format!("worker/{node} unchanged: already {state}"));
        return Ok(());
    }
    client
        .json(Method::POST, &format!("{worker}/{verb}"), None)
        .await?;
    say(&format!("worker/{node} {verb}ed"));
    Ok(())
}

/// Shows a drain's progress until the worker holds no task: a progress bar on a terminal, a
/// line per change otherwise.
async fn wait_drained(client: &Client, node: &str) -> Result<(), CtlError> {
    let path = format!("/api/v1/workers/{}", segment(node));
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut last = None;
    loop {
        let load = match client.get(&path).await {
            Ok(view) => view["load"].as_u64().unwrap_or(0),
            Err(CtlError::NotFound(_)) => {
                say(&format!("worker/{node} left: its tasks move as it is gone"));
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        if std::io::stderr().is_terminal() {
            let bar = bar.get_or_insert_with(|| {
                let bar = indicatif::ProgressBar::new(load);
                bar.set_message("tasks moved");
                bar
            });
            bar.set_position(bar.length().unwrap_or(load).saturating_sub(load));
        } else if last != Some(load) {
            say(&format!("worker/{node}: {load} tasks left"));
        }
        last = Some(load);
        if load == 0 {
            if let Some(bar) = bar {
                bar.finish();
            }
            say(&format!("worker/{node} drained"));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A preview's moves as a table and a summary, or the answer as JSON or YAML.
fn preview_text(plan: &Value, format: Format) -> Result<String, CtlError> {
    if matches!(format, Format::Json | Format::Yaml) {
        return show::encode(plan, format);
    }
    let rows = plan["moves"].as_array().into_iter().flatten().map(|m| {
        vec![
            text(&m["name"]),
            text(&m["from"]),
            text(&m["to"]),
            text(&m["reason"]),
        ]
    });
    let mut out = show::aligned(&["NAME", "FROM", "TO", "REASON"], rows);
    out.push_str(&format!(
        "{} moves, {} unplaced\n",
        text(&plan["total"]),
        text(&plan["unplaced"])
    ));
    Ok(out)
}

/// The masters (the leader marked) and the scheduling state, or the answer as JSON or YAML.
fn cluster_text(cluster: &Value, format: Format) -> Result<String, CtlError> {
    if matches!(format, Format::Json | Format::Yaml) {
        return show::encode(cluster, format);
    }
    let leader = cluster["leader"]["id"].as_u64();
    let rows = cluster["masters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let role = if m["id"].as_u64() == leader {
                "leader"
            } else {
                "follower"
            };
            vec![text(&m["id"]), text(&m["url"]), role.to_owned()]
        });
    let mut out = show::aligned(&["MASTER", "URL", "ROLE"], rows);
    let s = &cluster["scheduling"];
    out.push_str(&format!(
        "frozen: {}  cordoned: {}  departed: {}\n",
        text(&s["frozen"]),
        text(&s["cordoned"]),
        s["departed"].as_array().map_or(0, Vec::len)
    ));
    Ok(out)
}

/// `checkpoint NAME [--raw | --clear]`.
async fn checkpoint(client: &Client, name: &str, raw: bool, clear: bool) -> Result<(), CtlError> {
    use base64::Engine;
    use std::io::Write;
    let path = format!("/api/v1/resources/{}/checkpoint", segment(name));
    if clear {
        checked(client.send(Method::DELETE, &path, None, &[], false).await?).await?;
        say(&format!("checkpoint of resource/{name} cleared"));
        return Ok(());
    }
    let stored = client.json(Method::GET, &path, None).await?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(text(&stored["data"]))
        .map_err(|e| CtlError::Failed(format!("the master sent bytes that are not base64: {e}")))?;
    if raw {
        let mut out = std::io::stdout().lock();
        out.write_all(&data)
            .and_then(|()| out.flush())
            .map_err(|e| CtlError::Failed(format!("cannot write the bytes: {e}")))?;
        return Ok(());
    }
    print_flushed(&format!(
        "Name:        {name}\nWorker:      {}\nEpoch:       {}\nWritten at:  {}\nSize:        {} bytes\nRevision:    {}\n",
        text(&stored["worker"]),
        stored["epoch"],
        text(&stored["written_at"]),
        data.len(),
        stored["revision"],
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_arguments_set_or_remove() {
        let changes =
            label_changes(&["team=a".into(), "old-".into(), "empty=".into()]).expect("parses");
        assert_eq!(changes["team"].as_deref(), Some("a"));
        assert_eq!(changes["old"], None);
        assert_eq!(changes["empty"].as_deref(), Some(""));
        for bad in ["novalue", "=x", "-"] {
            assert!(
                matches!(label_changes(&[bad.into()]), Err(CtlError::Usage(_))),
                "{bad}"
            );
        }
    }
}
