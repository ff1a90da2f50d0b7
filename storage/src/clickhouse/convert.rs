//! Migration 8's conversion: the profiles of the earlier layout (`profiles_old` with
//! every original's bytes, `profile_contents` and `profile_samples` with their decoded
//! samples, `stacks_old` with each stack's frames by 64-bit hash) written again in the
//! normalized layout, through the same path as new profiles. Each keeps its original
//! bytes, so its download stays exactly what the agent sent; its stacks become symbolic
//! locations, one per frame. Idempotent: run again after a crash, it writes the same
//! profiles again and merges fold them.

use std::collections::HashMap;

use clickhouse::Row;
use serde::Deserialize;

use super::bytes::ByteBuf;
use super::{profiles, ClickHouseStore};
use crate::contents::{ProfileContents, ProfileHeader, ProfileLabel, ProfileSample, ValueType};
use crate::location::{Location, StackFrame};
use crate::stored_names::kind_from_name;
use crate::{ProfileRecord, StoreError};

/// Profiles converted per round trip.
const PAGE: u64 = 200;

#[derive(Row, Deserialize)]
struct OldProfile {
    service: String,
    profile_id: String,
    event_id: String,
    instance_id: String,
    kind: String,
    started: u64,
    duration_ns: u64,
    label_keys: Vec<String>,
    label_values: Vec<String>,
    error: String,
    size_bytes: u64,
    data: ByteBuf,
}

#[derive(Row, Deserialize)]
struct OldHead {
    profile_id: String,
    type_names: Vec<String>,
    type_units: Vec<String>,
}

#[derive(Row, Deserialize)]
struct OldSample {
    profile_id: String,
    stack_id: u64,
    vals: Vec<i64>,
    label_keys: Vec<String>,
    label_values: Vec<String>,
}

#[derive(Row, Deserialize)]
struct OldStack {
    stack_id: u64,
    functions: Vec<String>,
    files: Vec<String>,
    lines: Vec<u32>,
}

/// Whether `table` exists in the store's database.
pub(super) async fn exists(store: &ClickHouseStore, table: &str) -> Result<bool, StoreError> {
    let n: u64 = store
        .client
        .query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?")
        .bind(table)
        .fetch_one()
        .await
        .map_err(|e| store.err(e))?;
    Ok(n > 0)
}

/// The frames of the old stacks `ids`, read once each.
async fn old_frames(
    store: &ClickHouseStore,
    ids: &[u64],
    cache: &mut HashMap<u64, Vec<StackFrame>>,
) -> Result<(), StoreError> {
    let missing: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| !cache.contains_key(id))
        .collect();
    for chunk in missing.chunks(5000) {
        let rows: Vec<OldStack> = store
            .client
            .query(
                "SELECT ?fields FROM stacks_old WHERE stack_id IN (SELECT toUInt64(arrayJoin(?)))
                 LIMIT 1 BY stack_id",
            )
            .bind(chunk)
            .fetch_all()
            .await
            .map_err(|e| store.err(e))?;
        for r in rows {
            let frames = r
                .functions
                .into_iter()
                .zip(r.files)
                .zip(r.lines)
                .map(|((f, file), line)| StackFrame::new(f, file, line))
                .collect();
            cache.insert(r.stack_id, frames);
        }
    }
    Ok(())
}

/// Converts every profile of the earlier layout; returns how many.
pub(super) async fn convert(store: &ClickHouseStore) -> Result<u64, StoreError> {
    if !exists(store, "profiles_old").await? {
        return Ok(0);
    }
    let has_contents =
        exists(store, "profile_contents").await? && exists(store, "profile_samples").await?;
    let has_stacks = exists(store, "stacks_old").await?;
    let services: Vec<String> = store
        .client
        .query("SELECT DISTINCT service FROM profiles_old ORDER BY service")
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    let mut frames: HashMap<u64, Vec<StackFrame>> = HashMap::new();
    let mut converted = 0u64;
    for service in services {
        let (mut after_started, mut after_id) = (0u64, String::new());
        loop {
            let page: Vec<OldProfile> = store
                .client
                .query(
                    "SELECT ?fields FROM profiles_old
                     WHERE service = ? AND (started > ? OR (started = ? AND profile_id > ?))
                     ORDER BY started, profile_id
                     LIMIT 1 BY profile_id
                     LIMIT ?",
                )
                .bind(&service)
                .bind(after_started)
                .bind(after_started)
                .bind(&after_id)
                .bind(PAGE)
                .fetch_all()
                .await
                .map_err(|e| store.err(e))?;
            let Some(last) = page.last() else { break };
            (after_started, after_id) = (last.started, last.profile_id.clone());
            let ids: Vec<&str> = page.iter().map(|p| p.profile_id.as_str()).collect();
            let mut heads: HashMap<String, OldHead> = HashMap::new();
            let mut samples: HashMap<String, Vec<OldSample>> = HashMap::new();
            if has_contents {
                let found: Vec<OldHead> = store
                    .client
                    .query(
                        "SELECT ?fields FROM profile_contents
                         WHERE service = ? AND profile_id IN (SELECT arrayJoin(?))
                         LIMIT 1 BY profile_id",
                    )
                    .bind(&service)
                    .bind(&ids)
                    .fetch_all()
                    .await
                    .map_err(|e| store.err(e))?;
                heads.extend(found.into_iter().map(|h| (h.profile_id.clone(), h)));
                let found: Vec<OldSample> = store
                    .client
                    .query(
                        "SELECT ?fields FROM profile_samples
                         WHERE service = ? AND profile_id IN (SELECT arrayJoin(?))
                         ORDER BY profile_id, idx LIMIT 1 BY profile_id, idx",
                    )
                    .bind(&service)
                    .bind(&ids)
                    .fetch_all()
                    .await
                    .map_err(|e| store.err(e))?;
                for s in found {
                    samples.entry(s.profile_id.clone()).or_default().push(s);
                }
                if has_stacks {
                    let mut stack_ids: Vec<u64> =
                        samples.values().flatten().map(|s| s.stack_id).collect();
                    stack_ids.sort_unstable();
                    stack_ids.dedup();
                    old_frames(store, &stack_ids, &mut frames).await?;
                }
            }
            for p in page {
                let contents = match heads.remove(&p.profile_id) {
                    Some(head) => Some(contents_of(
                        head,
                        samples.remove(&p.profile_id).unwrap_or_default(),
                        &frames,
                    )),
                    None => None,
                };
                let record = ProfileRecord {
                    kind: kind_from_name("profiles_old.kind", &p.kind)?,
                    labels: p.label_keys.into_iter().zip(p.label_values).collect(),
                    error: Some(p.error).filter(|e| !e.is_empty()),
                    original: (!p.data.0.is_empty()).then_some(p.data.0),
                    profile_id: p.profile_id,
                    event_id: p.event_id,
                    service: p.service,
                    instance_id: p.instance_id,
                    started_unix_nanos: p.started,
                    duration: std::time::Duration::from_nanos(p.duration_ns),
                    size_bytes: p.size_bytes,
                    format: holmes_proto::ProfileFormat::PprofGzip,
                    contents,
                };
                profiles::insert(store, &record).await?;
                converted += 1;
            }
        }
    }
    Ok(converted)
}

/// The old decoded contents of one profile in the normalized form.
fn contents_of(
    head: OldHead,
    samples: Vec<OldSample>,
    frames: &HashMap<u64, Vec<StackFrame>>,
) -> ProfileContents {
    let mut c = ProfileContents {
        header: ProfileHeader {
            sample_types: head
                .type_names
                .into_iter()
                .zip(head.type_units)
                .map(|(name, unit)| ValueType { name, unit })
                .collect(),
            ..ProfileHeader::default()
        },
        ..ProfileContents::default()
    };
    let mut locations: HashMap<&StackFrame, u32> = HashMap::new();
    let mut stacks: HashMap<u64, u32> = HashMap::new();
    let mut label_sets: HashMap<Vec<(String, String)>, u32> = HashMap::new();
    let empty = Vec::new();
    for s in samples {
        let stack = match stacks.get(&s.stack_id) {
            Some(&i) => i,
            None => {
                let mut entries = Vec::new();
                for f in frames.get(&s.stack_id).unwrap_or(&empty) {
                    let next = c.locations.len() as u32;
                    let l = *locations.entry(f).or_insert(next);
                    if l == next {
                        c.locations.push(Location::Symbolic(vec![f.clone()]));
                    }
                    entries.push(l);
                }
                let i = c.stacks.len() as u32;
                c.stacks.push(entries);
                stacks.insert(s.stack_id, i);
                i
            }
        };
        let labels: Vec<(String, String)> = s.label_keys.into_iter().zip(s.label_values).collect();
        let next = c.label_sets.len() as u32;
        let set = *label_sets.entry(labels.clone()).or_insert(next);
        if set == next {
            c.label_sets.push(
                labels
                    .into_iter()
                    .map(|(key, str)| ProfileLabel {
                        key,
                        str,
                        num: 0,
                        unit: String::new(),
                    })
                    .collect(),
            );
        }
        c.samples.push(ProfileSample {
            stack,
            values: s.vals,
            labels: set,
        });
    }
    c
}
