//! The embedded store's schema migrations, and the numbering epoch a writer claims.
//!
//! All pending migrations run in one `BEGIN IMMEDIATE` transaction that reads the
//! schema version inside it: a second collector opening the same file at the same time
//! waits for the first to commit, then finds nothing left to do. Migration 6 converts
//! the profiles of the earlier layout (the original bytes, kept then for every profile,
//! and their decoded stacks) into the normalized one: each keeps its original bytes, so
//! its download stays byte for byte what the agent sent, and its stacks become symbolic
//! locations (one per frame) numbered like any others.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::profiles::{day_of, number_and_write};
use super::schema::MIGRATIONS;
use super::{labels_from_sql, nanos_from_sql};
use crate::contents::{ProfileContents, ProfileHeader, ProfileLabel, ProfileSample, ValueType};
use crate::encoding::{self, Reader};
use crate::location::{Location, StackFrame};
use crate::numbering::Numbering;
use crate::StoreError;

/// The version at which the normalized layout starts (its conversion runs with it).
const NORMALIZED: u32 = 6;

/// Applies the migrations the store lacks.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = MIGRATIONS.len() as u32;
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as u32 + 1;
        let failed = |e: &dyn std::fmt::Display| StoreError::Migration {
            version,
            message: e.to_string(),
        };
        tx.execute_batch(sql).map_err(|e| failed(&e))?;
        if version == NORMALIZED && current > 0 {
            let converted = convert_v5(&tx).map_err(|e| failed(&e))?;
            tracing::info!(
                profiles = converted,
                "embedded store: profiles converted to the normalized layout"
            );
        }
        if version == NORMALIZED {
            tx.execute_batch(
                "DROP TABLE profiles_v5; DROP TABLE stacks_v5;
                 DROP TABLE profile_contents; DROP TABLE profile_samples;",
            )
            .map_err(|e| failed(&e))?;
        }
        tx.pragma_update(None, "user_version", version)?;
        tracing::info!(version, "embedded store schema migrated");
    }
    tx.commit()?;
    Ok(())
}

/// Claims the next numbering epoch for a writer (see [`crate::numbering`]).
pub(super) fn claim_epoch(conn: &Connection, holder: &str) -> Result<u32, StoreError> {
    conn.execute(
        "INSERT INTO writer_epochs (epoch, claimed_at, holder)
         VALUES ((SELECT COALESCE(MAX(epoch), 0) + 1 FROM writer_epochs), ?1, ?2)",
        params![super::nanos_to_sql(now_nanos()), holder],
    )?;
    let epoch = conn.last_insert_rowid();
    u32::try_from(epoch).map_err(|_| StoreError::Corrupt {
        what: "writer_epochs.epoch",
        value: epoch.to_string(),
    })
}

pub(super) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Length-prefixed pairs, as the earlier layout kept labels and sample types.
fn pairs(what: &'static str, bytes: &[u8]) -> Result<Vec<(String, String)>, StoreError> {
    let mut r = Reader::new(what, bytes);
    let mut out = Vec::new();
    while !r.done() {
        let k = r.str()?;
        out.push((k, r.str()?));
    }
    Ok(out)
}

fn signed_values(bytes: &[u8]) -> Result<Vec<i64>, StoreError> {
    let mut r = Reader::new("profile_samples.vals", bytes);
    let mut out = Vec::new();
    while !r.done() {
        out.push(r.signed()?);
    }
    Ok(out)
}

/// The earlier layout's frames of a stack: function, file, line each.
fn old_frames(bytes: &[u8]) -> Result<Vec<StackFrame>, StoreError> {
    let mut r = Reader::new("stacks.frames", bytes);
    let mut out = Vec::new();
    while !r.done() {
        let function = r.str()?;
        let file = r.str()?;
        let line = u32::try_from(r.varint()?).map_err(|_| r.corrupt())?;
        out.push(StackFrame::new(function, file, line));
    }
    Ok(out)
}

/// The decoded contents the earlier layout kept for `profile_id`, if any.
fn old_contents(
    tx: &Connection,
    profile_id: &str,
    frames_of: &mut HashMap<i64, Vec<StackFrame>>,
) -> Result<Option<ProfileContents>, StoreError> {
    let types: Option<Vec<u8>> = tx
        .query_row(
            "SELECT sample_types FROM profile_contents WHERE profile_id = ?1",
            params![profile_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(types) = types else {
        return Ok(None);
    };
    let mut c = ProfileContents {
        header: ProfileHeader {
            sample_types: pairs("profile_contents.sample_types", &types)?
                .into_iter()
                .map(|(name, unit)| ValueType { name, unit })
                .collect(),
            ..ProfileHeader::default()
        },
        ..ProfileContents::default()
    };
    let mut locations: HashMap<StackFrame, u32> = HashMap::new();
    let mut stacks: HashMap<i64, u32> = HashMap::new();
    let mut label_sets: HashMap<Vec<(String, String)>, u32> = HashMap::new();
    let mut stmt = tx.prepare_cached(
        "SELECT stack_id, vals, labels FROM profile_samples WHERE profile_id = ?1 ORDER BY idx",
    )?;
    let mut rows = stmt.query(params![profile_id])?;
    while let Some(r) = rows.next()? {
        let stack_id: i64 = r.get(0)?;
        let values = signed_values(&r.get::<_, Vec<u8>>(1)?)?;
        let labels = match r.get::<_, Option<Vec<u8>>>(2)? {
            Some(l) => pairs("profile_samples.labels", &l)?,
            None => Vec::new(),
        };
        let stack = match stacks.get(&stack_id) {
            Some(&s) => s,
            None => {
                if let std::collections::hash_map::Entry::Vacant(e) = frames_of.entry(stack_id) {
                    let bytes: Vec<u8> = tx.query_row(
                        "SELECT frames FROM stacks_v5 WHERE stack_id = ?1",
                        params![stack_id],
                        |r| r.get(0),
                    )?;
                    e.insert(old_frames(&bytes)?);
                }
                let mut entries = Vec::new();
                for f in frames_of.get(&stack_id).into_iter().flatten() {
                    let next = c.locations.len() as u32;
                    let l = *locations.entry(f.clone()).or_insert(next);
                    if l == next {
                        c.locations.push(Location::Symbolic(vec![f.clone()]));
                    }
                    entries.push(l);
                }
                let s = c.stacks.len() as u32;
                c.stacks.push(entries);
                stacks.insert(stack_id, s);
                s
            }
        };
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
            values,
            labels: set,
        });
    }
    Ok(Some(c))
}

/// Moves every profile of the earlier layout (`profiles_v5`, `profile_contents`,
/// `profile_samples`, `stacks_v5`) into the normalized tables; returns how many.
fn convert_v5(tx: &Connection) -> Result<u64, StoreError> {
    let epoch = claim_epoch(tx, "migration 6")?;
    let numbering = Numbering::new(epoch);
    let mut frames_of: HashMap<i64, Vec<StackFrame>> = HashMap::new();
    let mut read = tx.prepare(
        "SELECT profile_id, service, event_id, instance_id, kind, started, duration_ns, labels,
                error, size_bytes, data
         FROM profiles_v5 ORDER BY service, started",
    )?;
    let mut rows = read.query([])?;
    let mut converted = 0u64;
    while let Some(r) = rows.next()? {
        let profile_id: String = r.get(0)?;
        let service: String = r.get(1)?;
        let started: i64 = r.get(5)?;
        let labels: String = r.get(7)?;
        labels_from_sql("profiles.labels", &labels)?;
        let error: Option<String> = r.get(8)?;
        let data: Vec<u8> = r.get(10)?;
        let contents = old_contents(tx, &profile_id, &mut frames_of)?;
        let (header, samples) = match &contents {
            Some(c) => {
                let numbered =
                    number_and_write(tx, &numbering, &service, day_of(nanos_from_sql(started)), c)?;
                numbering.written(&service, &numbered);
                (
                    Some(encoding::header_bytes(&c.header)),
                    Some(encoding::samples_bytes(
                        &c.samples,
                        c.header.sample_types.len(),
                        &c.label_sets,
                        &numbered.stack_nums,
                    )),
                )
            }
            None => (None, None),
        };
        // The earlier layout kept every original: keep it, so the download is exact.
        let original = (error.is_none()).then_some(data);
        tx.prepare_cached(
            "INSERT OR IGNORE INTO profiles
                (service, profile_id, event_id, instance_id, kind, started, duration_ns, labels,
                 error, size_bytes, format, header, samples, original)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pprof', ?11, ?12, ?13)",
        )?
        .execute(params![
            service,
            profile_id,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            started,
            r.get::<_, i64>(6)?,
            labels,
            error,
            r.get::<_, i64>(9)?,
            header,
            samples,
            original,
        ])?;
        converted += 1;
    }
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::Writer;
    use crate::sqlite::{SqliteStore, DB_FILE};
    use crate::Store;

    const T0: i64 = 1_795_651_200_000_000_000;

    fn blob(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::default();
        f(&mut w);
        w.0
    }

    /// A store as the layout before migration 6 left it (what the collector wrote
    /// then): two profiles of one service sharing a stack, with their original bytes and
    /// decoded contents, and a refused one.
    fn old_store(dir: &std::path::Path) {
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        let frames = |names: &[(&str, u32)]| {
            blob(|w| {
                for (f, line) in names {
                    w.str(f);
                    w.str("src/main.rs");
                    w.varint(u64::from(*line));
                }
            })
        };
        conn.execute(
            "INSERT INTO stacks VALUES (11, ?1), (22, ?2)",
            params![
                frames(&[("shop::render", 42), ("shop::handle", 7), ("main", 1)]),
                frames(&[("shop::handle", 9), ("main", 1)])
            ],
        )
        .unwrap();
        for (n, id) in [(0i64, "a1"), (1, "a2")] {
            let pid = format!("{id:0>32}");
            conn.execute(
                "INSERT INTO profiles VALUES (?1, 'shop', 'ev-1', 'shop-0', 'cpu', ?2, 10000000000,
                 '5:phase7:trigger', NULL, 5, ?3)",
                params![pid, T0 + n, format!("gz{id}").into_bytes()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO profile_contents VALUES (?1, 'shop', ?2, ?3)",
                params![
                    pid,
                    T0 + n,
                    blob(|w| {
                        w.str("samples");
                        w.str("count");
                        w.str("cpu");
                        w.str("nanoseconds");
                    })
                ],
            )
            .unwrap();
            for (idx, stack, count, thread) in
                [(0, 11, 3, "w1"), (1, 22, 1, "main"), (2, 11, 2, "w2")]
            {
                conn.execute(
                    "INSERT INTO profile_samples VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        pid,
                        idx,
                        stack,
                        blob(|w| {
                            w.signed(count + n);
                            w.signed((count + n) * 10_000_000);
                        }),
                        blob(|w| {
                            w.str("thread");
                            w.str(thread);
                        })
                    ],
                )
                .unwrap();
            }
        }
        conn.execute(
            "INSERT INTO profiles VALUES (?1, 'shop', 'ev-1', 'shop-1', 'heap', ?2, 0, '', 'refused by the collector: too deep', 0, x'')",
            params![format!("{:0>32}", "b1"), T0 + 5],
        )
        .unwrap();
    }

    #[tokio::test]
    async fn profiles_of_the_earlier_layout_are_converted_with_their_originals() {
        let dir = tempfile::tempdir().unwrap();
        old_store(dir.path());
        let store = SqliteStore::open(dir.path()).unwrap();
        // The migrated store has every table a new one has (the storage model's and the
        // control plane's, whichever migration made them).
        let tables = |path: &std::path::Path| -> Vec<String> {
            let conn = Connection::open(path.join(DB_FILE)).unwrap();
            let mut stmt = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .unwrap();
            let names = stmt.query_map([], |r| r.get(0)).unwrap();
            names.collect::<Result<_, _>>().unwrap()
        };
        let fresh = tempfile::tempdir().unwrap();
        SqliteStore::open(fresh.path()).unwrap();
        let migrated = tables(dir.path());
        assert_eq!(migrated, tables(fresh.path()));
        assert!(migrated.iter().any(|t| t == "rule_changes"), "{migrated:?}");
        assert!(migrated.iter().any(|t| t == "locations"), "{migrated:?}");
        for (n, id) in [(0i64, "a1"), (1, "a2")] {
            let pid = format!("{id:0>32}");
            let p = store.get_profile("shop", &pid).await.unwrap().unwrap();
            // The download is what the agent sent, byte for byte.
            assert_eq!(p.original.as_deref(), Some(format!("gz{id}").as_bytes()));
            assert_eq!(p.labels.get("phase").map(String::as_str), Some("trigger"));
            assert_eq!(p.size_bytes, 5);
            let c = p.contents.unwrap();
            let samples: Vec<(Vec<String>, Vec<i64>, String)> = c
                .samples
                .iter()
                .map(|s| {
                    (
                        c.stack_frames(s.stack)
                            .into_iter()
                            .map(|f| format!("{}:{}", f.function, f.line))
                            .collect(),
                        s.values.clone(),
                        c.label_sets[s.labels as usize][0].str.clone(),
                    )
                })
                .collect();
            let stack_a = vec![
                "shop::render:42".to_owned(),
                "shop::handle:7".to_owned(),
                "main:1".to_owned(),
            ];
            assert_eq!(
                samples,
                vec![
                    (
                        stack_a.clone(),
                        vec![3 + n, (3 + n) * 10_000_000],
                        "w1".to_owned()
                    ),
                    (
                        vec!["shop::handle:9".to_owned(), "main:1".to_owned()],
                        vec![1 + n, (1 + n) * 10_000_000],
                        "main".to_owned()
                    ),
                    (stack_a, vec![2 + n, (2 + n) * 10_000_000], "w2".to_owned()),
                ]
            );
        }
        let refused = store
            .get_profile("shop", &format!("{:0>32}", "b1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            refused.error.as_deref(),
            Some("refused by the collector: too deep")
        );
        assert_eq!((refused.contents, refused.original), (None, None));
        // Both profiles' stacks are stored once.
        assert_eq!(store.stack_count("shop").await.unwrap(), 2);
    }

    #[tokio::test]
    async fn two_collectors_opening_an_old_store_at_once_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        old_store(dir.path());
        let path = dir.path().to_owned();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let opens: Vec<_> = (0..2)
            .map(|_| {
                let (path, barrier) = (path.clone(), std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteStore::open(&path)
                })
            })
            .collect();
        let stores: Vec<SqliteStore> = opens
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        assert_ne!(stores[0].numbering_epoch(), stores[1].numbering_epoch());
        for store in &stores {
            let listed = store
                .query_profiles(&crate::ProfileQuery {
                    service: "shop".to_owned(),
                    event_id: None,
                    kind: None,
                    since_unix_nanos: 0,
                    until_unix_nanos: u64::MAX / 2,
                    limit: 100,
                })
                .await
                .unwrap();
            assert_eq!(listed.len(), 3);
            assert_eq!(store.stack_count("shop").await.unwrap(), 2);
        }
    }
}
