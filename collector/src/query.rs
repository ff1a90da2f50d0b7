//! The HTTP JSON API (`/api/v1/...`): reads over the store, and the control plane's
//! changes (rules, pauses, capture requests: [`control`], [`captures`]) through
//! [`Control`]; plus the health check and the web page. Every route is registered in
//! [`routes`] from its handler's annotation, which is also what the OpenAPI document
//! served at `GET /api/v1/openapi.json` is made of ([`routes::document`]): read it for the
//! routes, their parameters and their answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::{Json, Router};
use holmes_api::{
    ErrorJson, InstanceJson, MetricsJson, PointJson, SeriesJson, ServiceJson, DEFAULT_POINT_LIMIT,
    DEFAULT_SINCE,
};
use holmes_proto::names::validate_name;
use holmes_proto::{Metric, UnknownMetric};
use holmes_storage::{MetricQuery, Store};

use crate::auth::ApiAuth;
use crate::clock::{parse_time, rfc3339, unix_nanos_now};
use crate::control::Control;
use crate::error::ApiError;
use crate::symbolize::Symbolizer;

mod captures;
mod control;
pub mod flamegraph;
mod incidents;
mod labels;
pub mod otlp;
pub mod pprof;
pub mod profiles;
pub mod routes;
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
    control: Arc<Control>,
    /// Names a build's locations once CI uploaded its debug info (nodes that process).
    symbolizer: Option<Arc<Symbolizer>>,
}

/// CI's debug info uploads store into the API's store and wake its symbolizer.
impl axum::extract::FromRef<Api> for crate::symbolize::upload::Uploads {
    fn from_ref(api: &Api) -> Self {
        crate::symbolize::upload::Uploads {
            store: Arc::clone(&api.store),
            symbolizer: api.symbolizer.clone(),
        }
    }
}

/// The control plane's handlers take the node's [`Control`] from the API's state.
impl axum::extract::FromRef<Api> for Arc<Control> {
    fn from_ref(api: &Api) -> Self {
        Arc::clone(&api.control)
    }
}

/// The API's routes over `store`; instances heard from within `active_window` count
/// as active in the services list unless `?active=` says otherwise; the control plane's
/// routes (rules, pauses, captures) go through `control`; CI's debug info uploads wake
/// `symbolizer` when there is one. With `auth`, every `/api/` route answers 401 unless
/// the request carries its token; `/healthz` stays open.
pub fn router(
    store: Arc<dyn Store>,
    active_window: Duration,
    auth: Option<ApiAuth>,
    control: Arc<Control>,
    symbolizer: Option<Arc<Symbolizer>>,
) -> Router {
    let (router, _document) = routes::routes(auth)
        .with_state(Api {
            store,
            active_window,
            control,
            symbolizer,
        })
        .split_for_parts();
    router
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

/// The services the collector knows, with their active instances.
#[utoipa::path(
    get,
    path = "/api/v1/services",
    operation_id = "list_services",
    tag = "services",
    params(("active" = Option<String>, Query, description = "Count the instances heard from within this window (`5m`, the default) or since this RFC 3339 time")),
    responses(
        (status = 200, description = "Every service, by name", body = Vec<ServiceJson>),
        (status = 400, description = "Bad `active`", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
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

/// The instances of one service, each with the last time it was heard from.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/instances",
    operation_id = "list_instances",
    tag = "services",
    params(("service" = String, Path, description = "Service name")),
    responses(
        (status = 200, description = "Its instances", body = Vec<InstanceJson>),
        (status = 400, description = "Bad service name", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "Unknown service", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn instances(
    State(api): State<Api>,
    Path(service): Path<String>,
) -> Result<Json<Vec<InstanceJson>>, ApiError> {
    check_service(&service)?;
    let list = api.store.list_instances(&service).await?;
    if list.is_empty() {
        return Err(ApiError::not_found(format!("unknown service {service:?}")));
    }
    let mut list: Vec<InstanceJson> = list
        .into_iter()
        .map(|i| InstanceJson {
            instance: i.instance_id,
            host: i.host,
            pid: i.pid,
            labels: i.labels,
            agent_version: i.agent_version,
            started_at: rfc3339(i.started_at_unix_nanos),
            last_seen: rfc3339(i.last_seen_unix_nanos),
            connected: None,
            rules_version: None,
            rules_pending: false,
            rules_refused: Vec::new(),
        })
        .collect();
    control::annotate_instances(&api.store, &service, &mut list).await?;
    Ok(Json(list))
}

/// One point as the API shows it.
fn point_json(unix_nanos: u64, value: f64) -> PointJson {
    PointJson {
        ts: rfc3339(unix_nanos),
        unix_ms: unix_nanos / 1_000_000,
        value,
    }
}

/// One metric of one service over a time range.
///
/// A series per instance, points oldest first.
///
/// Metrics: `cpu` (percent of the cores the process may use), `memory` (percent of its
/// memory limit), `rss` (bytes), `threads`, `fds` and `cpu_throttled` (where the cgroup
/// counts throttling) from every agent; `tasks` from agents with a tokio runtime
/// registered, `heap_bytes` and `heap` from agents on the counting or sampling allocator
/// or jemalloc.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/metrics",
    operation_id = "get_metrics",
    tag = "metrics",
    params(
        ("service" = String, Path, description = "Service name"),
        ("metric" = String, Query, description = "`cpu`, `memory`, `rss`, `threads`, `tasks`, `heap`, `heap_bytes`, `fds` or `cpu_throttled`"),
        ("since" = Option<String>, Query, description = "Start: a duration before now (`10m`, the default) or an RFC 3339 time"),
        ("until" = Option<String>, Query, description = "End (exclusive): a duration before now or an RFC 3339 time; now by default"),
        ("limit" = Option<u64>, Query, description = "At most this many points (100000 by default)"),
    ),
    responses(
        (status = 200, description = "The series", body = MetricsJson),
        (status = 400, description = "Bad parameter", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "Unknown service", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
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
