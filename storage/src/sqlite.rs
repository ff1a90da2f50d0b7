//! The embedded store: one SQLite file (bundled SQLite, no server).
//!
//! rusqlite is blocking, so every call runs on tokio's blocking pool behind one
//! connection; SQLite serialises writers anyway and WAL mode lets reads proceed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection};

use crate::{
    AgentReport, CaptureDispatch, CaptureOutcomeRecord, CaptureRequestQuery, CaptureRequestRecord,
    ChangedBy, ControlNode, PauseEdit, PauseRecord, RuleChange, RuleEdit,
};
use crate::{
    Expired, IncidentQuery, IncidentRecord, InstanceInfo, MetricPoint, MetricQuery,
    ProfileContents, ProfileMeta, ProfileQuery, ProfileRecord, ServiceSummary, Store, StoreError,
    TriggerQuery, TriggerRecord,
};

mod control;
mod incidents;
mod profiles;
mod stacks;
mod triggers;

const NANOS_PER_DAY: u64 = 86_400 * 1_000_000_000;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "holmes.sqlite3";

/// Schema migrations, applied in order; `PRAGMA user_version` records the last one.
const MIGRATIONS: &[&str] = &[
    // 1: services, instances and metric samples.
    "CREATE TABLE instances (
        service TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        labels TEXT NOT NULL,
        agent_version TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        PRIMARY KEY (service, instance_id)
    ) WITHOUT ROWID;
    CREATE TABLE metric_samples (
        service TEXT NOT NULL,
        metric TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (service, metric, instance_id, ts)
    ) WITHOUT ROWID;",
    // 2: trigger events. Numbers are declared without a type so that SQLite keeps them
    // exactly as bound (a REAL column would turn -0.0 into 0); SQLite stores NaN as NULL.
    // The window is a BLOB of 16 bytes per sample: timestamp (u64) and value (f64 bits),
    // little-endian. A trigger without a rule has NULL in every rule_ column.
    "CREATE TABLE triggers (
        service TEXT NOT NULL,
        event_id TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        metric TEXT,
        reason TEXT NOT NULL,
        current_value,
        window_samples BLOB NOT NULL,
        rule_metric TEXT,
        rule_enabled INTEGER,
        rule_min,
        rule_diff,
        rule_abs,
        rule_max,
        rule_cooldown_ms INTEGER,
        rule_window INTEGER,
        request_id TEXT,
        PRIMARY KEY (service, event_id)
    ) WITHOUT ROWID;
    CREATE INDEX triggers_by_time ON triggers (service, ts, event_id);",
    // 3: profiles. A rowid table (WITHOUT ROWID suits small rows, not BLOBs of megabytes)
    // with the bytes last, so that listing never reads them. The unique key doubles as
    // the index of lookups by profile id alone. `duration_ns` holds the u64 nanoseconds'
    // bits (an i64 that may be negative); `error` is NULL for a capture that worked.
    "CREATE TABLE profiles (
        profile_id TEXT NOT NULL,
        service TEXT NOT NULL,
        event_id TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        started INTEGER NOT NULL,
        duration_ns INTEGER NOT NULL,
        labels TEXT NOT NULL,
        error TEXT,
        size_bytes INTEGER NOT NULL,
        data BLOB NOT NULL,
        UNIQUE (profile_id, service)
    );
    CREATE INDEX profiles_by_time ON profiles (service, started, profile_id);",
    // 4: normalized profile contents (see `stacks.rs` for the BLOB forms). A stack is
    // stored once, however many profiles use it.
    "CREATE TABLE stacks (
        stack_id INTEGER PRIMARY KEY,
        frames BLOB NOT NULL
    );
    CREATE TABLE profile_contents (
        profile_id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        started INTEGER NOT NULL,
        sample_types BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE profile_samples (
        profile_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        stack_id INTEGER NOT NULL,
        vals BLOB NOT NULL,
        labels BLOB,
        PRIMARY KEY (profile_id, idx)
    ) WITHOUT ROWID;",
    // 5: incidents, one row each at its highest version; lists as BLOBs (`stacks.rs`).
    "CREATE TABLE incidents (
        incident_id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        metric TEXT NOT NULL,
        severity TEXT NOT NULL,
        status TEXT NOT NULL,
        first_event INTEGER NOT NULL,
        last_event INTEGER NOT NULL,
        resolved INTEGER,
        instances BLOB NOT NULL,
        event_ids BLOB NOT NULL,
        related BLOB NOT NULL,
        version INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX incidents_by_service ON incidents (service, first_event);
    CREATE INDEX incidents_by_time ON incidents (first_event);",
    // 6: the control plane (see `control.rs`).
    control::SCHEMA,
];

/// The embedded SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    known_stacks: Arc<crate::known_stacks::KnownStacks>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, and migrates its schema.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
            known_stacks: Arc::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A poisoned lock only means another call panicked mid-statement; SQLite
            // rolled that statement back, so the connection is still usable.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = MIGRATIONS.len() as u32;
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as u32 + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql).map_err(|e| StoreError::Migration {
            version,
            message: e.to_string(),
        })?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, "embedded store schema migrated");
    }
    Ok(())
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

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn upsert_instance(&self, instance: &InstanceInfo) -> Result<(), StoreError> {
        let i = instance.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO instances
                    (service, instance_id, host, pid, labels, agent_version, started_at, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (service, instance_id) DO UPDATE SET
                    host = excluded.host, pid = excluded.pid, labels = excluded.labels,
                    agent_version = excluded.agent_version, started_at = excluded.started_at,
                    last_seen = excluded.last_seen
                 WHERE excluded.last_seen >= instances.last_seen",
                params![
                    i.service,
                    i.instance_id,
                    i.host,
                    i.pid,
                    labels_to_sql(&i.labels),
                    i.agent_version,
                    nanos_to_sql(i.started_at_unix_nanos),
                    nanos_to_sql(i.last_seen_unix_nanos),
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn insert_metrics(&self, points: &[MetricPoint]) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let points = points.to_vec();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO metric_samples (service, metric, instance_id, ts, value)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for p in &points {
                    stmt.execute(params![
                        p.service,
                        p.metric.as_str(),
                        p.instance_id,
                        nanos_to_sql(p.unix_nanos),
                        p.value
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list_services(
        &self,
        active_since_unix_nanos: u64,
    ) -> Result<Vec<ServiceSummary>, StoreError> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT service, SUM(last_seen >= ?1), MAX(last_seen)
                 FROM instances GROUP BY service ORDER BY service",
            )?;
            let rows = stmt.query_map(params![nanos_to_sql(active_since_unix_nanos)], |r| {
                Ok(ServiceSummary {
                    service: r.get(0)?,
                    instances: nanos_from_sql(r.get(1)?),
                    last_seen_unix_nanos: nanos_from_sql(r.get(2)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn list_instances(&self, service: &str) -> Result<Vec<InstanceInfo>, StoreError> {
        let service = service.to_owned();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT service, instance_id, host, pid, labels, agent_version, started_at, last_seen
                 FROM instances WHERE service = ?1 ORDER BY instance_id",
            )?;
            let rows = stmt.query_map(params![service], |r| {
                Ok((
                    InstanceInfo {
                        service: r.get(0)?,
                        instance_id: r.get(1)?,
                        host: r.get(2)?,
                        pid: r.get(3)?,
                        labels: BTreeMap::new(),
                        agent_version: r.get(5)?,
                        started_at_unix_nanos: nanos_from_sql(r.get(6)?),
                        last_seen_unix_nanos: nanos_from_sql(r.get(7)?),
                    },
                    r.get::<_, String>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (mut info, labels) = row?;
                info.labels = labels_from_sql("instances.labels", &labels)?;
                out.push(info);
            }
            Ok(out)
        })
        .await
    }

    async fn query_metrics(&self, query: &MetricQuery) -> Result<Vec<MetricPoint>, StoreError> {
        let q = query.clone();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT instance_id, ts, value FROM metric_samples
                 WHERE service = ?1 AND metric = ?2 AND ts >= ?3 AND ts < ?4
                 ORDER BY instance_id, ts LIMIT ?5",
            )?;
            let rows = stmt.query_map(
                params![
                    q.service,
                    q.metric.as_str(),
                    nanos_to_sql(q.since_unix_nanos),
                    nanos_to_sql(q.until_unix_nanos),
                    nanos_to_sql(q.limit)
                ],
                |r| {
                    Ok(MetricPoint {
                        service: q.service.clone(),
                        instance_id: r.get(0)?,
                        metric: q.metric,
                        unix_nanos: nanos_from_sql(r.get(1)?),
                        value: r.get(2)?,
                    })
                },
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn insert_triggers(&self, triggers: &[TriggerRecord]) -> Result<(), StoreError> {
        if triggers.is_empty() {
            return Ok(());
        }
        let triggers = triggers.to_vec();
        self.with_conn(move |conn| triggers::insert(conn, &triggers))
            .await
    }

    async fn query_triggers(&self, query: &TriggerQuery) -> Result<Vec<TriggerRecord>, StoreError> {
        let q = query.clone();
        self.with_conn(move |conn| triggers::query(conn, &q)).await
    }

    async fn insert_profile(&self, profile: &ProfileRecord) -> Result<(), StoreError> {
        // The bytes are copied once into the worker; a profile is at most tens of MiB.
        let p = profile.clone();
        self.with_conn(move |conn| profiles::insert(conn, &p)).await
    }

    async fn query_profiles(&self, query: &ProfileQuery) -> Result<Vec<ProfileMeta>, StoreError> {
        let q = query.clone();
        self.with_conn(move |conn| profiles::query(conn, &q)).await
    }

    async fn get_profile(&self, profile_id: &str) -> Result<Option<ProfileRecord>, StoreError> {
        let id = profile_id.to_owned();
        self.with_conn(move |conn| profiles::get(conn, &id)).await
    }

    async fn upsert_incident(&self, incident: &IncidentRecord) -> Result<(), StoreError> {
        let i = incident.clone();
        self.with_conn(move |conn| incidents::upsert(conn, &i))
            .await
    }

    async fn query_incidents(
        &self,
        query: &IncidentQuery,
    ) -> Result<Vec<IncidentRecord>, StoreError> {
        let q = query.clone();
        self.with_conn(move |conn| incidents::query(conn, &q)).await
    }

    async fn get_incident(&self, incident_id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        let id = incident_id.to_owned();
        self.with_conn(move |conn| incidents::get(conn, &id)).await
    }

    async fn expire_before(&self, cutoff_unix_nanos: u64) -> Result<Expired, StoreError> {
        // Whole UTC days, as on ClickHouse.
        let day_start = cutoff_unix_nanos - cutoff_unix_nanos % NANOS_PER_DAY;
        let before = nanos_to_sql(day_start);
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let mut rows = 0u64;
            for sql in [
                "DELETE FROM metric_samples WHERE ts < ?1",
                "DELETE FROM triggers WHERE ts < ?1",
                "DELETE FROM profile_samples WHERE profile_id IN
                    (SELECT profile_id FROM profile_contents WHERE started < ?1)",
                "DELETE FROM profile_contents WHERE started < ?1",
                "DELETE FROM profiles WHERE started < ?1",
            ] {
                rows += tx.execute(sql, params![before])? as u64;
            }
            tx.commit()?;
            Ok(Expired {
                rows,
                partitions: 0,
            })
        })
        .await
    }

    async fn insert_profile_contents(&self, contents: &ProfileContents) -> Result<(), StoreError> {
        let new_ids = self.known_stacks.unknown(&contents.stacks);
        let c = contents.clone();
        self.with_conn(move |conn| stacks::insert(conn, &c)).await?;
        self.known_stacks.remember(new_ids);
        Ok(())
    }

    fn has_stack(&self, stack_id: u64) -> bool {
        self.known_stacks.contains(stack_id)
    }

    async fn get_profile_contents(
        &self,
        profile_id: &str,
    ) -> Result<Option<ProfileContents>, StoreError> {
        let id = profile_id.to_owned();
        self.with_conn(move |conn| stacks::get(conn, &id)).await
    }

    async fn change_rules(&self, edits: &[RuleEdit], by: &ChangedBy) -> Result<u64, StoreError> {
        let (edits, by) = (edits.to_vec(), by.clone());
        self.with_conn(move |conn| control::change_rules(conn, &edits, &by))
            .await
    }

    async fn rules_in_force(&self, service: Option<&str>) -> Result<Vec<RuleChange>, StoreError> {
        let service = service.map(str::to_owned);
        self.with_conn(move |conn| control::rules_in_force(conn, service.as_deref()))
            .await
    }

    async fn rule_history(&self, service: &str, limit: u64) -> Result<Vec<RuleChange>, StoreError> {
        let service = service.to_owned();
        self.with_conn(move |conn| control::rule_history(conn, &service, limit))
            .await
    }

    async fn change_pause(&self, edit: &PauseEdit, by: &ChangedBy) -> Result<u64, StoreError> {
        let (edit, by) = (edit.clone(), by.clone());
        self.with_conn(move |conn| control::change_pause(conn, &edit, &by))
            .await
    }

    async fn pauses(&self) -> Result<Vec<PauseRecord>, StoreError> {
        self.with_conn(control::pauses).await
    }

    async fn control_version(&self) -> Result<u64, StoreError> {
        self.with_conn(control::control_version).await
    }

    async fn insert_capture_request(
        &self,
        request: &CaptureRequestRecord,
    ) -> Result<(), StoreError> {
        let r = request.clone();
        self.with_conn(move |conn| control::insert_capture_request(conn, &r))
            .await
    }

    async fn capture_requests(
        &self,
        query: &CaptureRequestQuery,
    ) -> Result<Vec<CaptureRequestRecord>, StoreError> {
        let q = query.clone();
        self.with_conn(move |conn| control::capture_requests(conn, &q))
            .await
    }

    async fn get_capture_request(
        &self,
        request_id: &str,
    ) -> Result<Option<CaptureRequestRecord>, StoreError> {
        let id = request_id.to_owned();
        self.with_conn(move |conn| control::get_capture_request(conn, &id))
            .await
    }

    async fn record_capture_dispatch(&self, dispatch: &CaptureDispatch) -> Result<(), StoreError> {
        let d = dispatch.clone();
        self.with_conn(move |conn| control::record_capture_dispatch(conn, &d))
            .await
    }

    async fn capture_dispatches(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<CaptureDispatch>, StoreError> {
        let ids = request_ids.to_vec();
        self.with_conn(move |conn| control::capture_dispatches(conn, &ids))
            .await
    }

    async fn record_capture_outcome(
        &self,
        outcome: &CaptureOutcomeRecord,
    ) -> Result<(), StoreError> {
        let o = outcome.clone();
        self.with_conn(move |conn| control::record_capture_outcome(conn, &o))
            .await
    }

    async fn capture_outcomes(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<CaptureOutcomeRecord>, StoreError> {
        let ids = request_ids.to_vec();
        self.with_conn(move |conn| control::capture_outcomes(conn, &ids))
            .await
    }

    async fn record_agent_report(&self, report: &AgentReport) -> Result<(), StoreError> {
        let r = report.clone();
        self.with_conn(move |conn| control::record_agent_report(conn, &r))
            .await
    }

    async fn agent_reports(&self, service: &str) -> Result<Vec<AgentReport>, StoreError> {
        let service = service.to_owned();
        self.with_conn(move |conn| control::agent_reports(conn, &service))
            .await
    }

    async fn record_control_node(&self, node: &ControlNode) -> Result<(), StoreError> {
        let n = node.clone();
        self.with_conn(move |conn| control::record_control_node(conn, &n))
            .await
    }

    async fn control_nodes(
        &self,
        seen_since_unix_nanos: u64,
    ) -> Result<Vec<ControlNode>, StoreError> {
        self.with_conn(move |conn| control::control_nodes(conn, seen_since_unix_nanos))
            .await
    }
}

#[cfg(test)]
mod tests {
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
        let conn = store.conn.lock().unwrap();
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
