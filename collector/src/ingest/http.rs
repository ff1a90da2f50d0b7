//! The HTTP routes profiles from foreign clients arrive by, on the collector's HTTP
//! address (so a client is given one URL): Pyroscope's `/ingest` and `push.v1`
//! ([`super::pyroscope`]) and OTLP/HTTP profiles ([`super::otlp`]). Tokens are the
//! ingest tokens of `[auth]`, per service; bodies are capped at `max_profile_bytes`.

use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use axum::Router;

use super::foreign::ForeignIngest;

/// The foreign ingest routes over `foreign`.
pub fn router(foreign: ForeignIngest) -> Router {
    let limit = usize::try_from(foreign.max_body_bytes()).unwrap_or(usize::MAX);
    Router::new()
        .route("/ingest", post(super::pyroscope::ingest))
        .route("/push.v1.PusherService/Push", post(super::pyroscope::push))
        .route(super::otlp::HTTP_PATH, post(super::otlp::http_export))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(foreign)
}
