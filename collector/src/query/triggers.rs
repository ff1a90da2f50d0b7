//! `GET /api/v1/services/{service}/triggers`: a service's trigger events, oldest first.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use holmes_api::{
    ErrorJson, RuleJson, TriggerJson, TriggersJson, DEFAULT_TRIGGER_LIMIT, DEFAULT_TRIGGER_SINCE,
};
use holmes_proto::{Metric, RuleConfig, UnknownMetric};
use holmes_storage::{TriggerQuery, TriggerRecord};

use super::{check_service, known_service, limit, point_json, time_range, Api};
use crate::clock::rfc3339;
use crate::error::ApiError;

/// A rule as the API shows it.
pub(super) fn rule_json(r: &RuleConfig) -> RuleJson {
    {
        // An infinite threshold is how a rule says "off" (`abs=off`).
        let threshold = |v: f64| Some(v).filter(|v| v.is_finite());
        RuleJson {
            enabled: r.enabled,
            min: r.min,
            diff: threshold(r.diff),
            abs: threshold(r.abs),
            max: r.max,
            cooldown_ms: u64::try_from(r.cooldown.as_millis()).unwrap_or(u64::MAX),
            window: r.window,
        }
    }
}

/// A trigger event as the API shows it.
pub(super) fn trigger_json(t: TriggerRecord) -> TriggerJson {
    {
        TriggerJson {
            metric: t.metric.map(|m| m.as_str().to_owned()),
            reason: t.reason.as_str().to_owned(),
            current: t.current,
            ts: rfc3339(t.unix_nanos),
            unix_ms: t.unix_nanos / 1_000_000,
            window: t
                .window
                .iter()
                .map(|s| point_json(s.unix_nanos, s.value))
                .collect(),
            rule: t.rule.as_ref().map(rule_json),
            request_id: t.request_id,
            event_id: t.event_id,
            instance: t.instance_id,
        }
    }
}

/// A service's trigger events in a time range, oldest first.
///
/// Rules that fired (reason `abs` or `diff`, with the rule and its window as they were)
/// and captures requested (reason `requested`, `metric` and `rule` `null`, `request_id`
/// set).
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/triggers",
    operation_id = "list_triggers",
    tag = "triggers",
    params(
        ("service" = String, Path, description = "Service name"),
        ("since" = Option<String>, Query, description = "Start: a duration before now (`1h`, the default) or an RFC 3339 time"),
        ("until" = Option<String>, Query, description = "End (exclusive): a duration before now or an RFC 3339 time; now by default"),
        ("metric" = Option<String>, Query, description = "Only the rules of this metric (`cpu`, `memory`, ...)"),
        ("limit" = Option<u64>, Query, description = "At most this many events (1000 by default)"),
    ),
    responses(
        (status = 200, description = "The events", body = TriggersJson),
        (status = 400, description = "Bad parameter", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "Unknown service", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn triggers(
    State(api): State<Api>,
    Path(service): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<TriggersJson>, ApiError> {
    check_service(&service)?;
    let metric = params
        .get("metric")
        .map(|m| m.parse::<Metric>())
        .transpose()
        .map_err(|e: UnknownMetric| ApiError::bad_request(e.to_string()))?;
    let (since, until) = time_range(&params, DEFAULT_TRIGGER_SINCE)?;
    let limit = limit(&params, DEFAULT_TRIGGER_LIMIT)?;
    known_service(&api, &service).await?;
    let found = api
        .store
        .query_triggers(&TriggerQuery {
            service: service.clone(),
            metric,
            since_unix_nanos: since,
            until_unix_nanos: until,
            limit,
        })
        .await?;
    Ok(Json(TriggersJson {
        service,
        since: rfc3339(since),
        until: rfc3339(until),
        triggers: found.into_iter().map(trigger_json).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use holmes_proto::TriggerReason;

    #[test]
    fn off_thresholds_and_non_finite_values_survive_json() {
        let rule = RuleConfig {
            metric: Metric::CpuPercent,
            enabled: true,
            min: 10.0,
            diff: f64::INFINITY,
            abs: 90.0,
            max: 0.0,
            cooldown: Duration::from_secs(120),
            window: 10,
        };
        let record = TriggerRecord {
            service: "checkout".to_owned(),
            instance_id: "checkout-0".to_owned(),
            event_id: "ev-1".to_owned(),
            metric: Some(Metric::CpuPercent),
            reason: TriggerReason::Abs,
            current: f64::NAN,
            window: vec![holmes_proto::Sample {
                unix_nanos: 1_500_000_000,
                value: 91.5,
            }],
            rule: Some(rule),
            unix_nanos: 2_000_000_000,
            request_id: None,
        };
        let json = serde_json::to_value(trigger_json(record)).unwrap();
        assert_eq!(json["current"], serde_json::Value::Null);
        assert_eq!(json["rule"]["diff"], serde_json::Value::Null);
        assert_eq!(json["rule"]["abs"], 90.0);
        assert_eq!(json["rule"]["cooldown_ms"], 120_000);
        assert_eq!(json["window"][0]["ts"], "1970-01-01T00:00:01.500Z");
        assert_eq!(json["ts"], "1970-01-01T00:00:02.000Z");
        let back: TriggerJson = serde_json::from_value(json).unwrap();
        assert!(back.current.is_nan());
        assert_eq!(back.rule.and_then(|r| r.diff), None);
        assert_eq!(back.window[0].value, 91.5);
    }
}
