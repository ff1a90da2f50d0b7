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

use async_trait::async_trait;
use rusqlite::{params, Connection};

use crate::numbering::Numbering;
use crate::{
    AgentReport, CaptureDispatch, CaptureOutcomeRecord, CaptureRequestQuery, CaptureRequestRecord,
    ChangedBy, ControlNode, PauseEdit, PauseRecord, RuleChange, RuleEdit,
};
use crate::{
    DebugInfoChunkRecord, DebugInfoStatus, Expired, IncidentQuery, IncidentRecord,
    IncidentSuspects, InstanceInfo, LocationId, MergeQuery, MergedProfile, MetricPoint,
    MetricQuery, ParkedEvent, ProfileMeta, ProfileQuery, ProfileRecord, ServiceSummary, SkipNotice,
    StackFrame, Store, StoreError, TriggerQuery, TriggerRecord,
};

mod control;
mod debuginfo;
mod incidents;
mod migrate;
mod profiles;
mod schema;
mod skips;
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

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn upsert_instance(&self, instance: &InstanceInfo) -> Result<(), StoreError> {
        let i = instance.clone();
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO instances
                    (service, instance_id, host, pid, labels, agent_version, started_at, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (service, instance_id) DO UPDATE SET
                    host = excluded.host, pid = excluded.pid, labels = excluded.labels,
                    agent_version = excluded.agent_version, started_at = excluded.started_at,
                    last_seen = excluded.last_seen
                 WHERE excluded.last_seen >= instances.last_seen",
                )?
                .execute(params![
                    i.service,
                    i.instance_id,
                    i.host,
                    i.pid,
                    labels_to_sql(&i.labels),
                    i.agent_version,
                    nanos_to_sql(i.started_at_unix_nanos),
                    nanos_to_sql(i.last_seen_unix_nanos),
                ])?;
                Ok(())
            })
            .await
    }

    async fn insert_metrics(&self, points: &[MetricPoint]) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let points = points.to_vec();
        self.writer
            .write(move |conn| {
                let mut stmt = conn.prepare_cached(
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
                Ok(())
            })
            .await
    }

    async fn list_services(
        &self,
        active_since_unix_nanos: u64,
    ) -> Result<Vec<ServiceSummary>, StoreError> {
        self.read(move |conn| {
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
        self.read(move |conn| {
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
        self.read(move |conn| {
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
        self.writer
            .write(move |conn| triggers::insert(conn, &triggers))
            .await
    }

    async fn query_triggers(&self, query: &TriggerQuery) -> Result<Vec<TriggerRecord>, StoreError> {
        let q = query.clone();
        self.read(move |conn| triggers::query(conn, &q)).await
    }

    async fn insert_profile(&self, profile: &ProfileRecord) -> Result<(), StoreError> {
        // The record is copied once into the writer; a profile is at most tens of MiB.
        let p = profile.clone();
        let numbering = Arc::clone(&self.numbering);
        let service = profile.service.clone();
        let numbered = self
            .writer
            .write(move |conn| profiles::insert(conn, &numbering, &p))
            .await?;
        if let Some(n) = numbered {
            self.numbering.written(&service, &n);
        }
        Ok(())
    }

    fn stacks_known_by_key(
        &self,
        service: &str,
        started_unix_nanos: u64,
        scope: u64,
        keys: &[u32],
    ) -> Vec<Option<crate::KnownStack>> {
        let day = profiles::day_of(started_unix_nanos);
        self.numbering.known_by_key(service, day, scope, keys)
    }

    async fn query_profiles(&self, query: &ProfileQuery) -> Result<Vec<ProfileMeta>, StoreError> {
        let q = query.clone();
        self.read(move |conn| profiles::query(conn, &q)).await
    }

    async fn get_profile(
        &self,
        service: &str,
        profile_id: &str,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        let mut found = self
            .get_profiles(service, std::slice::from_ref(&profile_id.to_owned()))
            .await?;
        Ok(found.pop())
    }

    async fn get_profiles(
        &self,
        service: &str,
        profile_ids: &[String],
    ) -> Result<Vec<ProfileRecord>, StoreError> {
        let (service, ids) = (service.to_owned(), profile_ids.to_vec());
        self.read(move |conn| profiles::get_many(conn, &service, &ids))
            .await
    }

    async fn merge_profiles(&self, query: &MergeQuery) -> Result<MergedProfile, StoreError> {
        let q = query.clone();
        self.read(move |conn| profiles::merge(conn, &q)).await
    }

    async fn stack_count(&self, service: &str) -> Result<u64, StoreError> {
        let service = service.to_owned();
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM stacks WHERE service = ?1")?
                .query_row(params![service], |r| r.get(0))?;
            Ok(nanos_from_sql(n))
        })
        .await
    }

    async fn insert_symbols(
        &self,
        symbols: &[(LocationId, Vec<StackFrame>)],
    ) -> Result<(), StoreError> {
        let symbols = symbols.to_vec();
        self.writer
            .write(move |conn| profiles::insert_symbols(conn, &symbols))
            .await
    }

    async fn unsymbolized_offsets(&self, build_id: &str) -> Result<Vec<u64>, StoreError> {
        let build_id = build_id.to_owned();
        self.read(move |conn| debuginfo::unsymbolized(conn, &build_id))
            .await
    }

    async fn insert_debuginfo(&self, chunks: &[DebugInfoChunkRecord]) -> Result<(), StoreError> {
        let chunks = chunks.to_vec();
        self.writer
            .write(move |conn| debuginfo::insert(conn, &chunks))
            .await
    }

    async fn debuginfo_status(
        &self,
        build_id: &str,
    ) -> Result<Option<DebugInfoStatus>, StoreError> {
        let build_id = build_id.to_owned();
        self.read(move |conn| debuginfo::status(conn, &build_id))
            .await
    }

    async fn read_debuginfo(&self, build_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let build_id = build_id.to_owned();
        self.read(move |conn| debuginfo::read(conn, &build_id))
            .await
    }

    async fn debuginfo_builds(&self) -> Result<Vec<String>, StoreError> {
        self.read(debuginfo::builds).await
    }

    async fn claim_debuginfo_upload(
        &self,
        build_id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let (build_id, holder) = (build_id.to_owned(), holder.to_owned());
        let now = migrate::now_nanos();
        self.writer
            .write(move |conn| debuginfo::claim(conn, &build_id, &holder, lease, now))
            .await
    }

    async fn release_debuginfo_upload(
        &self,
        build_id: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        let (build_id, holder) = (build_id.to_owned(), holder.to_owned());
        self.writer
            .write(move |conn| debuginfo::release(conn, &build_id, &holder))
            .await
    }

    async fn upsert_incident(&self, incident: &IncidentRecord) -> Result<(), StoreError> {
        let i = incident.clone();
        self.writer
            .write(move |conn| incidents::upsert(conn, &i))
            .await
    }

    async fn query_incidents(
        &self,
        query: &IncidentQuery,
    ) -> Result<Vec<IncidentRecord>, StoreError> {
        let q = query.clone();
        self.read(move |conn| incidents::query(conn, &q)).await
    }

    async fn get_incident(&self, incident_id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        let id = incident_id.to_owned();
        self.read(move |conn| incidents::get(conn, &id)).await
    }

    async fn put_incident_suspects(&self, suspects: &IncidentSuspects) -> Result<(), StoreError> {
        let s = suspects.clone();
        self.writer.write(move |conn| suspects::put(conn, &s)).await
    }

    async fn get_incident_suspects(
        &self,
        service: &str,
        incident_id: &str,
    ) -> Result<Option<IncidentSuspects>, StoreError> {
        let (service, id) = (service.to_owned(), incident_id.to_owned());
        self.read(move |conn| suspects::get(conn, &service, &id))
            .await
    }

    async fn incidents_with_fingerprint(
        &self,
        service: &str,
        fingerprint: &str,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        let (service, fingerprint) = (service.to_owned(), fingerprint.to_owned());
        self.read(move |conn| suspects::with_fingerprint(conn, &service, &fingerprint, limit))
            .await
    }

    async fn expire_before(&self, cutoff_unix_nanos: u64) -> Result<Expired, StoreError> {
        // Whole UTC days, as on ClickHouse.
        let day_start = cutoff_unix_nanos - cutoff_unix_nanos % NANOS_PER_DAY;
        let before = nanos_to_sql(day_start);
        let day = i64::from(profiles::day_of(day_start));
        self.writer
            .write(move |conn| {
                let mut rows = 0u64;
                for sql in [
                    "DELETE FROM metric_samples WHERE ts < ?1",
                    "DELETE FROM triggers WHERE ts < ?1",
                    "DELETE FROM profiles WHERE started < ?1",
                    // An incident's suspects go with it.
                    "DELETE FROM incident_suspects WHERE incident_id IN
                        (SELECT incident_id FROM incidents WHERE last_event < ?1)",
                    "DELETE FROM incidents WHERE last_event < ?1",
                    "DELETE FROM instances WHERE last_seen < ?1",
                    "DELETE FROM parked_events WHERE parked < ?1",
                    "DELETE FROM skip_notices WHERE at < ?1",
                ] {
                    rows += conn.execute(sql, params![before])? as u64;
                }
                // Stacks and locations carry the last day a profile used them (see
                // `numbering`): those of earlier days no kept profile refers to.
                for sql in [
                    "DELETE FROM stacks WHERE day < ?1",
                    "DELETE FROM locations WHERE day < ?1",
                ] {
                    rows += conn.execute(sql, params![day])? as u64;
                }
                Ok(Expired {
                    rows,
                    partitions: 0,
                })
            })
            .await
    }

    async fn park_event(&self, event: &ParkedEvent) -> Result<(), StoreError> {
        let e = event.clone();
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO parked_events (source, service, parked, error, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    e.source,
                    e.service,
                    nanos_to_sql(e.parked_unix_nanos),
                    e.error,
                    e.payload
                ])?;
                Ok(())
            })
            .await
    }

    async fn parked_events(&self, limit: u64) -> Result<Vec<ParkedEvent>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT source, service, parked, error, payload FROM parked_events
                 ORDER BY parked DESC, id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![nanos_to_sql(limit)], |r| {
                Ok(ParkedEvent {
                    source: r.get(0)?,
                    service: r.get(1)?,
                    parked_unix_nanos: nanos_from_sql(r.get(2)?),
                    error: r.get(3)?,
                    payload: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn change_rules(&self, edits: &[RuleEdit], by: &ChangedBy) -> Result<u64, StoreError> {
        let (edits, by) = (edits.to_vec(), by.clone());
        self.writer
            .write(move |conn| control::change_rules(conn, &edits, &by))
            .await
    }

    async fn rules_in_force(&self, service: Option<&str>) -> Result<Vec<RuleChange>, StoreError> {
        let service = service.map(str::to_owned);
        self.read(move |conn| control::rules_in_force(conn, service.as_deref()))
            .await
    }

    async fn rule_history(&self, service: &str, limit: u64) -> Result<Vec<RuleChange>, StoreError> {
        let service = service.to_owned();
        self.read(move |conn| control::rule_history(conn, &service, limit))
            .await
    }

    async fn change_pause(&self, edit: &PauseEdit, by: &ChangedBy) -> Result<u64, StoreError> {
        let (edit, by) = (edit.clone(), by.clone());
        self.writer
            .write(move |conn| control::change_pause(conn, &edit, &by))
            .await
    }

    async fn pauses(&self) -> Result<Vec<PauseRecord>, StoreError> {
        self.read(control::pauses).await
    }

    async fn control_version(&self) -> Result<u64, StoreError> {
        self.read(control::control_version).await
    }

    async fn insert_capture_request(
        &self,
        request: &CaptureRequestRecord,
    ) -> Result<(), StoreError> {
        let r = request.clone();
        self.writer
            .write(move |conn| control::insert_capture_request(conn, &r))
            .await
    }

    async fn capture_requests(
        &self,
        query: &CaptureRequestQuery,
    ) -> Result<Vec<CaptureRequestRecord>, StoreError> {
        let q = query.clone();
        self.read(move |conn| control::capture_requests(conn, &q))
            .await
    }

    async fn get_capture_request(
        &self,
        request_id: &str,
    ) -> Result<Option<CaptureRequestRecord>, StoreError> {
        let id = request_id.to_owned();
        self.read(move |conn| control::get_capture_request(conn, &id))
            .await
    }

    async fn record_capture_dispatch(&self, dispatch: &CaptureDispatch) -> Result<(), StoreError> {
        let d = dispatch.clone();
        self.writer
            .write(move |conn| control::record_capture_dispatch(conn, &d))
            .await
    }

    async fn capture_dispatches(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<CaptureDispatch>, StoreError> {
        let ids = request_ids.to_vec();
        self.read(move |conn| control::capture_dispatches(conn, &ids))
            .await
    }

    async fn insert_skip_notices(&self, notices: &[SkipNotice]) -> Result<(), StoreError> {
        if notices.is_empty() {
            return Ok(());
        }
        let notices = notices.to_vec();
        self.writer
            .write(move |conn| notices.iter().try_for_each(|n| skips::insert(conn, n)))
            .await
    }

    async fn skip_notices(
        &self,
        since_unix_nanos: u64,
        limit: u64,
    ) -> Result<Vec<SkipNotice>, StoreError> {
        self.read(move |conn| skips::since(conn, since_unix_nanos, limit))
            .await
    }

    async fn record_capture_outcome(
        &self,
        outcome: &CaptureOutcomeRecord,
    ) -> Result<(), StoreError> {
        let o = outcome.clone();
        self.writer
            .write(move |conn| control::record_capture_outcome(conn, &o))
            .await
    }

    async fn capture_outcomes(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<CaptureOutcomeRecord>, StoreError> {
        let ids = request_ids.to_vec();
        self.read(move |conn| control::capture_outcomes(conn, &ids))
            .await
    }

    async fn record_agent_report(&self, report: &AgentReport) -> Result<(), StoreError> {
        let r = report.clone();
        self.writer
            .write(move |conn| control::record_agent_report(conn, &r))
            .await
    }

    async fn agent_reports(&self, service: &str) -> Result<Vec<AgentReport>, StoreError> {
        let service = service.to_owned();
        self.read(move |conn| control::agent_reports(conn, &service))
            .await
    }

    async fn record_control_node(&self, node: &ControlNode) -> Result<(), StoreError> {
        let n = node.clone();
        self.writer
            .write(move |conn| control::record_control_node(conn, &n))
            .await
    }

    async fn control_nodes(
        &self,
        seen_since_unix_nanos: u64,
    ) -> Result<Vec<ControlNode>, StoreError> {
        self.read(move |conn| control::control_nodes(conn, seen_since_unix_nanos))
            .await
    }
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
