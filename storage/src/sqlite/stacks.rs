//! Normalized profile contents in the embedded store: the `stacks`, `profile_contents`
//! and `profile_samples` tables of migration 4.
//!
//! Frames, sample values, labels and sample types are BLOBs in one length-prefixed
//! binary form ([`Writer`] / [`Reader`]): compact, and no name needs escaping.

use rusqlite::{params, Connection, OptionalExtension};

use crate::{ProfileContents, Stack, StackFrame, StackSample, StoreError};

/// Appends varints and length-prefixed strings.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    /// Zig-zag, so small negative values stay small.
    fn signed(&mut self, n: i64) {
        self.varint(((n << 1) ^ (n >> 63)) as u64);
    }
}

/// Reads what [`Writer`] wrote; every read fails cleanly on a short or bad buffer.
struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Reader { rest: bytes, what }
    }

    fn corrupt(&self) -> StoreError {
        StoreError::Corrupt {
            what: self.what,
            value: format!("{} bytes left unreadable", self.rest.len()),
        }
    }

    fn done(&self) -> bool {
        self.rest.is_empty()
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, tail) = self.rest.split_first().ok_or_else(|| self.corrupt())?;
            self.rest = tail;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(self.corrupt())
    }

    fn signed(&mut self) -> Result<i64, StoreError> {
        let z = self.varint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn str(&mut self) -> Result<String, StoreError> {
        let len = usize::try_from(self.varint()?).map_err(|_| self.corrupt())?;
        if len > self.rest.len() {
            return Err(self.corrupt());
        }
        let (s, tail) = self.rest.split_at(len);
        let s = std::str::from_utf8(s)
            .map_err(|_| self.corrupt())?
            .to_owned();
        self.rest = tail;
        Ok(s)
    }
}

fn frames_to_sql(frames: &[StackFrame]) -> Vec<u8> {
    let mut w = Writer::default();
    for f in frames {
        w.str(&f.function);
        w.str(&f.file);
        w.varint(u64::from(f.line));
    }
    w.0
}

fn frames_from_sql(bytes: &[u8]) -> Result<Vec<StackFrame>, StoreError> {
    let mut r = Reader::new("stacks.frames", bytes);
    let mut frames = Vec::new();
    while !r.done() {
        let function = r.str()?;
        let file = r.str()?;
        let line = u32::try_from(r.varint()?).map_err(|_| r.corrupt())?;
        frames.push(StackFrame {
            function,
            file,
            line,
        });
    }
    Ok(frames)
}

fn pairs_to_sql(pairs: &[(String, String)]) -> Vec<u8> {
    let mut w = Writer::default();
    for (k, v) in pairs {
        w.str(k);
        w.str(v);
    }
    w.0
}

fn pairs_from_sql(what: &'static str, bytes: &[u8]) -> Result<Vec<(String, String)>, StoreError> {
    let mut r = Reader::new(what, bytes);
    let mut out = Vec::new();
    while !r.done() {
        let k = r.str()?;
        out.push((k, r.str()?));
    }
    Ok(out)
}

/// A list of strings as a BLOB (incident instances, event ids).
pub(super) fn strings_to_sql(list: &[String]) -> Vec<u8> {
    let mut w = Writer::default();
    for s in list {
        w.str(s);
    }
    w.0
}

pub(super) fn strings_from_sql(
    what: &'static str,
    bytes: &[u8],
) -> Result<Vec<String>, StoreError> {
    let mut r = Reader::new(what, bytes);
    let mut out = Vec::new();
    while !r.done() {
        out.push(r.str()?);
    }
    Ok(out)
}

fn values_to_sql(values: &[i64]) -> Vec<u8> {
    let mut w = Writer::default();
    for v in values {
        w.signed(*v);
    }
    w.0
}

fn values_from_sql(bytes: &[u8]) -> Result<Vec<i64>, StoreError> {
    let mut r = Reader::new("profile_samples.vals", bytes);
    let mut out = Vec::new();
    while !r.done() {
        out.push(r.signed()?);
    }
    Ok(out)
}

/// Stack ids are u64; SQLite integers are i64: the same bits.
fn id_to_sql(id: u64) -> i64 {
    i64::from_le_bytes(id.to_le_bytes())
}

fn id_from_sql(id: i64) -> u64 {
    u64::from_le_bytes(id.to_le_bytes())
}

pub(super) fn insert(conn: &mut Connection, c: &ProfileContents) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut stack =
            tx.prepare_cached("INSERT OR IGNORE INTO stacks (stack_id, frames) VALUES (?1, ?2)")?;
        for s in &c.stacks {
            stack.execute(params![id_to_sql(s.stack_id), frames_to_sql(&s.frames)])?;
        }
        tx.prepare_cached(
            "INSERT OR IGNORE INTO profile_contents (profile_id, service, started, sample_types)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            c.profile_id,
            c.service,
            super::nanos_to_sql(c.started_unix_nanos),
            pairs_to_sql(&c.sample_types),
        ])?;
        let mut sample = tx.prepare_cached(
            "INSERT OR IGNORE INTO profile_samples (profile_id, idx, stack_id, vals, labels)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (i, s) in c.samples.iter().enumerate() {
            let labels = (!s.labels.is_empty()).then(|| pairs_to_sql(&s.labels));
            sample.execute(params![
                c.profile_id,
                i as i64,
                id_to_sql(s.stack_id),
                values_to_sql(&s.values),
                labels,
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn get(conn: &mut Connection, id: &str) -> Result<Option<ProfileContents>, StoreError> {
    let head: Option<(String, i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT service, started, sample_types FROM profile_contents WHERE profile_id = ?1",
        )?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((service, started, types)) = head else {
        return Ok(None);
    };
    let mut samples = Vec::new();
    let mut stacks: Vec<Stack> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stmt = conn.prepare_cached(
        "SELECT s.stack_id, s.vals, s.labels, k.frames
         FROM profile_samples s LEFT JOIN stacks k ON k.stack_id = s.stack_id
         WHERE s.profile_id = ?1 ORDER BY s.idx",
    )?;
    let mut rows = stmt.query(params![id])?;
    while let Some(r) = rows.next()? {
        let stack_id = id_from_sql(r.get(0)?);
        let vals: Vec<u8> = r.get(1)?;
        let labels: Option<Vec<u8>> = r.get(2)?;
        let frames: Option<Vec<u8>> = r.get(3)?;
        if seen.insert(stack_id) {
            let frames = frames.ok_or_else(|| StoreError::Corrupt {
                what: "profile_samples.stack_id",
                value: format!("{stack_id:016x} has no stored stack"),
            })?;
            stacks.push(Stack {
                stack_id,
                frames: frames_from_sql(&frames)?,
            });
        }
        samples.push(StackSample {
            stack_id,
            values: values_from_sql(&vals)?,
            labels: match labels {
                Some(l) => pairs_from_sql("profile_samples.labels", &l)?,
                None => Vec::new(),
            },
        });
    }
    Ok(Some(ProfileContents {
        profile_id: id.to_owned(),
        service,
        started_unix_nanos: super::nanos_from_sql(started),
        sample_types: pairs_from_sql("profile_contents.sample_types", &types)?,
        stacks,
        samples,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_forms_read_back() {
        let frames = vec![
            StackFrame {
                function: "a::b".into(),
                file: "src/ä.rs".into(),
                line: 70_000,
            },
            StackFrame {
                function: String::new(),
                file: String::new(),
                line: 0,
            },
        ];
        assert_eq!(frames_from_sql(&frames_to_sql(&frames)).unwrap(), frames);
        let values = vec![0, -1, 1, i64::MIN, i64::MAX, 1_000_000];
        assert_eq!(values_from_sql(&values_to_sql(&values)).unwrap(), values);
        let pairs = vec![("k".into(), "v:1".into()), ("k".into(), String::new())];
        assert_eq!(pairs_from_sql("t", &pairs_to_sql(&pairs)).unwrap(), pairs);
        assert_eq!(id_from_sql(id_to_sql(u64::MAX)), u64::MAX);
    }

    #[test]
    fn truncated_blobs_are_errors_not_panics() {
        let bytes = frames_to_sql(&[StackFrame {
            function: "f".into(),
            file: "x.rs".into(),
            line: 3,
        }]);
        for cut in 1..bytes.len() {
            assert!(frames_from_sql(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(values_from_sql(&[0xff; 11]).is_err());
    }
}
