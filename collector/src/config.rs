//! The collector's configuration: a TOML file (unknown keys are errors), `HOLMES_*`
//! environment variables over it, and command-line flags over both.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::{Secret, WILDCARD_SERVICE};
use crate::ingest::rules::{RulesError, ServiceRules};

/// gRPC ingest address when nothing else is set.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:7070";
/// HTTP API address when nothing else is set.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:7071";
/// Where the embedded store lives when nothing else is set.
pub const DEFAULT_DATA_DIR: &str = "./holmes-data";
/// Largest gRPC message accepted from an agent.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest profile accepted from an agent (the sum of its chunks).
pub const DEFAULT_MAX_PROFILE_BYTES: u64 = 32 * 1024 * 1024;

/// Which store to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded SQLite under the data directory.
    Sqlite,
    /// A ClickHouse server.
    Clickhouse,
}

/// What a collector does (`role`): everything on one node, or one half of the Kafka
/// pipeline ([`crate::process`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Single node: accept agents, store, correlate, alert, serve the API.
    #[default]
    All,
    /// Accept agents and produce what they send to Kafka; agents are acknowledged once
    /// the broker has it. Serves the HTTP API too (queries, and capture requests to the
    /// agents connected here).
    Ingest,
    /// Consume from Kafka in a consumer group: store, correlate, alert; serves the HTTP
    /// API. No gRPC listener.
    Process,
}

impl Role {
    /// The name as the config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Process => "process",
        }
    }
}

/// Kafka settings (`[kafka]`), used by the `ingest` and `process` roles.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap brokers, `host:port[,host:port...]`; required by those roles.
    pub brokers: Option<String>,
    /// The topic events go through; created at start if missing.
    #[serde(default = "default_kafka_topic")]
    pub topic: String,
    /// Partitions of the topic when the collector creates it. Each service's events go
    /// to one partition (a hash of its name), so this bounds how many processors share
    /// the work. Do not change the partition count of a topic in use.
    #[serde(default = "default_kafka_partitions")]
    pub partitions: i32,
    /// Replication factor of the topic when the collector creates it.
    #[serde(default = "default_kafka_replication")]
    pub replication_factor: i32,
    /// Consumer group of the `process` role.
    #[serde(default = "default_kafka_group")]
    pub group_id: String,
    /// How long an ingest node waits for the broker to acknowledge an event before it
    /// gives up on it (the agent is then not acknowledged and resends later), ms.
    #[serde(default = "default_kafka_produce_timeout_ms")]
    pub produce_timeout_ms: u64,
    /// Consumer group session timeout, ms: how long a dead processor keeps its
    /// partitions before they move to another.
    #[serde(default = "default_kafka_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Consumer group heartbeat interval, ms (at most a third of the session timeout).
    #[serde(default = "default_kafka_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// Extra librdkafka settings for both the producer and the consumer
    /// (`[kafka.client] "security.protocol" = "ssl"`); they win over the ones above.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

/// Topic name when nothing else is set.
pub const DEFAULT_KAFKA_TOPIC: &str = "holmes-events";
/// Consumer group when nothing else is set.
pub const DEFAULT_KAFKA_GROUP: &str = "holmes-process";

fn default_kafka_topic() -> String {
    DEFAULT_KAFKA_TOPIC.to_owned()
}
fn default_kafka_group() -> String {
    DEFAULT_KAFKA_GROUP.to_owned()
}
fn default_kafka_partitions() -> i32 {
    12
}
fn default_kafka_replication() -> i32 {
    1
}
fn default_kafka_produce_timeout_ms() -> u64 {
    10_000
}
fn default_kafka_session_timeout_ms() -> u64 {
    10_000
}
fn default_kafka_heartbeat_interval_ms() -> u64 {
    1_000
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: None,
            topic: default_kafka_topic(),
            partitions: default_kafka_partitions(),
            replication_factor: default_kafka_replication(),
            group_id: default_kafka_group(),
            produce_timeout_ms: default_kafka_produce_timeout_ms(),
            session_timeout_ms: default_kafka_session_timeout_ms(),
            heartbeat_interval_ms: default_kafka_heartbeat_interval_ms(),
            client: BTreeMap::new(),
        }
    }
}

impl KafkaSection {
    fn validate(&self, role: Role) -> Result<(), ConfigError> {
        if role == Role::All {
            return Ok(());
        }
        if !cfg!(feature = "kafka") {
            return Err(ConfigError::Invalid(format!(
                "role = \"{}\" needs Kafka, but this collector was built without the `kafka` feature",
                role.as_str()
            )));
        }
        if self.brokers.as_deref().is_none_or(|b| b.trim().is_empty()) {
            return Err(ConfigError::Invalid(format!(
                "role = \"{}\" needs Kafka brokers (--kafka-brokers, HOLMES_KAFKA_BROKERS or [kafka] brokers)",
                role.as_str()
            )));
        }
        if self.topic.is_empty() || self.group_id.is_empty() {
            return Err(ConfigError::Invalid(
                "kafka: topic and group_id must not be empty".to_owned(),
            ));
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return Err(ConfigError::Invalid(
                "kafka: partitions and replication_factor must be at least 1".to_owned(),
            ));
        }
        if self.produce_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "kafka: produce_timeout_ms must be at least 1".to_owned(),
            ));
        }
        if self.heartbeat_interval_ms == 0
            || self.heartbeat_interval_ms * 3 > self.session_timeout_ms
        {
            return Err(ConfigError::Invalid(format!(
                "kafka: heartbeat_interval_ms = {} must be positive and at most a third of session_timeout_ms = {}",
                self.heartbeat_interval_ms, self.session_timeout_ms
            )));
        }
        Ok(())
    }
}

/// ClickHouse connection settings (`[clickhouse]` in the file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSection {
    /// HTTP URL of the server.
    pub url: Option<String>,
    /// Database; created if missing.
    #[serde(default = "default_database")]
    pub database: String,
    /// User name.
    pub user: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// How long rows wait to be written together with other agents' rows, milliseconds
    /// (one `INSERT` per table per batch).
    #[serde(default = "default_batch_delay_ms")]
    pub batch_delay_ms: u64,
    /// Rows that fill a batch early.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// A cluster (as named in the servers' `remote_servers`): `<table>_local` tables
    /// with `Replicated*MergeTree` engines plus `Distributed` tables sharded by service.
    /// None: the single-server schema. See deploy/README.md.
    pub cluster: Option<String>,
    /// On a cluster: `Replicated*MergeTree` local tables (needs ZooKeeper); `false`
    /// keeps the plain engines, for shards without replicas.
    #[serde(default = "default_true")]
    pub replicated: bool,
    /// On a cluster: each local table's replication path; Holmes fills in `{database}`
    /// and `{table}`, the server its macros (`{shard}`).
    #[serde(default = "default_zookeeper_path")]
    pub zookeeper_path: String,
    /// On a cluster: each local table's replica name (the server's `{replica}` macro).
    #[serde(default = "default_replica_name")]
    pub replica_name: String,
    /// On a cluster: create the tables with `ON CLUSTER` (distributed DDL); `false`
    /// creates them only on the server at `url`.
    #[serde(default = "default_true")]
    pub on_cluster: bool,
}

fn default_true() -> bool {
    true
}

fn default_zookeeper_path() -> String {
    holmes_storage::clickhouse::DEFAULT_ZOOKEEPER_PATH.to_owned()
}

fn default_replica_name() -> String {
    holmes_storage::clickhouse::DEFAULT_REPLICA_NAME.to_owned()
}

impl ClickHouseSection {
    /// The cluster settings for the store, when a cluster is named.
    pub fn cluster_config(&self) -> Option<holmes_storage::clickhouse::ClusterConfig> {
        self.cluster
            .as_ref()
            .map(|name| holmes_storage::clickhouse::ClusterConfig {
                name: name.clone(),
                replicated: self.replicated,
                zookeeper_path: self.zookeeper_path.clone(),
                replica_name: self.replica_name.clone(),
                on_cluster: self.on_cluster,
            })
    }
}

fn default_batch_delay_ms() -> u64 {
    holmes_storage::clickhouse::DEFAULT_BATCH_DELAY.as_millis() as u64
}

fn default_batch_rows() -> usize {
    holmes_storage::clickhouse::DEFAULT_BATCH_ROWS
}

fn default_database() -> String {
    holmes_storage::clickhouse::DEFAULT_DATABASE.to_owned()
}

impl Default for ClickHouseSection {
    fn default() -> Self {
        ClickHouseSection {
            url: None,
            database: default_database(),
            user: None,
            password: None,
            batch_delay_ms: default_batch_delay_ms(),
            batch_rows: default_batch_rows(),
            cluster: None,
            replicated: true,
            zookeeper_path: default_zookeeper_path(),
            replica_name: default_replica_name(),
            on_cluster: true,
        }
    }
}

/// Correlation of trigger events into incidents (`[incidents]`), durations as text
/// (`90s`, `2m`, `1h`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsSection {
    /// Triggers of several instances within this window make a fleet incident.
    #[serde(default = "default_incident_window")]
    pub window: String,
    /// An incident resolves after this long without triggers.
    #[serde(default = "default_incident_quiet")]
    pub quiet: String,
    /// Fleet windows by service (`[incidents.service_windows] checkout = "5m"`).
    #[serde(default)]
    pub service_windows: BTreeMap<String, String>,
}

fn default_incident_window() -> String {
    humantime::format_duration(crate::incident::correlate::DEFAULT_WINDOW).to_string()
}

fn default_incident_quiet() -> String {
    humantime::format_duration(crate::incident::correlate::DEFAULT_QUIET).to_string()
}

impl Default for IncidentsSection {
    fn default() -> Self {
        IncidentsSection {
            window: default_incident_window(),
            quiet: default_incident_quiet(),
            service_windows: BTreeMap::new(),
        }
    }
}

impl IncidentsSection {
    /// The correlation settings, or what is wrong with them.
    pub fn correlate_config(
        &self,
    ) -> Result<crate::incident::correlate::CorrelateConfig, ConfigError> {
        let parse = |key: &str, text: &str| {
            humantime::parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "incidents: {key} = {text:?} is not a duration like \"2m\" or \"90s\""
                    ))
                })
        };
        let window = parse("window", &self.window)?;
        let quiet = parse("quiet", &self.quiet)?;
        let mut service_windows = BTreeMap::new();
        for (service, text) in &self.service_windows {
            holmes_proto::names::validate_name("service", service)
                .map_err(|e| ConfigError::Invalid(format!("incidents.service_windows: {e}")))?;
            service_windows.insert(
                service.clone(),
                parse(&format!("service_windows.{service}"), text)?,
            );
        }
        Ok(crate::incident::correlate::CorrelateConfig {
            window,
            quiet,
            service_windows,
        })
    }
}

/// TLS for both listeners (`[tls]`): with a certificate and its key, gRPC ingest and
/// the HTTP API serve TLS only; without, both are plain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, the server's own certificate first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate.
    pub key_file: Option<PathBuf>,
}

impl TlsSection {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// Bearer tokens (`[auth]`). Without ingest tokens any agent may send; without an API
/// token the API is open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Token required on `/api/...` (`Authorization: Bearer <token>`).
    pub api_token: Option<Secret>,
    /// File holding the API token (trailing whitespace ignored), instead of `api_token`.
    pub api_token_file: Option<PathBuf>,
    /// Agent tokens by service name; the key `"*"` holds the token of every service
    /// without its own.
    #[serde(default)]
    pub ingest_tokens: BTreeMap<String, Secret>,
    /// Files holding agent tokens, by service name (or `"*"`), instead of inline ones.
    #[serde(default)]
    pub ingest_token_files: BTreeMap<String, PathBuf>,
}

/// Reads a token file: its content without surrounding whitespace, never empty.
fn read_token_file(what: &str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    check_token(what, token)?;
    Ok(Secret::new(token))
}

/// A token must fit in an HTTP header: visible ASCII without spaces.
fn check_token(what: &str, token: &str) -> Result<(), ConfigError> {
    if token.is_empty() {
        return Err(ConfigError::Invalid(format!("{what} is empty")));
    }
    if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(ConfigError::Invalid(format!(
            "{what} has the character {c:?}; tokens are visible ASCII without spaces"
        )));
    }
    Ok(())
}

impl AuthSection {
    /// The API token, read from its file if it has one.
    pub fn api_token(&self) -> Result<Option<Secret>, ConfigError> {
        match (&self.api_token, &self.api_token_file) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid(
                "auth: set api_token or api_token_file, not both".to_owned(),
            )),
            (Some(t), None) => {
                check_token("auth.api_token", t.expose())?;
                Ok(Some(t.clone()))
            }
            (None, Some(path)) => read_token_file("auth.api_token_file", path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Agent tokens by service (or `"*"`), files read.
    pub fn ingest_tokens(&self) -> Result<BTreeMap<String, Secret>, ConfigError> {
        let mut tokens = BTreeMap::new();
        for (service, token) in &self.ingest_tokens {
            check_token(&format!("auth.ingest_tokens.{service}"), token.expose())?;
            tokens.insert(service.clone(), token.clone());
        }
        for (service, path) in &self.ingest_token_files {
            if tokens.contains_key(service) {
                return Err(ConfigError::Invalid(format!(
                    "auth: service {service:?} has both an ingest token and a token file"
                )));
            }
            let token = read_token_file(&format!("auth.ingest_token_files.{service}"), path)?;
            tokens.insert(service.clone(), token);
        }
        Ok(tokens)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.api_token.is_some() && self.api_token_file.is_some() {
            return Err(ConfigError::Invalid(
                "auth: set api_token or api_token_file, not both".to_owned(),
            ));
        }
        if let Some(t) = &self.api_token {
            check_token("auth.api_token", t.expose())?;
        }
        for (service, token) in &self.ingest_tokens {
            check_token(&format!("auth.ingest_tokens.{service}"), token.expose())?;
        }
        for service in self
            .ingest_tokens
            .keys()
            .chain(self.ingest_token_files.keys())
        {
            if service != WILDCARD_SERVICE {
                holmes_proto::names::validate_name("service", service)
                    .map_err(|e| ConfigError::Invalid(format!("auth: {e}")))?;
            }
        }
        Ok(())
    }
}

/// `service=token,service=token` (`"*"` for every other service), as
/// `HOLMES_INGEST_TOKENS` spells the agent tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenList(pub BTreeMap<String, Secret>);

impl std::fmt::Debug for TokenList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl std::str::FromStr for TokenList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tokens = BTreeMap::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (service, token) = pair
                .split_once('=')
                .ok_or_else(|| "expected service=token[,service=token...]".to_owned())?;
            let (service, token) = (service.trim(), token.trim());
            if service != WILDCARD_SERVICE {
                holmes_proto::names::validate_name("service", service)
                    .map_err(|e| e.to_string())?;
            }
            check_token(&format!("the token of {service:?}"), token).map_err(|e| e.to_string())?;
            tokens.insert(service.to_owned(), Secret::new(token));
        }
        Ok(TokenList(tokens))
    }
}

/// The whole configuration, as the file spells it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What this collector does: `all` (single node, the default), `ingest` or `process`
    /// (the two halves of the Kafka pipeline, see `[kafka]`).
    #[serde(default)]
    pub role: Role,
    /// Address agents connect to (not bound by the `process` role).
    #[serde(default = "default_grpc")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP API.
    #[serde(default = "default_http")]
    pub http_addr: SocketAddr,
    /// Folder for the embedded store and other local state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Which store to use.
    #[serde(default = "default_store")]
    pub store: StoreKind,
    /// Largest gRPC message accepted from an agent, bytes.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Largest profile accepted from an agent, bytes (all its chunks together); a larger
    /// one ends the agent's stream with INVALID_ARGUMENT.
    #[serde(default = "default_max_profile")]
    pub max_profile_bytes: u64,
    /// Largest size a profile may decompress to, bytes; beyond it (a gzip bomb, say) the
    /// profile is stored as refused, with the reason, instead of decoded.
    #[serde(default = "default_max_decoded_profile")]
    pub max_decoded_profile_bytes: u64,
    /// Days of metric samples, trigger events and profiles kept; 0 keeps everything.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// ClickHouse settings, used when `store = "clickhouse"`.
    #[serde(default)]
    pub clickhouse: ClickHouseSection,
    /// Trigger rules by service, then by metric (`[rules.checkout] cpu = "abs=90"`),
    /// pushed to the service's agents when they connect; see [`crate::ingest::rules`].
    #[serde(default)]
    pub rules: ServiceRules,
    /// Correlation of trigger events into incidents.
    #[serde(default)]
    pub incidents: IncidentsSection,
    /// TLS on both listeners.
    #[serde(default)]
    pub tls: TlsSection,
    /// Tokens for agents and for the API.
    #[serde(default)]
    pub auth: AuthSection,
    /// Alert hooks (`[alerts]`, `[[alerts.hooks]]`).
    #[serde(default)]
    pub alerts: crate::alert::AlertsConfig,
    /// Kafka, for the `ingest` and `process` roles.
    #[serde(default)]
    pub kafka: KafkaSection,
}

fn default_grpc() -> SocketAddr {
    parse_default(DEFAULT_GRPC_ADDR)
}
fn default_http() -> SocketAddr {
    parse_default(DEFAULT_HTTP_ADDR)
}
fn parse_default(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_store() -> StoreKind {
    StoreKind::Sqlite
}
fn default_max_message() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}
fn default_max_profile() -> u64 {
    DEFAULT_MAX_PROFILE_BYTES
}

/// Days of data kept unless `retention_days` says otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

fn default_retention_days() -> u32 {
    DEFAULT_RETENTION_DAYS
}

fn default_max_decoded_profile() -> u64 {
    crate::process::normalize::DEFAULT_MAX_DECODED_BYTES
}

impl Default for Config {
    fn default() -> Self {
        Config {
            role: Role::default(),
            grpc_addr: default_grpc(),
            http_addr: default_http(),
            data_dir: default_data_dir(),
            store: default_store(),
            max_message_bytes: default_max_message(),
            max_profile_bytes: default_max_profile(),
            max_decoded_profile_bytes: default_max_decoded_profile(),
            retention_days: default_retention_days(),
            clickhouse: ClickHouseSection::default(),
            rules: ServiceRules::new(),
            incidents: IncidentsSection::default(),
            tls: TlsSection::default(),
            auth: AuthSection::default(),
            alerts: crate::alert::AlertsConfig::default(),
            kafka: KafkaSection::default(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation, with line and column.
        message: String,
    },
    /// A setting is inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// A configured trigger rule cannot be used.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Settings given on the command line or through the environment; each one set here
/// wins over the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, env = "HOLMES_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What this collector does [default: all].
    #[arg(long, env = "HOLMES_ROLE", value_enum)]
    pub role: Option<Role>,
    /// Kafka bootstrap brokers, host:port[,host:port...] (roles ingest and process).
    #[arg(long, env = "HOLMES_KAFKA_BROKERS", value_name = "HOST:PORT,...")]
    pub kafka_brokers: Option<String>,
    /// Kafka topic [default: holmes-events].
    #[arg(long, env = "HOLMES_KAFKA_TOPIC", value_name = "NAME")]
    pub kafka_topic: Option<String>,
    /// Kafka consumer group of the process role [default: holmes-process].
    #[arg(long, env = "HOLMES_KAFKA_GROUP_ID", value_name = "NAME")]
    pub kafka_group_id: Option<String>,
    /// Folder for the embedded store [default: ./holmes-data].
    #[arg(long, env = "HOLMES_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC address agents connect to [default: 127.0.0.1:7070].
    #[arg(long, env = "HOLMES_GRPC_ADDR", value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP API address [default: 127.0.0.1:7071].
    #[arg(long, env = "HOLMES_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Store backend [default: sqlite].
    #[arg(long, env = "HOLMES_STORE", value_enum)]
    pub store: Option<StoreKind>,
    /// ClickHouse HTTP URL, e.g. http://127.0.0.1:8123.
    #[arg(long, env = "HOLMES_CLICKHOUSE_URL", value_name = "URL")]
    pub clickhouse_url: Option<String>,
    /// ClickHouse database [default: holmes].
    #[arg(long, env = "HOLMES_CLICKHOUSE_DATABASE", value_name = "NAME")]
    pub clickhouse_database: Option<String>,
    /// ClickHouse user.
    #[arg(long, env = "HOLMES_CLICKHOUSE_USER", value_name = "USER")]
    pub clickhouse_user: Option<String>,
    /// ClickHouse password (prefer the environment variable).
    #[arg(
        long,
        env = "HOLMES_CLICKHOUSE_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub clickhouse_password: Option<String>,
    /// PEM certificate chain: with --tls-key-file, gRPC and HTTP serve TLS only.
    #[arg(long, env = "HOLMES_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the TLS certificate.
    #[arg(long, env = "HOLMES_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Token required on the HTTP API (prefer the environment variable or a file).
    #[arg(
        long,
        env = "HOLMES_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<String>,
    /// File holding the token required on the HTTP API.
    #[arg(long, env = "HOLMES_API_TOKEN_FILE", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Agent tokens as service=token,... ("*" for every other service); replaces the
    /// file's [auth] ingest tokens (prefer the environment variable).
    #[arg(
        long,
        env = "HOLMES_INGEST_TOKENS",
        hide_env_values = true,
        value_name = "SERVICE=TOKEN,..."
    )]
    pub ingest_tokens: Option<TokenList>,
}

impl Config {
    /// Parses a TOML document; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// The file named by `overrides.config` (or the defaults), then every override.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match &overrides.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(v) = o.role {
            self.role = v;
        }
        if let Some(v) = &o.kafka_brokers {
            self.kafka.brokers = Some(v.clone());
        }
        if let Some(v) = &o.kafka_topic {
            self.kafka.topic = v.clone();
        }
        if let Some(v) = &o.kafka_group_id {
            self.kafka.group_id = v.clone();
        }
        if let Some(v) = &o.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = o.grpc_addr {
            self.grpc_addr = v;
        }
        if let Some(v) = o.http_addr {
            self.http_addr = v;
        }
        if let Some(v) = o.store {
            self.store = v;
        }
        if let Some(v) = &o.clickhouse_url {
            self.clickhouse.url = Some(v.clone());
        }
        if let Some(v) = &o.clickhouse_database {
            self.clickhouse.database = v.clone();
        }
        if let Some(v) = &o.clickhouse_user {
            self.clickhouse.user = Some(v.clone());
        }
        if let Some(v) = &o.clickhouse_password {
            self.clickhouse.password = Some(Secret::new(v.clone()));
        }
        if let Some(v) = &o.tls_cert_file {
            self.tls.cert_file = Some(v.clone());
        }
        if let Some(v) = &o.tls_key_file {
            self.tls.key_file = Some(v.clone());
        }
        // A token given here replaces the file's, whichever way the file spells it.
        if let Some(v) = &o.api_token {
            self.auth.api_token = Some(Secret::new(v.clone()));
            self.auth.api_token_file = None;
        }
        if let Some(v) = &o.api_token_file {
            self.auth.api_token_file = Some(v.clone());
            self.auth.api_token = None;
        }
        if let Some(v) = &o.ingest_tokens {
            self.auth.ingest_tokens = v.0.clone();
            self.auth.ingest_token_files.clear();
        }
    }

    /// Checks settings that depend on each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.incidents.correlate_config()?;
        if self.store == StoreKind::Clickhouse && self.clickhouse.url.is_none() {
            return Err(ConfigError::Invalid(
                "store is clickhouse but no ClickHouse URL is set (--clickhouse-url, HOLMES_CLICKHOUSE_URL or [clickhouse] url)".to_owned(),
            ));
        }
        if self
            .clickhouse
            .cluster
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(ConfigError::Invalid(
                "[clickhouse] cluster is empty; name a cluster of the servers' remote_servers, or leave the key out".to_owned(),
            ));
        }
        if self.max_message_bytes < 64 * 1024 {
            return Err(ConfigError::Invalid(format!(
                "max_message_bytes = {} is too small; at least 65536",
                self.max_message_bytes
            )));
        }
        if self.max_decoded_profile_bytes == 0 {
            return Err(ConfigError::Invalid(
                "max_decoded_profile_bytes = 0 is too small; at least 1".to_owned(),
            ));
        }
        if self.max_profile_bytes == 0 {
            return Err(ConfigError::Invalid(
                "max_profile_bytes = 0 is too small; at least 1".to_owned(),
            ));
        }
        if self.grpc_addr == self.http_addr && self.grpc_addr.port() != 0 {
            return Err(ConfigError::Invalid(format!(
                "grpc_addr and http_addr are both {}",
                self.grpc_addr
            )));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Invalid(
                "tls: set both cert_file and key_file (--tls-cert-file, --tls-key-file), or neither".to_owned(),
            ));
        }
        self.auth.validate()?;
        self.kafka.validate(self.role)?;
        crate::ingest::rules::check(&self.rules)?;
        self.alerts.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/resources/config")
            .join(name)
    }

    #[test]
    fn defaults_match_the_documented_constants() {
        let c = Config::default();
        assert_eq!(c.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
        assert_eq!(c.http_addr.to_string(), DEFAULT_HTTP_ADDR);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.store, StoreKind::Sqlite);
        assert_eq!(c.max_profile_bytes, DEFAULT_MAX_PROFILE_BYTES);
        assert_eq!(Config::from_toml("", Path::new("x")).unwrap(), c);
        let zero = Config::from_toml("max_profile_bytes = 0", Path::new("x")).unwrap();
        let err = zero.validate().unwrap_err().to_string();
        assert_eq!(err, "max_profile_bytes = 0 is too small; at least 1");
    }

    #[test]
    fn full_fixture_parses() {
        let c = Config::from_file(&fixture("full.toml")).unwrap();
        assert_eq!(c.grpc_addr.to_string(), "0.0.0.0:7070");
        assert_eq!(c.store, StoreKind::Clickhouse);
        assert_eq!(c.clickhouse.url.as_deref(), Some("http://clickhouse:8123"));
        assert_eq!(c.clickhouse.database, "holmes_prod");
        assert_eq!(c.max_message_bytes, 8_388_608);
        assert_eq!(c.max_profile_bytes, 67_108_864);
        assert_eq!(c.max_decoded_profile_bytes, 134_217_728);
        assert_eq!(c.retention_days, 14);
        let checkout = &c.rules["checkout"];
        assert_eq!(checkout["cpu"], "abs=90,cooldown=2m");
        assert_eq!(checkout["threads"], "off");
        assert_eq!(c.rules["cart"]["memory"], "abs=85");
        assert_eq!(
            c.tls.cert_file.as_deref(),
            Some(Path::new("/etc/holmes/tls/server.pem"))
        );
        assert!(c.tls.enabled());
        assert_eq!(
            c.auth.ingest_tokens["checkout"].expose(),
            "checkout-6f1d0c8e"
        );
        assert_eq!(c.auth.ingest_tokens["*"].expose(), "fleet-91b2a7");
        assert_eq!(
            c.auth.ingest_token_files["cart"],
            PathBuf::from("/etc/holmes/tokens/cart")
        );
        let alerts = &c.alerts;
        assert_eq!(
            alerts.base_url.as_deref(),
            Some("https://holmes.example.com")
        );
        assert_eq!(alerts.retry_initial_ms, 1000);
        assert_eq!(alerts.give_up_after_secs, 86400);
        assert_eq!(alerts.max_pending, 100_000);
        let names: Vec<_> = alerts.hooks.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["oncall-pager", "team-slack", "incident-bot"]);
        let pager = &alerts.hooks[0];
        assert_eq!(pager.kind, crate::alert::HookKind::Pagerduty);
        assert_eq!(pager.url(), crate::alert::settings::DEFAULT_PAGERDUTY_URL);
        assert_eq!(pager.min_severity, crate::alert::MinSeverity::Fleet);
        assert_eq!(alerts.hooks[1].services, ["checkout", "cart"]);
        assert_eq!(
            alerts.hooks[2].headers["Authorization"].expose(),
            "Bearer bot-token"
        );
        c.validate().unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("checkout-6f1d0c8e")
                && !shown.contains("secret")
                && !shown.contains("bot-token"),
            "{shown}"
        );
    }

    #[test]
    fn security_settings_are_checked_and_files_read() {
        for (toml, expected) in [
            (
                "[tls]\ncert_file = \"c.pem\"",
                "tls: set both cert_file and key_file",
            ),
            (
                "[auth]\napi_token = \"a b\"",
                "auth.api_token has the character ' '",
            ),
            (
                "[auth.ingest_tokens]\n\"check out\" = \"t\"",
                "auth: service \"check out\" has the character ' '",
            ),
            (
                "[auth]\napi_token = \"t\"\napi_token_file = \"f\"",
                "auth: set api_token or api_token_file, not both",
            ),
        ] {
            let err = Config::from_toml(toml, Path::new("x.toml"))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{toml}: {err}");
        }
        assert!(Config::from_toml("[tls]\ncert = \"c\"", Path::new("x")).is_err());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cart");
        std::fs::write(&file, "cart-token\n").unwrap();
        let auth = AuthSection {
            ingest_token_files: [("cart".to_owned(), file.clone())].into(),
            api_token_file: Some(file),
            ..AuthSection::default()
        };
        assert_eq!(auth.ingest_tokens().unwrap()["cart"].expose(), "cart-token");
        assert_eq!(auth.api_token().unwrap().unwrap().expose(), "cart-token");
        let missing = AuthSection {
            api_token_file: Some(dir.path().join("nope")),
            ..AuthSection::default()
        };
        assert!(matches!(missing.api_token(), Err(ConfigError::Read { .. })));
    }

    #[test]
    fn ingest_tokens_from_the_environment_replace_the_file() {
        let list: TokenList = "checkout=t1, *=t2".parse().unwrap();
        let overrides = Overrides {
            config: Some(fixture("full.toml")),
            ingest_tokens: Some(list),
            api_token: Some("from-env".to_owned()),
            tls_cert_file: Some(PathBuf::from("/other.pem")),
            ..Default::default()
        };
        let c = Config::load(&overrides).unwrap();
        let tokens = c.auth.ingest_tokens().unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens["checkout"].expose(), "t1");
        assert_eq!(tokens["*"].expose(), "t2");
        assert_eq!(c.auth.api_token().unwrap().unwrap().expose(), "from-env");
        assert_eq!(c.tls.cert_file.as_deref(), Some(Path::new("/other.pem")));
        assert!("checkout".parse::<TokenList>().is_err());
        assert!("bad name=t".parse::<TokenList>().is_err());
        assert!("checkout=two words".parse::<TokenList>().is_err());
    }

    #[test]
    fn bad_rules_are_refused_at_load_naming_service_metric_and_text() {
        let overrides = Overrides {
            config: Some(fixture("bad-rule.toml")),
            ..Default::default()
        };
        let err = Config::load(&overrides).unwrap_err();
        assert!(matches!(err, ConfigError::Rules(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "rules.checkout.cpu = \"abs=lots,cooldown=2m\": abs=\"lots\": expected a number"
        );
        for (toml, expected) in [
            (
                "[rules.checkout]\nrss = \"abs=1\"",
                "rules.checkout.rss = \"abs=1\": metric \"rss\" has no trigger rule",
            ),
            (
                "[rules.checkout]\ncpux = \"abs=1\"",
                "rules.checkout.cpux = \"abs=1\": unknown metric \"cpux\"",
            ),
            (
                "[rules.\"check out\"]\ncpu = \"off\"",
                "rules: service \"check out\" has the character ' '",
            ),
        ] {
            let err = Config::from_toml(toml, Path::new("x.toml"))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        let not_text = Config::from_toml("[rules.checkout]\ncpu = 90", Path::new("x.toml"));
        assert!(not_text.is_err());
    }

    #[test]
    fn bad_fixtures_are_refused_with_the_reason() {
        let unknown = Config::from_file(&fixture("unknown-key.toml")).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `grpc_adr`"),
            "{unknown}"
        );
        let bad_addr = Config::from_file(&fixture("bad-addr.toml")).unwrap_err();
        assert!(bad_addr.to_string().contains("bad-addr.toml"), "{bad_addr}");
        let bad_store = Config::from_file(&fixture("bad-store.toml")).unwrap_err();
        assert!(bad_store.to_string().contains("postgres"), "{bad_store}");
        let missing = Config::from_file(&fixture("does-not-exist.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
    }

    #[test]
    fn overrides_win_over_the_file() {
        let overrides = Overrides {
            config: Some(fixture("full.toml")),
            grpc_addr: Some("127.0.0.1:9999".parse().unwrap()),
            store: Some(StoreKind::Sqlite),
            ..Default::default()
        };
        let c = Config::load(&overrides).unwrap();
        assert_eq!(c.grpc_addr.port(), 9999);
        assert_eq!(c.store, StoreKind::Sqlite);
        assert_eq!(c.http_addr.to_string(), "0.0.0.0:7071");
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_roles_need_brokers_and_take_overrides() {
        let text = "role = \"process\"\n[kafka]\nbrokers = \"k1:9092,k2:9092\"\ngroup_id = \"g\"\n[kafka.client]\n\"fetch.wait.max.ms\" = \"100\"";
        let c = Config::from_toml(text, Path::new("k.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.role, Role::Process);
        assert_eq!(c.kafka.topic, DEFAULT_KAFKA_TOPIC);
        assert_eq!(c.kafka.client["fetch.wait.max.ms"], "100");
        let no_brokers = Config::from_toml("role = \"ingest\"", Path::new("k.toml")).unwrap();
        let err = no_brokers.validate().unwrap_err().to_string();
        assert!(err.contains("needs Kafka brokers"), "{err}");
        assert!(Config::from_toml("[kafka]\nbroker = \"x\"", Path::new("k.toml")).is_err());
        assert!(Config::from_toml("role = \"both\"", Path::new("k.toml")).is_err());
        let overrides = Overrides {
            role: Some(Role::Ingest),
            kafka_brokers: Some("127.0.0.1:1".to_owned()),
            kafka_topic: Some("t".to_owned()),
            ..Default::default()
        };
        let c = Config::load(&overrides).unwrap();
        assert_eq!((c.role, c.kafka.topic.as_str()), (Role::Ingest, "t"));
        assert_eq!(c.kafka.brokers.as_deref(), Some("127.0.0.1:1"));
    }

    #[test]
    fn clickhouse_without_url_is_refused() {
        let overrides = Overrides {
            store: Some(StoreKind::Clickhouse),
            ..Default::default()
        };
        let err = Config::load(&overrides).unwrap_err();
        assert!(err.to_string().contains("no ClickHouse URL"), "{err}");
    }
}
