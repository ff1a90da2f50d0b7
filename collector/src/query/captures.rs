//! Capture requests: asked of the whole fleet of a service through any node, listed,
//! and shown with every instance's answer and the profiles they brought.
//! One operator's request of a service every `[control] capture_min_interval` at most
//! (429 with `retry-after` sooner). Each route is described by its handler's annotation
//! (the OpenAPI document: [`super::routes`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, Path, Query, RawQuery, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use holmes_api::control::{
    validate_request_id, CaptureDetailJson, CaptureInstanceJson, CaptureJson, CaptureRefusalJson,
    CaptureSummaryJson, CapturesJson, DEFAULT_CAPTURE_LIMIT, DEFAULT_CAPTURE_SINCE,
};
use holmes_api::ErrorJson;
use holmes_proto::CapturePurpose;
use holmes_storage::{
    CaptureDispatch, CaptureOutcomeRecord, CaptureRequestQuery, CaptureRequestRecord, ProfileQuery,
    TriggerQuery,
};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::control::check_service;
use super::profiles::{parse_kind, profile_json};
use crate::clock::rfc3339;
use crate::control::capture::{CaptureAsk, CaptureError};
use crate::control::Control;
use crate::error::ApiError;

/// The routes (state: the node's [`Control`], from the API's), registered from their
/// handlers' annotations like every other ([`super::routes`]).
pub(super) fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Control>: FromRef<S>,
{
    OpenApiRouter::default()
        .routes(routes!(capture))
        .routes(routes!(list))
        .routes(routes!(detail))
}

impl From<CaptureError> for ApiError {
    fn from(err: CaptureError) -> Self {
        match err {
            CaptureError::Invalid(m) => ApiError::bad_request(m),
            e @ CaptureError::TooSoon { .. } => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: e.to_string(),
            },
            CaptureError::Store(e) => e.into(),
        }
    }
}

/// Percent-decodes a query value (`+` is a space).
fn decode(value: &str) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::bad_request(format!("bad escape in {value:?}")))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request(format!("{value:?} is not UTF-8")))
}

/// Asks a service's agents to capture now, on every node.
///
/// The request is recorded, reaches the agents it is for through whichever collector node
/// they are connected to, and each agent's answer (what it captured, what it refused and
/// why) is kept: `GET /api/v1/captures/{request_id}`. The profiles arrive like any other
/// capture, with a trigger event of reason `requested` carrying the request id.
#[utoipa::path(
    post,
    path = "/api/v1/services/{service}/capture",
    operation_id = "capture_now",
    tag = "capture",
    params(
        ("service" = String, Path, description = "Service name"),
        ("kind" = Vec<String>, Query, description = "What to capture: `cpu`, `heap`, `threads` or `tasks`; repeat for several (`?kind=cpu&kind=threads`)"),
        ("selector" = Option<String>, Query, description = "Only agents whose labels match `k=v[,k=v]` (repeatable)"),
        ("instance" = Option<String>, Query, description = "Only this instance"),
        ("cpu_duration" = Option<String>, Query, description = "How long a CPU profile runs (`5s`; at most 30s)"),
        ("by" = Option<String>, Query, description = "Who asks (kept with the request)"),
        ("note" = Option<String>, Query, description = "Why (kept with the request)"),
    ),
    responses(
        (status = 200, description = "The request and the instances it reached, on every node", body = CaptureJson),
        (status = 400, description = "Bad service name, no kind or an unknown one, bad parameter", body = ErrorJson),
        (status = 404, description = "No agent it is for is connected now", body = ErrorJson),
        (status = 429, description = "The service had a capture request less than `[control] capture_min_interval` ago: `retry-after` says how many seconds to wait", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn capture(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    match ask_capture(&control, service, query.as_deref()).await {
        Ok(asked) => Json(asked).into_response(),
        Err(Refused::TooSoon(wait, err)) => {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut answer = err.into_response();
            answer
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            answer
        }
        Err(Refused::Api(err)) => err.into_response(),
    }
}

/// Why a capture request was not made.
enum Refused {
    /// Too soon after the service's last one: retry after this long.
    TooSoon(Duration, ApiError),
    Api(ApiError),
}

impl From<ApiError> for Refused {
    fn from(err: ApiError) -> Self {
        Refused::Api(err)
    }
}

/// Makes the request `query` asks for, of `service`'s agents.
async fn ask_capture(
    control: &Control,
    service: String,
    query: Option<&str>,
) -> Result<CaptureJson, Refused> {
    check_service(&service)?;
    let mut ask = CaptureAsk {
        service: service.clone(),
        selector: String::new(),
        instance_id: None,
        kinds: Vec::new(),
        purpose: CapturePurpose::Operator,
        cpu_duration: None,
        window: None,
        incident_id: None,
        author: String::new(),
        note: String::new(),
        request_id: None,
    };
    let mut selectors = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value)?;
        match key {
            "kind" => {
                let kind = parse_kind(&value).map_err(ApiError::bad_request)?;
                if !ask.kinds.contains(&kind) {
                    ask.kinds.push(kind);
                }
            }
            "selector" => selectors.push(value),
            "instance" => ask.instance_id = Some(value),
            "cpu_duration" => {
                let d = humantime::parse_duration(&value).map_err(|e| {
                    ApiError::bad_request(format!("cpu_duration={value:?}: {e}; write e.g. 5s"))
                })?;
                if d.is_zero() || d > Duration::from_secs(30) {
                    return Err(ApiError::bad_request(format!(
                        "cpu_duration={value:?}: more than 0s and at most 30s (agents cut longer ones)"
                    )).into());
                }
                ask.cpu_duration = Some(d);
            }
            "by" => ask.author = value,
            "note" => ask.note = value,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {pair:?}; use kind=cpu|heap|threads|tasks, selector=k=v, instance=ID, cpu_duration, by, note"
                ))
                .into())
            }
        }
    }
    ask.selector = selectors.join(",");
    if ask.author.trim().is_empty() {
        ask.author = "api".to_owned();
    }
    let asked = match control.request_capture(ask).await {
        Ok(asked) => asked,
        Err(e @ CaptureError::TooSoon { wait, .. }) => {
            return Err(Refused::TooSoon(wait, e.into()))
        }
        Err(e) => return Err(Refused::Api(e.into())),
    };
    let request = &asked.request;
    if asked.instances.is_empty() {
        let whom = match (&request.instance_id, request.selector.as_str()) {
            (Some(i), _) => format!("instance {i:?} of service {service:?}"),
            (None, "") => format!("agent of service {service:?}"),
            (None, s) => format!("agent of service {service:?} matching {s}"),
        };
        let pending = if asked.pending_nodes.is_empty() {
            String::new()
        } else {
            format!(
                " ({} collector node(s) did not answer in time: {})",
                asked.pending_nodes.len(),
                asked.pending_nodes.join(", ")
            )
        };
        return Err(ApiError::not_found(format!("no {whom} is connected now{pending}")).into());
    }
    Ok(CaptureJson {
        service,
        request_id: request.request_id.clone(),
        kinds: request
            .kinds
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect(),
        selector: request.selector.clone(),
        instance: request.instance_id.clone(),
        instances: asked.instances,
        nodes: asked.nodes,
        pending_nodes: asked.pending_nodes,
    })
}

/// Every instance asked or answering, from the nodes' dispatches and the answers.
fn instances_of(
    dispatches: &[CaptureDispatch],
    outcomes: &[CaptureOutcomeRecord],
) -> Vec<CaptureInstanceJson> {
    let mut by_instance: BTreeMap<String, CaptureInstanceJson> = BTreeMap::new();
    for d in dispatches {
        for i in &d.instances {
            by_instance
                .entry(i.clone())
                .or_insert_with(|| CaptureInstanceJson {
                    instance: i.clone(),
                    node: Some(d.node_id.clone()),
                    answered_at: None,
                    event_id: None,
                    captured: Vec::new(),
                    refused: Vec::new(),
                });
        }
    }
    for o in outcomes {
        let entry =
            by_instance
                .entry(o.instance_id.clone())
                .or_insert_with(|| CaptureInstanceJson {
                    instance: o.instance_id.clone(),
                    node: None,
                    answered_at: None,
                    event_id: None,
                    captured: Vec::new(),
                    refused: Vec::new(),
                });
        entry.answered_at = Some(rfc3339(o.unix_nanos));
        entry.event_id = o.event_id.clone();
        entry.captured = o.captured.iter().map(|k| k.as_str().to_owned()).collect();
        entry.refused = o
            .refused
            .iter()
            .map(|r| CaptureRefusalJson {
                kind: r.kind.as_str().to_owned(),
                reason: r.reason.as_str().to_owned(),
                detail: r.detail.clone(),
            })
            .collect();
    }
    by_instance.into_values().collect()
}

fn summary(r: &CaptureRequestRecord, instances: &[CaptureInstanceJson]) -> CaptureSummaryJson {
    let count = |f: &dyn Fn(&CaptureInstanceJson) -> bool| -> u64 {
        instances.iter().filter(|i| f(i)).count() as u64
    };
    CaptureSummaryJson {
        request_id: r.request_id.clone(),
        service: r.service.clone(),
        kinds: r.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
        purpose: r.purpose.as_str().to_owned(),
        selector: r.selector.clone(),
        instance: r.instance_id.clone(),
        asked_at: rfc3339(r.by.unix_nanos),
        unix_ms: r.by.unix_nanos / 1_000_000,
        by: r.by.author.clone(),
        asked: count(&|i| i.node.is_some()),
        captured: count(&|i| !i.captured.is_empty()),
        refused: count(&|i| i.answered_at.is_some() && i.captured.is_empty()),
        pending: count(&|i| i.answered_at.is_none()),
    }
}

/// A service's capture requests, newest first, with how each went.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/captures",
    operation_id = "list_captures",
    tag = "capture",
    params(
        ("service" = String, Path, description = "Service name"),
        ("since" = Option<String>, Query, description = "Start: RFC 3339, or a duration before now (`24h`, the default)"),
        ("until" = Option<String>, Query, description = "End (exclusive): RFC 3339, or a duration before now; now by default"),
        ("limit" = Option<u64>, Query, description = "At most this many requests (100 by default)"),
    ),
    responses(
        (status = 200, description = "The requests, newest first", body = CapturesJson),
        (status = 400, description = "Bad service name, time or limit", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn list(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<CapturesJson>, ApiError> {
    check_service(&service)?;
    let (since, until) = super::time_range(&params, DEFAULT_CAPTURE_SINCE)?;
    let limit = super::limit(&params, DEFAULT_CAPTURE_LIMIT)?;
    let store = control.store();
    let requests = store
        .capture_requests(&CaptureRequestQuery {
            service: Some(service.clone()),
            since_unix_nanos: since,
            until_unix_nanos: until,
            limit,
        })
        .await?;
    let ids: Vec<String> = requests.iter().map(|r| r.request_id.clone()).collect();
    let (dispatches, outcomes) =
        tokio::try_join!(store.capture_dispatches(&ids), store.capture_outcomes(&ids))?;
    let captures = requests
        .iter()
        .map(|r| {
            let d: Vec<CaptureDispatch> = dispatches
                .iter()
                .filter(|d| d.request_id == r.request_id)
                .cloned()
                .collect();
            let o: Vec<CaptureOutcomeRecord> = outcomes
                .iter()
                .filter(|o| o.request_id == r.request_id)
                .cloned()
                .collect();
            summary(r, &instances_of(&d, &o))
        })
        .collect();
    Ok(Json(CapturesJson {
        service,
        since: rfc3339(since),
        until: rfc3339(until),
        captures,
    }))
}

/// How long after a request its profiles may start (a CPU profile asked for the
/// longest duration, queued behind other captures).
const PROFILES_WITHIN: Duration = Duration::from_secs(10 * 60);

/// One capture request with every instance's answer and its profiles.
#[utoipa::path(
    get,
    path = "/api/v1/captures/{request_id}",
    operation_id = "get_capture",
    tag = "capture",
    params(("request_id" = String, Path, description = "The request id: 32 lowercase hex digits, or `alert-` and 32 of them")),
    responses(
        (status = 200, description = "The request, each instance's answer, the profiles", body = CaptureDetailJson),
        (status = 400, description = "Not a request id", body = ErrorJson),
        (status = 404, description = "Unknown request", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn detail(
    State(control): State<Arc<Control>>,
    Path(request_id): Path<String>,
) -> Result<Json<CaptureDetailJson>, ApiError> {
    validate_request_id(&request_id).map_err(ApiError::bad_request)?;
    let store = control.store();
    let request = store
        .get_capture_request(&request_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown capture request {request_id}")))?;
    let ids = [request_id.clone()];
    let (dispatches, outcomes) =
        tokio::try_join!(store.capture_dispatches(&ids), store.capture_outcomes(&ids))?;
    let instances = instances_of(&dispatches, &outcomes);
    // The events of the request: from the answers, and from the trigger events that
    // carry its id (an answer may be lost; the event is durable).
    let asked_at = request.by.unix_nanos;
    let within = u64::try_from(PROFILES_WITHIN.as_nanos()).unwrap_or(u64::MAX);
    let mut events: Vec<String> = instances
        .iter()
        .filter_map(|i| i.event_id.clone())
        .collect();
    let triggers = store
        .query_triggers(&TriggerQuery {
            service: request.service.clone(),
            metric: None,
            since_unix_nanos: asked_at.saturating_sub(60_000_000_000),
            until_unix_nanos: asked_at.saturating_add(within),
            limit: 100_000,
        })
        .await?;
    events.extend(
        triggers
            .into_iter()
            .filter(|t| t.request_id.as_deref() == Some(request_id.as_str()))
            .map(|t| t.event_id),
    );
    events.sort();
    events.dedup();
    let mut profiles = Vec::new();
    for event in events {
        profiles.extend(
            store
                .query_profiles(&ProfileQuery {
                    service: request.service.clone(),
                    event_id: Some(event),
                    kind: None,
                    since_unix_nanos: asked_at.saturating_sub(60_000_000_000),
                    until_unix_nanos: asked_at.saturating_add(within),
                    limit: 1_000,
                })
                .await?,
        );
    }
    profiles.sort_by(|a, b| {
        (a.started_unix_nanos, &a.profile_id).cmp(&(b.started_unix_nanos, &b.profile_id))
    });
    Ok(Json(CaptureDetailJson {
        request: summary(&request, &instances),
        instances,
        profiles: profiles.into_iter().map(profile_json).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            decode("zone%3Da%2Cversion%3D1.4.2").unwrap(),
            "zone=a,version=1.4.2"
        );
        assert_eq!(decode("a+b").unwrap(), "a b");
        assert!(decode("%zz").is_err());
    }
}
