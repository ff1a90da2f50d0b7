//! Every route the HTTP server serves, registered once, from its handler's
//! `#[utoipa::path]` annotation (`utoipa_axum::routes!`): the router and the OpenAPI
//! document served at `GET /api/v1/openapi.json` are two halves of the same value, so a
//! route cannot be served without being described, nor described without being served.
//! (Registering a route any other way, e.g. `Router::route`, is refused by clippy: see
//! `disallowed-methods` in the workspace's `clippy.toml`.)

use std::sync::OnceLock;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use holmes_api::ErrorJson;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{incidents, profiles, triggers, ui, Api};
use crate::auth::ApiAuth;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The name of the bearer-token scheme in the document.
const API_TOKEN: &str = "api_token";

/// The document's fixed part: what the API is, its conventions, the token scheme.
#[derive(utoipa::OpenApi)]
#[openapi(info(
    title = "Holmes collector API",
    description = "What the Holmes collector knows about your services: services and their \
instances, metric series, trigger events, profiles (listed, downloaded as gzip pprof, ranked, \
as flame graphs) and incidents with their suspect functions; plus asking agents to capture now. \
Times are RFC 3339 in UTC; `since` and `until` also take a duration before now (`10m`, `2h`). \
Errors are `{\"error\": \"...\"}` with 400 (bad parameter), 401 (API token required and missing \
or wrong), 404 (unknown service, profile or incident) or 503 (store unavailable). \
With an API token configured, every `/api/` route needs `Authorization: Bearer <token>`."
))]
struct Document;

/// The `/api/` routes: behind the API token when one is configured.
fn api_routes() -> OpenApiRouter<Api> {
    OpenApiRouter::default()
        .routes(routes!(super::services))
        .routes(routes!(super::instances))
        .routes(routes!(super::metrics))
        .routes(routes!(triggers::triggers))
        .routes(routes!(profiles::profiles))
        .routes(routes!(profiles::download))
        .routes(routes!(profiles::top))
        .routes(routes!(profiles::flamegraph))
        .routes(routes!(incidents::by_service))
        .routes(routes!(incidents::all))
        .routes(routes!(incidents::detail))
        .routes(routes!(incidents::flamegraph))
        .routes(routes!(super::capture))
        .routes(routes!(openapi_json))
}

/// Routes open to everyone: the health check and the web page (whose script asks the
/// API with the token it was given).
fn open_routes() -> OpenApiRouter<Api> {
    OpenApiRouter::default()
        .routes(routes!(healthz))
        .routes(routes!(ui::home))
        .routes(routes!(ui::service))
        .routes(routes!(ui::incident))
}

/// Every route, the `/api/` ones behind `auth` when given; anything else is a 404 that
/// says where the routes are described.
pub(super) fn routes(auth: Option<ApiAuth>) -> OpenApiRouter<Api> {
    let api = match auth {
        Some(auth) => api_routes().layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::require_api_token,
        )),
        None => api_routes(),
    };
    open_routes().merge(api).fallback(no_route)
}

/// The OpenAPI document of every route [`routes`] serves.
pub fn document() -> OpenApi {
    let mut api = api_routes().into_openapi();
    // Without a configured token the API is open; with one, every /api/ route needs it.
    for item in api.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            operation.security = Some(vec![
                SecurityRequirement::default(),
                SecurityRequirement::new(API_TOKEN, Vec::<String>::new()),
            ]);
        }
    }
    let mut document = <Document as utoipa::OpenApi>::openapi();
    document.merge(open_routes().into_openapi());
    document.merge(api);
    document
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            API_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The collector's API token (`[auth] api_token`), when it has one",
                    ))
                    .build(),
            ),
        );
    document
}

/// The document as JSON, made once.
fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the document: {e}\"}}"))
    })
}

/// This document.
///
/// Every route of the collector's HTTP server, with its parameters and answers.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi",
    tag = "api",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object),
        (status = 401, description = "API token required", body = ErrorJson),
    )
)]
async fn openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
        .into_response()
}

/// Health check: `ok` while the server runs.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String))
)]
async fn healthz() -> &'static str {
    "ok"
}

/// What a request for a route that does not exist gets.
async fn no_route(method: Method, uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(ErrorJson {
            error: format!(
                "no route {method} {}; every route is listed at {OPENAPI_PATH}",
                uri.path()
            ),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The paths `router` routes: axum has no route listing, but its Debug output shows
    /// the path of every route (`RouteId(3): "/healthz"`), those of its `path_router`
    /// before those of its `fallback_router`.
    fn debug_paths<S>(router: &axum::Router<S>) -> BTreeSet<String> {
        let text = format!("{router:?}");
        let routes = text
            .split_once("path_router:")
            .and_then(|(_, rest)| rest.split_once("fallback_router:"))
            .map(|(routes, _)| routes)
            .unwrap_or_else(|| panic!("axum's Debug output changed: {text}"));
        let mut paths = BTreeSet::new();
        for part in routes.split("RouteId(").skip(1) {
            let rest = part.trim_start_matches(|c: char| c.is_ascii_digit());
            if let Some((path, _)) = rest
                .strip_prefix("): \"")
                .and_then(|rest| rest.split_once('"'))
            {
                paths.insert(path.to_owned());
            }
        }
        paths
    }

    #[test]
    fn every_route_served_is_in_the_document_and_back() {
        let document = document();
        let documented: BTreeSet<String> = document.paths.paths.keys().cloned().collect();
        let auth = ApiAuth::new(crate::auth::Secret::new("t"));
        for auth in [None, Some(auth)] {
            let (router, _) = routes(auth).split_for_parts();
            assert_eq!(debug_paths(&router), documented);
        }
        assert!(documented.contains(OPENAPI_PATH), "{documented:?}");
        assert!(documented.contains("/healthz"), "{documented:?}");
    }
}
