//! Incidents on ClickHouse: the `incidents` table of migration 6. Every change of an
//! incident is a new row with a higher `version`; `ReplacingMergeTree(version)` keeps
//! the highest at merges, and reads take it with `LIMIT 1 BY incident_id` before
//! filtering, so an old version never shows through.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::batch::Weigh;
use super::ClickHouseStore;
use crate::stored_names::metric_from_name;
use crate::{IncidentQuery, IncidentRecord, IncidentStatus, Severity, StoreError};

#[derive(Row, Serialize, Deserialize)]
pub(super) struct IncidentRow {
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
    skipped_captures: u64,
}

impl Weigh for IncidentRow {
    fn weight(&self) -> usize {
        self.service.len()
            + self.incident_id.len()
            + self
                .instances
                .iter()
                .chain(&self.event_ids)
                .chain(&self.related)
                .map(|s| s.len() + 1)
                .sum::<usize>()
            + 96
    }
}

/// An incident's service by its id (`incidents_by_id`).
#[derive(Row, Serialize, Deserialize)]
pub(super) struct IncidentIdRow {
    incident_id: String,
    service: String,
}

impl Weigh for IncidentIdRow {
    fn weight(&self) -> usize {
        self.incident_id.len() + self.service.len() + 8
    }
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
            skipped_captures: self.skipped_captures,
        })
    }
}

/// Writes the version and the id lookup, each in the batch of its table (an incident
/// changes with every trigger: one `INSERT` each would make a part each).
pub(super) async fn upsert(store: &ClickHouseStore, i: &IncidentRecord) -> Result<(), StoreError> {
    let row = IncidentRow {
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
        skipped_captures: i.skipped_captures,
    };
    let id = IncidentIdRow {
        incident_id: i.incident_id.clone(),
        service: i.service.clone(),
    };
    let b = &store.batches;
    let (rows, ids) = tokio::join!(
        b.incidents.insert(vec![row]),
        b.incident_ids.insert(vec![id])
    );
    store.batched("incidents", rows)?;
    store.batched("incidents_by_id", ids)
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
            // The time range goes inside: a later version's span only grows, so a
            // version in range never hides a newer one out of range. The status must be
            // the newest version's, so it is filtered outside.
            "SELECT ?fields FROM (
                SELECT * FROM incidents
                WHERE (? = 0 OR service = ?) AND last_event >= ? AND first_event < ?
                ORDER BY version DESC LIMIT 1 BY incident_id
             )
             WHERE (? = 0 OR status = ?)
             ORDER BY first_event DESC, incident_id DESC
             LIMIT ?",
        )
        .bind(u8::from(service.is_some()))
        .bind(service.unwrap_or(""))
        .bind(q.since_unix_nanos)
        .bind(q.until_unix_nanos)
        .bind(u8::from(status.is_some()))
        .bind(status.unwrap_or(""))
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
    // The service first (a primary-key lookup), then one service's key range.
    let service: Option<String> = store
        .client
        .query("SELECT service FROM incidents_by_id WHERE incident_id = ? LIMIT 1")
        .bind(incident_id)
        .fetch_optional()
        .await
        .map_err(|e| store.err(e))?;
    let Some(service) = service else {
        return Ok(None);
    };
    let row: Option<IncidentRow> = store
        .client
        .query(
            "SELECT ?fields FROM incidents WHERE service = ? AND incident_id = ?
             ORDER BY version DESC LIMIT 1",
        )
        .bind(&service)
        .bind(incident_id)
        .fetch_optional()
        .await
        .map_err(|e| store.err(e))?;
    row.map(IncidentRow::decode).transpose()
}
