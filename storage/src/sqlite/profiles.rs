//! Profiles in the embedded store: the `profiles` table of migration 3.

use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use super::{labels_from_sql, labels_to_sql, nanos_from_sql, nanos_to_sql};
use crate::stored_names::kind_from_name;
use crate::{ProfileMeta, ProfileQuery, ProfileRecord, StoreError};

/// The duration's nanoseconds (saturated at `u64::MAX`) as the bits of an i64, so that
/// every u64 reads back.
fn duration_to_sql(d: Duration) -> i64 {
    i64::from_le_bytes(
        u64::try_from(d.as_nanos())
            .unwrap_or(u64::MAX)
            .to_le_bytes(),
    )
}

fn duration_from_sql(bits: i64) -> Duration {
    Duration::from_nanos(u64::from_le_bytes(bits.to_le_bytes()))
}

fn size_from_sql(size: i64) -> Result<u64, StoreError> {
    u64::try_from(size).map_err(|_| StoreError::Corrupt {
        what: "profiles.size_bytes",
        value: size.to_string(),
    })
}

pub(super) fn insert(conn: &mut Connection, p: &ProfileRecord) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO profiles
            (profile_id, service, event_id, instance_id, kind, started, duration_ns, labels,
             error, size_bytes, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    stmt.execute(params![
        p.profile_id,
        p.service,
        p.event_id,
        p.instance_id,
        p.kind.as_str(),
        nanos_to_sql(p.started_unix_nanos),
        duration_to_sql(p.duration),
        labels_to_sql(&p.labels),
        p.error.as_deref().filter(|e| !e.is_empty()),
        nanos_to_sql(p.data.len() as u64),
        p.data,
    ])?;
    Ok(())
}

/// The columns every read shares, as SQLite returns them.
struct Row {
    profile_id: String,
    service: String,
    event_id: String,
    instance_id: String,
    kind: String,
    started: i64,
    duration_ns: i64,
    labels: String,
    error: Option<String>,
}

/// `profile_id, service, event_id, instance_id, kind, started, duration_ns, labels, error`
/// from the start of a result row.
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        profile_id: r.get(0)?,
        service: r.get(1)?,
        event_id: r.get(2)?,
        instance_id: r.get(3)?,
        kind: r.get(4)?,
        started: r.get(5)?,
        duration_ns: r.get(6)?,
        labels: r.get(7)?,
        error: r.get(8)?,
    })
}

impl Row {
    fn decode(self, size_bytes: u64) -> Result<ProfileMeta, StoreError> {
        Ok(ProfileMeta {
            kind: kind_from_name("profiles.kind", &self.kind)?,
            labels: labels_from_sql("profiles.labels", &self.labels)?,
            profile_id: self.profile_id,
            service: self.service,
            event_id: self.event_id,
            instance_id: self.instance_id,
            started_unix_nanos: nanos_from_sql(self.started),
            duration: duration_from_sql(self.duration_ns),
            error: self.error,
            size_bytes,
        })
    }
}

const COLUMNS: &str =
    "profile_id, service, event_id, instance_id, kind, started, duration_ns, labels, error";

pub(super) fn query(
    conn: &mut Connection,
    q: &ProfileQuery,
) -> Result<Vec<ProfileMeta>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, size_bytes FROM profiles
         WHERE service = ?1 AND started >= ?2 AND started < ?3
           AND (?4 IS NULL OR event_id = ?4) AND (?5 IS NULL OR kind = ?5)
         ORDER BY started, profile_id LIMIT ?6"
    ))?;
    let event: Value = match &q.event_id {
        Some(e) => Value::Text(e.clone()),
        None => Value::Null,
    };
    let kind: Value = match q.kind {
        Some(k) => Value::Text(k.as_str().to_owned()),
        None => Value::Null,
    };
    let rows = stmt.query_map(
        params![
            q.service,
            nanos_to_sql(q.since_unix_nanos),
            nanos_to_sql(q.until_unix_nanos),
            event,
            kind,
            nanos_to_sql(q.limit),
        ],
        |r| Ok((row(r)?, r.get::<_, i64>(9)?)),
    )?;
    let mut out = Vec::new();
    for found in rows {
        let (row, size) = found?;
        out.push(row.decode(size_from_sql(size)?)?);
    }
    Ok(out)
}

pub(super) fn get(
    conn: &mut Connection,
    profile_id: &str,
) -> Result<Option<ProfileRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, data FROM profiles WHERE profile_id = ?1 ORDER BY service LIMIT 1"
    ))?;
    let found = stmt
        .query_row(params![profile_id], |r| {
            Ok((row(r)?, r.get::<_, Vec<u8>>(9)?))
        })
        .optional()?;
    let Some((row, data)) = found else {
        return Ok(None);
    };
    let meta = row.decode(data.len() as u64)?;
    Ok(Some(ProfileRecord {
        profile_id: meta.profile_id,
        event_id: meta.event_id,
        service: meta.service,
        instance_id: meta.instance_id,
        kind: meta.kind,
        started_unix_nanos: meta.started_unix_nanos,
        duration: meta.duration,
        labels: meta.labels,
        error: meta.error,
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_every_u64_of_nanoseconds() {
        for nanos in [
            0,
            1,
            1_500_000_000,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u64::MAX,
        ] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(duration_from_sql(duration_to_sql(d)), d, "{nanos}");
        }
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(
            duration_from_sql(duration_to_sql(huge)),
            Duration::from_nanos(u64::MAX)
        );
    }
}
