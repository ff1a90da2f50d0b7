//! The production store on ClickHouse, over its HTTP interface with the official crate.
//!
//! The schema stays inside what ClickHouse 18.16 understands (no TTL, codecs,
//! `DateTime64`, `Map` or `LowCardinality`). At open the server version is read and the
//! client configured for it: 18.16 needs row validation and LZ4 off (with validation
//! the crate sends a setting 18.16 rejects; with LZ4 its selects come back empty).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use clickhouse::{Client, Compression, Row};
use serde::{Deserialize, Serialize};

use crate::{
    AgentReport, CaptureDispatch, CaptureOutcomeRecord, CaptureRequestQuery, CaptureRequestRecord,
    ChangedBy, ControlNode, PauseEdit, PauseRecord, RuleChange, RuleEdit,
};
use crate::{
    Expired, IncidentQuery, IncidentRecord, InstanceInfo, MetricPoint, MetricQuery,
    ProfileContents, ProfileMeta, ProfileQuery, ProfileRecord, ServiceSummary, Store, StoreError,
    TriggerQuery, TriggerRecord,
};

mod batch;
mod cluster;
mod control;
mod incidents;
mod profiles;
mod settings;
mod stacks;

pub use batch::{set_batch_observer, BatchObserver};
pub use batch::{BatchConfig, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_DELAY, DEFAULT_BATCH_ROWS};
use batch::{Batcher, Weigh};
pub use cluster::{ClusterConfig, DEFAULT_REPLICA_NAME, DEFAULT_ZOOKEEPER_PATH};
pub use settings::{ClickHouseSettings, ClickHouseSettingsError};
mod triggers;

/// Database used when the configuration names none.
pub const DEFAULT_DATABASE: &str = "holmes";

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseConfig {
    /// HTTP endpoint, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database holding Holmes' tables; created if missing.
    pub database: String,
    /// User name, if the server needs one.
    pub user: Option<String>,
    /// Password, if the server needs one.
    pub password: Option<String>,
    /// When batched inserts are written.
    pub batch: BatchConfig,
    /// A cluster's `Replicated*MergeTree` + `Distributed` schema instead of the
    /// single-server one (see `cluster.rs` and deploy/README.md).
    pub cluster: Option<ClusterConfig>,
}

impl ClickHouseConfig {
    /// A configuration for `url` with the default database and no credentials.
    pub fn new(url: impl Into<String>) -> Self {
        ClickHouseConfig {
            url: url.into(),
            database: DEFAULT_DATABASE.to_owned(),
            user: None,
            password: None,
            batch: BatchConfig::default(),
            cluster: None,
        }
    }
}

/// A ClickHouse server version, as `SELECT version()` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// Major (year since 2020's calendar versions, 18/19/20 before).
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

impl ServerVersion {
    /// Parses "18.16.1" or "24.3.2.23".
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(ServerVersion { major, minor })
    }

    /// Whether the crate's row validation (RowBinaryWithNamesAndTypes plus schema
    /// lookups) works: not on 18.16, yes on current releases.
    pub fn supports_validation(self) -> bool {
        self >= ServerVersion {
            major: 24,
            minor: 1,
        }
    }

    /// Whether LZ4 on the HTTP interface works with the crate: not on 18.16.
    pub fn supports_lz4(self) -> bool {
        self >= ServerVersion {
            major: 21,
            minor: 1,
        }
    }
}

/// Schema migrations; the `schema_migrations` table records which ran.
const MIGRATIONS: &[&[&str]] = &[
    // 1: instances and metric samples.
    &[
        "CREATE TABLE IF NOT EXISTS instances (
        service String,
        instance_id String,
        host String,
        pid UInt32,
        label_keys Array(String),
        label_values Array(String),
        agent_version String,
        started_at UInt64,
        last_seen UInt64
    ) ENGINE = ReplacingMergeTree(last_seen) ORDER BY (service, instance_id)",
        "CREATE TABLE IF NOT EXISTS metric_samples (
        day Date,
        service String,
        metric String,
        instance_id String,
        ts UInt64,
        value Float64
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, metric, instance_id, ts)",
    ],
    // 2: trigger events. Resends share `(service, event_id)`, so merges fold them;
    // queries hide the copies not merged yet with `LIMIT 1 BY event_id`.
    &["CREATE TABLE IF NOT EXISTS triggers (
        day Date,
        service String,
        event_id String,
        instance_id String,
        ts UInt64,
        metric String,
        reason String,
        current_value Float64,
        window_ts Array(UInt64),
        window_values Array(Float64),
        has_rule UInt8,
        rule_metric String,
        rule_enabled UInt8,
        rule_min Float64,
        rule_diff Float64,
        rule_abs Float64,
        rule_max Float64,
        rule_cooldown_ms UInt64,
        rule_window UInt32,
        request_id String
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, event_id)"],
    // 3: profiles, keyed like triggers by `(service, profile_id)`, the pprof bytes in a
    // `String` (RowBinary carries any bytes). Granules of 8 rows keep a read of one
    // profile from decompressing thousands of others' bytes. `profiles_by_id` finds a
    // profile's service and day from its id alone, so that a download reads one granule
    // of one partition instead of scanning the table.
    &[
        "CREATE TABLE IF NOT EXISTS profiles (
        day Date,
        service String,
        profile_id String,
        event_id String,
        instance_id String,
        kind String,
        started UInt64,
        duration_ns UInt64,
        label_keys Array(String),
        label_values Array(String),
        error String,
        size_bytes UInt64,
        data String
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, profile_id)
      SETTINGS index_granularity = 8",
        "CREATE TABLE IF NOT EXISTS profiles_by_id (
        profile_id String,
        service String,
        day Date
    ) ENGINE = ReplacingMergeTree ORDER BY profile_id",
    ],
    // 4: normalized profile contents (see `stacks.rs`). Stacks are keyed by their
    // content id alone, stored once; samples by `(service, profile_id, idx)`, so a
    // resend folds into the same rows.
    &[
        "CREATE TABLE IF NOT EXISTS stacks (
        stack_id UInt64,
        functions Array(String),
        files Array(String),
        lines Array(UInt32)
    ) ENGINE = ReplacingMergeTree ORDER BY stack_id",
        "CREATE TABLE IF NOT EXISTS profile_contents (
        day Date,
        service String,
        profile_id String,
        started UInt64,
        type_names Array(String),
        type_units Array(String)
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, profile_id)",
        "CREATE TABLE IF NOT EXISTS profile_samples (
        day Date,
        service String,
        profile_id String,
        idx UInt32,
        stack_id UInt64,
        vals Array(Int64),
        label_keys Array(String),
        label_values Array(String)
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, profile_id, idx)",
    ],
    // 5: triggers and profiles sorted by service and time, the order their queries read
    // in (ranges of one service's time); a resend has the same time, so merges still
    // fold it. Rebuilt by copy and swap: a crash half-way leaves copies that merges and
    // `LIMIT 1 BY` hide, never a lost row.
    &[
        "DROP TABLE IF EXISTS triggers_v4",
        "CREATE TABLE IF NOT EXISTS triggers_v5 AS triggers
      ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, ts, event_id)",
        "INSERT INTO triggers_v5 SELECT * FROM triggers",
        "RENAME TABLE triggers TO triggers_v4, triggers_v5 TO triggers",
        "DROP TABLE triggers_v4",
        "DROP TABLE IF EXISTS profiles_v4",
        "CREATE TABLE IF NOT EXISTS profiles_v5 AS profiles
      ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, started, profile_id)
      SETTINGS index_granularity = 8",
        "INSERT INTO profiles_v5 SELECT * FROM profiles",
        "RENAME TABLE profiles TO profiles_v4, profiles_v5 TO profiles",
        "DROP TABLE profiles_v4",
    ],
    // 6: incidents, a row per version (see `incidents.rs`). Not partitioned: an
    // incident's first event can move earlier (a late trigger), and its versions must
    // stay in one partition to fold.
    &["CREATE TABLE IF NOT EXISTS incidents (
        service String,
        incident_id String,
        metric String,
        severity String,
        status String,
        first_event UInt64,
        last_event UInt64,
        has_resolved UInt8,
        resolved UInt64,
        instances Array(String),
        event_ids Array(String),
        related Array(String),
        version UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (service, incident_id)"],
    // 7: an incident's service by its id, so that a lookup by id reads one service's
    // key range instead of the whole table (as `profiles_by_id` does for profiles).
    &[
        "CREATE TABLE IF NOT EXISTS incidents_by_id (
        incident_id String,
        service String
    ) ENGINE = ReplacingMergeTree ORDER BY incident_id",
        "INSERT INTO incidents_by_id SELECT DISTINCT incident_id, service FROM incidents",
    ],
    // 8: the control plane (see `control.rs`).
    control::MIGRATION,
];

#[derive(Row, Serialize, Deserialize)]
struct InstanceRow {
    service: String,
    instance_id: String,
    host: String,
    pid: u32,
    label_keys: Vec<String>,
    label_values: Vec<String>,
    agent_version: String,
    started_at: u64,
    last_seen: u64,
}

#[derive(Row, Serialize)]
struct MetricRow {
    day: u16,
    service: String,
    metric: &'static str,
    instance_id: String,
    ts: u64,
    value: f64,
}

impl Weigh for MetricRow {
    fn weight(&self) -> usize {
        self.service.len() + self.instance_id.len() + self.metric.len() + 24
    }
}

#[derive(Row, Deserialize)]
struct MetricReadRow {
    instance_id: String,
    ts: u64,
    value: f64,
}

#[derive(Row, Deserialize)]
struct ServiceRow {
    service: String,
    active_instances: u64,
    last_seen_max: u64,
}

#[derive(Row, Serialize, Deserialize)]
struct MigrationRow {
    version: u32,
    applied_at: u64,
}

const NANOS_PER_DAY: u64 = 86_400 * 1_000_000_000;

/// The tables partitioned by day, whose old partitions retention drops.
const EXPIRING_TABLES: &[&str] = &[
    "metric_samples",
    "triggers",
    "profiles",
    "profile_contents",
    "profile_samples",
];

/// The last day every server version's `Date` holds: 2105-12-31 (18.16 turns later
/// dates into 0000-00-00, which would empty every range that reaches past it).
const LAST_DAY: u16 = 49_672;

/// The `Date` (days since 1970-01-01) of a time, clamped to [`LAST_DAY`].
fn day_of(unix_nanos: u64) -> u16 {
    u16::try_from(unix_nanos / NANOS_PER_DAY).map_or(LAST_DAY, |d| d.min(LAST_DAY))
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01), the one `Date` literal form
/// every server version parses the same way.
fn date_text(day: u16) -> String {
    // Howard Hinnant's civil_from_days.
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The ClickHouse store.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
    url: String,
    version: ServerVersion,
    known_stacks: Arc<crate::known_stacks::KnownStacks>,
    batches: Arc<Batches>,
    cluster: Option<ClusterConfig>,
}

/// The batched tables' inserters.
struct Batches {
    metrics: Batcher<MetricRow>,
    profiles: Batcher<profiles::ProfileInsertRow>,
    profile_ids: Batcher<ProfileIdRow>,
    stacks: Batcher<stacks::StackRow>,
    contents: Batcher<stacks::ContentsRow>,
    samples: Batcher<stacks::SampleRow>,
    incidents: Batcher<incidents::IncidentRow>,
    incident_ids: Batcher<incidents::IncidentIdRow>,
    control: control::Batches,
}

impl Batches {
    fn start(client: &Client, config: BatchConfig) -> Self {
        Batches {
            metrics: Batcher::start(client.clone(), "metric_samples", config),
            profiles: Batcher::start(client.clone(), "profiles", config),
            profile_ids: Batcher::start(client.clone(), "profiles_by_id", config),
            stacks: Batcher::start(client.clone(), "stacks", config),
            contents: Batcher::start(client.clone(), "profile_contents", config),
            samples: Batcher::start(client.clone(), "profile_samples", config),
            incidents: Batcher::start(client.clone(), "incidents", config),
            incident_ids: Batcher::start(client.clone(), "incidents_by_id", config),
            control: control::Batches::start(client, config),
        }
    }
}

/// Where a profile id's rows are: `profiles_by_id`, written for profiles and contents.
#[derive(Row, Serialize)]
struct ProfileIdRow {
    profile_id: String,
    service: String,
    day: u16,
}

impl Weigh for ProfileIdRow {
    fn weight(&self) -> usize {
        self.profile_id.len() + self.service.len() + 10
    }
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("url", &self.url)
            .field("version", &self.version)
            .finish()
    }
}

impl ClickHouseStore {
    /// Connects, detects the server version, creates the database and migrates the schema.
    pub async fn open(config: &ClickHouseConfig) -> Result<Self, StoreError> {
        let url = config.url.clone();
        let err = |source| StoreError::ClickHouse {
            url: url.clone(),
            source,
        };
        let mut base = Client::default()
            .with_url(&config.url)
            .with_validation(false)
            .with_compression(Compression::None);
        if let Some(user) = &config.user {
            base = base.with_user(user);
        }
        if let Some(password) = &config.password {
            base = base.with_password(password);
        }
        let version_text: String = base
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(err)?;
        let version = ServerVersion::parse(&version_text).ok_or_else(|| StoreError::Corrupt {
            what: "version()",
            value: version_text.clone(),
        })?;
        match &config.cluster {
            None => base
                .query("CREATE DATABASE IF NOT EXISTS ?")
                .bind(clickhouse::sql::Identifier(&config.database)),
            Some(cluster) => base.query(&cluster.create_database(&config.database)),
        }
        .execute()
        .await
        .map_err(err)?;
        let mut client = base.with_database(&config.database);
        if config.cluster.is_some() {
            // An insert into a Distributed table returns once every shard has its rows,
            // so that what is acknowledged is stored (not queued on this server).
            client = client.with_option("insert_distributed_sync", "1");
        }
        if version.supports_validation() {
            client = client.with_validation(true);
        }
        if version.supports_lz4() {
            client = client.with_compression(Compression::Lz4);
        }
        tracing::info!(
            url = %config.url,
            server_version = %version_text,
            validation = version.supports_validation(),
            lz4 = version.supports_lz4(),
            "connected to ClickHouse"
        );
        let client_for_batches = client.clone();
        let store = ClickHouseStore {
            client,
            url: config.url.clone(),
            version,
            known_stacks: Arc::default(),
            batches: Arc::new(Batches::start(&client_for_batches, config.batch)),
            cluster: config.cluster.clone(),
        };
        match &store.cluster {
            None => store.migrate().await?,
            Some(cluster) => {
                store
                    .create_cluster_schema(cluster, &config.database)
                    .await?
            }
        }
        Ok(store)
    }

    /// The server version found at open.
    pub fn server_version(&self) -> ServerVersion {
        self.version
    }

    /// A batched insert's outcome as a store result.
    fn batched(&self, table: &'static str, result: Result<(), String>) -> Result<(), StoreError> {
        result.map_err(|message| StoreError::Batch {
            url: self.url.clone(),
            table,
            message,
        })
    }

    fn err(&self, source: clickhouse::error::Error) -> StoreError {
        StoreError::ClickHouse {
            url: self.url.clone(),
            source,
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.client
            .query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, applied_at UInt64)
                 ENGINE = MergeTree ORDER BY version",
            )
            .execute()
            .await
            .map_err(|e| self.err(e))?;
        let applied: Vec<u32> = self
            .client
            .query("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        let current = applied.last().copied().unwrap_or(0);
        let supported = MIGRATIONS.len() as u32;
        if current > supported {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported,
            });
        }
        for (i, statements) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let version = i as u32 + 1;
            for sql in *statements {
                self.client
                    .query(sql)
                    .execute()
                    .await
                    .map_err(|e| StoreError::Migration {
                        version,
                        message: e.to_string(),
                    })?;
            }
            let mut insert = self
                .client
                .insert::<MigrationRow>("schema_migrations")
                .await
                .map_err(|e| self.err(e))?;
            insert
                .write(&MigrationRow {
                    version,
                    applied_at: now_nanos(),
                })
                .await
                .map_err(|e| self.err(e))?;
            insert.end().await.map_err(|e| self.err(e))?;
            tracing::info!(version, "ClickHouse schema migrated");
        }
        Ok(())
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[async_trait]
impl Store for ClickHouseStore {
    fn backend(&self) -> &'static str {
        "clickhouse"
    }

    async fn upsert_instance(&self, i: &InstanceInfo) -> Result<(), StoreError> {
        let mut insert = self
            .client
            .insert::<InstanceRow>("instances")
            .await
            .map_err(|e| self.err(e))?;
        insert
            .write(&InstanceRow {
                service: i.service.clone(),
                instance_id: i.instance_id.clone(),
                host: i.host.clone(),
                pid: i.pid,
                label_keys: i.labels.keys().cloned().collect(),
                label_values: i.labels.values().cloned().collect(),
                agent_version: i.agent_version.clone(),
                started_at: i.started_at_unix_nanos,
                last_seen: i.last_seen_unix_nanos,
            })
            .await
            .map_err(|e| self.err(e))?;
        insert.end().await.map_err(|e| self.err(e))
    }

    async fn insert_metrics(&self, points: &[MetricPoint]) -> Result<(), StoreError> {
        let rows = points
            .iter()
            .map(|p| MetricRow {
                day: day_of(p.unix_nanos),
                service: p.service.clone(),
                metric: p.metric.as_str(),
                instance_id: p.instance_id.clone(),
                ts: p.unix_nanos,
                value: p.value,
            })
            .collect();
        let result = self.batches.metrics.insert(rows).await;
        self.batched("metric_samples", result)
    }

    async fn list_services(
        &self,
        active_since_unix_nanos: u64,
    ) -> Result<Vec<ServiceSummary>, StoreError> {
        let rows: Vec<ServiceRow> = self
            .client
            .query(
                "SELECT service,
                        toUInt64(uniqExactIf(instance_id, last_seen >= ?)) AS active_instances,
                        max(last_seen) AS last_seen_max
                 FROM instances GROUP BY service ORDER BY service",
            )
            .bind(active_since_unix_nanos)
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| ServiceSummary {
                service: r.service,
                instances: r.active_instances,
                last_seen_unix_nanos: r.last_seen_max,
            })
            .collect())
    }

    async fn list_instances(&self, service: &str) -> Result<Vec<InstanceInfo>, StoreError> {
        let rows: Vec<InstanceRow> = self
            .client
            .query("SELECT ?fields FROM instances FINAL WHERE service = ? ORDER BY instance_id")
            .bind(service)
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|r| {
                if r.label_keys.len() != r.label_values.len() {
                    return Err(StoreError::Corrupt {
                        what: "instances.label_keys/label_values",
                        value: format!("{:?} / {:?}", r.label_keys, r.label_values),
                    });
                }
                let labels: BTreeMap<String, String> =
                    r.label_keys.into_iter().zip(r.label_values).collect();
                Ok(InstanceInfo {
                    service: r.service,
                    instance_id: r.instance_id,
                    host: r.host,
                    pid: r.pid,
                    labels,
                    agent_version: r.agent_version,
                    started_at_unix_nanos: r.started_at,
                    last_seen_unix_nanos: r.last_seen,
                })
            })
            .collect()
    }

    async fn query_metrics(&self, q: &MetricQuery) -> Result<Vec<MetricPoint>, StoreError> {
        if q.since_unix_nanos >= q.until_unix_nanos {
            return Ok(Vec::new());
        }
        // `day` bounds let ClickHouse skip whole partitions; LIMIT 1 BY drops duplicate
        // points that a resend stored twice and no merge has folded yet.
        let rows: Vec<MetricReadRow> = self
            .client
            .query(
                "SELECT instance_id, ts, value FROM metric_samples
                 WHERE service = ? AND metric = ? AND day >= toDate(?) AND day <= toDate(?)
                   AND ts >= ? AND ts < ?
                 ORDER BY instance_id, ts
                 LIMIT 1 BY instance_id, ts
                 LIMIT ?",
            )
            .bind(&q.service)
            .bind(q.metric.as_str())
            .bind(date_text(day_of(q.since_unix_nanos)))
            .bind(date_text(day_of(q.until_unix_nanos.saturating_sub(1))))
            .bind(q.since_unix_nanos)
            .bind(q.until_unix_nanos)
            .bind(q.limit)
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| MetricPoint {
                service: q.service.clone(),
                instance_id: r.instance_id,
                metric: q.metric,
                unix_nanos: r.ts,
                value: r.value,
            })
            .collect())
    }

    async fn insert_triggers(&self, triggers: &[TriggerRecord]) -> Result<(), StoreError> {
        triggers::insert(self, triggers).await
    }

    async fn query_triggers(&self, q: &TriggerQuery) -> Result<Vec<TriggerRecord>, StoreError> {
        triggers::query(self, q).await
    }

    async fn insert_profile(&self, profile: &ProfileRecord) -> Result<(), StoreError> {
        profiles::insert(self, profile).await
    }

    async fn query_profiles(&self, q: &ProfileQuery) -> Result<Vec<ProfileMeta>, StoreError> {
        profiles::query(self, q).await
    }

    async fn get_profile(&self, profile_id: &str) -> Result<Option<ProfileRecord>, StoreError> {
        profiles::get(self, profile_id).await
    }

    async fn upsert_incident(&self, incident: &IncidentRecord) -> Result<(), StoreError> {
        incidents::upsert(self, incident).await
    }

    async fn query_incidents(
        &self,
        query: &IncidentQuery,
    ) -> Result<Vec<IncidentRecord>, StoreError> {
        incidents::query(self, query).await
    }

    async fn get_incident(&self, incident_id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        incidents::get(self, incident_id).await
    }

    async fn expire_before(&self, cutoff_unix_nanos: u64) -> Result<Expired, StoreError> {
        if let Some(cluster) = &self.cluster {
            return self.expire_on_cluster(cluster, cutoff_unix_nanos).await;
        }
        // Whole day partitions of the day-partitioned tables, dropped: exact to the day,
        // immediate, and the same on every server version (TTL exists from 19.6 only and
        // deletes at merge time).
        let cutoff_day = day_of(cutoff_unix_nanos);
        let parts: Vec<(String, u16)> = self
            .client
            .query(
                "SELECT table, toUInt16(max_date) AS day FROM system.parts
                 WHERE database = currentDatabase() AND active AND has(?, table)
                   AND max_date < toDate(?)
                 GROUP BY table, day ORDER BY table, day",
            )
            .bind(EXPIRING_TABLES)
            .bind(date_text(cutoff_day))
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        let mut expired = Expired::default();
        for (table, day) in parts {
            // Only our own table names and dates we format: nothing from outside.
            let Some(table) = EXPIRING_TABLES.iter().find(|t| **t == table) else {
                continue;
            };
            self.client
                .query(&format!(
                    "ALTER TABLE {table} DROP PARTITION toDate('{}')",
                    date_text(day)
                ))
                .execute()
                .await
                .map_err(|e| self.err(e))?;
            expired.partitions += 1;
        }
        // The id lookup is not partitioned: an asynchronous delete (a mutation).
        self.client
            .query("ALTER TABLE profiles_by_id DELETE WHERE day < toDate(?)")
            .bind(date_text(cutoff_day))
            .execute()
            .await
            .map_err(|e| self.err(e))?;
        Ok(expired)
    }

    async fn insert_profile_contents(&self, contents: &ProfileContents) -> Result<(), StoreError> {
        stacks::insert(self, contents).await
    }

    fn has_stack(&self, stack_id: u64) -> bool {
        self.known_stacks.contains(stack_id)
    }

    async fn get_profile_contents(
        &self,
        profile_id: &str,
    ) -> Result<Option<ProfileContents>, StoreError> {
        stacks::get(self, profile_id).await
    }

    async fn change_rules(&self, edits: &[RuleEdit], by: &ChangedBy) -> Result<u64, StoreError> {
        control::change_rules(self, edits, by).await
    }

    async fn rules_in_force(&self, service: Option<&str>) -> Result<Vec<RuleChange>, StoreError> {
        control::rules_in_force(self, service).await
    }

    async fn rule_history(&self, service: &str, limit: u64) -> Result<Vec<RuleChange>, StoreError> {
        control::rule_history(self, service, limit).await
    }

    async fn change_pause(&self, edit: &PauseEdit, by: &ChangedBy) -> Result<u64, StoreError> {
        control::change_pause(self, edit, by).await
    }

    async fn pauses(&self) -> Result<Vec<PauseRecord>, StoreError> {
        control::pauses(self).await
    }

    async fn control_version(&self) -> Result<u64, StoreError> {
        control::control_version(self).await
    }

    async fn insert_capture_request(
        &self,
        request: &CaptureRequestRecord,
    ) -> Result<(), StoreError> {
        control::insert_capture_request(self, request).await
    }

    async fn capture_requests(
        &self,
        query: &CaptureRequestQuery,
    ) -> Result<Vec<CaptureRequestRecord>, StoreError> {
        control::capture_requests(self, query).await
    }

    async fn get_capture_request(
        &self,
        request_id: &str,
    ) -> Result<Option<CaptureRequestRecord>, StoreError> {
        control::get_capture_request(self, request_id).await
    }

    async fn record_capture_dispatch(&self, dispatch: &CaptureDispatch) -> Result<(), StoreError> {
        control::record_capture_dispatch(self, dispatch).await
    }

    async fn capture_dispatches(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<CaptureDispatch>, StoreError> {
        control::capture_dispatches(self, request_ids).await
    }

    async fn record_capture_outcome(
        &self,
        outcome: &CaptureOutcomeRecord,
    ) -> Result<(), StoreError> {
        control::record_capture_outcome(self, outcome).await
    }

    async fn capture_outcomes(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<CaptureOutcomeRecord>, StoreError> {
        control::capture_outcomes(self, request_ids).await
    }

    async fn record_agent_report(&self, report: &AgentReport) -> Result<(), StoreError> {
        control::record_agent_report(self, report).await
    }

    async fn agent_reports(&self, service: &str) -> Result<Vec<AgentReport>, StoreError> {
        control::agent_reports(self, service).await
    }

    async fn record_control_node(&self, node: &ControlNode) -> Result<(), StoreError> {
        control::record_control_node(self, node).await
    }

    async fn control_nodes(
        &self,
        seen_since_unix_nanos: u64,
    ) -> Result<Vec<ControlNode>, StoreError> {
        control::control_nodes(self, seen_since_unix_nanos).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions_and_gates_features() {
        let old = ServerVersion::parse("18.16.1").unwrap();
        assert!(!old.supports_validation());
        assert!(!old.supports_lz4());
        let new = ServerVersion::parse("24.8.4.13").unwrap();
        assert!(new.supports_validation() && new.supports_lz4());
        assert_eq!(ServerVersion::parse("garbage"), None);
    }

    #[test]
    fn far_future_days_stay_within_every_version_s_dates() {
        assert_eq!(date_text(day_of(u64::MAX / 2)), "2105-12-31");
        assert_eq!(date_text(day_of(u64::MAX)), "2105-12-31");
    }

    #[test]
    fn days_count_from_the_epoch() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(NANOS_PER_DAY - 1), 0);
        assert_eq!(day_of(NANOS_PER_DAY), 1);
    }

    #[test]
    fn day_numbers_become_calendar_dates() {
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(59), "1970-03-01");
        assert_eq!(date_text(20_783), "2026-11-26");
        assert_eq!(date_text(u16::MAX), "2149-06-06");
    }
}
