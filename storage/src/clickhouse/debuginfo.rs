//! Debug info uploads on ClickHouse: `debuginfo` (chunks by build id, source, size and
//! offset; a chunk written twice folds in merges, and reads skip the copies) and
//! `debuginfo_claims` (who uploads a build now).
//!
//! A claim works like the migration lock (`lock.rs`), on plain inserts and reads: a
//! collector writes its claim — the time its claim began, and until when it holds — then
//! reads the live claims of the build; the oldest live claim holds, and a collector that
//! finds an older one than its own writes its claim back as released. A holder that
//! refreshes keeps its start, so a newcomer never takes over a running upload.

use std::collections::BTreeMap;
use std::time::Duration;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::bytes::{ByteBuf, RawBytes};
use super::stacks::IDS_PER_QUERY;
use super::{now_nanos, ClickHouseStore};
use crate::debuginfo::{assemble, status_of, ChunkMeta};
use crate::location::hex;
use crate::{DebugInfoChunkRecord, DebugInfoSource, DebugInfoStatus, Location, StoreError};

#[derive(Row, Serialize)]
struct ChunkRow {
    build_id: String,
    source: String,
    total_bytes: u64,
    offset: u64,
    data: RawBytes,
}

#[derive(Row, Deserialize)]
struct MetaRow {
    build_id: String,
    source: String,
    total_bytes: u64,
    offset: u64,
    len: u64,
}

#[derive(Row, Deserialize)]
struct DataRow {
    offset: u64,
    data: ByteBuf,
}

#[derive(Row, Serialize, Deserialize)]
struct ClaimRow {
    build_id: String,
    holder: String,
    since: u64,
    at: u64,
    until: u64,
}

#[derive(Row, Deserialize)]
struct LiveClaim {
    holder: String,
    since: u64,
    until: u64,
}

#[derive(Row, Deserialize)]
struct HexRow {
    hex_id: String,
}

fn source_of(name: &str) -> Result<DebugInfoSource, StoreError> {
    DebugInfoSource::from_name(name).ok_or_else(|| StoreError::Corrupt {
        what: "debuginfo.source",
        value: name.to_owned(),
    })
}

impl ClickHouseStore {
    pub(super) async fn insert_debuginfo_chunks(
        &self,
        chunks: &[DebugInfoChunkRecord],
    ) -> Result<(), StoreError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<ChunkRow>("debuginfo")
            .await
            .map_err(|e| self.err(e))?;
        for c in chunks {
            insert
                .write(&ChunkRow {
                    build_id: c.build_id.clone(),
                    source: c.source.as_str().to_owned(),
                    total_bytes: c.total_bytes,
                    offset: c.offset,
                    data: RawBytes(c.data.clone()),
                })
                .await
                .map_err(|e| self.err(e))?;
        }
        insert.end().await.map_err(|e| self.err(e))
    }

    async fn debuginfo_metas(
        &self,
        build_id: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<ChunkMeta>>, StoreError> {
        let sql = "SELECT build_id, source, total_bytes, offset, toUInt64(length(data)) AS len
                   FROM debuginfo WHERE ? = '' OR build_id = ?";
        let id = build_id.unwrap_or("");
        let rows: Vec<MetaRow> = self
            .client
            .query(sql)
            .bind(id)
            .bind(id)
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        let mut out: BTreeMap<String, Vec<ChunkMeta>> = BTreeMap::new();
        for r in rows {
            out.entry(r.build_id).or_default().push(ChunkMeta {
                source: source_of(&r.source)?,
                total_bytes: r.total_bytes,
                offset: r.offset,
                len: r.len,
            });
        }
        Ok(out)
    }

    pub(super) async fn debuginfo_status_of(
        &self,
        build_id: &str,
    ) -> Result<Option<DebugInfoStatus>, StoreError> {
        if build_id.is_empty() {
            return Ok(None);
        }
        Ok(self
            .debuginfo_metas(Some(build_id))
            .await?
            .remove(build_id)
            .and_then(status_of))
    }

    pub(super) async fn complete_debuginfo_builds(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .debuginfo_metas(None)
            .await?
            .into_iter()
            .filter(|(_, chunks)| status_of(chunks.clone()).is_some_and(|s| s.complete()))
            .map(|(build, _)| build)
            .collect())
    }

    pub(super) async fn read_debuginfo_bytes(
        &self,
        build_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(status) = self
            .debuginfo_status_of(build_id)
            .await?
            .filter(DebugInfoStatus::complete)
        else {
            return Ok(None);
        };
        let rows: Vec<DataRow> = self
            .client
            .query(
                "SELECT offset, data FROM debuginfo
                 WHERE build_id = ? AND source = ? AND total_bytes = ?
                 ORDER BY offset LIMIT 1 BY offset",
            )
            .bind(build_id)
            .bind(status.source.as_str())
            .bind(status.total_bytes)
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        Ok(assemble(
            status,
            rows.into_iter().map(|r| (r.offset, r.data.0)),
        ))
    }

    async fn live_claims(&self, build_id: &str, now: u64) -> Result<Vec<LiveClaim>, StoreError> {
        let claims: Vec<LiveClaim> = self
            .client
            .query(
                "SELECT holder, argMax(since, at) AS since, argMax(until, at) AS until
                 FROM debuginfo_claims WHERE build_id = ? GROUP BY holder",
            )
            .bind(build_id)
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        Ok(claims.into_iter().filter(|c| c.until >= now).collect())
    }

    async fn write_claim(&self, row: &ClaimRow) -> Result<(), StoreError> {
        let mut insert = self
            .client
            .insert::<ClaimRow>("debuginfo_claims")
            .await
            .map_err(|e| self.err(e))?;
        insert.write(row).await.map_err(|e| self.err(e))?;
        insert.end().await.map_err(|e| self.err(e))
    }

    pub(super) async fn claim_upload(
        &self,
        build_id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = now_nanos();
        let before = self.live_claims(build_id, now).await?;
        let since = before
            .iter()
            .find(|c| c.holder == holder)
            .map_or(now, |c| c.since);
        if before
            .iter()
            .any(|c| c.holder != holder && (c.since, c.holder.as_str()) < (since, holder))
        {
            return Ok(false);
        }
        let until = now.saturating_add(u64::try_from(lease.as_nanos()).unwrap_or(u64::MAX));
        let mut row = ClaimRow {
            build_id: build_id.to_owned(),
            holder: holder.to_owned(),
            since,
            at: now,
            until,
        };
        self.write_claim(&row).await?;
        let after = self.live_claims(build_id, now).await?;
        let oldest = after
            .iter()
            .min_by(|a, b| (a.since, a.holder.as_str()).cmp(&(b.since, b.holder.as_str())));
        if oldest.is_some_and(|c| c.holder == holder) {
            return Ok(true);
        }
        row.at = now_nanos().max(now + 1);
        row.until = 0;
        self.write_claim(&row).await?;
        Ok(false)
    }

    pub(super) async fn release_upload(
        &self,
        build_id: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        let now = now_nanos();
        self.write_claim(&ClaimRow {
            build_id: build_id.to_owned(),
            holder: holder.to_owned(),
            since: now,
            at: now,
            until: 0,
        })
        .await
    }

    pub(super) async fn unsymbolized(&self, build_id: &str) -> Result<Vec<u64>, StoreError> {
        if build_id.is_empty() {
            return Ok(Vec::new());
        }
        let mut offsets: Vec<u64> = self
            .client
            .query("SELECT DISTINCT offset FROM locations WHERE kind = 0 AND build_id = ?")
            .bind(build_id)
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        offsets.sort_unstable();
        let module = holmes_proto::Module {
            name: String::new(),
            build_id: build_id.to_owned(),
        };
        let mut ids: BTreeMap<String, u64> = offsets
            .iter()
            .map(|&offset| {
                let id = Location::Native {
                    module: module.clone(),
                    offset,
                }
                .id();
                (hex(&id.0), offset)
            })
            .collect();
        let hexes: Vec<String> = ids.keys().cloned().collect();
        for chunk in hexes.chunks(IDS_PER_QUERY) {
            let found: Vec<HexRow> = self
                .client
                .query(
                    "SELECT DISTINCT lower(hex(id)) AS hex_id FROM symbols
                     WHERE id IN (SELECT toFixedString(unhex(arrayJoin(?)), 16))",
                )
                .bind(chunk)
                .fetch_all()
                .await
                .map_err(|e| self.err(e))?;
            for f in found {
                ids.remove(&f.hex_id);
            }
        }
        let mut left: Vec<u64> = ids.into_values().collect();
        left.sort_unstable();
        Ok(left)
    }
}
