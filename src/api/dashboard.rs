//! The live dashboard at `/`: one static page (plain HTML, CSS and JS) embedded in the binary,
//! so it works offline and needs no CDN. It reads the API and follows `/api/v1/events`.

use axum::http::header;
use axum::response::IntoResponse;

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// Serves the dashboard.
#[utoipa::path(get, path = "/", tag = "health", operation_id = "dashboard",
    responses((status = 200, description = "The live dashboard (HTML)", content_type = "text/html", body = String)))]
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
