//! `GET /api/v1/services/{service}/triggers`: a service's trigger events, oldest first.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use holmes_proto::{Metric, RuleConfig, TriggerReason, UnknownMetric};
use holmes_storage::{TriggerQuery, TriggerRecord};
use serde::{Deserialize, Serialize};

use super::{
    check_service, known_service, limit, nan_if_null, time_range, Api, PointJson,
    DEFAULT_TRIGGER_LIMIT, DEFAULT_TRIGGER_SINCE,
};
use crate::clock::rfc3339;
use crate::error::ApiError;

/// The trigger events of one service in a time range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggersJson {
    /// Service name.
    pub service: String,
    /// Start of the range, RFC 3339.
    pub since: String,
    /// End of the range (exclusive), RFC 3339.
    pub until: String,
    /// The events, oldest first (ties by event id).
    pub triggers: Vec<TriggerJson>,
}

/// One trigger event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerJson {
    /// Event id the agent made.
    pub event_id: String,
    /// Instance it fired in.
    pub instance: String,
    /// Metric name; `null` for a requested capture.
    pub metric: Option<String>,
    /// `abs`, `diff` or `requested`.
    pub reason: String,
    /// The value that fired; `null` in JSON if it is not a finite number.
    #[serde(deserialize_with = "nan_if_null")]
    pub current: f64,
    /// When it fired, RFC 3339.
    pub ts: String,
    /// Same, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The rule's window at the time, oldest first.
    pub window: Vec<PointJson>,
    /// The rule as it was; `null` for a requested capture.
    pub rule: Option<RuleJson>,
    /// The capture request it answers, if any.
    pub request_id: Option<String>,
}

/// A trigger rule as it was when it fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleJson {
    /// Whether it was enabled.
    pub enabled: bool,
    /// Below this nothing fires.
    #[serde(deserialize_with = "nan_if_null")]
    pub min: f64,
    /// Percent above the window average that fires; `null` when switched off.
    pub diff: Option<f64>,
    /// Absolute value above which it fires; `null` when switched off.
    pub abs: Option<f64>,
    /// At or above this it stays silent; 0 means no ceiling.
    #[serde(deserialize_with = "nan_if_null")]
    pub max: f64,
    /// Sleep after firing, milliseconds.
    pub cooldown_ms: u64,
    /// Samples in the rule's window.
    pub window: u32,
}

/// `abs`, `diff` or `requested`: a reason's name in the API, the CLI and the logs.
pub fn reason_name(reason: TriggerReason) -> &'static str {
    match reason {
        TriggerReason::Abs => "abs",
        TriggerReason::Diff => "diff",
        TriggerReason::Requested => "requested",
    }
}

impl From<&RuleConfig> for RuleJson {
    fn from(r: &RuleConfig) -> Self {
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

impl From<TriggerRecord> for TriggerJson {
    fn from(t: TriggerRecord) -> Self {
        TriggerJson {
            metric: t.metric.map(|m| m.as_str().to_owned()),
            reason: reason_name(t.reason).to_owned(),
            current: t.current,
            ts: rfc3339(t.unix_nanos),
            unix_ms: t.unix_nanos / 1_000_000,
            window: t
                .window
                .iter()
                .map(|s| PointJson::new(s.unix_nanos, s.value))
                .collect(),
            rule: t.rule.as_ref().map(RuleJson::from),
            request_id: t.request_id,
            event_id: t.event_id,
            instance: t.instance_id,
        }
    }
}

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
        triggers: found.into_iter().map(TriggerJson::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
        let json = serde_json::to_value(TriggerJson::from(record)).unwrap();
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
