//! Pyroscope-compatible ingest on the collector's HTTP address, so a service that runs
//! a Pyroscope client is pointed at a Holmes collector unchanged:
//!
//! - `POST /push.v1.PusherService/Push` (Connect, `application/proto`, optionally
//!   `content-encoding: gzip`): what pyroscope-rs 2.x, pyroscope-io 1.x and Grafana's
//!   other current clients send ([`push`]).
//! - `POST /ingest?name=app.cpu{k=v}&from=..&until=..&format=pprof|folded|lines&sampleRate=..&spyName=..`:
//!   the older form, with the profile in the body ([`form`]).
//!
//! The service is the series' `service_name` (push) or the name's application
//! (`/ingest`); the profile type (`__name__`, or the name's suffix) picks the kind:
//! CPU, heap (`memory`, `alloc_*`, `inuse_*`) or tasks (goroutines). Other types (mutex,
//! block, wall clock) are acknowledged and not stored (counted in
//! `holmes_profiles_refused_total{reason="unsupported_kind"}`). Every profile goes
//! through [`ForeignIngest`] as a baseline.

pub mod form;
pub mod push;

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;

use super::foreign::{
    gunzip_within, http_token, instance_of, ForeignError, ForeignIngest, ForeignProfile, PeerAddr,
};
use crate::metrics::{metrics, Source};

/// The client's address, when the server records it.
pub(crate) fn peer(extensions: &Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0 .0.ip())
}

/// The body with its `content-encoding: gzip` undone.
pub(crate) fn decoded_body(
    foreign: &ForeignIngest,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Vec<u8>, ForeignError> {
    metrics().bytes_in(Source::Pyroscope, body.len());
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(body.to_vec()),
        "gzip" | "x-gzip" => {
            if !body.starts_with(&[0x1f, 0x8b]) {
                return Err(ForeignError::BadRequest(
                    "content-encoding gzip, but the body is not gzip".to_owned(),
                ));
            }
            gunzip_within(body, foreign.max_decoded_bytes())
        }
        other => Err(ForeignError::UnsupportedMedia(format!(
            "content-encoding {other:?} is not supported; use gzip or none"
        ))),
    }
}

/// A Connect protocol error answer: `{"code": "...", "message": "..."}`.
fn connect_error(err: &ForeignError) -> Response {
    let code = match err {
        ForeignError::BadRequest(_) | ForeignError::UnsupportedMedia(_) => "invalid_argument",
        ForeignError::Unauthenticated(_) => "unauthenticated",
        ForeignError::PermissionDenied(_) => "permission_denied",
        ForeignError::TooLarge(_) => "resource_exhausted",
        ForeignError::Unavailable(_) => "unavailable",
    };
    tracing::warn!(code, error = %err, "pyroscope push refused");
    (
        err.http_status(),
        axum::Json(serde_json::json!({ "code": code, "message": err.to_string() })),
    )
        .into_response()
}

/// Pyroscope clients' push (Connect).
///
/// Grafana Pyroscope's `push.v1.PusherService/Push` over Connect (`application/proto`,
/// gzip or not), as pyroscope-rs 2.x, pyroscope-io 1.x, pyroscope-go and the Java agent
/// send it. The series' `service_name` is the service, `__name__` the kind. With ingest
/// tokens configured: `Authorization: Bearer <token>` (or basic auth, the token as
/// password).
#[utoipa::path(
    post,
    path = "/push.v1.PusherService/Push",
    operation_id = "pyroscope_push",
    tag = "ingest",
    request_body(content = Vec<u8>, description = "A `push.v1.PushRequest` (Pyroscope's protocol)", content_type = "application/proto"),
    responses(
        (status = 200, description = "Stored (or a kind Holmes does not store, skipped)", content_type = "application/proto", body = Vec<u8>),
        (status = 400, description = "Not a push request, or a profile that does not decode (a Connect error: `{code, message}`)", body = Object),
        (status = 401, description = "Ingest token required", body = Object),
        (status = 413, description = "Larger than `max_profile_bytes`", body = Object),
        (status = 503, description = "Store or pipeline unavailable", body = Object),
    )
)]
pub(crate) async fn push(
    State(foreign): State<ForeignIngest>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match push_request(&foreign, &extensions, &headers, &body).await {
        Ok(()) => (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/proto")],
            Vec::<u8>::new(),
        )
            .into_response(),
        Err(err) => {
            metrics().profile_refused(Source::Pyroscope, err.reason());
            connect_error(&err)
        }
    }
}

async fn push_request(
    foreign: &ForeignIngest,
    extensions: &Extensions,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(), ForeignError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !matches!(
        media,
        "application/proto" | "application/x-protobuf" | "application/protobuf"
    ) {
        return Err(ForeignError::UnsupportedMedia(format!(
            "content-type {content_type:?}: this endpoint reads application/proto (Connect's binary protobuf)"
        )));
    }
    let token = http_token(headers);
    if foreign.requires_token() && token.is_none() {
        foreign.authorize("-", None)?;
    }
    let raw = decoded_body(foreign, headers, body)?;
    let request = push::PushRequest::decode(raw.as_slice())
        .map_err(|e| ForeignError::BadRequest(format!("not a push.v1.PushRequest: {e}")))?;
    let client = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("pyroscope")
        .to_owned();
    let peer = peer(extensions);
    for series in request.series {
        let mut labels: BTreeMap<String, String> = series
            .labels
            .into_iter()
            .map(|l| (l.name, l.value))
            .collect();
        let Some(service) = labels.remove("service_name") else {
            return Err(ForeignError::BadRequest(
                "a series without a service_name label".to_owned(),
            ));
        };
        foreign.authorize(&service, token.as_deref())?;
        let profile_type = labels.remove("__name__").unwrap_or_default();
        let Some(kind) = form::kind_of(&profile_type) else {
            metrics().profile_refused(Source::Pyroscope, "unsupported_kind");
            tracing::debug!(%service, profile_type, "pyroscope profile type not stored");
            continue;
        };
        let instance = instance_of(&labels, peer);
        for sample in series.samples {
            let identity = if sample.id.is_empty() {
                sample.raw_profile.clone()
            } else {
                sample.id.into_bytes()
            };
            foreign
                .accept(ForeignProfile {
                    source: Source::Pyroscope,
                    service: service.clone(),
                    instance: instance.clone(),
                    client: client.clone(),
                    kind,
                    labels: labels.clone(),
                    started_unix_nanos: 0,
                    duration: std::time::Duration::ZERO,
                    pprof: sample.raw_profile,
                    identity,
                })
                .await?;
        }
    }
    Ok(())
}

/// Pyroscope clients' `/ingest`.
///
/// Pyroscope's older ingest form (pyroscope-io 0.8, mosn/holmes' Pyroscope reporter):
/// pprof raw or as the `profile` part of a `multipart/form-data` body, or `folded`
/// (`a;b;c 12` per line) or `lines` text. With ingest tokens configured:
/// `Authorization: Bearer <token>`.
#[utoipa::path(
    post,
    path = "/ingest",
    operation_id = "pyroscope_ingest",
    tag = "ingest",
    params(
        ("name" = String, Query, description = "`app.kind{label=value,...}`: the service, the profile kind and labels"),
        ("from" = Option<i64>, Query, description = "Start, Unix seconds"),
        ("until" = Option<i64>, Query, description = "End, Unix seconds"),
        ("format" = Option<String>, Query, description = "`pprof`, `folded` (the default) or `lines`"),
        ("sampleRate" = Option<u32>, Query, description = "Samples per second (CPU), for `folded` and `lines`"),
        ("spyName" = Option<String>, Query, description = "The client's profiler"),
    ),
    request_body(content = Vec<u8>, description = "The profile in `format` (pprof may come as the `profile` part of multipart/form-data)", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored (or a kind Holmes does not store, skipped)"),
        (status = 400, description = "Bad parameter or a profile that does not decode", body = holmes_api::ErrorJson),
        (status = 401, description = "Ingest token required", body = holmes_api::ErrorJson),
        (status = 413, description = "Larger than `max_profile_bytes`", body = holmes_api::ErrorJson),
        (status = 503, description = "Store or pipeline unavailable", body = holmes_api::ErrorJson),
    )
)]
pub(crate) async fn ingest(
    State(foreign): State<ForeignIngest>,
    Query(params): Query<HashMap<String, String>>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match ingest_request(&foreign, &params, &extensions, &headers, &body).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(err) => {
            metrics().profile_refused(Source::Pyroscope, err.reason());
            tracing::warn!(error = %err, "pyroscope ingest refused");
            (
                err.http_status(),
                axum::Json(serde_json::json!({ "error": err.to_string() })),
            )
                .into_response()
        }
    }
}

async fn ingest_request(
    foreign: &ForeignIngest,
    params: &HashMap<String, String>,
    extensions: &Extensions,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(), ForeignError> {
    let name = params.get("name").ok_or_else(|| {
        ForeignError::BadRequest("name is required, e.g. name=app.cpu".to_owned())
    })?;
    let series = form::parse_name(name)?;
    let token = http_token(headers);
    foreign.authorize(&series.app, token.as_deref())?;
    let profile_type = series.profile_type.as_deref().unwrap_or("cpu");
    let Some(kind) = form::kind_of(profile_type) else {
        metrics().profile_refused(Source::Pyroscope, "unsupported_kind");
        tracing::debug!(service = %series.app, profile_type, "pyroscope profile type not stored");
        return Ok(());
    };
    let from = params
        .get("from")
        .map(|f| form::parse_time(f))
        .transpose()?;
    let until = params
        .get("until")
        .map(|u| form::parse_time(u))
        .transpose()?;
    let started = from.unwrap_or(0);
    let duration = match (from, until) {
        (Some(f), Some(u)) if u > f => u - f,
        _ => 0,
    };
    let sample_rate: u64 = match params.get("sampleRate") {
        Some(r) => r.parse().ok().filter(|r| *r > 0).ok_or_else(|| {
            ForeignError::BadRequest(format!("sampleRate {r:?} is not a positive number"))
        })?,
        None => 100,
    };
    let raw = decoded_body(foreign, headers, body)?;
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = params.get("format").map_or("folded", String::as_str);
    let pprof = match format {
        "pprof" => match content_type.split_once("boundary=") {
            Some((media, boundary)) if media.trim_start().starts_with("multipart/form-data") => {
                let boundary = boundary
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches('"');
                let part = form::multipart_profile(&raw, boundary)?;
                gunzip_within(&part, foreign.max_decoded_bytes())?
            }
            _ => raw,
        },
        "folded" | "lines" => {
            let text = std::str::from_utf8(&raw)
                .map_err(|_| ForeignError::BadRequest(format!("a {format} body must be text")))?;
            form::collapsed_to_pprof(
                text,
                format == "folded",
                kind,
                profile_type,
                sample_rate,
                started,
                duration,
            )?
        }
        other => {
            return Err(ForeignError::BadRequest(format!(
                "format {other:?} is not supported; use pprof, folded or lines"
            )))
        }
    };
    let mut labels = series.tags;
    if let Some(spy) = params.get("spyName") {
        labels.insert("spy_name".to_owned(), spy.clone());
    }
    let client = params
        .get("spyName")
        .map_or_else(|| "pyroscope".to_owned(), |s| format!("pyroscope/{s}"));
    let instance = instance_of(&labels, peer(extensions));
    let mut identity = name.as_bytes().to_vec();
    identity.extend(started.to_le_bytes());
    identity.extend(duration.to_le_bytes());
    identity.extend(blake3::hash(&pprof).as_bytes());
    foreign
        .accept(ForeignProfile {
            source: Source::Pyroscope,
            service: series.app,
            instance,
            client,
            kind,
            labels,
            started_unix_nanos: started,
            duration: std::time::Duration::from_nanos(duration),
            pprof,
            identity,
        })
        .await
        .map(|_| ())
}
