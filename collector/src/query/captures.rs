//! Capture requests: asked of the whole fleet of a service through any node, listed,
//! and shown with every instance's answer and the profiles they brought.
//!
//! | route | answer |
//! |---|---|
//! | `POST /api/v1/services/{service}/capture?kind=cpu[&kind=threads][&selector=zone=a][&instance=I][&cpu_duration=5s][&by=..][&note=..]` | [`CaptureJson`]: the request id and the instances asked on every node; 404 when no agent it is for is connected |
//! | `GET /api/v1/services/{service}/captures[?since=24h][&until=..][&limit=100]` | [`CapturesJson`]: requests newest first, with how many instances were asked, captured, refused, have not answered |
//! | `GET /api/v1/captures/{request_id}` | [`CaptureDetailJson`]: the request, each instance's answer (captured kinds and event, refused kinds with why), and its profiles |

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use holmes_api::control::{
    validate_request_id, CaptureDetailJson, CaptureInstanceJson, CaptureJson, CaptureRefusalJson,
    CaptureSummaryJson, CapturesJson, DEFAULT_CAPTURE_LIMIT, DEFAULT_CAPTURE_SINCE,
};
use holmes_proto::CapturePurpose;
use holmes_storage::{
    CaptureDispatch, CaptureOutcomeRecord, CaptureRequestQuery, CaptureRequestRecord, ProfileQuery,
    TriggerQuery,
};

use super::control::check_service;
use super::profiles::{parse_kind, profile_json};
use crate::clock::rfc3339;
use crate::control::capture::{CaptureAsk, CaptureError};
use crate::control::Control;
use crate::error::ApiError;

/// The routes (state: the node's [`Control`]).
pub(super) fn routes() -> Router<Arc<Control>> {
    Router::new()
        .route("/api/v1/services/{service}/capture", post(capture))
        .route("/api/v1/services/{service}/captures", get(list))
        .route("/api/v1/captures/{request_id}", get(detail))
}

impl From<CaptureError> for ApiError {
    fn from(err: CaptureError) -> Self {
        match err {
            CaptureError::Invalid(m) => ApiError::bad_request(m),
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

async fn capture(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<CaptureJson>, ApiError> {
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
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
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
                    )));
                }
                ask.cpu_duration = Some(d);
            }
            "by" => ask.author = value,
            "note" => ask.note = value,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {pair:?}; use kind=cpu|heap|threads|tasks, selector=k=v, instance=ID, cpu_duration, by, note"
                )))
            }
        }
    }
    ask.selector = selectors.join(",");
    if ask.author.trim().is_empty() {
        ask.author = "api".to_owned();
    }
    let asked = control.request_capture(ask).await?;
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
        return Err(ApiError::not_found(format!(
            "no {whom} is connected now{pending}"
        )));
    }
    Ok(Json(CaptureJson {
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
    }))
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
