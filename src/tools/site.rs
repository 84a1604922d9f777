//! A small local web site for `crawler dev` and the tests, so that the shipped example runner
//! (`scripts/example_crawler.py`) has something to crawl without the internet: a front page and
//! [`PAGES`] linked pages about made-up topics, each served after a delay, like a real site's.
//!
//! With an access log, every request is one line, `<unix ms> <path> <user agent>`, written
//! before the answer: the tests count pages fetched twice, and which run fetched each, from the
//! site's own record, not the crawler's.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{Html, Response};
use axum::routing::get;
use tokio::net::TcpListener;

/// Pages besides the front page.
pub const PAGES: u32 = 500;
/// Pages the front page links to.
const FRONT_LINKS: u32 = 10;

/// How the site behaves.
#[derive(Debug, Clone, Default)]
pub struct SiteOptions {
    /// Time before each answer.
    pub delay: Duration,
    /// Where every request is recorded, if anywhere.
    pub access_log: Option<PathBuf>,
}

fn page(n: u32) -> String {
    let next = n % PAGES + 1;
    let skip = (n * 7) % PAGES + 1;
    format!(
        "<!doctype html><title>Page {n}</title><h1>Page {n}</h1>\
         <p>Notes on topic {n}: nothing here is real, and all of it is local.</p>\
         <a href=\"/page/{next}\">page {next}</a> <a href=\"/page/{skip}\">page {skip}</a> \
         <a href=\"/\">home</a>"
    )
}

fn front() -> String {
    let links: String = (1..=FRONT_LINKS)
        .map(|n| format!("<li><a href=\"/page/{n}\">page {n}</a></li>"))
        .collect();
    format!("<!doctype html><title>Demo site</title><h1>Demo site</h1><ul>{links}</ul>")
}

#[derive(Clone)]
struct Site {
    delay: Duration,
    log: Option<Arc<Mutex<std::fs::File>>>,
}

async fn record(State(site): State<Site>, req: Request, next: Next) -> Response {
    if let Some(log) = &site.log {
        let agent = req
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .replace(['\n', '\r'], " ");
        let line = format!(
            "{} {} {agent}\n",
            crate::model::status::now_ms(),
            req.uri().path()
        );
        let mut file = log.lock().unwrap_or_else(|p| p.into_inner());
        let _ = file.write_all(line.as_bytes());
    }
    tokio::time::sleep(site.delay).await;
    next.run(req).await
}

/// The site's routes.
pub fn router(options: &SiteOptions) -> std::io::Result<Router> {
    let log = match &options.access_log {
        Some(path) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ))),
        None => None,
    };
    let site = Site {
        delay: options.delay,
        log,
    };
    Ok(Router::new()
        .route("/", get(|| async { Html(front()) }))
        .route(
            "/page/{n}",
            get(|Path(n): Path<u32>| async move {
                if (1..=PAGES).contains(&n) {
                    Ok(Html(page(n)))
                } else {
                    Err(axum::http::StatusCode::NOT_FOUND)
                }
            }),
        )
        .layer(from_fn_with_state(site, record)))
}

/// Serves the site on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, options: SiteOptions) -> std::io::Result<()> {
    axum::serve(listener, router(&options)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(html: &str) -> Vec<u32> {
        html.split("href=\"/page/")
            .skip(1)
            .map(|link| {
                link.split('"')
                    .next()
                    .and_then(|t| t.parse().ok())
                    .expect("a page number")
            })
            .collect()
    }

    #[test]
    fn every_page_exists_and_is_reached_from_the_front_page() {
        let mut seen = std::collections::BTreeSet::new();
        let mut queue: Vec<u32> = links(&front());
        while let Some(n) = queue.pop() {
            assert!((1..=PAGES).contains(&n));
            if seen.insert(n) {
                queue.extend(links(&page(n)));
            }
        }
        assert_eq!(seen.len(), PAGES as usize);
    }
}
