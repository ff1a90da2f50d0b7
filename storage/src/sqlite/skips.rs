//! The capture budget's skip notices on the embedded store (migration 12): one row per
//! trigger event whose profiles its incident will not keep, for the node its agent is
//! connected to. Retention deletes them with their day.

use rusqlite::{params, Connection};

use super::control::{kinds_from_sql, kinds_to_sql};
use super::{nanos_from_sql, nanos_to_sql};
use crate::{SkipNotice, StoreError};

/// Migration 12.
pub(super) const SCHEMA: &str = "CREATE TABLE skip_notices (
        event_id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        kinds TEXT NOT NULL,
        at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX skip_notices_by_time ON skip_notices (at, event_id);";

pub(super) fn insert(conn: &Connection, n: &SkipNotice) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO skip_notices (event_id, service, instance_id, kinds, at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        n.event_id,
        n.service,
        n.instance_id,
        kinds_to_sql(&n.kinds),
        nanos_to_sql(n.unix_nanos)
    ])?;
    Ok(())
}

pub(super) fn since(
    conn: &Connection,
    since_unix_nanos: u64,
    limit: u64,
) -> Result<Vec<SkipNotice>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT event_id, service, instance_id, kinds, at FROM skip_notices
         WHERE at >= ?1 ORDER BY at, event_id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(
            params![
                nanos_to_sql(since_unix_nanos),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(event_id, service, instance_id, kinds, at)| {
            Ok(SkipNotice {
                event_id,
                service,
                instance_id,
                kinds: kinds_from_sql("skip_notices.kinds", &kinds)?,
                unix_nanos: nanos_from_sql(at),
            })
        })
        .collect()
}
