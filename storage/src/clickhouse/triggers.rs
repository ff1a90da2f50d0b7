//! Trigger events on ClickHouse: the `triggers` table of migration 2.
//!
//! No `Nullable` (slow and awkward on 18.16): a trigger without a metric has an empty
//! `metric`, one without a rule `has_rule = 0` and zeros in the `rule_` columns, one
//! without a request id an empty `request_id`.

use std::time::Duration;

use clickhouse::Row;
use holmes_proto::{RuleConfig, Sample};
use serde::{Deserialize, Serialize};

use super::{date_text, day_of, ClickHouseStore};
use crate::stored_names::{metric_from_name, reason_from_name};
use crate::{StoreError, TriggerQuery, TriggerRecord};

#[derive(Row, Serialize, Deserialize)]
struct TriggerRow {
    day: u16,
    service: String,
    event_id: String,
    instance_id: String,
    ts: u64,
    metric: String,
    reason: String,
    current_value: f64,
    window_ts: Vec<u64>,
    window_values: Vec<f64>,
    has_rule: u8,
    rule_metric: String,
    rule_enabled: u8,
    rule_min: f64,
    rule_diff: f64,
    rule_abs: f64,
    rule_max: f64,
    rule_cooldown_ms: u64,
    rule_window: u32,
    request_id: String,
}

impl TriggerRow {
    fn encode(t: &TriggerRecord) -> TriggerRow {
        let rule = t.rule.as_ref();
        TriggerRow {
            day: day_of(t.unix_nanos),
            service: t.service.clone(),
            event_id: t.event_id.clone(),
            instance_id: t.instance_id.clone(),
            ts: t.unix_nanos,
            metric: t.metric.map_or("", |m| m.as_str()).to_owned(),
            reason: t.reason.as_str().to_owned(),
            current_value: t.current,
            window_ts: t.window.iter().map(|s| s.unix_nanos).collect(),
            window_values: t.window.iter().map(|s| s.value).collect(),
            has_rule: u8::from(rule.is_some()),
            rule_metric: rule.map_or("", |r| r.metric.as_str()).to_owned(),
            rule_enabled: u8::from(rule.is_some_and(|r| r.enabled)),
            rule_min: rule.map_or(0.0, |r| r.min),
            rule_diff: rule.map_or(0.0, |r| r.diff),
            rule_abs: rule.map_or(0.0, |r| r.abs),
            rule_max: rule.map_or(0.0, |r| r.max),
            rule_cooldown_ms: rule.map_or(0, |r| {
                u64::try_from(r.cooldown.as_millis()).unwrap_or(u64::MAX)
            }),
            rule_window: rule.map_or(0, |r| r.window),
            request_id: t.request_id.clone().unwrap_or_default(),
        }
    }

    fn decode(self) -> Result<TriggerRecord, StoreError> {
        if self.window_ts.len() != self.window_values.len() {
            return Err(StoreError::Corrupt {
                what: "triggers.window_ts/window_values",
                value: format!(
                    "{} timestamps, {} values",
                    self.window_ts.len(),
                    self.window_values.len()
                ),
            });
        }
        let rule = if self.has_rule == 0 {
            None
        } else {
            Some(RuleConfig {
                metric: metric_from_name("triggers.rule_metric", &self.rule_metric)?,
                enabled: self.rule_enabled != 0,
                min: self.rule_min,
                diff: self.rule_diff,
                abs: self.rule_abs,
                max: self.rule_max,
                cooldown: Duration::from_millis(self.rule_cooldown_ms),
                window: self.rule_window,
            })
        };
        let metric = if self.metric.is_empty() {
            None
        } else {
            Some(metric_from_name("triggers.metric", &self.metric)?)
        };
        Ok(TriggerRecord {
            service: self.service,
            instance_id: self.instance_id,
            event_id: self.event_id,
            metric,
            reason: reason_from_name("triggers.reason", &self.reason)?,
            current: self.current_value,
            window: self
                .window_ts
                .into_iter()
                .zip(self.window_values)
                .map(|(unix_nanos, value)| Sample { unix_nanos, value })
                .collect(),
            rule,
            unix_nanos: self.ts,
            request_id: Some(self.request_id).filter(|r| !r.is_empty()),
        })
    }
}

pub(super) async fn insert(
    store: &ClickHouseStore,
    triggers: &[TriggerRecord],
) -> Result<(), StoreError> {
    if triggers.is_empty() {
        return Ok(());
    }
    let mut insert = store
        .client
        .insert::<TriggerRow>("triggers")
        .await
        .map_err(|e| store.err(e))?;
    for t in triggers {
        insert
            .write(&TriggerRow::encode(t))
            .await
            .map_err(|e| store.err(e))?;
    }
    insert.end().await.map_err(|e| store.err(e))
}

pub(super) async fn query(
    store: &ClickHouseStore,
    q: &TriggerQuery,
) -> Result<Vec<TriggerRecord>, StoreError> {
    if q.since_unix_nanos >= q.until_unix_nanos {
        return Ok(Vec::new());
    }
    let metric = q.metric.map_or("", |m| m.as_str());
    let rows: Vec<TriggerRow> = store
        .client
        .query(
            "SELECT ?fields FROM triggers
             WHERE service = ? AND day >= toDate(?) AND day <= toDate(?)
               AND ts >= ? AND ts < ? AND (? = '' OR metric = ?)
             ORDER BY ts, event_id
             LIMIT 1 BY event_id
             LIMIT ?",
        )
        .bind(&q.service)
        .bind(date_text(day_of(q.since_unix_nanos)))
        .bind(date_text(day_of(q.until_unix_nanos.saturating_sub(1))))
        .bind(q.since_unix_nanos)
        .bind(q.until_unix_nanos)
        .bind(metric)
        .bind(metric)
        .bind(q.limit)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    rows.into_iter().map(TriggerRow::decode).collect()
}
