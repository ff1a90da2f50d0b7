//! The control plane's routes: central rules (and their history) and pauses, plus the
//! rules' side of the instances list. Capture requests are in [`super::captures`].
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/services/{service}/rules` | [`RulesJson`]: the rules in force by selector and metric, the version, the pauses |
//! | `PUT /api/v1/services/{service}/rules` | body [`RulesEditJson`] `{selector?, rules: {metric: text}, by?, note?}`; sets those metrics of that layer; answers the new [`RulesJson`]; 400 naming the metric and field of a bad rule |
//! | `DELETE /api/v1/services/{service}/rules[?metric=cpu][&selector=k=v][&by=..]` | deletes one rule or the whole layer (agents get their own back); the new [`RulesJson`]; 404 when there is nothing to delete |
//! | `GET /api/v1/services/{service}/rules/history[?limit=100]` | [`RuleHistoryJson`], newest first |
//! | `GET\|PUT\|DELETE /api/v1/services/{service}/pause`, `GET\|PUT\|DELETE /api/v1/pause` | [`PausesJson`]; `PUT` takes [`PauseEditJson`] `{for: "30m", reason?, by?}`, `DELETE` resumes (`?by=`) |

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use holmes_api::control::{
    CentralRuleJson, PauseEditJson, PauseJson, PausesJson, RuleChangeJson, RuleHistoryJson,
    RuleRefusalJson, RulesEditJson, RulesJson, DEFAULT_HISTORY_LIMIT,
};
use holmes_api::InstanceJson;
use holmes_proto::rule_spec::{apply, default_rule};
use holmes_storage::PauseRecord;

use super::triggers::rule_json;
use crate::clock::{rfc3339, unix_nanos_now};
use crate::control::edit::{Author, EditError};
use crate::control::state::ControlState;
use crate::control::Control;
use crate::error::ApiError;

/// The routes, over `control`.
pub(super) fn routes(control: Arc<Control>) -> Router {
    Router::new()
        .route(
            "/api/v1/services/{service}/rules",
            get(get_rules).put(put_rules).delete(delete_rules),
        )
        .route("/api/v1/services/{service}/rules/history", get(history))
        .route(
            "/api/v1/services/{service}/pause",
            get(get_service_pause)
                .put(put_service_pause)
                .delete(delete_service_pause),
        )
        .route(
            "/api/v1/pause",
            get(get_fleet_pause)
                .put(put_fleet_pause)
                .delete(delete_fleet_pause),
        )
        .merge(super::captures::routes())
        .with_state(control)
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

async fn get_rules(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
) -> Result<Json<RulesJson>, ApiError> {
    check_service(&service)?;
    Ok(Json(rules_doc(&control, &service).await?))
}

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

async fn get_service_pause(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
) -> Result<Json<PausesJson>, ApiError> {
    check_service(&service)?;
    Ok(Json(pauses_doc(&control, Some(&service)).await?))
}

async fn put_service_pause(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
    edit: Result<Json<PauseEditJson>, JsonRejection>,
) -> Result<Json<PausesJson>, ApiError> {
    check_service(&service)?;
    put_pause(&control, Some(&service), edit).await
}

async fn delete_service_pause(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<PausesJson>, ApiError> {
    check_service(&service)?;
    resume(&control, Some(&service), &params).await
}

async fn get_fleet_pause(
    State(control): State<Arc<Control>>,
) -> Result<Json<PausesJson>, ApiError> {
    Ok(Json(pauses_doc(&control, None).await?))
}

async fn put_fleet_pause(
    State(control): State<Arc<Control>>,
    edit: Result<Json<PauseEditJson>, JsonRejection>,
) -> Result<Json<PausesJson>, ApiError> {
    put_pause(&control, None, edit).await
}

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
