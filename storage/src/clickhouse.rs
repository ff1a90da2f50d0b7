//! The production store on ClickHouse, over its HTTP interface with the official crate.
//!
//! The base schema stays inside what ClickHouse 18.16 understands (no TTL, codecs,
//! `DateTime64`, `Map` or `LowCardinality`). At open the server version is read and the
//! schema and client configured for it: 18.16 needs row validation and LZ4 off (with
//! validation the crate sends a setting 18.16 rejects; with LZ4 its selects come back
//! empty); a current server gets column codecs, `LowCardinality` and TTL
//! ([`schema`]), validation, and LZ4 on the HTTP interface once a probe shows it works
//! (chdb's server answers in ZSTD unless told `network_compression_method = lz4`, which
//! the crate cannot read: the store tells it, and falls back to no compression if the
//! probe still fails).

use std::sync::Arc;

use clickhouse::{Client, Compression, Row};
use serde::{Deserialize, Serialize};

use crate::numbering::Numbering;
use crate::StoreError;

mod batch;
mod bytes;
mod cluster;
mod control;
mod convert;
mod debuginfo;
mod incidents;
mod lock;
mod migrate;
mod parked;
mod profiles;
mod retention;
mod schema;
mod settings;
mod skips;
mod stacks;
mod store;
mod suspects;
mod triggers;

pub use batch::{set_batch_observer, BatchObserver};
pub use batch::{BatchConfig, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_DELAY, DEFAULT_BATCH_ROWS};
use batch::{Batcher, Weigh};
pub use cluster::{ClusterConfig, DEFAULT_REPLICA_NAME, DEFAULT_ZOOKEEPER_PATH};
pub use settings::{ClickHouseSettings, ClickHouseSettingsError};

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
    /// Days of data kept: on servers with TTL, the day-partitioned tables get a TTL of
    /// this many days (besides the collector's hourly retention, which 18.16 relies
    /// on). `None` or 0: no TTL.
    pub retention_days: Option<u32>,
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
            retention_days: None,
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
    lz4: bool,
    numbering: Arc<Numbering>,
    batches: Arc<Batches>,
    cluster: Option<ClusterConfig>,
}

/// The batched tables' inserters.
struct Batches {
    metrics: Batcher<MetricRow>,
    profiles: Batcher<profiles::ProfileRow>,
    profile_ids: Batcher<profiles::ProfileIdRow>,
    locations: Batcher<stacks::LocationRow>,
    location_ids: Batcher<stacks::LocationIdRow>,
    stacks: Batcher<stacks::StackRow>,
    stack_ids: Batcher<stacks::StackIdRow>,
    symbols: Batcher<stacks::SymbolRow>,
    incidents: Batcher<incidents::IncidentRow>,
    incident_ids: Batcher<incidents::IncidentIdRow>,
    suspects: Batcher<suspects::SuspectsRow>,
    control: control::Batches,
}

impl Batches {
    fn start(client: &Client, config: BatchConfig) -> Self {
        Batches {
            metrics: Batcher::start(client.clone(), "metric_samples", config),
            profiles: Batcher::start(client.clone(), "profiles", config),
            profile_ids: Batcher::start(client.clone(), "profile_ids", config),
            locations: Batcher::start(client.clone(), "locations", config),
            location_ids: Batcher::start(client.clone(), "location_ids", config),
            stacks: Batcher::start(client.clone(), "stacks", config),
            stack_ids: Batcher::start(client.clone(), "stack_ids", config),
            symbols: Batcher::start(client.clone(), "symbols", config),
            incidents: Batcher::start(client.clone(), "incidents", config),
            incident_ids: Batcher::start(client.clone(), "incidents_by_id", config),
            suspects: Batcher::start(client.clone(), "incident_suspects", config),
            control: control::Batches::start(client, config),
        }
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
    /// Connects, detects the server version, creates the database and migrates the
    /// schema (under the migration lock), and claims a numbering epoch.
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
        let mut lz4 = false;
        if version.supports_lz4() {
            let candidate = lz4_client(client.clone());
            match probe(&candidate).await {
                Ok(()) => {
                    client = candidate;
                    lz4 = true;
                }
                Err(why) => tracing::warn!(
                    url = %config.url,
                    server_version = %version_text,
                    error = %why,
                    "LZ4 on the HTTP interface does not work with this server; using no compression"
                ),
            }
        }
        tracing::info!(
            url = %config.url,
            server_version = %version_text,
            validation = version.supports_validation(),
            lz4,
            "connected to ClickHouse"
        );
        let client_for_batches = client.clone();
        let mut store = ClickHouseStore {
            client,
            url: config.url.clone(),
            version,
            lz4,
            numbering: Arc::new(Numbering::new(0)),
            batches: Arc::new(Batches::start(&client_for_batches, config.batch)),
            cluster: config.cluster.clone(),
        };
        match &store.cluster {
            None => store.migrate(config.retention_days).await?,
            Some(cluster) => {
                store
                    .create_cluster_schema(cluster, &config.database)
                    .await?
            }
        }
        let epoch = store.claim_epoch("collector").await?;
        store.numbering = Arc::new(Numbering::new(epoch));
        Ok(store)
    }

    /// The server version found at open.
    pub fn server_version(&self) -> ServerVersion {
        self.version
    }

    /// Whether the HTTP interface is LZ4-compressed (a current server, probed at open).
    pub fn uses_lz4(&self) -> bool {
        self.lz4
    }

    /// The epoch this writer numbers new locations and stacks under.
    pub fn numbering_epoch(&self) -> u32 {
        self.numbering.epoch()
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
}

/// `client` with LZ4 on the HTTP interface, in both directions: the crate compresses
/// what it sends with LZ4 and can only read LZ4 back, so the server is told to answer in
/// LZ4 too (chdb's server answers in ZSTD unless told).
pub fn lz4_client(client: Client) -> Client {
    client
        .with_compression(Compression::Lz4)
        .with_option("network_compression_method", "lz4")
}

/// Whether `client`'s transport works: one small compressed select and its answer.
pub async fn probe(client: &Client) -> Result<(), String> {
    let answer: Result<Vec<u64>, _> = client
        .query("SELECT number FROM system.numbers LIMIT 3")
        .fetch_all()
        .await;
    match answer {
        Ok(v) if v == [0, 1, 2] => Ok(()),
        Ok(v) => Err(format!("the probe read back {v:?}, not [0, 1, 2]")),
        Err(e) => Err(e.to_string()),
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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
