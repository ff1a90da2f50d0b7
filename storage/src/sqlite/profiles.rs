//! Profiles in the embedded store: the `profiles` table (one row each: what the agent
//! said, the header and samples in their compact forms, the original bytes if kept),
//! `stacks` (each once per service, keyed by the writer's number, with its content id)
//! and `locations` (each once, by number, with its content id), and `symbols`.

use std::collections::HashMap;
use std::time::Duration;

use holmes_proto::Module;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use super::{labels_from_sql, labels_to_sql, nanos_from_sql, nanos_to_sql, NANOS_PER_DAY};
use crate::assemble::{self, Merger, Rows};
use crate::contents::ProfileContents;
use crate::encoding::{self, StoredSamples};
use crate::location::{Location, LocationId, StackFrame, StackId};
use crate::numbering::{Numbered, Numbering};
use crate::stored_names::{format_from_name, kind_from_name};
use crate::{MergeQuery, MergedProfile, ProfileMeta, ProfileQuery, ProfileRecord, StoreError};

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

/// Numbers (u64) as SQLite integers (i64): the same bits.
pub(super) fn num_to_sql(n: u64) -> i64 {
    i64::from_le_bytes(n.to_le_bytes())
}

pub(super) fn num_from_sql(n: i64) -> u64 {
    u64::from_le_bytes(n.to_le_bytes())
}

/// The day (days since 1970-01-01, at least 1) rows of a profile started then carry.
pub(super) fn day_of(unix_nanos: u64) -> u32 {
    u32::try_from(unix_nanos / NANOS_PER_DAY)
        .unwrap_or(u32::MAX)
        .max(1)
}

fn found_locations(
    conn: &Connection,
    ids: &[LocationId],
) -> Result<HashMap<LocationId, u64>, StoreError> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let mut stmt = conn.prepare_cached("SELECT num FROM locations WHERE id = ?1 LIMIT 1")?;
    for id in ids {
        if let Some(num) = stmt
            .query_row(params![&id.0[..]], |r| r.get::<_, i64>(0))
            .optional()?
        {
            out.insert(*id, num_from_sql(num));
        }
    }
    Ok(out)
}

fn found_stacks(
    conn: &Connection,
    service: &str,
    ids: &[StackId],
) -> Result<HashMap<StackId, u64>, StoreError> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let mut stmt =
        conn.prepare_cached("SELECT num FROM stacks WHERE service = ?1 AND id = ?2 LIMIT 1")?;
    for id in ids {
        if let Some(num) = stmt
            .query_row(params![service, &id.0[..]], |r| r.get::<_, i64>(0))
            .optional()?
        {
            out.insert(*id, num_from_sql(num));
        }
    }
    Ok(out)
}

/// Writes the rows of `c`'s locations and stacks that `numbered` says are not durable on
/// its day yet (new ones, or ones last written on an earlier day).
pub(super) fn write_rows(
    conn: &Connection,
    service: &str,
    c: &ProfileContents,
    numbered: &Numbered,
) -> Result<(), StoreError> {
    let day = i64::from(numbered.day);
    let mut location = conn.prepare_cached(
        "INSERT INTO locations (num, id, day, kind, module, build_id, offset, frames)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (num) DO UPDATE SET day = max(day, excluded.day)",
    )?;
    for &(index, id) in &numbered.new_locations {
        let num = num_to_sql(numbered.location_nums[index as usize]);
        match &c.locations[index as usize] {
            Location::Native { module, offset } => location.execute(params![
                num,
                &id.0[..],
                day,
                0,
                module.name,
                module.build_id,
                num_to_sql(*offset),
                Option::<Vec<u8>>::None
            ])?,
            Location::Symbolic(frames) => location.execute(params![
                num,
                &id.0[..],
                day,
                1,
                "",
                "",
                0,
                encoding::frames_bytes(frames)
            ])?,
        };
    }
    let mut stack = conn.prepare_cached(
        "INSERT INTO stacks (service, num, id, day, locations) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (service, num) DO UPDATE SET day = max(day, excluded.day)",
    )?;
    for &(index, id) in &numbered.new_stacks {
        let nums: Vec<u64> = c.stacks[index as usize]
            .iter()
            .map(|&l| numbered.location_nums[l as usize])
            .collect();
        stack.execute(params![
            service,
            num_to_sql(numbered.stack_nums[index as usize]),
            &id.0[..],
            day,
            encoding::stack_bytes(&nums)
        ])?;
    }
    Ok(())
}

/// Numbers `c` (looking up what the memory does not know) and writes its new rows.
pub(super) fn number_and_write(
    conn: &Connection,
    numbering: &Numbering,
    service: &str,
    day: u32,
    c: &ProfileContents,
) -> Result<Numbered, StoreError> {
    let unknown = numbering.unknown(service, day, c);
    let found_l = found_locations(conn, &unknown.locations)?;
    let found_s = found_stacks(conn, service, &unknown.stacks)?;
    let numbered = numbering.number(service, day, c, unknown, &found_l, &found_s)?;
    write_rows(conn, service, c, &numbered)?;
    Ok(numbered)
}

/// Stores a profile (in the writer's transaction); the numbering to remember as
/// written once committed, if it had contents and was not stored already.
pub(super) fn insert(
    conn: &Connection,
    numbering: &Numbering,
    p: &ProfileRecord,
) -> Result<Option<Numbered>, StoreError> {
    let stored: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM profiles WHERE service = ?1 AND profile_id = ?2")?
        .query_row(params![p.service, p.profile_id], |r| r.get(0))
        .optional()?;
    if stored.is_some() {
        return Ok(None);
    }
    let (header, samples, numbered) = match &p.contents {
        Some(c) => {
            let numbered =
                number_and_write(conn, numbering, &p.service, day_of(p.started_unix_nanos), c)?;
            (
                Some(encoding::header_bytes(&c.header)),
                Some(encoding::samples_bytes(
                    &c.samples,
                    c.header.sample_types.len(),
                    &c.label_sets,
                    &numbered.stack_nums,
                )),
                Some(numbered),
            )
        }
        None => (None, None, None),
    };
    conn.prepare_cached(
        "INSERT OR IGNORE INTO profiles
            (service, profile_id, event_id, instance_id, kind, started, duration_ns, labels,
             error, size_bytes, format, header, samples, original)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        p.service,
        p.profile_id,
        p.event_id,
        p.instance_id,
        p.kind.as_str(),
        nanos_to_sql(p.started_unix_nanos),
        duration_to_sql(p.duration),
        labels_to_sql(&p.labels),
        p.error.as_deref().filter(|e| !e.is_empty()),
        nanos_to_sql(p.size_bytes),
        p.format.as_str(),
        header,
        samples,
        p.original,
    ])?;
    Ok(numbered)
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
    size_bytes: i64,
    format: String,
}

const COLUMNS: &str = "profile_id, service, event_id, instance_id, kind, started, duration_ns, \
                       labels, error, size_bytes, format";

/// The [`COLUMNS`] from the start of a result row.
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
        size_bytes: r.get(9)?,
        format: r.get(10)?,
    })
}

impl Row {
    fn decode(self) -> Result<ProfileMeta, StoreError> {
        Ok(ProfileMeta {
            kind: kind_from_name("profiles.kind", &self.kind)?,
            format: format_from_name("profiles.format", &self.format)?,
            labels: labels_from_sql("profiles.labels", &self.labels)?,
            profile_id: self.profile_id,
            service: self.service,
            event_id: self.event_id,
            instance_id: self.instance_id,
            started_unix_nanos: nanos_from_sql(self.started),
            duration: duration_from_sql(self.duration_ns),
            error: self.error,
            size_bytes: u64::try_from(self.size_bytes).map_err(|_| StoreError::Corrupt {
                what: "profiles.size_bytes",
                value: self.size_bytes.to_string(),
            })?,
        })
    }
}

pub(super) fn query(conn: &Connection, q: &ProfileQuery) -> Result<Vec<ProfileMeta>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM profiles
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
        row,
    )?;
    let mut out = Vec::new();
    for found in rows {
        out.push(found?.decode()?);
    }
    Ok(out)
}

/// A profile row with its stored forms, not yet put together.
struct Stored {
    meta: ProfileMeta,
    header: Option<Vec<u8>>,
    samples: Option<Vec<u8>>,
    original: Option<Vec<u8>>,
}

/// The rows the numbers refer to: the service's stacks, their locations, the symbols
/// of the native ones.
fn read_rows(conn: &Connection, service: &str, stack_nums: &[u64]) -> Result<Rows, StoreError> {
    let mut rows = Rows::default();
    let mut stmt =
        conn.prepare_cached("SELECT locations FROM stacks WHERE service = ?1 AND num = ?2")?;
    for &num in stack_nums {
        if let Some(bytes) = stmt
            .query_row(params![service, num_to_sql(num)], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()?
        {
            rows.stacks.insert(num, encoding::stack_from(&bytes)?);
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT kind, module, build_id, offset, frames FROM locations WHERE num = ?1",
    )?;
    for num in assemble::location_nums(&rows.stacks) {
        let found = stmt
            .query_row(params![num_to_sql(num)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<Vec<u8>>>(4)?,
                ))
            })
            .optional()?;
        let Some((kind, name, build_id, offset, frames)) = found else {
            continue;
        };
        let location = match kind {
            0 => Location::Native {
                module: Module { name, build_id },
                offset: num_from_sql(offset),
            },
            1 => Location::Symbolic(encoding::frames_from(
                "locations.frames",
                frames.as_deref().unwrap_or_default(),
            )?),
            other => {
                return Err(StoreError::Corrupt {
                    what: "locations.kind",
                    value: other.to_string(),
                })
            }
        };
        rows.locations.insert(num, location);
    }
    let mut stmt = conn.prepare_cached("SELECT frames FROM symbols WHERE id = ?1")?;
    for id in assemble::native_ids(&rows.locations) {
        if let Some(bytes) = stmt
            .query_row(params![&id.0[..]], |r| r.get::<_, Vec<u8>>(0))
            .optional()?
        {
            rows.symbols
                .insert(id, encoding::frames_from("symbols.frames", &bytes)?);
        }
    }
    Ok(rows)
}

fn read_stored(
    conn: &Connection,
    service: &str,
    profile_id: &str,
) -> Result<Option<Stored>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, header, samples, original FROM profiles
         WHERE service = ?1 AND profile_id = ?2"
    ))?;
    let found = stmt
        .query_row(params![service, profile_id], |r| {
            Ok((
                row(r)?,
                r.get::<_, Option<Vec<u8>>>(11)?,
                r.get::<_, Option<Vec<u8>>>(12)?,
                r.get::<_, Option<Vec<u8>>>(13)?,
            ))
        })
        .optional()?;
    let Some((row, header, samples, original)) = found else {
        return Ok(None);
    };
    Ok(Some(Stored {
        meta: row.decode()?,
        header,
        samples,
        original,
    }))
}

/// Profiles of `service` by id, put together with one read of the rows they share.
pub(super) fn get_many(
    conn: &Connection,
    service: &str,
    ids: &[String],
) -> Result<Vec<ProfileRecord>, StoreError> {
    let mut seen = std::collections::HashSet::new();
    let mut stored = Vec::new();
    for id in ids {
        if seen.insert(id.as_str()) {
            if let Some(s) = read_stored(conn, service, id)? {
                stored.push(s);
            }
        }
    }
    let mut decoded: Vec<Option<(crate::ProfileHeader, StoredSamples)>> = Vec::new();
    for s in &stored {
        decoded.push(match (&s.header, &s.samples) {
            (Some(h), Some(b)) => Some((encoding::header_from(h)?, encoding::samples_from(b)?)),
            _ => None,
        });
    }
    let nums = assemble::stack_nums(decoded.iter().flatten().map(|(_, s)| s));
    let rows = read_rows(conn, service, &nums)?;
    let mut out = Vec::with_capacity(stored.len());
    for (s, d) in stored.into_iter().zip(decoded) {
        let contents = match d {
            Some((header, samples)) => Some(assemble::contents(header, samples, &rows)?),
            None => None,
        };
        out.push(record(s.meta, contents, s.original));
    }
    Ok(out)
}

fn record(
    m: ProfileMeta,
    contents: Option<ProfileContents>,
    original: Option<Vec<u8>>,
) -> ProfileRecord {
    ProfileRecord {
        profile_id: m.profile_id,
        event_id: m.event_id,
        service: m.service,
        instance_id: m.instance_id,
        kind: m.kind,
        started_unix_nanos: m.started_unix_nanos,
        duration: m.duration,
        labels: m.labels,
        error: m.error,
        size_bytes: m.size_bytes,
        format: m.format,
        contents,
        original,
    }
}

pub(super) fn merge(conn: &Connection, q: &MergeQuery) -> Result<MergedProfile, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT header, samples FROM profiles
         WHERE service = ?1 AND kind = ?2 AND started >= ?3 AND started < ?4
           AND samples IS NOT NULL
         ORDER BY started DESC LIMIT ?5",
    )?;
    let mut rows = stmt.query(params![
        q.service,
        q.kind.as_str(),
        nanos_to_sql(q.since_unix_nanos),
        nanos_to_sql(q.until_unix_nanos),
        nanos_to_sql(q.limit),
    ])?;
    let mut merger = Merger::default();
    while let Some(r) = rows.next()? {
        let header: Option<Vec<u8>> = r.get(0)?;
        let samples: Vec<u8> = r.get(1)?;
        let Some(header) = header else { continue };
        merger.add(
            &encoding::header_from(&header)?,
            &encoding::samples_from(&samples)?,
        );
    }
    let rows = read_rows(conn, &q.service, &merger.stack_nums())?;
    let profiles = merger.profiles();
    Ok(MergedProfile {
        profiles,
        contents: merger.finish(&rows)?,
    })
}

pub(super) fn insert_symbols(
    conn: &Connection,
    symbols: &[(LocationId, Vec<StackFrame>)],
) -> Result<(), StoreError> {
    let mut stmt =
        conn.prepare_cached("INSERT OR REPLACE INTO symbols (id, frames) VALUES (?1, ?2)")?;
    for (id, frames) in symbols {
        stmt.execute(params![&id.0[..], encoding::frames_bytes(frames)])?;
    }
    Ok(())
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
        assert_eq!(num_from_sql(num_to_sql(u64::MAX)), u64::MAX);
        assert_eq!(day_of(0), 1);
    }
}
