//! The control plane's routes: central rules (and their history) and pauses, plus the
//! rules' side of the instances list. Capture requests are in [`super::captures`].
//! Each route is described by its handler's annotation (the OpenAPI document:
//! [`super::routes`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, Path, Query, State};
use axum::Json;
use holmes_api::control::{
    CentralRuleJson, PauseEditJson, PauseJson, PausesJson, RuleChangeJson, RuleHistoryJson,
    RuleRefusalJson, RulesEditJson, RulesJson, DEFAULT_HISTORY_LIMIT,
};
use holmes_api::{ErrorJson, InstanceJson};
use holmes_proto::rule_spec::{apply, default_rule};
use holmes_storage::PauseRecord;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::triggers::rule_json;
use crate::clock::{rfc3339, unix_nanos_now};
use crate::control::edit::{Author, EditError};
use crate::control::state::ControlState;
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
        .routes(routes!(get_rules, put_rules, delete_rules))
        .routes(routes!(history))
        .routes(routes!(
            get_service_pause,
            put_service_pause,
            delete_service_pause
        ))
        .routes(routes!(
            get_fleet_pause,
            put_fleet_pause,
            delete_fleet_pause
        ))
}

impl From<EditError> for ApiError {
    fn from(err: EditError) -> Self {
        match err {
            EditError::Invalid(m) => ApiError::bad_request(m),
            EditError::NotFound(m) => ApiError::not_found(m),
            EditError::Store(e) => e.into(),
        }
    }
}

/// A JSON body, or a 400 saying what is wrong with it.
pub(super) fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::bad_request(format!("request body: {}", e.body_text())))
}

pub(super) fn check_service(service: &str) -> Result<(), ApiError> {
    holmes_proto::names::validate_name("service", service)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn pause_json(p: &PauseRecord, now: u64) -> Option<PauseJson> {
    (p.edit.until_unix_nanos > now).then(|| PauseJson {
        service: (!p.edit.scope.is_empty()).then(|| p.edit.scope.clone()),
        until: rfc3339(p.edit.until_unix_nanos),
        until_unix_ms: p.edit.until_unix_nanos / 1_000_000,
        reason: p.edit.reason.clone(),
        by: p.by.author.clone(),
        version: p.version,
    })
}

/// The rules document of one service, read from the store.
pub(super) async fn rules_doc(control: &Control, service: &str) -> Result<RulesJson, ApiError> {
    let state = ControlState::load_service(control.store(), service).await?;
    let rules_in_force = control.store().rules_in_force(Some(service)).await?;
    let now = unix_nanos_now();
    let service_wide: BTreeMap<_, _> = rules_in_force
        .iter()
        .filter(|c| c.edit.selector.is_empty())
        .filter_map(|c| c.edit.text.as_ref().map(|t| (c.edit.metric, t.clone())))
        .collect();
    let mut rules = Vec::new();
    for c in rules_in_force {
        let Some(text) = c.edit.text else { continue };
        let Some(mut rule) = default_rule(c.edit.metric) else {
            continue;
        };
        if !c.edit.selector.is_empty() {
            if let Some(below) = service_wide.get(&c.edit.metric) {
                rule = apply(&rule, below).unwrap_or(rule);
            }
        }
        let rule = apply(&rule, &text).unwrap_or(rule);
        rules.push(CentralRuleJson {
            selector: c.edit.selector,
            metric: c.edit.metric.as_str().to_owned(),
            text,
            rule: rule_json(&rule),
            version: c.version,
            changed_at: rfc3339(c.by.unix_nanos),
            by: c.by.author,
        });
    }
    let service_pause = state.services.get(service).and_then(|s| s.pause.as_ref());
    Ok(RulesJson {
        service: service.to_owned(),
        version: state.version,
        rules,
        pause: service_pause.and_then(|p| pause_json(p, now)),
        fleet_pause: state.fleet_pause.as_ref().and_then(|p| pause_json(p, now)),
    })
}

fn author(params: &HashMap<String, String>) -> Author {
    Author {
        name: params.get("by").cloned().unwrap_or_default(),
        note: params.get("note").cloned().unwrap_or_default(),
    }
}

/// A service's central rules.
///
/// The rules in force by selector and metric, the version its agents should have, and
/// the pauses.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/rules",
    operation_id = "get_rules",
    tag = "control",
    params(
        ("service" = String, Path, description = "Service name"),
    ),
    responses(
        (status = 200, description = "The rules in force", body = RulesJson),
        (status = 400, description = "Bad service name", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn get_rules(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
) -> Result<Json<RulesJson>, ApiError> {
    check_service(&service)?;
    Ok(Json(rules_doc(&control, &service).await?))
}

/// Sets central rules.
///
/// Sets the given metrics' rules of one layer (a selector's, or the whole service's);
/// the other metrics stay. Connected agents get the change live.
#[utoipa::path(
    put,
    path = "/api/v1/services/{service}/rules",
    operation_id = "put_rules",
    tag = "control",
    params(
        ("service" = String, Path, description = "Service name"),
    ),
    request_body = RulesEditJson,
    responses(
        (status = 200, description = "The rules now in force", body = RulesJson),
        (status = 400, description = "Bad service name, body, selector or rule (naming the metric and field)", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn put_rules(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
    edit: Result<Json<RulesEditJson>, JsonRejection>,
) -> Result<Json<RulesJson>, ApiError> {
    check_service(&service)?;
    let edit = body(edit)?;
    let by = Author {
        name: edit.by,
        note: edit.note,
    };
    control
        .set_rules(&service, &edit.selector, &edit.rules, &by)
        .await?;
    Ok(Json(rules_doc(&control, &service).await?))
}

/// Deletes central rules.
///
/// One metric's rule of a layer, or the whole layer; its agents get their own rules back.
#[utoipa::path(
    delete,
    path = "/api/v1/services/{service}/rules",
    operation_id = "delete_rules",
    tag = "control",
    params(
        ("service" = String, Path, description = "Service name"),
        ("metric" = Option<String>, Query, description = "The metric whose rule goes; every metric of the layer when left out"),
        ("selector" = Option<String>, Query, description = "The layer (`k=v[,k=v]`); the whole service's when left out"),
        ("by" = Option<String>, Query, description = "Who (kept in the history)"),
        ("note" = Option<String>, Query, description = "Why (kept in the history)"),
    ),
    responses(
        (status = 200, description = "The rules now in force", body = RulesJson),
        (status = 400, description = "Bad service name, metric, selector or parameter", body = ErrorJson),
        (status = 404, description = "No such rule to delete", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn delete_rules(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<RulesJson>, ApiError> {
    check_service(&service)?;
    if let Some(bad) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "metric" | "selector" | "by" | "note"))
    {
        return Err(ApiError::bad_request(format!(
            "unknown parameter {bad:?}; use metric, selector, by, note"
        )));
    }
    control
        .delete_rules(
            &service,
            params.get("selector").map_or("", String::as_str),
            params.get("metric").map(String::as_str),
            &author(&params),
        )
        .await?;
    Ok(Json(rules_doc(&control, &service).await?))
}

/// A service's rule changes, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/rules/history",
    operation_id = "rule_history",
    tag = "control",
    params(
        ("service" = String, Path, description = "Service name"),
        ("limit" = Option<u64>, Query, description = "At most this many changes (100 by default)"),
    ),
    responses(
        (status = 200, description = "The changes, newest first", body = RuleHistoryJson),
        (status = 400, description = "Bad service name or limit", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn history(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<RuleHistoryJson>, ApiError> {
    check_service(&service)?;
    let limit = super::limit(&params, DEFAULT_HISTORY_LIMIT)?;
    let changes = control.store().rule_history(&service, limit).await?;
    Ok(Json(RuleHistoryJson {
        service,
        changes: changes
            .into_iter()
            .map(|c| RuleChangeJson {
                version: c.version,
                changed_at: rfc3339(c.by.unix_nanos),
                unix_ms: c.by.unix_nanos / 1_000_000,
                by: c.by.author,
                note: c.by.note,
                selector: c.edit.selector,
                metric: c.edit.metric.as_str().to_owned(),
                text: c.edit.text,
            })
            .collect(),
    }))
}

async fn pauses_doc(control: &Control, service: Option<&str>) -> Result<PausesJson, ApiError> {
    let now = unix_nanos_now();
    let state = match service {
        Some(service) => ControlState::load_service(control.store(), service).await?,
        None => ControlState::from_records(
            control.store().control_version().await?,
            Vec::new(),
            control.store().pauses().await?,
        ),
    };
    let pause = service
        .and_then(|s| state.services.get(s))
        .and_then(|s| s.pause.as_ref())
        .and_then(|p| pause_json(p, now));
    Ok(PausesJson {
        pause,
        fleet_pause: state.fleet_pause.as_ref().and_then(|p| pause_json(p, now)),
        version: state.version,
    })
}

async fn put_pause(
    control: &Control,
    service: Option<&str>,
    edit: Result<Json<PauseEditJson>, JsonRejection>,
) -> Result<Json<PausesJson>, ApiError> {
    let edit = body(edit)?;
    let duration = humantime::parse_duration(edit.duration.trim()).map_err(|e| {
        ApiError::bad_request(format!(
            "for = {:?}: {e}; write e.g. 30m, 2h",
            edit.duration
        ))
    })?;
    if duration.is_zero() || duration > std::time::Duration::from_secs(7 * 24 * 3600) {
        return Err(ApiError::bad_request(format!(
            "for = {:?}: a pause lasts more than 0s and at most 7 days",
            edit.duration
        )));
    }
    let until = unix_nanos_now().saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(0));
    let by = Author {
        name: edit.by,
        note: String::new(),
    };
    control.set_pause(service, until, &edit.reason, &by).await?;
    Ok(Json(pauses_doc(control, service).await?))
}

async fn resume(
    control: &Control,
    service: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<Json<PausesJson>, ApiError> {
    control
        .set_pause(service, 0, "resumed", &author(params))
        .await?;
    Ok(Json(pauses_doc(control, service).await?))
}

/// A service's pause of captures, and the fleet's.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/pause",
    operation_id = "get_service_pause",
    tag = "control",
    params(
        ("service" = String, Path, description = "Service name"),
    ),
    responses(
        (status = 200, description = "The pauses in force", body = PausesJson),
        (status = 400, description = "Bad service name", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn get_service_pause(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
) -> Result<Json<PausesJson>, ApiError> {
    check_service(&service)?;
    Ok(Json(pauses_doc(&control, Some(&service)).await?))
}

/// Pauses a service's captures.
///
/// Its agents capture nothing until the pause ends or is lifted (at most 7 days).
#[utoipa::path(
    put,
    path = "/api/v1/services/{service}/pause",
    operation_id = "pause_service",
    tag = "control",
    params(
        ("service" = String, Path, description = "Service name"),
    ),
    request_body = PauseEditJson,
    responses(
        (status = 200, description = "The pauses now in force", body = PausesJson),
        (status = 400, description = "Bad service name, body or duration", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn put_service_pause(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
    edit: Result<Json<PauseEditJson>, JsonRejection>,
) -> Result<Json<PausesJson>, ApiError> {
    check_service(&service)?;
    put_pause(&control, Some(&service), edit).await
}

/// Lifts a service's pause of captures.
#[utoipa::path(
    delete,
    path = "/api/v1/services/{service}/pause",
    operation_id = "resume_service",
    tag = "control",
    params(
        ("service" = String, Path, description = "Service name"),
        ("by" = Option<String>, Query, description = "Who (kept in the history)"),
    ),
    responses(
        (status = 200, description = "The pauses now in force", body = PausesJson),
        (status = 400, description = "Bad service name", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn delete_service_pause(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<PausesJson>, ApiError> {
    check_service(&service)?;
    resume(&control, Some(&service), &params).await
}

/// The fleet's pause of captures.
#[utoipa::path(
    get,
    path = "/api/v1/pause",
    operation_id = "get_fleet_pause",
    tag = "control",
    responses(
        (status = 200, description = "The pause in force", body = PausesJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn get_fleet_pause(
    State(control): State<Arc<Control>>,
) -> Result<Json<PausesJson>, ApiError> {
    Ok(Json(pauses_doc(&control, None).await?))
}

/// Pauses every agent's captures.
///
/// Every agent of every service captures nothing until the pause ends or is lifted (at
/// most 7 days).
#[utoipa::path(
    put,
    path = "/api/v1/pause",
    operation_id = "pause_fleet",
    tag = "control",
    request_body = PauseEditJson,
    responses(
        (status = 200, description = "The pause now in force", body = PausesJson),
        (status = 400, description = "Bad body or duration", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn put_fleet_pause(
    State(control): State<Arc<Control>>,
    edit: Result<Json<PauseEditJson>, JsonRejection>,
) -> Result<Json<PausesJson>, ApiError> {
    put_pause(&control, None, edit).await
}

/// Lifts the fleet's pause of captures.
#[utoipa::path(
    delete,
    path = "/api/v1/pause",
    operation_id = "resume_fleet",
    tag = "control",
    params(
        ("by" = Option<String>, Query, description = "Who (kept in the history)"),
    ),
    responses(
        (status = 200, description = "The pause now in force", body = PausesJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn delete_fleet_pause(
    State(control): State<Arc<Control>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<PausesJson>, ApiError> {
    resume(&control, None, &params).await
}

/// Fills in each instance's rules side: whether it is connected, the version it has in
/// force, whether it lags behind the service's, what it refused.
pub(super) async fn annotate_instances(
    store: &Arc<dyn holmes_storage::Store>,
    service: &str,
    instances: &mut [InstanceJson],
) -> Result<(), ApiError> {
    let (state, reports) = tokio::try_join!(
        ControlState::load_service(store, service),
        store.agent_reports(service)
    )?;
    for instance in instances.iter_mut() {
        let Some(report) = reports.iter().find(|r| r.instance_id == instance.instance) else {
            continue;
        };
        instance.connected = Some(report.connected);
        instance.rules_version = Some(report.rules_version);
        instance.rules_pending = report.connected && report.rules_version < state.version;
        instance.rules_refused = report
            .refused
            .iter()
            .map(|r| RuleRefusalJson {
                metric: r.metric.as_str().to_owned(),
                reason: r.reason.clone(),
            })
            .collect();
    }
    Ok(())
}
