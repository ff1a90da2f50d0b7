//! The collector's configuration: a TOML file (unknown keys are errors), `HOLMES_*`
//! environment variables over it, and command-line flags over both.
//!
//! The file's top-level keys (role, addresses, store, limits, retention) are read here;
//! each section belongs to the module that uses it and checks itself, with its own
//! error: `[clickhouse]` ([`ClickHouseSettings`], in the storage crate), `[rules]`
//! ([`crate::control::rules`]) and `[control]` ([`ControlConfig`]), `[incidents]` ([`CorrelateConfig`]), `[tls]`
//! ([`TlsConfig`]), `[auth]` ([`AuthConfig`]), `[alerts]` ([`AlertsConfig`]),
//! `[kafka]` ([`KafkaConfig`]), `[limits]` ([`crate::ingest::limits::LimitsConfig`]) and
//! `[symbolize]` ([`SymbolizeConfig`]). Durations are text (`"50ms"`, `"2m"`); keys of older
//! releases that spelled them as numbers (`batch_delay_ms`, ...) are refused with the
//! name of their replacement.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use holmes_storage::clickhouse::{ClickHouseSettings, ClickHouseSettingsError};
use holmes_storage::sqlite::SqliteSettings;
use serde::Deserialize;

use crate::alert::config::AlertsConfigError;
use crate::alert::AlertsConfig;
use crate::auth::config::{AuthConfig, AuthConfigError, TokenList};
use crate::auth::Secret;
use crate::control::rules::{RulesError, ServiceRules};
use crate::control::{ControlConfig, ControlConfigError};
use crate::incident::correlate::{CorrelateConfig, IncidentsConfigError};
use crate::process::kafka::{KafkaConfig, KafkaConfigError};
use crate::symbolize::config::{SymbolizeConfig, SymbolizeConfigError};
use crate::tls::{TlsConfig, TlsError};

/// gRPC ingest address when nothing else is set.
pub const DEFAULT_GRPC_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7070);
/// HTTP API address when nothing else is set.
pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7071);
/// Where the embedded store lives when nothing else is set.
pub const DEFAULT_DATA_DIR: &str = "./holmes-data";
/// Largest gRPC message accepted from an agent.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest profile accepted from an agent (the sum of its chunks).
pub const DEFAULT_MAX_PROFILE_BYTES: u64 = 32 * 1024 * 1024;
/// Days of data kept unless `retention_days` says otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

/// Which store to run on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded SQLite under the data directory.
    #[default]
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

/// The whole configuration, as the file spells it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// What this collector does: `all` (single node, the default), `ingest` or `process`
    /// (the two halves of the Kafka pipeline, see `[kafka]`).
    pub role: Role,
    /// Address agents connect to (not bound by the `process` role).
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP API.
    pub http_addr: SocketAddr,
    /// Folder for the embedded store and other local state.
    pub data_dir: PathBuf,
    /// Which store to use.
    pub store: StoreKind,
    /// Largest gRPC message accepted from an agent, bytes.
    pub max_message_bytes: usize,
    /// Largest profile accepted from an agent, bytes (all its chunks together); a larger
    /// one ends the agent's stream with INVALID_ARGUMENT.
    pub max_profile_bytes: u64,
    /// Largest size a profile may decompress to, bytes; beyond it (a gzip bomb, say) the
    /// profile is stored as refused, with the reason, instead of decoded.
    pub max_decoded_profile_bytes: u64,
    /// Days of metric samples, trigger events and profiles kept; 0 keeps everything.
    pub retention_days: u32,
    /// Keep each profile's bytes exactly as sent besides its normalized contents (a
    /// download is then those bytes); by default a download is pprof re-encoded from the
    /// contents, equivalent to what was sent.
    pub keep_originals: bool,
    /// How far an agent's timestamps may be from the collector's clock, e.g. `"24h"`:
    /// metric points outside are dropped, trigger events and profiles outside stored at
    /// the collector's time (see `process::skew`).
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// ClickHouse settings, used when `store = "clickhouse"`.
    pub clickhouse: ClickHouseSettings,
    /// Embedded store settings, used when `store = "sqlite"`.
    pub sqlite: SqliteSettings,
    /// Trigger rules by service, then by metric (`[rules.checkout] cpu = "abs=90"`):
    /// the first central rules, see [`crate::control::seed`].
    pub rules: ServiceRules,
    /// How nodes keep their agents in step with the central rules (`[control]`).
    pub control: ControlConfig,
    /// Correlation of trigger events into incidents.
    pub incidents: CorrelateConfig,
    /// TLS on both listeners.
    pub tls: TlsConfig,
    /// Tokens for agents and for the API.
    pub auth: AuthConfig,
    /// Alert hooks (`[alerts]`, `[[alerts.hooks]]`).
    pub alerts: AlertsConfig,
    /// Kafka, for the `ingest` and `process` roles.
    pub kafka: KafkaConfig,
    /// Alerts from Alertmanager (`POST /api/v1/alertmanager`): how they name services.
    pub alertmanager: crate::ingest::alertmanager::AlertmanagerConfig,
    /// Bounds on what agents and HTTP clients hold open (`[limits]`).
    pub limits: crate::ingest::limits::LimitsConfig,
    /// Where debug info nobody uploaded may be fetched (`[symbolize]`).
    pub symbolize: SymbolizeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            role: Role::default(),
            grpc_addr: DEFAULT_GRPC_ADDR,
            http_addr: DEFAULT_HTTP_ADDR,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            store: StoreKind::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_profile_bytes: DEFAULT_MAX_PROFILE_BYTES,
            max_decoded_profile_bytes: crate::process::normalize::DEFAULT_MAX_DECODED_BYTES,
            retention_days: DEFAULT_RETENTION_DAYS,
            keep_originals: false,
            max_clock_skew: crate::process::skew::DEFAULT_MAX_CLOCK_SKEW,
            clickhouse: ClickHouseSettings::default(),
            sqlite: SqliteSettings::default(),
            rules: ServiceRules::new(),
            control: ControlConfig::default(),
            incidents: CorrelateConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            alerts: AlertsConfig::default(),
            kafka: KafkaConfig::default(),
            alertmanager: Default::default(),
            limits: Default::default(),
            symbolize: SymbolizeConfig::default(),
        }
    }
}

/// Keys of older releases, by section, each with what replaced it.
const REPLACED_KEYS: [(&str, &[(&str, &str)]); 3] = [
    ("clickhouse", ClickHouseSettings::REPLACED_KEYS),
    ("kafka", KafkaConfig::REPLACED_KEYS),
    ("alerts", AlertsConfig::REPLACED_KEYS),
];

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
    /// The file uses a key of an older release.
    #[error("config file {path}: [{section}] {key} is no longer read; use {replacement}")]
    Replaced {
        /// The file.
        path: PathBuf,
        /// Its section.
        section: &'static str,
        /// The old key.
        key: &'static str,
        /// The key that replaced it, with an example value.
        replacement: &'static str,
    },
    /// Top-level settings are inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// The `[clickhouse]` section cannot be used.
    #[error(transparent)]
    ClickHouse(#[from] ClickHouseSettingsError),
    /// A configured trigger rule cannot be used.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The `[control]` section cannot be used.
    #[error(transparent)]
    Control(#[from] ControlConfigError),
    /// The `[incidents]` section cannot be used.
    #[error(transparent)]
    Incidents(#[from] IncidentsConfigError),
    /// The TLS settings, certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The `[auth]` section or a token file cannot be used.
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    /// The `[alerts]` section cannot be used.
    #[error(transparent)]
    Alerts(#[from] AlertsConfigError),
    /// The `[kafka]` section cannot be used for the role.
    #[error(transparent)]
    Kafka(#[from] KafkaConfigError),
    /// The `[limits]` section cannot be used.
    #[error(transparent)]
    Limits(#[from] crate::ingest::limits::LimitsConfigError),
    /// The `[symbolize]` section cannot be used.
    #[error(transparent)]
    Symbolize(#[from] SymbolizeConfigError),
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
    /// Serve without tokens on addresses other machines can reach (refused otherwise).
    #[arg(long, env = "HOLMES_ALLOW_OPEN", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_open: Option<bool>,
    /// debuginfod servers to fetch debug info nobody uploaded from, separated by spaces
    /// or commas; replaces the file's [symbolize] debuginfod_urls.
    #[arg(long, env = "HOLMES_DEBUGINFOD_URLS", value_name = "URL ...")]
    pub debuginfod_urls: Option<String>,
}

impl Config {
    /// Parses a TOML document; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        };
        let table: toml::Table = toml::from_str(text).map_err(parse_error)?;
        for (section, replaced) in REPLACED_KEYS {
            let Some(keys) = table.get(section).and_then(toml::Value::as_table) else {
                continue;
            };
            if let Some((key, replacement)) = replaced.iter().find(|(k, _)| keys.contains_key(*k)) {
                return Err(ConfigError::Replaced {
                    path: path.to_owned(),
                    section,
                    key,
                    replacement,
                });
            }
        }
        toml::from_str(text).map_err(parse_error)
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
            self.clickhouse.password = Some(v.clone());
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
        if let Some(v) = o.allow_open {
            self.auth.allow_open = v;
        }
        if let Some(v) = &o.api_token_file {
            self.auth.api_token_file = Some(v.clone());
            self.auth.api_token = None;
        }
        if let Some(v) = &o.ingest_tokens {
            self.auth.ingest_tokens = v.0.clone();
            self.auth.ingest_token_files.clear();
        }
        if let Some(v) = &o.debuginfod_urls {
            self.symbolize.debuginfod_urls = SymbolizeConfig::urls_from_list(v);
        }
    }

    /// Checks every section and the settings that depend on each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.incidents.validate()?;
        self.clickhouse.validate()?;
        if self.store == StoreKind::Clickhouse && self.clickhouse.url.is_none() {
            return Err(ConfigError::Invalid(
                "store is clickhouse but no ClickHouse URL is set (--clickhouse-url, HOLMES_CLICKHOUSE_URL or [clickhouse] url)".to_owned(),
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
        if self.max_clock_skew < Duration::from_secs(60) {
            return Err(ConfigError::Invalid(format!(
                "max_clock_skew = {:?} is too short; at least 1m",
                humantime::format_duration(self.max_clock_skew).to_string()
            )));
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
        self.tls.validate()?;
        self.auth.validate()?;
        let grpc = (self.role != Role::Process).then_some(self.grpc_addr);
        self.auth.check_exposure(grpc, self.http_addr)?;
        if self.role != Role::All {
            self.kafka.validate_for(self.role.as_str())?;
        }
        crate::control::rules::check(&self.rules)?;
        self.control.validate()?;
        self.alerts.validate()?;
        self.alertmanager.validate().map_err(ConfigError::Invalid)?;
        self.limits.validate()?;
        self.symbolize.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/resources/config")
            .join(name)
    }

    #[test]
    fn defaults_match_the_documented_constants() {
        let c = Config::default();
        assert_eq!(c.grpc_addr, DEFAULT_GRPC_ADDR);
        assert_eq!(c.http_addr, DEFAULT_HTTP_ADDR);
        assert_eq!(DEFAULT_GRPC_ADDR.to_string(), "127.0.0.1:7070");
        assert_eq!(DEFAULT_HTTP_ADDR.to_string(), "127.0.0.1:7071");
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
        assert_eq!(c.clickhouse.batch_delay, Duration::from_millis(100));
        assert_eq!(c.clickhouse.batch_rows, 100_000);
        assert_eq!(c.incidents.window, Duration::from_secs(120));
        assert_eq!(c.incidents.quiet, Duration::from_secs(300));
        assert_eq!(c.incidents.controls_per_incident, 2);
        assert_eq!(c.incidents.max_profiles_per_incident, 25);
        assert_eq!(
            c.incidents.service_windows["checkout"],
            Duration::from_secs(300)
        );
        assert_eq!(
            c.kafka.brokers.as_deref(),
            Some("kafka-1:9092,kafka-2:9092")
        );
        assert_eq!(c.kafka.produce_timeout, Duration::from_secs(10));
        assert_eq!(c.kafka.session_timeout, Duration::from_secs(10));
        assert_eq!(c.kafka.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(c.kafka.client["security.protocol"], "ssl");
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
        assert_eq!(alerts.retry_initial, Duration::from_secs(1));
        assert_eq!(alerts.retry_max, Duration::from_secs(300));
        assert_eq!(alerts.give_up_after, Duration::from_secs(86400));
        assert_eq!(alerts.request_timeout, Duration::from_secs(10));
        assert_eq!(alerts.max_pending, 100_000);
        assert_eq!(
            c.limits,
            crate::ingest::limits::LimitsConfig {
                max_streams: 20_000,
                max_streams_per_peer: 256,
                profile_idle_timeout: Duration::from_secs(60),
                http_header_timeout: Duration::from_secs(15),
                max_services: 500,
                max_instances_per_service: 5_000,
                max_stream_table_bytes: 536_870_912,
            }
        );
        assert_eq!(
            c.symbolize,
            SymbolizeConfig {
                debuginfod_urls: vec![
                    "https://debuginfod.debian.net".to_owned(),
                    "http://debuginfod.internal:8002".to_owned()
                ],
                debuginfod_timeout: Duration::from_secs(30),
                debuginfod_max_bytes: 268_435_456,
                debuginfod_interval: Duration::from_secs(2 * 60 * 60),
            }
        );
        let names: Vec<_> = alerts.hooks.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["oncall-pager", "team-slack", "incident-bot"]);
        let pager = &alerts.hooks[0];
        assert_eq!(pager.kind, crate::alert::HookKind::Pagerduty);
        assert_eq!(pager.url(), crate::alert::config::DEFAULT_PAGERDUTY_URL);
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
        let old = Config::from_file(&fixture("old-keys.toml")).unwrap_err();
        assert!(matches!(old, ConfigError::Replaced { .. }), "{old:?}");
        assert!(
            old.to_string().ends_with(
                "[clickhouse] batch_delay_ms is no longer read; use batch_delay = \"50ms\""
            ),
            "{old}"
        );
        for (text, replacement) in [
            (
                "[kafka]\nproduce_timeout_ms = 3000",
                "use produce_timeout = \"10s\"",
            ),
            (
                "[kafka]\nsession_timeout_ms = 6000",
                "use session_timeout = \"10s\"",
            ),
            (
                "[kafka]\nheartbeat_interval_ms = 500",
                "use heartbeat_interval = \"1s\"",
            ),
            (
                "[alerts]\nretry_initial_ms = 200",
                "use retry_initial = \"1s\"",
            ),
            ("[alerts]\nretry_max_ms = 1000", "use retry_max = \"5m\""),
            (
                "[alerts]\ngive_up_after_secs = 60",
                "use give_up_after = \"24h\"",
            ),
            (
                "[alerts]\nrequest_timeout_ms = 100",
                "use request_timeout = \"10s\"",
            ),
        ] {
            let err = Config::from_toml(text, Path::new("x.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.ends_with(replacement), "{text}: {err}");
        }
        // Durations are text; a number is refused with the key's line.
        let number = Config::from_toml("[incidents]\nwindow = 120", Path::new("n.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            number.contains("n.toml") && number.contains("window"),
            "{number}"
        );
        let zero = Config::from_toml("[incidents]\nquiet = \"0s\"", Path::new("z.toml"))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(zero, "incidents: quiet = \"0s\" is too short; at least 1s");
        let missing = Config::from_file(&fixture("does-not-exist.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
    }

    #[test]
    fn listeners_other_machines_reach_need_their_tokens_unless_told_to_run_open() {
        let open = |text: &str| {
            Config::from_toml(text, Path::new("open.toml"))
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        // Loopback (the default) may run open.
        open("").unwrap();
        let err = open("grpc_addr = \"0.0.0.0:7070\"").unwrap_err();
        assert!(
            err.contains(
                "grpc_addr 0.0.0.0:7070 is reachable from other machines but no ingest token"
            ),
            "{err}"
        );
        let err = open("http_addr = \"[::]:7071\"").unwrap_err();
        assert!(
            err.contains("http_addr [::]:7071 is reachable from other machines but no API token"),
            "{err}"
        );
        assert!(err.contains("allow_open"), "{err}");
        // Each listener is judged by its own tokens.
        let err = open("grpc_addr = \"0.0.0.0:7070\"\nhttp_addr = \"0.0.0.0:7071\"\n[auth.ingest_tokens]\n\"*\" = \"t0ken\"").unwrap_err();
        assert!(err.starts_with("http_addr"), "{err}");
        open("grpc_addr = \"0.0.0.0:7070\"\nhttp_addr = \"0.0.0.0:7071\"\n[auth]\napi_token = \"a\"\n[auth.ingest_tokens]\n\"*\" = \"t0ken\"").unwrap();
        // A process node binds no gRPC port.
        #[cfg(feature = "kafka")]
        open("role = \"process\"\ngrpc_addr = \"0.0.0.0:7070\"\n[kafka]\nbrokers = \"k:9092\"")
            .unwrap();
        // Told to run open, in the file or by the flag/variable.
        open("http_addr = \"0.0.0.0:7071\"\n[auth]\nallow_open = true").unwrap();
        let mut c = Config::from_toml("http_addr = \"0.0.0.0:7071\"", Path::new("o.toml")).unwrap();
        c.apply(&Overrides {
            allow_open: Some(true),
            ..Default::default()
        });
        c.validate().unwrap();
    }

    #[test]
    fn overrides_win_over_the_file() {
        let overrides = Overrides {
            config: Some(fixture("full.toml")),
            grpc_addr: Some("127.0.0.1:9999".parse().unwrap()),
            store: Some(StoreKind::Sqlite),
            debuginfod_urls: Some("http://a:8002 http://b:8002".to_owned()),
            ..Default::default()
        };
        let c = Config::load(&overrides).unwrap();
        assert_eq!(c.grpc_addr.port(), 9999);
        assert_eq!(c.store, StoreKind::Sqlite);
        assert_eq!(c.http_addr.to_string(), "0.0.0.0:7071");
        assert_eq!(
            c.symbolize.debuginfod_urls,
            ["http://a:8002", "http://b:8002"]
        );
        // The file's other [symbolize] keys stay.
        assert_eq!(c.symbolize.debuginfod_interval, Duration::from_secs(7200));
        let bad = Overrides {
            debuginfod_urls: Some("debuginfod.internal:8002".to_owned()),
            ..Default::default()
        };
        assert_eq!(
            Config::load(&bad).unwrap_err().to_string(),
            "[symbolize] debuginfod_urls: \"debuginfod.internal:8002\" is not an http:// or https:// URL"
        );
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_roles_need_brokers_and_take_overrides() {
        let text = "role = \"process\"\n[kafka]\nbrokers = \"k1:9092,k2:9092\"\ngroup_id = \"g\"\n[kafka.client]\n\"fetch.wait.max.ms\" = \"100\"";
        let c = Config::from_toml(text, Path::new("k.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.role, Role::Process);
        assert_eq!(c.kafka.topic, crate::process::kafka::DEFAULT_TOPIC);
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
