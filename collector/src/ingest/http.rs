//! The HTTP routes profiles from foreign clients arrive by, on the collector's HTTP
//! address (so a client is given one URL): Pyroscope's `/ingest` and `push.v1`
//! ([`super::pyroscope`]) and OTLP/HTTP profiles ([`super::otlp`]). Tokens are the
//! ingest tokens of `[auth]`, per service; bodies are capped at `max_profile_bytes`.
//! The routes are registered from their handlers' annotations, so the OpenAPI document
//! lists them too ([`crate::query::routes::document`]), each with the protocol its body
//! is in.

use axum::extract::DefaultBodyLimit;
use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::foreign::ForeignIngest;

/// The foreign ingest routes, described.
pub(crate) fn routes() -> OpenApiRouter<ForeignIngest> {
    OpenApiRouter::default()
        .routes(routes!(super::pyroscope::ingest))
        .routes(routes!(super::pyroscope::push))
        .routes(routes!(super::otlp::http_export))
}

/// The foreign ingest routes over `foreign`.
pub fn router(foreign: ForeignIngest) -> Router {
    let limit = usize::try_from(foreign.max_body_bytes()).unwrap_or(usize::MAX);
    let (router, _) = routes().split_for_parts();
    router
        .layer(DefaultBodyLimit::max(limit))
        .with_state(foreign)
}
