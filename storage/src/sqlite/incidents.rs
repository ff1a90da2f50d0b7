//! Incidents in the embedded store: the `incidents` table of migration 5 (with the
//! captures skipped by the budget since migration 10), one row per incident holding its
//! highest version.

use rusqlite::{params, Connection, OptionalExtension};

use super::{nanos_from_sql, nanos_to_sql};
use crate::encoding::{strings_bytes as strings_to_sql, strings_from as strings_from_sql};
use crate::stored_names::metric_from_name;
use crate::{IncidentQuery, IncidentRecord, IncidentStatus, Severity, StoreError};

const COLUMNS: &str = "incident_id, service, metric, severity, status, first_event, last_event,
    resolved, instances, event_ids, related, version, skipped_captures";

pub(super) fn upsert(conn: &Connection, i: &IncidentRecord) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO incidents ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (incident_id) DO UPDATE SET
            service = excluded.service, metric = excluded.metric,
            severity = excluded.severity, status = excluded.status,
            first_event = excluded.first_event, last_event = excluded.last_event,
            resolved = excluded.resolved, instances = excluded.instances,
            event_ids = excluded.event_ids, related = excluded.related,
            version = excluded.version, skipped_captures = excluded.skipped_captures
         WHERE excluded.version > incidents.version"
    ))?
    .execute(params![
        i.incident_id,
        i.service,
        i.metric.as_str(),
        i.severity.as_str(),
        i.status.as_str(),
        nanos_to_sql(i.first_event_unix_nanos),
        nanos_to_sql(i.last_event_unix_nanos),
        i.resolved_unix_nanos.map(nanos_to_sql),
        strings_to_sql(&i.instances),
        strings_to_sql(&i.event_ids),
        strings_to_sql(&i.related),
        nanos_to_sql(i.version),
        nanos_to_sql(i.skipped_captures),
    ])?;
    Ok(())
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    i64,
    i64,
);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
    ))
}

fn decode(r: Row) -> Result<IncidentRecord, StoreError> {
    let corrupt = |what, value: &str| StoreError::Corrupt {
        what,
        value: value.to_owned(),
    };
    Ok(IncidentRecord {
        metric: metric_from_name("incidents.metric", &r.2)?,
        severity: Severity::from_name(&r.3).ok_or_else(|| corrupt("incidents.severity", &r.3))?,
        status: IncidentStatus::from_name(&r.4).ok_or_else(|| corrupt("incidents.status", &r.4))?,
        incident_id: r.0,
        service: r.1,
        first_event_unix_nanos: nanos_from_sql(r.5),
        last_event_unix_nanos: nanos_from_sql(r.6),
        resolved_unix_nanos: r.7.map(nanos_from_sql),
        instances: strings_from_sql("incidents.instances", &r.8)?,
        event_ids: strings_from_sql("incidents.event_ids", &r.9)?,
        related: strings_from_sql("incidents.related", &r.10)?,
        version: nanos_from_sql(r.11),
        skipped_captures: nanos_from_sql(r.12),
    })
}

pub(super) fn query(
    conn: &Connection,
    q: &IncidentQuery,
) -> Result<Vec<IncidentRecord>, StoreError> {
    // Only the predicates asked for, so that SQLite walks `incidents_by_service` (or
    // `incidents_by_time`) backwards from `until` and stops at `limit`; the SQL is made
    // of fixed fragments, every value is bound.
    let mut sql =
        format!("SELECT {COLUMNS} FROM incidents WHERE first_event < ?1 AND last_event >= ?2");
    let mut values: Vec<rusqlite::types::Value> = vec![
        nanos_to_sql(q.until_unix_nanos).into(),
        nanos_to_sql(q.since_unix_nanos).into(),
    ];
    if let Some(service) = &q.service {
        values.push(service.clone().into());
        sql.push_str(&format!(" AND service = ?{}", values.len()));
    }
    if let Some(status) = q.status {
        values.push(status.as_str().to_owned().into());
        sql.push_str(&format!(" AND status = ?{}", values.len()));
    }
    values.push(nanos_to_sql(q.limit).into());
    sql.push_str(&format!(
        " ORDER BY first_event DESC, incident_id DESC LIMIT ?{}",
        values.len()
    ));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(values), row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(decode).collect()
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<IncidentRecord>, StoreError> {
    let r = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM incidents WHERE incident_id = ?1"
        ))?
        .query_row(params![id], row)
        .optional()?;
    r.map(decode).transpose()
}
