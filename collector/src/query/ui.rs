//! The web page on-call opens: services, incidents by service, and an incident with its
//! suspects, flame graph, metric around it, triggers and profiles. One static page
//! (`ui/index.html`, compiled in) that reads the HTTP API; with an API token, open it
//! once as `/ui?token=...`: the collector turns it into an HttpOnly session cookie
//! and redirects to the address without it ([`crate::auth::browser`]).

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("ui/index.html");

/// The page's script, served apart at `/ui.js` so that the content security policy can
/// allow the collector's own scripts only (`script-src 'self'`, no inline script).
const SCRIPT_PATH: &str = "/ui.js";

/// `GET /ui` and every `GET /ui/...` path: the page, which routes on its own; `GET
/// /ui.js`: its script.
pub fn router() -> Router {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/{*path}", get(page))
        .route(SCRIPT_PATH, get(script))
}

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

async fn page() -> Html<&'static str> {
    Html(parts().0.as_str())
}

async fn script() -> Response {
    (
        [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
        parts().1.as_str(),
    )
        .into_response()
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
