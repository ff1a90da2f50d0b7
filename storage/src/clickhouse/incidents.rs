//! Incidents on ClickHouse: the `incidents` table of migration 6. Every change of an
//! incident is a new row with a higher `version`; `ReplacingMergeTree(version)` keeps
//! the highest at merges, and reads take it with `LIMIT 1 BY incident_id` before
//! filtering, so an old version never shows through.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::ClickHouseStore;
use crate::stored_names::metric_from_name;
use crate::{IncidentQuery, IncidentRecord, IncidentStatus, Severity, StoreError};

#[derive(Row, Serialize, Deserialize)]
struct IncidentRow {
    service: String,
    incident_id: String,
    metric: String,
    severity: String,
    status: String,
    first_event: u64,
    last_event: u64,
    has_resolved: u8,
    resolved: u64,
    instances: Vec<String>,
    event_ids: Vec<String>,
    related: Vec<String>,
    version: u64,
}

impl IncidentRow {
    fn decode(self) -> Result<IncidentRecord, StoreError> {
        let corrupt = |what, value: &str| StoreError::Corrupt {
            what,
            value: value.to_owned(),
        };
        Ok(IncidentRecord {
            metric: metric_from_name("incidents.metric", &self.metric)?,
            severity: Severity::from_name(&self.severity)
                .ok_or_else(|| corrupt("incidents.severity", &self.severity))?,
            status: IncidentStatus::from_name(&self.status)
                .ok_or_else(|| corrupt("incidents.status", &self.status))?,
            incident_id: self.incident_id,
            service: self.service,
            first_event_unix_nanos: self.first_event,
            last_event_unix_nanos: self.last_event,
            resolved_unix_nanos: (self.has_resolved != 0).then_some(self.resolved),
            instances: self.instances,
            event_ids: self.event_ids,
            related: self.related,
            version: self.version,
        })
    }
}

pub(super) async fn upsert(store: &ClickHouseStore, i: &IncidentRecord) -> Result<(), StoreError> {
    let mut insert = store
        .client
        .insert::<IncidentRow>("incidents")
        .await
        .map_err(|e| store.err(e))?;
    insert
        .write(&IncidentRow {
            service: i.service.clone(),
            incident_id: i.incident_id.clone(),
            metric: i.metric.as_str().to_owned(),
            severity: i.severity.as_str().to_owned(),
            status: i.status.as_str().to_owned(),
            first_event: i.first_event_unix_nanos,
            last_event: i.last_event_unix_nanos,
            has_resolved: u8::from(i.resolved_unix_nanos.is_some()),
            resolved: i.resolved_unix_nanos.unwrap_or(0),
            instances: i.instances.clone(),
            event_ids: i.event_ids.clone(),
            related: i.related.clone(),
            version: i.version,
        })
        .await
        .map_err(|e| store.err(e))?;
    insert.end().await.map_err(|e| store.err(e))
}

pub(super) async fn query(
    store: &ClickHouseStore,
    q: &IncidentQuery,
) -> Result<Vec<IncidentRecord>, StoreError> {
    let service = q.service.as_deref();
    let status = q.status.map(IncidentStatus::as_str);
    let rows: Vec<IncidentRow> = store
        .client
        .query(
            "SELECT ?fields FROM (
                SELECT * FROM incidents WHERE (? = 0 OR service = ?)
                ORDER BY version DESC LIMIT 1 BY incident_id
             )
             WHERE (? = 0 OR status = ?) AND last_event >= ? AND first_event < ?
             ORDER BY first_event DESC, incident_id DESC
             LIMIT ?",
        )
        .bind(u8::from(service.is_some()))
        .bind(service.unwrap_or(""))
        .bind(u8::from(status.is_some()))
        .bind(status.unwrap_or(""))
        .bind(q.since_unix_nanos)
        .bind(q.until_unix_nanos)
        .bind(q.limit)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    rows.into_iter().map(IncidentRow::decode).collect()
}

pub(super) async fn get(
    store: &ClickHouseStore,
    incident_id: &str,
) -> Result<Option<IncidentRecord>, StoreError> {
    let row: Option<IncidentRow> = store
        .client
        .query("SELECT ?fields FROM incidents WHERE incident_id = ? ORDER BY version DESC LIMIT 1")
        .bind(incident_id)
        .fetch_optional()
        .await
        .map_err(|e| store.err(e))?;
    row.map(IncidentRow::decode).transpose()
}
