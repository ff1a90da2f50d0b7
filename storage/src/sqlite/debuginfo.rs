//! Debug info uploads in the embedded store: `debuginfo` (chunks by build id, source,
//! size and offset) and `debuginfo_claims` (who uploads a build now, until when).

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::{nanos_from_sql, nanos_to_sql};
use crate::debuginfo::{assemble, status_of, ChunkMeta};
use crate::{DebugInfoChunkRecord, DebugInfoSource, DebugInfoStatus, StoreError};

fn source_from_sql(name: &str) -> Result<DebugInfoSource, StoreError> {
    DebugInfoSource::from_name(name).ok_or_else(|| StoreError::Corrupt {
        what: "debuginfo.source",
        value: name.to_owned(),
    })
}

pub(super) fn insert(conn: &Connection, chunks: &[DebugInfoChunkRecord]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO debuginfo (build_id, source, total_bytes, offset, data)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for c in chunks {
        stmt.execute(params![
            c.build_id,
            c.source.as_str(),
            nanos_to_sql(c.total_bytes),
            nanos_to_sql(c.offset),
            c.data
        ])?;
    }
    Ok(())
}

/// Every stored chunk's description, by build id.
fn metas(
    conn: &Connection,
    build_id: Option<&str>,
) -> Result<BTreeMap<String, Vec<ChunkMeta>>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT build_id, source, total_bytes, offset, length(data) FROM debuginfo
         WHERE ?1 IS NULL OR build_id = ?1",
    )?;
    let mut rows = stmt.query(params![build_id])?;
    let mut out: BTreeMap<String, Vec<ChunkMeta>> = BTreeMap::new();
    while let Some(r) = rows.next()? {
        let build: String = r.get(0)?;
        let source: String = r.get(1)?;
        out.entry(build).or_default().push(ChunkMeta {
            source: source_from_sql(&source)?,
            total_bytes: nanos_from_sql(r.get(2)?),
            offset: nanos_from_sql(r.get(3)?),
            len: nanos_from_sql(r.get(4)?),
        });
    }
    Ok(out)
}

pub(super) fn status(
    conn: &Connection,
    build_id: &str,
) -> Result<Option<DebugInfoStatus>, StoreError> {
    Ok(metas(conn, Some(build_id))?
        .remove(build_id)
        .and_then(status_of))
}

pub(super) fn builds(conn: &Connection) -> Result<Vec<String>, StoreError> {
    Ok(metas(conn, None)?
        .into_iter()
        .filter(|(_, chunks)| status_of(chunks.clone()).is_some_and(|s| s.complete()))
        .map(|(build, _)| build)
        .collect())
}

pub(super) fn read(conn: &Connection, build_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(status) = status(conn, build_id)?.filter(DebugInfoStatus::complete) else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT offset, data FROM debuginfo
         WHERE build_id = ?1 AND source = ?2 AND total_bytes = ?3 ORDER BY offset",
    )?;
    let chunks = stmt
        .query_map(
            params![
                build_id,
                status.source.as_str(),
                nanos_to_sql(status.total_bytes)
            ],
            |r| Ok((nanos_from_sql(r.get(0)?), r.get::<_, Vec<u8>>(1)?)),
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(assemble(status, chunks))
}

pub(super) fn claim(
    conn: &Connection,
    build_id: &str,
    holder: &str,
    lease: Duration,
    now: u64,
) -> Result<bool, StoreError> {
    let current: Option<(String, i64)> = conn
        .query_row(
            "SELECT holder, until FROM debuginfo_claims WHERE build_id = ?1",
            params![build_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((other, until)) = current {
        if other != holder && nanos_from_sql(until) > now {
            return Ok(false);
        }
    }
    let until = now.saturating_add(u64::try_from(lease.as_nanos()).unwrap_or(u64::MAX));
    conn.execute(
        "INSERT OR REPLACE INTO debuginfo_claims (build_id, holder, until) VALUES (?1, ?2, ?3)",
        params![build_id, holder, nanos_to_sql(until)],
    )?;
    Ok(true)
}

pub(super) fn release(conn: &Connection, build_id: &str, holder: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM debuginfo_claims WHERE build_id = ?1 AND holder = ?2",
        params![build_id, holder],
    )?;
    Ok(())
}

pub(super) fn unsymbolized(conn: &Connection, build_id: &str) -> Result<Vec<u64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT l.offset FROM locations l
         WHERE l.kind = 0 AND l.build_id = ?1
           AND NOT EXISTS (SELECT 1 FROM symbols s WHERE s.id = l.id)
         ORDER BY l.offset",
    )?;
    let offsets = stmt
        .query_map(params![build_id], |r| r.get::<_, i64>(0))?
        .map(|r| r.map(super::profiles::num_from_sql))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(offsets)
}
