//! Incidents' suspects in the embedded store: the `incident_suspects` table of
//! migration 9, one row per incident holding the latest computation; the suspects as
//! one BLOB (each function's path and its two shares), and since migration 11 their
//! fingerprint, indexed by service.

use rusqlite::{params, Connection, OptionalExtension};

use super::{nanos_from_sql, nanos_to_sql};
use crate::encoding::{Reader, Writer};
use crate::stored_names::kind_from_name;
use crate::{Comparison, IncidentSuspects, StoreError, SuspectRecord};

/// The table (migration 9).
pub(super) const SCHEMA: &str = "CREATE TABLE incident_suspects (
        incident_id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        kind TEXT NOT NULL,
        comparison TEXT NOT NULL,
        sick_profiles INTEGER NOT NULL,
        comparison_profiles INTEGER NOT NULL,
        computed INTEGER NOT NULL,
        suspects BLOB NOT NULL
    ) WITHOUT ROWID;";

/// Migration 11: the fingerprint, for recurrences (suspects stored before read none).
pub(super) const FINGERPRINTS: &str =
    "ALTER TABLE incident_suspects ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
    CREATE INDEX incident_suspects_by_fingerprint ON incident_suspects (service, fingerprint);";

/// The suspects as bytes: per suspect its function, then both shares as the bits of
/// their `f64`.
fn suspects_bytes(list: &[SuspectRecord]) -> Vec<u8> {
    let mut w = Writer::default();
    for s in list {
        w.str(&s.function);
        w.varint(s.sick_share.to_bits());
        w.varint(s.comparison_share.to_bits());
    }
    w.0
}

/// Reads [`suspects_bytes`].
fn suspects_from(bytes: &[u8]) -> Result<Vec<SuspectRecord>, StoreError> {
    let mut r = Reader::new("incident_suspects.suspects", bytes);
    let mut out = Vec::new();
    while !r.done() {
        out.push(SuspectRecord {
            function: r.str()?,
            sick_share: f64::from_bits(r.varint()?),
            comparison_share: f64::from_bits(r.varint()?),
        });
    }
    Ok(out)
}

pub(super) fn put(conn: &Connection, s: &IncidentSuspects) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO incident_suspects (incident_id, service, kind, comparison, sick_profiles,
            comparison_profiles, computed, suspects, fingerprint)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (incident_id) DO UPDATE SET
            service = excluded.service, kind = excluded.kind,
            comparison = excluded.comparison, sick_profiles = excluded.sick_profiles,
            comparison_profiles = excluded.comparison_profiles,
            computed = excluded.computed, suspects = excluded.suspects,
            fingerprint = excluded.fingerprint
         WHERE excluded.computed >= incident_suspects.computed",
    )?
    .execute(params![
        s.incident_id,
        s.service,
        s.kind.as_str(),
        s.comparison.as_str(),
        s.sick_profiles,
        s.comparison_profiles,
        nanos_to_sql(s.computed_unix_nanos),
        suspects_bytes(&s.suspects),
        s.fingerprint().unwrap_or_default(),
    ])?;
    Ok(())
}

pub(super) fn with_fingerprint(
    conn: &Connection,
    service: &str,
    fingerprint: &str,
    limit: u64,
) -> Result<Vec<String>, StoreError> {
    if fingerprint.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT incident_id FROM incident_suspects WHERE service = ?1 AND fingerprint = ?2
         ORDER BY computed DESC LIMIT ?3",
    )?;
    let ids = stmt
        .query_map(params![service, fingerprint, nanos_to_sql(limit)], |r| {
            r.get(0)
        })?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}

type Row = (String, String, String, String, u32, u32, i64, Vec<u8>);

pub(super) fn get(
    conn: &Connection,
    service: &str,
    incident_id: &str,
) -> Result<Option<IncidentSuspects>, StoreError> {
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT incident_id, service, kind, comparison, sick_profiles, comparison_profiles,
                computed, suspects
             FROM incident_suspects WHERE incident_id = ?1 AND service = ?2",
        )?
        .query_row(params![incident_id, service], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .optional()?;
    let Some(r) = row else {
        return Ok(None);
    };
    Ok(Some(IncidentSuspects {
        kind: kind_from_name("incident_suspects.kind", &r.2)?,
        comparison: Comparison::from_name(&r.3).ok_or_else(|| StoreError::Corrupt {
            what: "incident_suspects.comparison",
            value: r.3.clone(),
        })?,
        incident_id: r.0,
        service: r.1,
        sick_profiles: r.4,
        comparison_profiles: r.5,
        computed_unix_nanos: nanos_from_sql(r.6),
        suspects: suspects_from(&r.7)?,
    }))
}
