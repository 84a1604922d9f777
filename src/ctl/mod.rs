//! `crawler ctl`: the API from a terminal, in kubectl's and nomad's habits. It is a client of
//! the REST API and nothing else: it reaches the masters over HTTP (several, tried in turn),
//! prints tables or the API's own JSON and YAML, follows the event stream and task logs across
//! a master's failover, and exits 0 (done, or nothing to change), 1 (error), 2 (usage) or 3
//! (not found). It lives in the same binary as the master and the worker, as nomad's CLI does,
//! so that its version always matches the API it was built with.

mod args;
mod client;
mod follow;
mod schedule;
mod show;
mod verbs;

use std::collections::BTreeSet;

pub use args::{CtlArgs, CtlCommand};
use args::{DescribeKind, Format, GetArgs, Kind};
use client::{Client, CtlError, segment};
use follow::print_flushed;
use serde_json::Value;
use show::{Selector, text};

/// Runs one command; returns the process exit code. Errors print the API's problem detail.
pub async fn run(args: CtlArgs) -> u8 {
    match execute(args).await {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: {error}");
            error.code()
        }
    }
}

async fn execute(args: CtlArgs) -> Result<(), CtlError> {
    let trust = client::Trust {
        ca: args.ca.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
    };
    let client = Client::new(&args.server, args.token, &trust)?;
    match args.command {
        CtlCommand::Get(get_args) => get(&client, &get_args).await,
        CtlCommand::Describe {
            kind: DescribeKind::Resource,
            name,
        } => describe(&client, &name).await,
        CtlCommand::Completion { .. } => Err(CtlError::Usage(
            "completions are printed by `crawler ctl completion <SHELL>`".into(),
        )),
        other => verbs::run(&client, other).await,
    }
}

/// Which objects `get` shows: a label selector (resources' labels, workers' metadata) and a
/// state (resources' task state, workers' state).
struct Filter {
    selector: Option<Selector>,
    state: Option<String>,
    kind: Kind,
}

impl Filter {
    fn keeps(&self, item: &Value) -> bool {
        let labels = match self.kind {
            Kind::Resources => &item["labels"],
            Kind::Workers => &item["metadata"],
        };
        let labelled = serde_json::json!({ "labels": labels });
        let state = match self.kind {
            Kind::Resources => item["status"]["state"].as_str().unwrap_or("unknown"),
            Kind::Workers => item["state"].as_str().unwrap_or_default(),
        };
        self.selector
            .as_ref()
            .is_none_or(|s| s.matches_object(&labelled))
            && self.state.as_deref().is_none_or(|want| want == state)
    }
}

async fn get(client: &Client, args: &GetArgs) -> Result<(), CtlError> {
    let filter = Filter {
        selector: args.selector.as_deref().map(Selector::parse).transpose()?,
        state: args.state.clone(),
        kind: args.kind,
    };
    if let Some(name) = &args.name {
        if args.watch {
            return Err(CtlError::Usage(
                "--watch follows a list: leave out the name, or use --selector".into(),
            ));
        }
        let path = match args.kind {
            Kind::Workers => format!("/api/v1/workers/{}", segment(name)),
            Kind::Resources => format!("/api/v1/resources/{}", segment(name)),
        };
        let item = client.get(&path).await?;
        print_flushed(&show::one(args.kind, &item, args.output)?);
        return Ok(());
    }
    let revision = list(client, args.kind, &filter, args.output).await?;
    if !args.watch {
        return Ok(());
    }
    let keep = |item: &Value| filter.keeps(item);
    follow::watch(
        client,
        follow::Watch {
            kind: args.kind,
            format: args.output,
            keep: &keep,
        },
        revision,
        async || list(client, args.kind, &filter, args.output).await,
    )
    .await
}

/// Lists every object of `kind` that `filter` keeps, page by page, and prints them; returns
/// the revision of the first page (a watch resumes from it).
async fn list(
    client: &Client,
    kind: Kind,
    filter: &Filter,
    format: Format,
) -> Result<i64, CtlError> {
    let mut items = Vec::new();
    let mut revision = None;
    let mut next: Option<String> = None;
    loop {
        let path = match (kind, &next) {
            (Kind::Workers, _) => "/api/v1/workers".to_owned(),
            (Kind::Resources, token) => {
                let mut path = "/api/v1/resources?limit=1000".to_owned();
                if let Some(state) = &filter.state {
                    path.push_str(&format!("&state={}", segment(state)));
                }
                if let Some(token) = token {
                    path.push_str(&format!("&continue={}", segment(token)));
                }
                path
            }
        };
        let (page, at, _) = client.get_versioned(&path).await?;
        revision.get_or_insert(at);
        items.extend(
            page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|item| filter.keeps(item))
                .cloned(),
        );
        next = page["continue"].as_str().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    print_flushed(&show::list(kind, &items, format)?);
    Ok(revision.unwrap_or(0))
}

/// `describe resource NAME`.
async fn describe(client: &Client, name: &str) -> Result<(), CtlError> {
    let resource = client
        .get(&format!("/api/v1/resources/{}", segment(name)))
        .await?;
    let history = client
        .get(&format!("/api/v1/resources/{}/history", segment(name)))
        .await
        .unwrap_or(Value::Null);
    print_flushed(&describe_text(&resource, &history));
    Ok(())
}

/// A resource and its history as `Key: value` lines.
fn describe_text(resource: &Value, history: &Value) -> String {
    let status = &resource["status"];
    let labels: BTreeSet<String> = resource["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let created = text(&resource["creation_time"]);
    let mut out = format!(
        "Name:        {}\nID:          {}\nCreated:     {created} ({} ago)\nWorker:      {} ({})\n\
         Labels:      {}\nStatus:      {}\n  Epoch:     {}\n  Restarts:  {}\n  Exit code: {}\n  \
         Started:   {}\n  Updated:   {}\n  Message:   {}\n  Stale:     {}\nHistory:\n",
        text(&resource["name"]),
        text(&resource["id"]),
        show::age(&created),
        text(&resource["assigned_node"]["id"]),
        text(&resource["assigned_node"]["address"]),
        if labels.is_empty() {
            "-".to_owned()
        } else {
            labels.into_iter().collect::<Vec<_>>().join(",")
        },
        text(&status["state"]),
        text(&status["epoch"]),
        text(&status["restarts"]),
        text(&status["exit_code"]),
        text(&status["started_at"]),
        text(&status["updated_at"]),
        text(&status["message"]),
        text(&status["stale"]),
    );
    let entries = history["items"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        out.push_str("  (none)\n");
    }
    for entry in entries {
        out.push_str(&format!(
            "  {}  {}  {} -> {}\n",
            text(&entry["at"]),
            text(&entry["reason"]),
            text(&entry["from"]),
            text(&entry["to"]),
        ));
    }
    out
}
