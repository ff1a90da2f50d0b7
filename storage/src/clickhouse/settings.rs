//! The `[clickhouse]` section of the collector's config file: how to reach the server,
//! when batches are written and which schema (single server or cluster), as the file
//! spells it; [`ClickHouseSettings::to_config`] turns it into what the store opens with.

use std::time::Duration;

use serde::Deserialize;

use super::{
    BatchConfig, ClickHouseConfig, ClusterConfig, DEFAULT_BATCH_DELAY, DEFAULT_BATCH_ROWS,
    DEFAULT_DATABASE, DEFAULT_REPLICA_NAME, DEFAULT_ZOOKEEPER_PATH,
};

/// The `[clickhouse]` section. Every key has a default, so an empty section (or none)
/// is valid; `url` is needed only to open the store.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseSettings {
    /// HTTP URL of the server.
    pub url: Option<String>,
    /// Database; created if missing.
    pub database: String,
    /// User name.
    pub user: Option<String>,
    /// Password; `<redacted>` in debug output.
    pub password: Option<String>,
    /// How long rows wait to be written together with other agents' rows (one `INSERT`
    /// per table per batch), e.g. `"50ms"`.
    #[serde(with = "humantime_serde")]
    pub batch_delay: Duration,
    /// Rows that fill a batch early.
    pub batch_rows: usize,
    /// A cluster (as named in the servers' `remote_servers`): `<table>_local` tables
    /// with `Replicated*MergeTree` engines plus `Distributed` tables sharded by service.
    /// None: the single-server schema. See deploy/README.md.
    pub cluster: Option<String>,
    /// On a cluster: `Replicated*MergeTree` local tables (needs ZooKeeper); `false`
    /// keeps the plain engines, for shards without replicas.
    pub replicated: bool,
    /// On a cluster: each local table's replication path; Holmes fills in `{database}`
    /// and `{table}`, the server its macros (`{shard}`).
    pub zookeeper_path: String,
    /// On a cluster: each local table's replica name (the server's `{replica}` macro).
    pub replica_name: String,
    /// On a cluster: create the tables with `ON CLUSTER` (distributed DDL); `false`
    /// creates them only on the server at `url`.
    pub on_cluster: bool,
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        ClickHouseSettings {
            url: None,
            database: DEFAULT_DATABASE.to_owned(),
            user: None,
            password: None,
            batch_delay: DEFAULT_BATCH_DELAY,
            batch_rows: DEFAULT_BATCH_ROWS,
            cluster: None,
            replicated: true,
            zookeeper_path: DEFAULT_ZOOKEEPER_PATH.to_owned(),
            replica_name: DEFAULT_REPLICA_NAME.to_owned(),
            on_cluster: true,
        }
    }
}

impl std::fmt::Debug for ClickHouseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSettings")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("batch_delay", &self.batch_delay)
            .field("batch_rows", &self.batch_rows)
            .field("cluster", &self.cluster)
            .field("replicated", &self.replicated)
            .field("zookeeper_path", &self.zookeeper_path)
            .field("replica_name", &self.replica_name)
            .field("on_cluster", &self.on_cluster)
            .finish()
    }
}

/// Why the `[clickhouse]` section cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClickHouseSettingsError {
    /// No server to open the store on.
    #[error("no ClickHouse URL is set ([clickhouse] url)")]
    NoUrl,
    /// `cluster = ""`.
    #[error("[clickhouse] cluster is empty; name a cluster of the servers' remote_servers, or leave the key out")]
    EmptyCluster,
    /// `batch_delay = "0s"` would write every row on its own.
    #[error("[clickhouse] batch_delay = \"0s\" is too short; at least 1ms")]
    NoBatchDelay,
}

impl ClickHouseSettings {
    /// Keys of older releases, each with what replaced it: refused naming the
    /// replacement rather than as unknown keys.
    pub const REPLACED_KEYS: &'static [(&'static str, &'static str)] =
        &[("batch_delay_ms", "batch_delay = \"50ms\"")];

    /// Checks the settings that do not depend on anything else.
    pub fn validate(&self) -> Result<(), ClickHouseSettingsError> {
        if self.cluster.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(ClickHouseSettingsError::EmptyCluster);
        }
        if self.batch_delay.is_zero() {
            return Err(ClickHouseSettingsError::NoBatchDelay);
        }
        Ok(())
    }

    /// The cluster settings for the store, when a cluster is named.
    pub fn cluster_config(&self) -> Option<ClusterConfig> {
        self.cluster.as_ref().map(|name| ClusterConfig {
            name: name.clone(),
            replicated: self.replicated,
            zookeeper_path: self.zookeeper_path.clone(),
            replica_name: self.replica_name.clone(),
            on_cluster: self.on_cluster,
        })
    }

    /// What the store opens with.
    pub fn to_config(&self) -> Result<ClickHouseConfig, ClickHouseSettingsError> {
        self.validate()?;
        let url = self.url.clone().ok_or(ClickHouseSettingsError::NoUrl)?;
        Ok(ClickHouseConfig {
            url,
            database: self.database.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            batch: BatchConfig {
                max_rows: self.batch_rows.max(1),
                max_delay: self.batch_delay,
                ..BatchConfig::default()
            },
            cluster: self.cluster_config(),
            retention_days: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_parses_with_its_defaults_and_hides_the_password() {
        let s: ClickHouseSettings = toml::from_str(
            "url = \"http://ch:8123\"\npassword = \"s3cret\"\nbatch_delay = \"250ms\"\ncluster = \"holmes\"",
        )
        .unwrap();
        let config = s.to_config().unwrap();
        assert_eq!(config.url, "http://ch:8123");
        assert_eq!(config.database, DEFAULT_DATABASE);
        assert_eq!(config.batch.max_delay, Duration::from_millis(250));
        assert_eq!(config.batch.max_rows, DEFAULT_BATCH_ROWS);
        let cluster = config.cluster.unwrap();
        assert!(cluster.replicated && cluster.on_cluster);
        assert_eq!(cluster.zookeeper_path, DEFAULT_ZOOKEEPER_PATH);
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(
            toml::from_str::<ClickHouseSettings>("").unwrap(),
            ClickHouseSettings::default()
        );
        assert!(toml::from_str::<ClickHouseSettings>("batch_delay = 50").is_err());
        assert!(toml::from_str::<ClickHouseSettings>("batch_delay_ms = 50").is_err());
        let empty: ClickHouseSettings = toml::from_str("cluster = \" \"").unwrap();
        assert_eq!(empty.validate(), Err(ClickHouseSettingsError::EmptyCluster));
        assert_eq!(
            ClickHouseSettings::default().to_config(),
            Err(ClickHouseSettingsError::NoUrl)
        );
    }
}
