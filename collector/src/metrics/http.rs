//! `GET /metrics`, and the timing of every HTTP request by route.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{metrics, HttpLabels};
use crate::auth::ApiAuth;

/// The content type of the OpenMetrics text format, which Prometheus asks for.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`, behind `auth` when given (Prometheus sends it with
/// `authorization: {credentials: ...}` or `bearer_token_file`).
pub fn router(auth: Option<ApiAuth>) -> Router {
    let route = Router::new().route(
        "/metrics",
        get(|| async { ([(CONTENT_TYPE, OPENMETRICS)], metrics().encode()).into_response() }),
    );
    match auth {
        Some(auth) => route.layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::require_api_token,
        )),
        None => route,
    }
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
