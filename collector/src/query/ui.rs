//! The web page on-call opens: services, incidents by service, and an incident with its
//! suspects, flame graph, metric around it, triggers and profiles. One static page
//! (`ui/index.html`, compiled in) that reads the HTTP API; with an API token, open it
//! once as `/ui?token=...` (kept in the browser's local storage). The page reads its
//! view from the path (`/ui`, `/ui/services/{service}`, `/ui/incidents/{incident_id}`).

use axum::response::Html;

const PAGE: &str = include_str!("ui/index.html");

/// The web page, on its home view: services and the last day's incidents.
#[utoipa::path(
    get,
    path = "/ui",
    operation_id = "page_home",
    tag = "page",
    params(("token" = Option<String>, Query, description = "The API token, kept by the browser for the page's API requests")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub(super) async fn home() -> Html<&'static str> {
    Html(PAGE)
}

/// The web page on one service: its incidents and its CPU.
#[utoipa::path(
    get,
    path = "/ui/services/{service}",
    operation_id = "page_service",
    tag = "page",
    params(("service" = String, Path, description = "Service name")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub(super) async fn service() -> Html<&'static str> {
    Html(PAGE)
}

/// The web page on one incident.
///
/// Its suspects, flame graph, metric around it, triggers and profiles.
#[utoipa::path(
    get,
    path = "/ui/incidents/{incident_id}",
    operation_id = "page_incident",
    tag = "page",
    params(("incident_id" = String, Path, description = "Incident id")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub(super) async fn incident() -> Html<&'static str> {
    Html(PAGE)
}
