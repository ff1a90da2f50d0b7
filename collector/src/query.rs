//! The HTTP JSON API (`/api/v1/...`), read-only over the store.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/services[?active=5m]` | `[{service, instances, last_seen, last_seen_unix_ms}]`, `instances` counting those heard from within `active` |
//! | `GET /api/v1/services/{service}/instances` | `[{instance, host, pid, labels, agent_version, started_at, last_seen}]` |
//! | `GET /api/v1/services/{service}/metrics?metric=cpu&since=10m[&until=..][&limit=..]` | `{service, metric, unit, since, until, series: [{instance, points: [{ts, unix_ms, value}]}]}` |
//! | `GET /api/v1/services/{service}/triggers?since=1h[&until=..][&metric=cpu][&limit=..]` | `{service, since, until, triggers: [{event_id, instance, metric, reason, current, ts, unix_ms, window: [{ts, unix_ms, value}], rule, request_id}]}`, oldest first; `metric` and `rule` are `null` for a requested capture |
//! | `GET /api/v1/services/{service}/profiles?since=1h[&until=..][&event=<id>][&kind=cpu][&limit=..]` | `{service, since, until, profiles: [{profile_id, event_id, instance, kind, started, unix_ms, duration_ms, labels, error, size_bytes, download}]}`, oldest first; `error` is `null` and `download` the path below for a capture that worked |
//! | `GET /api/v1/services/{service}/profiles/{profile_id}` | the profile as gzip-compressed pprof — re-encoded from the stored contents (`x-holmes-download: re-encoded`), or the bytes exactly as sent when the collector keeps originals (`original`) — `application/octet-stream`, `content-disposition: attachment; filename="<kind>.<event_id>.<profile_id>.pb.gz"`; 400 for an id that is not 32 lowercase hex digits, 404 when the service has no such profile or its capture failed |
//! | `GET /api/v1/services/{service}/profiles/{profile_id}/top[?sample_type=..][&limit=..]` | the profile's costliest functions |
//! | `GET /api/v1/services/{service}/profiles/{profile_id}/flamegraph.svg` | the profile's flame graph |
//! | `GET /api/v1/services/{service}/flamegraph.svg?since=24h[&until=..][&kind=cpu]` | the service's profiles of one kind over the range, all instances merged |
//! | `GET /api/v1/services/{service}/profiles/{profile_id}/otlp`, `GET /api/v1/incidents/{incident_id}/otlp` | the profile, or the incident's profiles, as one OTLP `ExportProfilesServiceRequest` ([`otlp`]) |
//! | `GET /api/v1/incidents?label=k8s.namespace.name=shop[&label=..]` (also per service) | incidents with an instance carrying every label given (the agent's Kubernetes labels, say) |
//! | `GET /healthz` | `ok` |
//!
//! Times are RFC 3339 in UTC; `since`/`until` also take a duration before now (`10m`).
//! Errors are `{"error": "..."}` with 400 (bad parameter), 401 (API token required and
//! missing or wrong), 404 (unknown service or profile) or 503 (store unavailable).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use holmes_api::{
    CaptureJson, InstanceJson, MetricsJson, PointJson, SeriesJson, ServiceJson,
    DEFAULT_POINT_LIMIT, DEFAULT_SINCE,
};
use holmes_proto::names::validate_name;
use holmes_proto::{Metric, UnknownMetric};
use holmes_storage::{MetricQuery, Store};

use crate::auth::ApiAuth;
use crate::clock::{parse_time, rfc3339, unix_nanos_now};
use crate::error::ApiError;
use crate::ingest::live::LiveAgents;

pub mod flamegraph;
mod incidents;
mod labels;
pub mod otlp;
pub mod pprof;
pub mod profiles;
pub mod top;
pub mod triggers;
pub mod ui;

/// Instances heard from within this window count as active in the services list,
/// unless the request's `?active=` says otherwise.
pub const DEFAULT_ACTIVE_WINDOW: Duration = Duration::from_secs(5 * 60);

#[derive(Clone)]
struct Api {
    store: Arc<dyn Store>,
    active_window: Duration,
    live: Arc<LiveAgents>,
}

/// The API's routes over `store`; instances heard from within `active_window` count
/// as active in the services list unless `?active=` says otherwise. With `auth`, every
/// `/api/` route answers 401 unless the request carries its token; `/healthz` stays open.
pub fn router(
    store: Arc<dyn Store>,
    active_window: Duration,
    auth: Option<ApiAuth>,
    live: Arc<LiveAgents>,
) -> Router {
    let api = Router::new()
        .route("/api/v1/services", get(services))
        .route("/api/v1/services/{service}/instances", get(instances))
        .route("/api/v1/services/{service}/metrics", get(metrics))
        .route(
            "/api/v1/services/{service}/triggers",
            get(triggers::triggers),
        )
        .route(
            "/api/v1/services/{service}/profiles",
            get(profiles::profiles),
        )
        .route(
            "/api/v1/services/{service}/profiles/{profile_id}",
            get(profiles::download),
        )
        .route(
            "/api/v1/services/{service}/profiles/{profile_id}/top",
            get(profiles::top),
        )
        .route(
            "/api/v1/services/{service}/profiles/{profile_id}/flamegraph.svg",
            get(profiles::flamegraph),
        )
        .route(
            "/api/v1/services/{service}/flamegraph.svg",
            get(profiles::service_flamegraph),
        )
        .route(
            "/api/v1/services/{service}/incidents",
            get(incidents::by_service),
        )
        .route("/api/v1/incidents", get(incidents::all))
        .route("/api/v1/incidents/{incident_id}", get(incidents::detail))
        .route(
            "/api/v1/incidents/{incident_id}/flamegraph.svg",
            get(incidents::flamegraph),
        )
        .route(
            "/api/v1/services/{service}/profiles/{profile_id}/otlp",
            get(otlp::profile),
        )
        .route("/api/v1/incidents/{incident_id}/otlp", get(otlp::incident))
        .route(
            "/api/v1/services/{service}/capture",
            axum::routing::post(capture),
        )
        .with_state(Api {
            store,
            active_window,
            live,
        });
    let api = match auth {
        Some(auth) => api.layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::require_api_token,
        )),
        None => api,
    };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(ui::router())
        .merge(api)
}

async fn capture(
    State(api): State<Api>,
    Path(service): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<CaptureJson>, ApiError> {
    check_service(&service)?;
    let mut kinds = Vec::new();
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("kind", k)) => {
                let kind = profiles::parse_kind(k).map_err(ApiError::bad_request)?;
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {pair:?}; use kind=cpu|heap|threads|tasks"
                )))
            }
        }
    }
    if kinds.is_empty() {
        return Err(ApiError::bad_request(
            "say what to capture: kind=cpu, heap, threads or tasks (repeatable)",
        ));
    }
    // Unique per collector run and over restarts: the time, and a counter.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let request_id = format!(
        "{:016x}{:016x}",
        unix_nanos_now(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let request = holmes_proto::CaptureRequest {
        request_id: request_id.clone(),
        kinds: kinds.clone(),
        cpu_duration: None,
        purpose: holmes_proto::CapturePurpose::Operator,
        window: None,
        incident_id: None,
    };
    let instances = api.live.capture(&service, &request);
    if instances.is_empty() {
        return Err(ApiError::not_found(format!(
            "no agent of service {service:?} is connected now"
        )));
    }
    tracing::info!(%service, %request_id, ?instances, "capture requested");
    Ok(Json(CaptureJson {
        service,
        request_id,
        kinds: kinds.iter().map(|k| k.as_str().to_owned()).collect(),
        instances,
    }))
}

/// An SVG document as an HTTP answer.
fn svg_response(svg: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "image/svg+xml; charset=utf-8",
        )],
        svg,
    )
        .into_response()
}

async fn services(
    State(api): State<Api>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Vec<ServiceJson>>, ApiError> {
    let now = unix_nanos_now();
    let active_since = match params.get("active") {
        Some(a) => parse_time(a, now).map_err(|e| ApiError::bad_request(format!("active: {e}")))?,
        None => now.saturating_sub(u64::try_from(api.active_window.as_nanos()).unwrap_or(0)),
    };
    let list = api.store.list_services(active_since).await?;
    Ok(Json(
        list.into_iter()
            .map(|s| ServiceJson {
                service: s.service,
                instances: s.instances,
                last_seen: rfc3339(s.last_seen_unix_nanos),
                last_seen_unix_ms: s.last_seen_unix_nanos / 1_000_000,
            })
            .collect(),
    ))
}

fn check_service(service: &str) -> Result<(), ApiError> {
    validate_name("service", service).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// 404 unless the store knows `service`.
async fn known_service(api: &Api, service: &str) -> Result<(), ApiError> {
    if api.store.list_instances(service).await?.is_empty() {
        return Err(ApiError::not_found(format!("unknown service {service:?}")));
    }
    Ok(())
}

/// `[since, until)` from the `since` (default `default_since`) and `until` (default
/// now) parameters, in nanoseconds since the Unix epoch.
fn time_range(
    params: &HashMap<String, String>,
    default_since: &str,
) -> Result<(u64, u64), ApiError> {
    let now = unix_nanos_now();
    let since = parse_time(
        params.get("since").map_or(default_since, String::as_str),
        now,
    )
    .map_err(|e| ApiError::bad_request(format!("since: {e}")))?;
    let until = match params.get("until") {
        Some(u) => parse_time(u, now).map_err(|e| ApiError::bad_request(format!("until: {e}")))?,
        None => now.saturating_add(1),
    };
    if since >= until {
        return Err(ApiError::bad_request("since must be before until"));
    }
    Ok((since, until))
}

/// The `limit` parameter, `default` when absent; 1 to [`holmes_api::MAX_LIMIT`].
fn limit(params: &HashMap<String, String>, default: u64) -> Result<u64, ApiError> {
    match params.get("limit") {
        Some(l) => match l.parse::<u64>() {
            Ok(n) if (1..=holmes_api::MAX_LIMIT).contains(&n) => Ok(n),
            Ok(n) if n > holmes_api::MAX_LIMIT => Err(ApiError::bad_request(format!(
                "limit {n} is more than {}",
                holmes_api::MAX_LIMIT
            ))),
            _ => Err(ApiError::bad_request(format!(
                "limit {l:?} is not a positive number"
            ))),
        },
        None => Ok(default),
    }
}

async fn instances(
    State(api): State<Api>,
    Path(service): Path<String>,
) -> Result<Json<Vec<InstanceJson>>, ApiError> {
    check_service(&service)?;
    let list = api.store.list_instances(&service).await?;
    if list.is_empty() {
        return Err(ApiError::not_found(format!("unknown service {service:?}")));
    }
    Ok(Json(
        list.into_iter()
            .map(|i| InstanceJson {
                instance: i.instance_id,
                host: i.host,
                pid: i.pid,
                labels: i.labels,
                agent_version: i.agent_version,
                started_at: rfc3339(i.started_at_unix_nanos),
                last_seen: rfc3339(i.last_seen_unix_nanos),
            })
            .collect(),
    ))
}

/// One point as the API shows it.
fn point_json(unix_nanos: u64, value: f64) -> PointJson {
    PointJson {
        ts: rfc3339(unix_nanos),
        unix_ms: unix_nanos / 1_000_000,
        value,
    }
}

async fn metrics(
    State(api): State<Api>,
    Path(service): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<MetricsJson>, ApiError> {
    check_service(&service)?;
    let metric: Metric = params
        .get("metric")
        .ok_or_else(|| ApiError::bad_request("metric is required, e.g. ?metric=cpu"))?
        .parse()
        .map_err(|e: UnknownMetric| ApiError::bad_request(e.to_string()))?;
    let (since, until) = time_range(&params, DEFAULT_SINCE)?;
    let limit = limit(&params, DEFAULT_POINT_LIMIT)?;
    known_service(&api, &service).await?;
    let points = api
        .store
        .query_metrics(&MetricQuery {
            service: service.clone(),
            metric,
            since_unix_nanos: since,
            until_unix_nanos: until,
            limit,
        })
        .await?;
    let mut series: Vec<SeriesJson> = Vec::new();
    for p in points {
        let point = point_json(p.unix_nanos, p.value);
        match series.last_mut() {
            Some(s) if s.instance == p.instance_id => s.points.push(point),
            _ => series.push(SeriesJson {
                instance: p.instance_id,
                points: vec![point],
            }),
        }
    }
    Ok(Json(MetricsJson {
        service,
        metric: metric.as_str().to_owned(),
        unit: metric.unit().to_owned(),
        since: rfc3339(since),
        until: rfc3339(until),
        series,
    }))
}
