//! The embedded store: one SQLite file (bundled SQLite, no server).
//!
//! Writes go through one writer thread that commits what waits together in one
//! transaction ([`writer`]: group commit), with `synchronous = FULL` by default, so that
//! what the collector acknowledges survives a power loss at the cost of one `fsync` per
//! group. Reads run on tokio's blocking pool on a connection of their own (WAL mode lets
//! them proceed while the writer writes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use crate::numbering::Numbering;
use crate::StoreError;

mod control;
mod debuginfo;
mod incidents;
mod migrate;
mod profiles;
mod schema;
mod skips;
mod store;
mod suspects;
mod triggers;
mod writer;

const NANOS_PER_DAY: u64 = 86_400 * 1_000_000_000;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "holmes.sqlite3";

/// How long opening waits for another process's migration (or write) to finish.
const OPEN_BUSY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a write waits for another process holding the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// When a commit is durable (SQLite's `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Durable when the commit returns, even after a power loss (an `fsync` per commit,
    /// shared by the writes of one group): what is acknowledged is on disk.
    #[default]
    Full,
    /// Durable against a crash of the collector, not of the machine (no `fsync` per
    /// commit): faster, but a power loss can lose acknowledged writes.
    Normal,
}

/// The `[sqlite]` section of the collector's config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteSettings {
    /// `synchronous = "full"` (the default: acknowledged means on disk) or `"normal"`.
    pub synchronous: Synchronous,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// The embedded SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: writer::Writer,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
    numbering: Arc<Numbering>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` with durable commits, and
    /// migrates its schema.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, Synchronous::Full)
    }

    /// [`SqliteStore::open`] with commits as durable as `synchronous` says.
    pub fn open_with(data_dir: &Path, synchronous: Synchronous) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let connect = || -> Result<Connection, StoreError> {
            let conn = Connection::open(&path).map_err(open_err)?;
            conn.busy_timeout(OPEN_BUSY_TIMEOUT).map_err(open_err)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(open_err)?;
            conn.pragma_update(None, "synchronous", synchronous.pragma())
                .map_err(open_err)?;
            Ok(conn)
        };
        let mut conn = connect()?;
        migrate::migrate(&mut conn)?;
        let epoch = migrate::claim_epoch(&conn, "collector")?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let reader = connect()?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        tracing::debug!(path = %path.display(), epoch, synchronous = synchronous.pragma(), "embedded store open");
        Ok(SqliteStore {
            writer: writer::Writer::start(conn)?,
            reader: Arc::new(Mutex::new(reader)),
            path,
            numbering: Arc::new(Numbering::new(epoch)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The epoch this writer numbers new locations and stacks under.
    pub fn numbering_epoch(&self) -> u32 {
        self.numbering.epoch()
    }

    /// When the writer's commits are durable, as the writer's connection reports it.
    pub async fn synchronous(&self) -> Result<Synchronous, StoreError> {
        let level: i64 = self
            .writer
            .write(|conn| Ok(conn.pragma_query_value(None, "synchronous", |r| r.get(0))?))
            .await?;
        match level {
            2 => Ok(Synchronous::Full),
            1 => Ok(Synchronous::Normal),
            other => Err(StoreError::Corrupt {
                what: "PRAGMA synchronous",
                value: other.to_string(),
            }),
        }
    }

    /// Transactions the writer committed so far: writes waiting together share one
    /// (group commit).
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            // A poisoned lock only means another call panicked mid-statement; SQLite
            // rolled that statement back, so the connection is still usable.
            let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&guard)
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

fn nanos_to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn nanos_from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn labels_to_sql(labels: &BTreeMap<String, String>) -> String {
    // Keys and values are validated names/short strings; a tab/newline-free encoding
    // would still be fragile, so use a length-prefixed form that needs no escaping.
    let mut out = String::new();
    for (k, v) in labels {
        out.push_str(&format!("{}:{}{}:{}", k.len(), k, v.len(), v));
    }
    out
}

/// Labels written by [`labels_to_sql`]; `what` names the column in the error.
fn labels_from_sql(what: &'static str, s: &str) -> Result<BTreeMap<String, String>, StoreError> {
    let corrupt = || StoreError::Corrupt {
        what,
        value: s.to_owned(),
    };
    let mut out = BTreeMap::new();
    let mut rest = s;
    let take = |rest: &mut &str| -> Result<String, StoreError> {
        let (len, tail) = rest.split_once(':').ok_or_else(corrupt)?;
        let len: usize = len.parse().map_err(|_| corrupt())?;
        let value = tail.get(..len).ok_or_else(corrupt)?.to_owned();
        *rest = &tail[len..];
        Ok(value)
    };
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        out.insert(k, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::schema::MIGRATIONS;
    use super::*;

    #[test]
    fn labels_encoding_roundtrips_awkward_values() {
        let labels: BTreeMap<String, String> = [
            ("a".to_owned(), "x:y:3:z".to_owned()),
            ("b".to_owned(), String::new()),
            ("c".to_owned(), "ünïcode 12:".to_owned()),
        ]
        .into();
        assert_eq!(
            labels_from_sql("t", &labels_to_sql(&labels)).unwrap(),
            labels
        );
        assert!(labels_from_sql("t", "3:ab").is_err());
    }

    #[test]
    fn a_store_of_an_older_version_is_migrated_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO metric_samples VALUES ('checkout', 'cpu', 'a', 5, 1.5)",
            [],
        )
        .unwrap();
        drop(conn);
        let store = SqliteStore::open(dir.path()).unwrap();
        let conn = store.reader.lock().unwrap();
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        let (samples, triggers, profiles): (i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM metric_samples), (SELECT COUNT(*) FROM triggers),
                        (SELECT COUNT(*) FROM profiles)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((samples, triggers, profiles), (1, 0, 0));
    }

    #[test]
    fn refuses_a_schema_newer_than_it_knows() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
    }
}
