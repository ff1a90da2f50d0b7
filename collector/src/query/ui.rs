//! The web page on-call opens: services, incidents by service, and an incident with its
//! suspects, flame graph, metric around it, triggers and profiles; a service's instances
//! with the rules version each has applied, its central rules and their history, its
//! capture requests, and a capture request with every instance's answer. One static page
//! (`ui/index.html`, compiled in) that reads the HTTP API; with an API token, open it
//! once as `/ui?token=...` (kept in the browser's local storage).

use axum::response::Html;
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("ui/index.html");

/// `GET /ui` and every `GET /ui/...` path: the page, which routes on its own.
pub fn router() -> Router {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/{*path}", get(page))
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}
