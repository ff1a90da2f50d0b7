//! Trigger events in the embedded store: the `triggers` table of migration 2.

use std::time::Duration;

use holmes_proto::{RuleConfig, Sample};
use rusqlite::types::Value;
use rusqlite::{params, Connection};

use super::{nanos_from_sql, nanos_to_sql};
use crate::stored_names::{metric_from_name, reason_from_name};
use crate::{StoreError, TriggerQuery, TriggerRecord};

/// Bytes of one encoded window sample.
const SAMPLE_BYTES: usize = 16;

/// The window as a BLOB: per sample its timestamp and the bits of its value, both
/// little-endian u64, so every value (NaN, -0.0, ...) reads back bit for bit.
fn window_to_sql(window: &[Sample]) -> Vec<u8> {
    let mut out = Vec::with_capacity(window.len() * SAMPLE_BYTES);
    for s in window {
        out.extend_from_slice(&s.unix_nanos.to_le_bytes());
        out.extend_from_slice(&s.value.to_bits().to_le_bytes());
    }
    out
}

fn window_from_sql(blob: &[u8]) -> Result<Vec<Sample>, StoreError> {
    if blob.len() % SAMPLE_BYTES != 0 {
        return Err(StoreError::Corrupt {
            what: "triggers.window_samples",
            value: format!("{} bytes, not a multiple of {SAMPLE_BYTES}", blob.len()),
        });
    }
    let word = |bytes: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(bytes);
        u64::from_le_bytes(w)
    };
    Ok(blob
        .chunks_exact(SAMPLE_BYTES)
        .map(|c| Sample {
            unix_nanos: word(&c[..8]),
            value: f64::from_bits(word(&c[8..])),
        })
        .collect())
}

/// SQLite stores NaN as NULL; a NULL number reads back as NaN.
fn number_from_sql(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

fn cooldown_to_sql(cooldown: Duration) -> i64 {
    nanos_to_sql(u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn insert(tx: &Connection, triggers: &[TriggerRecord]) -> Result<(), StoreError> {
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO triggers
                (service, event_id, instance_id, ts, metric, reason, current_value,
                 window_samples, rule_metric, rule_enabled, rule_min, rule_diff, rule_abs,
                 rule_max, rule_cooldown_ms, rule_window, request_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?;
        for t in triggers {
            let rule = t.rule.as_ref();
            stmt.execute(params![
                t.service,
                t.event_id,
                t.instance_id,
                nanos_to_sql(t.unix_nanos),
                t.metric.map(|m| m.as_str()),
                t.reason.as_str(),
                t.current,
                window_to_sql(&t.window),
                rule.map(|r| r.metric.as_str()),
                rule.map(|r| r.enabled),
                rule.map(|r| r.min),
                rule.map(|r| r.diff),
                rule.map(|r| r.abs),
                rule.map(|r| r.max),
                rule.map(|r| cooldown_to_sql(r.cooldown)),
                rule.map(|r| r.window),
                t.request_id.as_deref().filter(|r| !r.is_empty()),
            ])?;
        }
    }

    Ok(())
}

/// One row as SQLite returns it, before the parts SQLite cannot check are decoded.
struct Row {
    instance_id: String,
    event_id: String,
    ts: i64,
    metric: Option<String>,
    reason: String,
    current: Option<f64>,
    window: Vec<u8>,
    rule_metric: Option<String>,
    rule_enabled: Option<bool>,
    rule_numbers: [Option<f64>; 4],
    rule_cooldown_ms: Option<i64>,
    rule_window: Option<u32>,
    request_id: Option<String>,
}

impl Row {
    fn decode(self, service: &str) -> Result<TriggerRecord, StoreError> {
        let rule = match self.rule_metric {
            None => None,
            Some(name) => {
                let [min, diff, abs, max] = self.rule_numbers.map(number_from_sql);
                Some(RuleConfig {
                    metric: metric_from_name("triggers.rule_metric", &name)?,
                    enabled: self.rule_enabled.unwrap_or(false),
                    min,
                    diff,
                    abs,
                    max,
                    cooldown: Duration::from_millis(nanos_from_sql(
                        self.rule_cooldown_ms.unwrap_or(0),
                    )),
                    window: self.rule_window.unwrap_or(0),
                })
            }
        };
        Ok(TriggerRecord {
            service: service.to_owned(),
            instance_id: self.instance_id,
            event_id: self.event_id,
            metric: self
                .metric
                .map(|m| metric_from_name("triggers.metric", &m))
                .transpose()?,
            reason: reason_from_name("triggers.reason", &self.reason)?,
            current: number_from_sql(self.current),
            window: window_from_sql(&self.window)?,
            rule,
            unix_nanos: nanos_from_sql(self.ts),
            request_id: self.request_id,
        })
    }
}

pub(super) fn query(conn: &Connection, q: &TriggerQuery) -> Result<Vec<TriggerRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT instance_id, event_id, ts, metric, reason, current_value, window_samples,
                rule_metric, rule_enabled, rule_min, rule_diff, rule_abs, rule_max,
                rule_cooldown_ms, rule_window, request_id
         FROM triggers
         WHERE service = ?1 AND ts >= ?2 AND ts < ?3 AND (?4 IS NULL OR metric = ?4)
         ORDER BY ts, event_id LIMIT ?5",
    )?;
    let metric: Value = match q.metric {
        Some(m) => Value::Text(m.as_str().to_owned()),
        None => Value::Null,
    };
    let rows = stmt.query_map(
        params![
            q.service,
            nanos_to_sql(q.since_unix_nanos),
            nanos_to_sql(q.until_unix_nanos),
            metric,
            nanos_to_sql(q.limit),
        ],
        |r| {
            Ok(Row {
                instance_id: r.get(0)?,
                event_id: r.get(1)?,
                ts: r.get(2)?,
                metric: r.get(3)?,
                reason: r.get(4)?,
                current: r.get(5)?,
                window: r.get(6)?,
                rule_metric: r.get(7)?,
                rule_enabled: r.get(8)?,
                rule_numbers: [r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?],
                rule_cooldown_ms: r.get(13)?,
                rule_window: r.get(14)?,
                request_id: r.get(15)?,
            })
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?.decode(&q.service)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_blob_keeps_every_bit() {
        let window = vec![
            Sample {
                unix_nanos: u64::MAX,
                value: -0.0,
            },
            Sample {
                unix_nanos: 0,
                value: f64::from_bits(0x7ff8_0000_dead_beef),
            },
            Sample {
                unix_nanos: 42,
                value: f64::NEG_INFINITY,
            },
        ];
        let back = window_from_sql(&window_to_sql(&window)).unwrap();
        let bits = |w: &[Sample]| -> Vec<(u64, u64)> {
            w.iter()
                .map(|s| (s.unix_nanos, s.value.to_bits()))
                .collect()
        };
        assert_eq!(bits(&back), bits(&window));
        assert!(window_from_sql(&[]).unwrap().is_empty());
        let err = window_from_sql(&[0; 17]).unwrap_err().to_string();
        assert!(err.contains("17 bytes"), "{err}");
    }
}
