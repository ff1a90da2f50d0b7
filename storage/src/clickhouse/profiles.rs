//! Profiles on ClickHouse: `profiles`, one row each (what the agent said, the header and
//! samples in their compact forms, the original bytes only when kept), sorted by
//! service and start time, and `profile_ids` (service and id → day and start), so that
//! a read by id touches one granule of one partition. A resend writes the same rows
//! again; merges fold them and reads take one with `LIMIT 1 BY`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::batch::Weigh;
use super::bytes::{ByteBuf, RawBytes};
use super::{date_text, day_of, stacks, ClickHouseStore};
use crate::assemble::{self, Merger};
use crate::encoding::{self, StoredSamples};
use crate::stored_names::{format_from_name, kind_from_name};
use crate::{
    MergeQuery, MergedProfile, ProfileHeader, ProfileMeta, ProfileQuery, ProfileRecord, StoreError,
};

#[derive(Row, Serialize)]
pub(super) struct ProfileRow {
    day: u16,
    service: String,
    started: u64,
    profile_id: String,
    event_id: String,
    instance_id: String,
    kind: &'static str,
    duration_ns: u64,
    label_keys: Vec<String>,
    label_values: Vec<String>,
    error: String,
    size_bytes: u64,
    format: &'static str,
    header: RawBytes,
    samples: RawBytes,
    original: RawBytes,
}

impl Weigh for ProfileRow {
    fn weight(&self) -> usize {
        self.header.0.len() + self.samples.0.len() + self.original.0.len() + self.error.len() + 256
    }
}

#[derive(Row, Serialize, Deserialize)]
pub(super) struct ProfileIdRow {
    day: u16,
    service: String,
    profile_id: String,
    started: u64,
}

impl Weigh for ProfileIdRow {
    fn weight(&self) -> usize {
        self.profile_id.len() + self.service.len() + 16
    }
}

/// Everything but the stored forms.
#[derive(Row, Deserialize)]
struct MetaRow {
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
    format: String,
}

/// The same with the stored forms.
#[derive(Row, Deserialize)]
struct DataRow {
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
    format: String,
    header: ByteBuf,
    samples: ByteBuf,
    original: ByteBuf,
}

impl MetaRow {
    fn decode(self) -> Result<ProfileMeta, StoreError> {
        if self.label_keys.len() != self.label_values.len() {
            return Err(StoreError::Corrupt {
                what: "profiles.label_keys/label_values",
                value: format!("{:?} / {:?}", self.label_keys, self.label_values),
            });
        }
        let labels: BTreeMap<String, String> =
            self.label_keys.into_iter().zip(self.label_values).collect();
        Ok(ProfileMeta {
            kind: kind_from_name("profiles.kind", &self.kind)?,
            format: format_from_name("profiles.format", &self.format)?,
            profile_id: self.profile_id,
            event_id: self.event_id,
            service: self.service,
            instance_id: self.instance_id,
            started_unix_nanos: self.started,
            duration: Duration::from_nanos(self.duration_ns),
            labels,
            error: Some(self.error).filter(|e| !e.is_empty()),
            size_bytes: self.size_bytes,
        })
    }
}

/// Writes a profile: first the rows of its new locations and stacks, then (once those
/// are durable, so that no stored profile refers to a row that is not) the profile and
/// its id row. A failure leaves the profile unacknowledged; the resend writes the same
/// rows again and merges fold them.
pub(super) async fn insert(store: &ClickHouseStore, p: &ProfileRecord) -> Result<(), StoreError> {
    let day = day_of(p.started_unix_nanos);
    let (header, samples, numbered) = match &p.contents {
        Some(c) => {
            let unknown = store.numbering.unknown(&p.service, u32::from(day), c);
            let (found_l, found_s) = if unknown.is_empty() {
                Default::default()
            } else {
                stacks::lookup(store, &p.service, &unknown).await?
            };
            let numbered = store.numbering.number(
                &p.service,
                u32::from(day),
                c,
                unknown,
                &found_l,
                &found_s,
            )?;
            stacks::write_rows(store, &p.service, day, c, &numbered).await?;
            (
                encoding::header_bytes(&c.header),
                encoding::samples_bytes(
                    &c.samples,
                    c.header.sample_types.len(),
                    &c.label_sets,
                    &numbered.stack_nums,
                ),
                Some(numbered),
            )
        }
        None => (Vec::new(), Vec::new(), None),
    };
    let row = ProfileRow {
        day,
        service: p.service.clone(),
        started: p.started_unix_nanos,
        profile_id: p.profile_id.clone(),
        event_id: p.event_id.clone(),
        instance_id: p.instance_id.clone(),
        kind: p.kind.as_str(),
        duration_ns: u64::try_from(p.duration.as_nanos()).unwrap_or(u64::MAX),
        label_keys: p.labels.keys().cloned().collect(),
        label_values: p.labels.values().cloned().collect(),
        error: p.error.clone().unwrap_or_default(),
        size_bytes: p.size_bytes,
        format: p.format.as_str(),
        header: RawBytes(header),
        samples: RawBytes(samples),
        original: RawBytes(p.original.clone().unwrap_or_default()),
    };
    let id = ProfileIdRow {
        day,
        service: p.service.clone(),
        profile_id: p.profile_id.clone(),
        started: p.started_unix_nanos,
    };
    let (profile, by_id) = tokio::join!(
        store.batches.profiles.insert(vec![row]),
        store.batches.profile_ids.insert(vec![id])
    );
    store.batched("profiles", profile)?;
    store.batched("profile_ids", by_id)?;
    if let Some(n) = numbered {
        store.numbering.written(&p.service, &n);
    }
    Ok(())
}

pub(super) async fn query(
    store: &ClickHouseStore,
    q: &ProfileQuery,
) -> Result<Vec<ProfileMeta>, StoreError> {
    if q.since_unix_nanos >= q.until_unix_nanos {
        return Ok(Vec::new());
    }
    let event = q.event_id.as_deref();
    let kind = q.kind.map(|k| k.as_str());
    // `day` bounds skip whole partitions; LIMIT 1 BY hides resent copies that no merge
    // has folded yet. The stored forms are never read here.
    let rows: Vec<MetaRow> = store
        .client
        .query(
            "SELECT ?fields FROM profiles
             WHERE service = ? AND day >= toDate(?) AND day <= toDate(?)
               AND started >= ? AND started < ?
               AND (? = 0 OR event_id = ?) AND (? = 0 OR kind = ?)
             ORDER BY started, profile_id
             LIMIT 1 BY profile_id
             LIMIT ?",
        )
        .bind(&q.service)
        .bind(date_text(day_of(q.since_unix_nanos)))
        .bind(date_text(day_of(q.until_unix_nanos.saturating_sub(1))))
        .bind(q.since_unix_nanos)
        .bind(q.until_unix_nanos)
        .bind(u8::from(event.is_some()))
        .bind(event.unwrap_or(""))
        .bind(u8::from(kind.is_some()))
        .bind(kind.unwrap_or(""))
        .bind(q.limit)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    rows.into_iter().map(MetaRow::decode).collect()
}

/// Profiles of `service` by id, put together with one read of the rows they share.
pub(super) async fn get_many(
    store: &ClickHouseStore,
    service: &str,
    ids: &[String],
) -> Result<Vec<ProfileRecord>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Where they are (day and start), then exactly those keys of `profiles`.
    let located: Vec<ProfileIdRow> = store
        .client
        .query(
            "SELECT ?fields FROM profile_ids
             WHERE service = ? AND profile_id IN (SELECT arrayJoin(?))
             ORDER BY profile_id LIMIT 1 BY profile_id",
        )
        .bind(service)
        .bind(ids)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    if located.is_empty() {
        return Ok(Vec::new());
    }
    let days: Vec<String> = {
        let mut d: Vec<u16> = located.iter().map(|l| l.day).collect();
        d.sort_unstable();
        d.dedup();
        d.into_iter().map(date_text).collect()
    };
    let starts: Vec<u64> = located.iter().map(|l| l.started).collect();
    let wanted: Vec<&str> = located.iter().map(|l| l.profile_id.as_str()).collect();
    let rows: Vec<DataRow> = store
        .client
        .query(
            "SELECT ?fields FROM profiles
             WHERE service = ? AND day IN (SELECT toDate(arrayJoin(?)))
               AND started IN (SELECT toUInt64(arrayJoin(?))) AND profile_id IN (SELECT arrayJoin(?))
             LIMIT 1 BY profile_id",
        )
        .bind(service)
        .bind(days)
        .bind(starts)
        .bind(wanted)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    let mut decoded: Vec<(DataRow, Option<(ProfileHeader, StoredSamples)>)> = Vec::new();
    for r in rows {
        let d = if r.samples.0.is_empty() || r.header.0.is_empty() {
            None
        } else {
            Some((
                encoding::header_from(&r.header.0)?,
                encoding::samples_from(&r.samples.0)?,
            ))
        };
        decoded.push((r, d));
    }
    let nums = assemble::stack_nums(decoded.iter().filter_map(|(_, d)| d.as_ref().map(|d| &d.1)));
    let rows = stacks::read_rows(store, service, &nums).await?;
    let mut by_id: HashMap<String, ProfileRecord> = HashMap::new();
    for (r, d) in decoded {
        let contents = match d {
            Some((header, samples)) => Some(assemble::contents(header, samples, &rows)?),
            None => None,
        };
        let original = (!r.original.0.is_empty()).then_some(r.original.0);
        let meta = MetaRow {
            service: r.service,
            profile_id: r.profile_id,
            event_id: r.event_id,
            instance_id: r.instance_id,
            kind: r.kind,
            started: r.started,
            duration_ns: r.duration_ns,
            label_keys: r.label_keys,
            label_values: r.label_values,
            error: r.error,
            size_bytes: r.size_bytes,
            format: r.format,
        }
        .decode()?;
        by_id.insert(
            meta.profile_id.clone(),
            ProfileRecord {
                profile_id: meta.profile_id,
                event_id: meta.event_id,
                service: meta.service,
                instance_id: meta.instance_id,
                kind: meta.kind,
                started_unix_nanos: meta.started_unix_nanos,
                duration: meta.duration,
                labels: meta.labels,
                error: meta.error,
                size_bytes: meta.size_bytes,
                format: meta.format,
                contents,
                original,
            },
        );
    }
    let mut out = Vec::with_capacity(by_id.len());
    for id in ids {
        if let Some(p) = by_id.remove(id) {
            out.push(p);
        }
    }
    Ok(out)
}

#[derive(Row, Deserialize)]
struct MergeRow {
    header: ByteBuf,
    samples: ByteBuf,
}

pub(super) async fn merge(
    store: &ClickHouseStore,
    q: &MergeQuery,
) -> Result<MergedProfile, StoreError> {
    let mut merger = Merger::default();
    if q.since_unix_nanos < q.until_unix_nanos {
        let rows: Vec<MergeRow> = store
            .client
            .query(
                "SELECT header, samples FROM profiles
                 WHERE service = ? AND kind = ? AND day >= toDate(?) AND day <= toDate(?)
                   AND started >= ? AND started < ? AND samples != ''
                 ORDER BY started DESC
                 LIMIT 1 BY profile_id
                 LIMIT ?",
            )
            .bind(&q.service)
            .bind(q.kind.as_str())
            .bind(date_text(day_of(q.since_unix_nanos)))
            .bind(date_text(day_of(q.until_unix_nanos.saturating_sub(1))))
            .bind(q.since_unix_nanos)
            .bind(q.until_unix_nanos)
            .bind(q.limit)
            .fetch_all()
            .await
            .map_err(|e| store.err(e))?;
        for r in rows {
            merger.add(
                &encoding::header_from(&r.header.0)?,
                &encoding::samples_from(&r.samples.0)?,
            );
        }
    }
    let rows = stacks::read_rows(store, &q.service, &merger.stack_nums()).await?;
    let profiles = merger.profiles();
    Ok(MergedProfile {
        profiles,
        contents: merger.finish(&rows)?,
    })
}
