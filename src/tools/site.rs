//! A small local web site for `crawler dev`, so that the shipped example runner
//! (`scripts/example_crawler.py`) has something to crawl without the internet: a front page and
//! a dozen linked pages about made-up topics.

use axum::Router;
use axum::extract::Path;
use axum::response::Html;
use axum::routing::get;
use tokio::net::TcpListener;

/// Pages besides the front page.
const PAGES: u32 = 12;

fn page(n: u32) -> String {
    let next = n % PAGES + 1;
    let skip = (n + 4) % PAGES + 1;
    format!(
        "<!doctype html><title>Page {n}</title><h1>Page {n}</h1>\
         <p>Notes on topic {n}: nothing here is real, and all of it is local.</p>\
         <a href=\"/page/{next}\">page {next}</a> <a href=\"/page/{skip}\">page {skip}</a> \
         <a href=\"/\">home</a>"
    )
}

fn front() -> String {
    let links: String = (1..=PAGES)
        .map(|n| format!("<li><a href=\"/page/{n}\">page {n}</a></li>"))
        .collect();
    format!("<!doctype html><title>Demo site</title><h1>Demo site</h1><ul>{links}</ul>")
}

/// The site's routes.
pub fn router() -> Router {
    Router::new()
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
}

/// Serves the site on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    let _ = axum::serve(listener, router()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_links_to_pages_that_exist() {
        for n in 1..=PAGES {
            let html = page(n);
            for link in html.split("href=\"/page/").skip(1) {
                let target: u32 = link
                    .split('"')
                    .next()
                    .and_then(|t| t.parse().ok())
                    .expect("a page number");
                assert!((1..=PAGES).contains(&target));
            }
        }
        assert_eq!(front().matches("href=").count(), PAGES as usize);
    }
}
