//! `GET /metrics`, and the timing of every HTTP request by route.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use holmes_api::ErrorJson;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{metrics, HttpLabels};
use crate::auth::ApiAuth;

/// The content type of the OpenMetrics text format, which Prometheus asks for.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`, behind `auth` when given (Prometheus sends it with
/// `authorization: {credentials: ...}` or `bearer_token_file`).
pub fn router(auth: Option<ApiAuth>) -> Router {
    let (route, _) = routes().split_for_parts();
    match auth {
        Some(auth) => route.layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::require_api_token,
        )),
        None => route,
    }
}

/// The route, registered from its handler's annotation (so the OpenAPI document lists
/// it: [`crate::query::routes::document`]).
pub(crate) fn routes() -> OpenApiRouter {
    OpenApiRouter::default().routes(routes!(prometheus_metrics))
}

/// The collector's own metrics, for Prometheus.
///
/// In the OpenMetrics text format: agents connected, ingest, store writes, Kafka,
/// incidents, alert deliveries, captures and HTTP requests.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "prometheus_metrics",
    tag = "health",
    responses(
        (status = 200, description = "The metrics in the OpenMetrics text format", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        (status = 401, description = "API token required", body = ErrorJson),
    )
)]
async fn prometheus_metrics() -> Response {
    ([(CONTENT_TYPE, OPENMETRICS)], metrics().encode()).into_response()
}

/// `app` with every request timed into `holmes_http_request_duration_seconds`, labelled
/// by its route's template (never the path itself: ids would make a series each).
pub fn timed(app: Router) -> Router {
    app.layer(axum::middleware::from_fn(time_request))
}

async fn time_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics()
        .http_request_seconds
        .get_or_create(&HttpLabels {
            method,
            route,
            code: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}
