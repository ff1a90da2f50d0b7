//! Alertmanager in: `POST /api/v1/alertmanager` takes Alertmanager's webhook payload
//! (version 4). Each firing alert that names a service (the first of
//! `[alertmanager] service_labels` it carries) becomes a trigger event of that service —
//! instance `alertmanager`, metric `[alertmanager] metric` (or the alert's
//! `holmes_metric` label), reason `requested` — which opens or joins an incident like any
//! trigger, and the service's connected agents, on every node, are asked to capture now
//! (`[alertmanager] kinds`, purpose `alert`) through a capture request
//! ([`Control::request_capture`]: stored, its outcome per instance tracked, shown by
//! `holmes capture show alert-<event id>`). Their captures answer with request id
//! `alert-<event id>`, which the correlator uses to attach their profiles to the
//! alert's incident ([`crate::incident::correlate`]).
//!
//! The same alert notified again (Alertmanager repeats firing alerts) has the same event
//! id: stored once, and captured once per collector run; an alert that started more
//! than `max_age` ago gets no capture (its moment is gone). Resolved alerts change
//! nothing (the incident resolves when quiet). Holmes' own alerts
//! (`alertname="HolmesIncident"`, see [`crate::alert`]) are ignored, so routing them back
//! here cannot loop. Behind the API token when one is set.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::{Json, Router};
use holmes_api::control::ALERT_REQUEST_PREFIX;
use holmes_api::ErrorJson;
use holmes_proto::names::validate_name;
use holmes_proto::{
    CapturePurpose, Metric, PipelineBody, PipelineEvent, ProfileKind, TriggerEvent, TriggerReason,
};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::ApiAuth;
use crate::clock::{parse_time, unix_nanos_now};
use crate::control::capture::CaptureAsk;
use crate::control::Control;
use crate::error::ApiError;
use crate::metrics::metrics;
use crate::process::Sink;

/// The instance id of the trigger events external alerts make.
pub const ALERT_INSTANCE: &str = "alertmanager";
/// The `alertname` of Holmes' own alerts, ignored when they come back.
pub const HOLMES_ALERTNAME: &str = "HolmesIncident";
/// Alert captures remembered (so a repeated notification does not capture again).
const REMEMBERED: usize = 10_000;

/// The `[alertmanager]` section: how alerts from Alertmanager map to services.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Labels that may name the service, tried in order.
    pub service_labels: Vec<String>,
    /// The metric of the incident an alert opens (`cpu`, `memory`, ...): it picks the
    /// profile kind suspects are read from. An alert's `holmes_metric` label wins.
    pub metric: String,
    /// What the agents capture (`cpu`, `heap`, `threads`, `tasks`).
    pub kinds: Vec<String>,
    /// Alerts that started longer ago than this get no capture.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            service_labels: ["service", "service_name", "app", "job"]
                .map(str::to_owned)
                .to_vec(),
            metric: "cpu".to_owned(),
            kinds: vec!["cpu".to_owned(), "threads".to_owned()],
            max_age: Duration::from_secs(600),
        }
    }
}

impl AlertmanagerConfig {
    /// Checks the metric and kinds; the message names the bad value.
    pub fn validate(&self) -> Result<(), String> {
        self.metric
            .parse::<Metric>()
            .map_err(|e| format!("alertmanager.metric: {e}"))?;
        self.capture_kinds()
            .map_err(|e| format!("alertmanager.kinds: {e}"))?;
        if self.service_labels.is_empty() {
            return Err(
                "alertmanager.service_labels is empty: no alert could name a service".to_owned(),
            );
        }
        Ok(())
    }

    fn capture_kinds(&self) -> Result<Vec<ProfileKind>, String> {
        self.kinds
            .iter()
            .map(|k| crate::query::profiles::parse_kind(k))
            .collect()
    }
}

/// Alertmanager's webhook payload (the fields used).
#[derive(Debug, Deserialize)]
pub struct WebhookPayload {
    /// The alerts of the notification.
    #[serde(default)]
    pub alerts: Vec<WebhookAlert>,
}

/// One alert of a webhook payload.
#[derive(Debug, Deserialize)]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    #[serde(default)]
    pub status: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    #[serde(default, rename = "startsAt")]
    pub starts_at: String,
    /// Alertmanager's fingerprint of its labels.
    #[serde(default)]
    pub fingerprint: String,
}

/// What `POST /api/v1/alertmanager` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookAnswer {
    /// Alerts that became trigger events.
    pub accepted: usize,
    /// Agents asked to capture.
    pub captures: usize,
    /// Alerts left out, with why.
    pub skipped: Vec<String>,
}

#[derive(Clone)]
pub(crate) struct Receiver {
    config: Arc<AlertmanagerConfig>,
    kinds: Vec<ProfileKind>,
    sink: Option<Arc<dyn Sink>>,
    control: Arc<Control>,
    captured: Arc<Mutex<(HashSet<String>, VecDeque<String>)>>,
}

/// The route, over the node's control plane (captures reach agents on every node) and
/// the pipeline (`sink`; `None` on a `process` node, which answers 503).
pub fn router(
    config: AlertmanagerConfig,
    sink: Option<Arc<dyn Sink>>,
    control: Arc<Control>,
    auth: Option<ApiAuth>,
) -> Router {
    let kinds = config.capture_kinds().unwrap_or_default();
    let (route, _) = routes().split_for_parts();
    let route = route.with_state(Receiver {
        config: Arc::new(config),
        kinds,
        sink,
        control,
        captured: Arc::default(),
    });
    match auth {
        Some(auth) => route.layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::require_api_token,
        )),
        None => route,
    }
}

/// The trigger event id of an alert: the same alert firing again has the same one.
fn event_id(service: &str, fingerprint: &str, starts_at: &str) -> String {
    let mut h = blake3::Hasher::new();
    for part in ["alertmanager", service, fingerprint, starts_at] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Receiver {
    /// Whether the capture for `event_id` is still to be made (and remembers it).
    fn first_time(&self, event_id: &str) -> bool {
        let mut guard = self.captured.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *guard;
        if !set.insert(event_id.to_owned()) {
            return false;
        }
        order.push_back(event_id.to_owned());
        if order.len() > REMEMBERED {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }
}

/// The route, registered from its handler's annotation (so the OpenAPI document lists
/// it: [`crate::query::routes::document`]).
pub(crate) fn routes() -> OpenApiRouter<Receiver> {
    OpenApiRouter::default().routes(routes!(webhook))
}

/// Alertmanager's webhook.
///
/// Alertmanager's webhook payload (version 4; `webhook_configs` pointed here). Each
/// firing alert that names a service (the first of `[alertmanager] service_labels` it
/// carries) becomes a trigger event of that service (instance `alertmanager`, reason
/// `requested`), which opens or joins an incident, and the service's agents on every node
/// are asked to capture now (capture request `alert-<event id>`); their profiles are
/// attached to the incident.
/// Resolved alerts and Holmes' own `HolmesIncident` alerts change nothing.
#[utoipa::path(
    post,
    path = "/api/v1/alertmanager",
    operation_id = "alertmanager_webhook",
    tag = "alertmanager",
    request_body(content = Object, description = "Alertmanager's webhook payload, version 4 (`alerts`: `status`, `labels`, `startsAt`, `fingerprint` are read)", content_type = "application/json"),
    responses(
        (status = 200, description = "What became of the alerts", body = WebhookAnswer),
        (status = 400, description = "Not a webhook payload", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "This node does not ingest (role `process`)", body = ErrorJson),
    )
)]
async fn webhook(
    State(receiver): State<Receiver>,
    Json(payload): Json<WebhookPayload>,
) -> Result<Json<WebhookAnswer>, ApiError> {
    let Some(sink) = &receiver.sink else {
        return Err(ApiError {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            message: "this collector does not ingest (role = \"process\"); point Alertmanager at an ingest node".to_owned(),
        });
    };
    let now = unix_nanos_now();
    let max_age = u64::try_from(receiver.config.max_age.as_nanos()).unwrap_or(u64::MAX);
    let mut answer = WebhookAnswer {
        accepted: 0,
        captures: 0,
        skipped: Vec::new(),
    };
    for alert in payload.alerts {
        let name = alert.labels.get("alertname").cloned().unwrap_or_default();
        if alert.status != "firing" {
            continue;
        }
        if name == HOLMES_ALERTNAME {
            answer.skipped.push(format!("{name}: Holmes' own alert"));
            continue;
        }
        let Some(service) = receiver
            .config
            .service_labels
            .iter()
            .filter_map(|l| alert.labels.get(l))
            .find(|s| validate_name("service", s).is_ok())
            .cloned()
        else {
            answer.skipped.push(format!(
                "{name}: no label names a service ({})",
                receiver.config.service_labels.join(", ")
            ));
            metrics().capture_skipped("no_service");
            continue;
        };
        let metric_name = alert
            .labels
            .get("holmes_metric")
            .unwrap_or(&receiver.config.metric);
        let metric: Metric = match metric_name.parse() {
            Ok(m) => m,
            Err(e) => {
                answer.skipped.push(format!("{name}: holmes_metric: {e}"));
                continue;
            }
        };
        let started = parse_time(&alert.starts_at, now)
            .ok()
            .filter(|t| *t <= now)
            .unwrap_or(now);
        let fingerprint = if alert.fingerprint.is_empty() {
            format!("{:?}", alert.labels)
        } else {
            alert.fingerprint.clone()
        };
        let event_id = event_id(&service, &fingerprint, &alert.starts_at);
        let request_id = format!("{ALERT_REQUEST_PREFIX}{event_id}");
        let trigger = TriggerEvent {
            event_id: event_id.clone(),
            metric: Some(metric),
            reason: TriggerReason::Requested,
            current: 0.0,
            window: Vec::new(),
            rule: None,
            unix_nanos: started,
            planned: receiver.kinds.clone(),
            request_id: Some(request_id.clone()),
        };
        sink.deliver(PipelineEvent {
            service: service.clone(),
            instance_id: ALERT_INSTANCE.to_owned(),
            body: PipelineBody::Trigger(trigger),
        })
        .await
        .map_err(|e| ApiError {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            message: format!("the alert was not stored: {e}"),
        })?;
        answer.accepted += 1;
        if now.saturating_sub(started) > max_age {
            answer.skipped.push(format!(
                "{name}: started too long ago to capture its moment"
            ));
            metrics().capture_skipped("alert_too_old");
            continue;
        }
        if !receiver.first_time(&event_id) {
            continue;
        }
        let asked = receiver
            .control
            .request_capture(CaptureAsk {
                service: service.clone(),
                selector: String::new(),
                instance_id: None,
                kinds: receiver.kinds.clone(),
                purpose: CapturePurpose::Alert,
                cpu_duration: None,
                window: None,
                incident_id: None,
                author: ALERT_INSTANCE.to_owned(),
                note: name.clone(),
                request_id: Some(request_id.clone()),
            })
            .await;
        let reached = match asked {
            Ok(asked) => asked.instances,
            Err(err) => {
                tracing::warn!(alert = %name, %service, %request_id, error = %err, "the alert's capture request was not made");
                answer
                    .skipped
                    .push(format!("{name}: capture request not made: {err}"));
                continue;
            }
        };
        if reached.is_empty() {
            metrics().capture_skipped("no_agent");
            answer
                .skipped
                .push(format!("{name}: no agent of {service:?} is connected"));
        }
        tracing::info!(alert = %name, %service, metric = metric.as_str(), %event_id, instances = ?reached, "alert from Alertmanager");
        answer.captures += reached.len();
    }
    Ok(Json(answer))
}
