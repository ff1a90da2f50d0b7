//! Profiles on ClickHouse: the `profiles` and `profiles_by_id` tables of migration 3.
//!
//! No `Nullable`: a capture that worked has an empty `error`. The bytes travel as a
//! RowBinary `String`, which carries any bytes; they are (de)serialized through serde's
//! byte-buffer path, the efficient one the crate documents for `String` columns.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use clickhouse::Row;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::batch::Weigh;
use super::{date_text, day_of, ClickHouseStore, ProfileIdRow};
use crate::stored_names::kind_from_name;
use crate::{ProfileMeta, ProfileQuery, ProfileRecord, StoreError};

/// Bytes written as one RowBinary `String` (length, then the bytes).
pub(in crate::clickhouse) struct RawBytes(Vec<u8>);

impl Serialize for RawBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

/// Bytes read from a RowBinary `String`, whatever they are (not necessarily UTF-8).
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;

        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = ByteBuf;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }

            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.as_bytes().to_vec()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.into_bytes()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }

        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

#[derive(Row, Serialize)]
pub(in crate::clickhouse) struct ProfileInsertRow {
    day: u16,
    service: String,
    profile_id: String,
    event_id: String,
    instance_id: String,
    kind: &'static str,
    started: u64,
    duration_ns: u64,
    label_keys: Vec<String>,
    label_values: Vec<String>,
    error: String,
    size_bytes: u64,
    data: RawBytes,
}

impl Weigh for ProfileInsertRow {
    fn weight(&self) -> usize {
        self.data.0.len() + self.error.len() + 256
    }
}

/// Where a profile's rows are: its service and day, from `profiles_by_id`.
#[derive(Row, Deserialize)]
pub(super) struct ProfileLocation {
    pub(super) service: String,
    pub(super) day: u16,
}

/// The service and day of profile `profile_id` (a primary-key lookup in
/// `profiles_by_id`), so that reads of its rows touch one partition's key range.
pub(super) async fn locate(
    store: &ClickHouseStore,
    profile_id: &str,
) -> Result<Option<ProfileLocation>, StoreError> {
    store
        .client
        .query(
            "SELECT ?fields FROM profiles_by_id WHERE profile_id = ?
             ORDER BY service LIMIT 1",
        )
        .bind(profile_id)
        .fetch_optional()
        .await
        .map_err(|e| store.err(e))
}

/// Everything but the bytes.
#[derive(Row, Deserialize)]
struct ProfileMetaRow {
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
}

/// The same with the bytes.
#[derive(Row, Deserialize)]
struct ProfileDataRow {
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

impl ProfileMetaRow {
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

impl ProfileDataRow {
    fn decode(self) -> Result<ProfileRecord, StoreError> {
        let data = self.data.0;
        if data.len() as u64 != self.size_bytes {
            return Err(StoreError::Corrupt {
                what: "profiles.data",
                value: format!(
                    "{} bytes where size_bytes says {}",
                    data.len(),
                    self.size_bytes
                ),
            });
        }
        let meta = ProfileMetaRow {
            service: self.service,
            profile_id: self.profile_id,
            event_id: self.event_id,
            instance_id: self.instance_id,
            kind: self.kind,
            started: self.started,
            duration_ns: self.duration_ns,
            label_keys: self.label_keys,
            label_values: self.label_values,
            error: self.error,
            size_bytes: self.size_bytes,
        }
        .decode()?;
        Ok(ProfileRecord {
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
        })
    }
}

/// Writes the profile and its entry in `profiles_by_id`, each in the batch of its table.
/// A failure of either leaves the profile unacknowledged; the agent's resend writes both
/// again, and merges fold the copies (reads hide the ones not merged yet).
pub(super) async fn insert(store: &ClickHouseStore, p: &ProfileRecord) -> Result<(), StoreError> {
    let day = day_of(p.started_unix_nanos);
    let row = ProfileInsertRow {
        day,
        service: p.service.clone(),
        profile_id: p.profile_id.clone(),
        event_id: p.event_id.clone(),
        instance_id: p.instance_id.clone(),
        kind: p.kind.as_str(),
        started: p.started_unix_nanos,
        duration_ns: u64::try_from(p.duration.as_nanos()).unwrap_or(u64::MAX),
        label_keys: p.labels.keys().cloned().collect(),
        label_values: p.labels.values().cloned().collect(),
        error: p.error.clone().unwrap_or_default(),
        size_bytes: p.data.len() as u64,
        data: RawBytes(p.data.clone()),
    };
    let id = ProfileIdRow {
        profile_id: p.profile_id.clone(),
        service: p.service.clone(),
        day,
    };
    let (profile, by_id) = tokio::join!(
        store.batches.profiles.insert(vec![row]),
        store.batches.profile_ids.insert(vec![id])
    );
    store.batched("profiles", profile)?;
    store.batched("profiles_by_id", by_id)
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
    // has folded yet. The bytes column is never read here.
    let rows: Vec<ProfileMetaRow> = store
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
    rows.into_iter().map(ProfileMetaRow::decode).collect()
}

pub(super) async fn get(
    store: &ClickHouseStore,
    profile_id: &str,
) -> Result<Option<ProfileRecord>, StoreError> {
    // The id's service and day first, then one granule of one partition of `profiles`.
    let Some(location) = locate(store, profile_id).await? else {
        return Ok(None);
    };
    let row: Option<ProfileDataRow> = store
        .client
        .query(
            "SELECT ?fields FROM profiles
             WHERE service = ? AND day = toDate(?) AND profile_id = ?
             LIMIT 1",
        )
        .bind(&location.service)
        .bind(date_text(location.day))
        .bind(profile_id)
        .fetch_optional()
        .await
        .map_err(|e| store.err(e))?;
    row.map(ProfileDataRow::decode).transpose()
}
