//! Normalized profile contents on ClickHouse: the `stacks`, `profile_contents` and
//! `profile_samples` tables of migration 4.
//!
//! `stacks` is keyed by the content id alone, so a stack written by many profiles (or
//! resent) is folded by merges; reads take one row per id with `LIMIT 1 BY`. The store
//! remembers the ids it wrote recently (`KnownStacks`) and writes only new stacks, so a
//! fleet repeating the same stacks writes each about once per collector run.

use std::collections::{HashMap, HashSet};

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::batch::Weigh;
use super::{date_text, day_of, ClickHouseStore, ProfileIdRow};
use crate::{ProfileContents, Stack, StackFrame, StackSample, StoreError};

#[derive(Row, Serialize, Deserialize)]
pub(in crate::clickhouse) struct StackRow {
    stack_id: u64,
    functions: Vec<String>,
    files: Vec<String>,
    lines: Vec<u32>,
}

impl Weigh for StackRow {
    fn weight(&self) -> usize {
        self.functions
            .iter()
            .chain(&self.files)
            .map(|s| s.len() + 2)
            .sum::<usize>()
            + self.lines.len() * 4
            + 16
    }
}

#[derive(Row, Serialize)]
pub(in crate::clickhouse) struct ContentsRow {
    day: u16,
    service: String,
    profile_id: String,
    started: u64,
    type_names: Vec<String>,
    type_units: Vec<String>,
}

impl Weigh for ContentsRow {
    fn weight(&self) -> usize {
        self.service.len() + self.profile_id.len() + 64
    }
}

#[derive(Row, Deserialize)]
struct ContentsReadRow {
    started: u64,
    type_names: Vec<String>,
    type_units: Vec<String>,
}

#[derive(Row, Serialize)]
pub(in crate::clickhouse) struct SampleRow {
    day: u16,
    service: String,
    profile_id: String,
    idx: u32,
    stack_id: u64,
    vals: Vec<i64>,
    label_keys: Vec<String>,
    label_values: Vec<String>,
}

impl Weigh for SampleRow {
    fn weight(&self) -> usize {
        self.service.len()
            + self.profile_id.len()
            + self.vals.len() * 8
            + self
                .label_keys
                .iter()
                .chain(&self.label_values)
                .map(|s| s.len() + 1)
                .sum::<usize>()
            + 20
    }
}

#[derive(Row, Deserialize)]
struct SampleReadRow {
    stack_id: u64,
    vals: Vec<i64>,
    label_keys: Vec<String>,
    label_values: Vec<String>,
}

/// Writes the new stacks, the samples, the head row and the id lookup, each in the batch
/// of its table, all at once. A failure of any leaves the profile unacknowledged; the
/// resend writes the same rows again and merges fold them (reads hide copies not merged
/// yet). Stacks are remembered as written only once their batch succeeded.
pub(super) async fn insert(store: &ClickHouseStore, c: &ProfileContents) -> Result<(), StoreError> {
    let day = day_of(c.started_unix_nanos);
    let new_ids = store.known_stacks.unknown(&c.stacks);
    let wanted: HashSet<u64> = new_ids.iter().copied().collect();
    let stack_rows: Vec<StackRow> = c
        .stacks
        .iter()
        .filter(|s| wanted.contains(&s.stack_id))
        .map(|s| StackRow {
            stack_id: s.stack_id,
            functions: s.frames.iter().map(|f| f.function.clone()).collect(),
            files: s.frames.iter().map(|f| f.file.clone()).collect(),
            lines: s.frames.iter().map(|f| f.line).collect(),
        })
        .collect();
    let sample_rows: Vec<SampleRow> = c
        .samples
        .iter()
        .enumerate()
        .map(|(i, s)| SampleRow {
            day,
            service: c.service.clone(),
            profile_id: c.profile_id.clone(),
            idx: u32::try_from(i).unwrap_or(u32::MAX),
            stack_id: s.stack_id,
            vals: s.values.clone(),
            label_keys: s.labels.iter().map(|(k, _)| k.clone()).collect(),
            label_values: s.labels.iter().map(|(_, v)| v.clone()).collect(),
        })
        .collect();
    let head = ContentsRow {
        day,
        service: c.service.clone(),
        profile_id: c.profile_id.clone(),
        started: c.started_unix_nanos,
        type_names: c.sample_types.iter().map(|(t, _)| t.clone()).collect(),
        type_units: c.sample_types.iter().map(|(_, u)| u.clone()).collect(),
    };
    let id = ProfileIdRow {
        profile_id: c.profile_id.clone(),
        service: c.service.clone(),
        day,
    };
    let b = &store.batches;
    let (stacks, samples, head, by_id) = tokio::join!(
        b.stacks.insert(stack_rows),
        b.samples.insert(sample_rows),
        b.contents.insert(vec![head]),
        b.profile_ids.insert(vec![id]),
    );
    store.batched("stacks", stacks)?;
    store.known_stacks.remember(new_ids);
    store.batched("profile_samples", samples)?;
    store.batched("profile_contents", head)?;
    store.batched("profiles_by_id", by_id)
}

fn mismatch(what: &'static str, a: usize, b: usize) -> StoreError {
    StoreError::Corrupt {
        what,
        value: format!("{a} keys for {b} values"),
    }
}

pub(super) async fn get(
    store: &ClickHouseStore,
    profile_id: &str,
) -> Result<Option<ProfileContents>, StoreError> {
    let Some(location) = super::profiles::locate(store, profile_id).await? else {
        return Ok(None);
    };
    let date = date_text(location.day);
    let head: Option<ContentsReadRow> = store
        .client
        .query(
            "SELECT ?fields FROM profile_contents
             WHERE service = ? AND day = toDate(?) AND profile_id = ? LIMIT 1",
        )
        .bind(&location.service)
        .bind(&date)
        .bind(profile_id)
        .fetch_optional()
        .await
        .map_err(|e| store.err(e))?;
    let Some(head) = head else {
        return Ok(None);
    };
    if head.type_names.len() != head.type_units.len() {
        return Err(mismatch(
            "profile_contents.type_names/type_units",
            head.type_names.len(),
            head.type_units.len(),
        ));
    }
    let rows: Vec<SampleReadRow> = store
        .client
        .query(
            "SELECT ?fields FROM profile_samples
             WHERE service = ? AND day = toDate(?) AND profile_id = ?
             ORDER BY idx LIMIT 1 BY idx",
        )
        .bind(&location.service)
        .bind(&date)
        .bind(profile_id)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    let mut order: Vec<u64> = Vec::new();
    let mut seen = HashSet::new();
    let mut samples = Vec::with_capacity(rows.len());
    for r in rows {
        if r.label_keys.len() != r.label_values.len() {
            return Err(mismatch(
                "profile_samples.label_keys/label_values",
                r.label_keys.len(),
                r.label_values.len(),
            ));
        }
        if seen.insert(r.stack_id) {
            order.push(r.stack_id);
        }
        samples.push(StackSample {
            stack_id: r.stack_id,
            values: r.vals,
            labels: r.label_keys.into_iter().zip(r.label_values).collect(),
        });
    }
    let mut by_id = read_stacks(store, &order).await?;
    let mut stacks = Vec::with_capacity(order.len());
    for id in order {
        let stack = by_id.remove(&id).ok_or_else(|| StoreError::Corrupt {
            what: "profile_samples.stack_id",
            value: format!("{id:016x} has no stored stack"),
        })?;
        stacks.push(stack);
    }
    Ok(Some(ProfileContents {
        profile_id: profile_id.to_owned(),
        service: location.service,
        started_unix_nanos: head.started,
        sample_types: head.type_names.into_iter().zip(head.type_units).collect(),
        stacks,
        samples,
    }))
}

/// The stacks with these ids, one row each, in batches that keep the query short.
async fn read_stacks(
    store: &ClickHouseStore,
    ids: &[u64],
) -> Result<HashMap<u64, Stack>, StoreError> {
    let mut out = HashMap::with_capacity(ids.len());
    for batch in ids.chunks(10_000) {
        let rows: Vec<StackRow> = store
            .client
            .query("SELECT ?fields FROM stacks WHERE stack_id IN (SELECT arrayJoin(?)) LIMIT 1 BY stack_id")
            .bind(batch)
            .fetch_all()
            .await
            .map_err(|e| store.err(e))?;
        for r in rows {
            if r.functions.len() != r.files.len() || r.files.len() != r.lines.len() {
                return Err(StoreError::Corrupt {
                    what: "stacks.functions/files/lines",
                    value: format!(
                        "{} functions, {} files, {} lines",
                        r.functions.len(),
                        r.files.len(),
                        r.lines.len()
                    ),
                });
            }
            let frames = r
                .functions
                .into_iter()
                .zip(r.files)
                .zip(r.lines)
                .map(|((function, file), line)| StackFrame {
                    function,
                    file,
                    line,
                })
                .collect();
            out.insert(
                r.stack_id,
                Stack {
                    stack_id: r.stack_id,
                    frames,
                },
            );
        }
    }
    Ok(out)
}
