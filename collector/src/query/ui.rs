//! The web page on-call opens: services, incidents by service, and an incident with its
//! suspects, flame graph, metric around it, triggers and profiles; a service's instances
//! with the rules version each has applied, its central rules and their history, its
//! capture requests, and a capture request with every instance's answer. One static page
//! (`ui/index.html`, compiled in) that reads the HTTP API; with an API token, open it
//! once as `/ui?token=...`: the collector turns it into an HttpOnly session cookie
//! and redirects to the address without it ([`crate::auth::browser`]). The page reads
//! its view from the path (`/ui`, `/ui/services/{service}`, `/ui/incidents/{incident_id}`,
//! `/ui/captures/{request_id}`) and its script from `/ui.js`.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};

const PAGE: &str = include_str!("ui/index.html");

/// The page's script, served apart so that the content security policy can allow the
/// collector's own scripts only (`script-src 'self'`, no inline script).
const SCRIPT_PATH: &str = "/ui.js";

/// The page without its script, and the script.
fn parts() -> &'static (String, String) {
    static PARTS: OnceLock<(String, String)> = OnceLock::new();
    PARTS.get_or_init(|| {
        let open = "<script>";
        let close = "</script>";
        match (PAGE.find(open), PAGE.rfind(close)) {
            (Some(start), Some(end)) if start < end => (
                format!(
                    "{}<script src=\"{SCRIPT_PATH}\"></script>{}",
                    &PAGE[..start],
                    &PAGE[end + close.len()..]
                ),
                PAGE[start + open.len()..end].to_owned(),
            ),
            // ui/index.html is compiled in and has its script; the test below holds it.
            _ => (PAGE.to_owned(), String::new()),
        }
    })
}

fn page() -> Html<&'static str> {
    Html(parts().0.as_str())
}

/// The page's script.
#[utoipa::path(
    get,
    path = "/ui.js",
    operation_id = "page_script",
    tag = "page",
    responses((status = 200, description = "The page's script", content_type = "text/javascript", body = String))
)]
pub(super) async fn script() -> Response {
    (
        [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
        parts().1.as_str(),
    )
        .into_response()
}

/// The web page, on its home view: services and the last day's incidents.
#[utoipa::path(
    get,
    path = "/ui",
    operation_id = "page_home",
    tag = "page",
    params(("token" = Option<String>, Query, description = "The API token, opened once: answered with 303 to the address without it and an HttpOnly session cookie that the page's requests carry")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub(super) async fn home() -> Html<&'static str> {
    page()
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
    page()
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
    page()
}

/// The web page on one capture request.
///
/// Every instance asked, what it answered, and the profiles the request brought.
#[utoipa::path(
    get,
    path = "/ui/captures/{request_id}",
    operation_id = "page_capture",
    tag = "page",
    params(("request_id" = String, Path, description = "Capture request id")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub(super) async fn capture() -> Html<&'static str> {
    page()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_loads_its_script_from_the_collector_and_has_none_inline() {
        let (html, js) = super::parts();
        assert!(html.contains("<script src=\"/ui.js\"></script>"), "{html}");
        assert_eq!(html.matches("<script").count(), 1, "{html}");
        assert!(js.contains("async function api("), "{js}");
        assert!(!js.contains("</script>"));
    }
}
