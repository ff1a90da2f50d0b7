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

use super::{incidents, otlp, profiles, triggers, ui, Api};
use crate::auth::ApiAuth;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The name of the API token's scheme in the document.
const API_TOKEN: &str = "api_token";

/// The name of the ingest tokens' scheme in the document.
const INGEST_TOKEN: &str = "ingest_token";

/// The document's fixed part: what the API is, its conventions, the token scheme.
#[derive(utoipa::OpenApi)]
#[openapi(info(
    title = "Holmes collector API",
    description = "What the Holmes collector knows about your services: services and their \
instances, metric series, trigger events, profiles (listed, downloaded as gzip pprof or OTLP, \
ranked, as flame graphs) and incidents with their suspect functions; plus the control plane \
(central rules pushed live to agents, their history, pauses of captures, capture requests to \
the fleet with every agent's answer), Alertmanager's webhook, the collector's Prometheus metrics, and the routes \
Pyroscope clients and OTLP exporters send profiles by (their bodies in those protocols). \
Times are RFC 3339 in UTC; `since` and `until` also take a duration before now (`10m`, `2h`). \
Errors are `{\"error\": \"...\"}` with 400 (bad parameter), 401 (API token required and missing \
or wrong), 404 (unknown service, profile, incident or capture request), 429 (a capture \
request too soon after the service's last) or 503 (store unavailable). \
With an API token configured, every `/api/` route and `/metrics` need `Authorization: Bearer \
<token>`; with ingest tokens, the foreign ingest routes need the service's ingest token."
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
        .routes(routes!(profiles::service_flamegraph))
        .routes(routes!(incidents::by_service))
        .routes(routes!(incidents::all))
        .routes(routes!(incidents::detail))
        .routes(routes!(incidents::flamegraph))
        .routes(routes!(otlp::profile))
        .routes(routes!(otlp::incident))
        .routes(routes!(openapi_json))
        .merge(super::control::routes())
        .merge(super::captures::routes())
        .merge(crate::symbolize::upload::routes())
}

/// Routes open to everyone: the health check and the web page (whose script asks the
/// API with the token it was given).
fn open_routes() -> OpenApiRouter<Api> {
    OpenApiRouter::default()
        .routes(routes!(healthz))
        .routes(routes!(ui::home))
        .routes(routes!(ui::service))
        .routes(routes!(ui::incident))
        .routes(routes!(ui::capture))
        .routes(routes!(ui::script))
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

/// Marks every operation of `api` as needing the token of `scheme` when the collector
/// has one configured (and open when it has none).
fn secured_by(api: &mut OpenApi, scheme: &str) {
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
                SecurityRequirement::new(scheme, Vec::<String>::new()),
            ]);
        }
    }
}

/// The OpenAPI document of every route the collector's HTTP server serves: those of
/// [`routes`], Alertmanager's webhook ([`crate::ingest::alertmanager`]) and `/metrics`
/// ([`crate::metrics::http`]) behind the API token, and the foreign clients' ingest
/// routes ([`crate::ingest::http`]: Pyroscope, OTLP/HTTP) behind the ingest tokens, their
/// bodies in those protocols.
pub fn document() -> OpenApi {
    let mut api = api_routes().into_openapi();
    api.merge(crate::ingest::alertmanager::routes().into_openapi());
    api.merge(crate::metrics::http::routes().into_openapi());
    secured_by(&mut api, API_TOKEN);
    let mut foreign = crate::ingest::http::routes().into_openapi();
    secured_by(&mut foreign, INGEST_TOKEN);
    let mut document = <Document as utoipa::OpenApi>::openapi();
    document.merge(open_routes().into_openapi());
    document.merge(api);
    document.merge(foreign);
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
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
    components.add_security_scheme(
        INGEST_TOKEN,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The ingest token of the service the profile is of (`[auth.ingest_tokens]`), \
                     when the collector has ingest tokens",
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
        // What the server merges besides the API: each built from the same routes.
        let mut others = debug_paths(&crate::ingest::http::routes().split_for_parts().0);
        others.extend(debug_paths(
            &crate::ingest::alertmanager::routes().split_for_parts().0,
        ));
        others.extend(debug_paths(
            &crate::metrics::http::routes().split_for_parts().0,
        ));
        for path in [
            "/metrics",
            "/api/v1/alertmanager",
            "/ingest",
            "/push.v1.PusherService/Push",
            crate::ingest::otlp::HTTP_PATH,
        ] {
            assert!(others.contains(path), "{path} in {others:?}");
        }
        let auth = ApiAuth::new(crate::auth::Secret::new("t"));
        for auth in [None, Some(auth)] {
            let (router, _) = routes(auth).split_for_parts();
            let mut served = debug_paths(&router);
            served.extend(others.iter().cloned());
            assert_eq!(served, documented);
        }
        assert!(documented.contains(OPENAPI_PATH), "{documented:?}");
        assert!(documented.contains("/healthz"), "{documented:?}");
    }
}
