//! The schema on a ClickHouse cluster: for every table a `<table>_local` on each server
//! (`ReplicatedMergeTree` family, or the plain engine when replication is off) and a
//! `Distributed` table under the name the queries use, sharded by service so that all
//! rows of one service sit on one shard (its `FINAL`, `LIMIT 1 BY` and merges then fold
//! duplicates exactly as on a single server).
//!
//! The single-server schema grows by migrations (`MIGRATIONS`); a cluster gets the
//! current schema at once, from [`TABLES`], with `CREATE … IF NOT EXISTS [ON CLUSTER]`.
//! [`TABLES`] must describe what the migrations end with: a unit test ties
//! [`CLUSTER_SCHEMA_VERSION`] to the number of migrations (`MIGRATIONS`), and
//! `storage/tests/clickhouse.rs` compares the columns and keys of both schemas on a
//! real server.

use super::schema::{render, Features};
use super::{date_text, day_of, now_nanos, ClickHouseStore, MigrationRow, ServerVersion};
use crate::{Expired, StoreError};

/// The migration count [`TABLES`] was written for: a new migration must update both.
pub(super) const CLUSTER_SCHEMA_VERSION: u32 = 14;

/// Replication path used when the configuration names none. `{database}` and `{table}`
/// are filled in by Holmes (the table's name without `_local`); `{shard}` is the
/// server's macro.
pub const DEFAULT_ZOOKEEPER_PATH: &str = "/clickhouse/tables/{shard}/{database}/{table}";
/// Replica name used when the configuration names none: the server's `{replica}` macro.
pub const DEFAULT_REPLICA_NAME: &str = "{replica}";

/// Where Holmes' tables live on a cluster (`[clickhouse] cluster = "..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Cluster name, as in the servers' `remote_servers`.
    pub name: String,
    /// `Replicated*MergeTree` local tables (needs ZooKeeper); `false` keeps the plain
    /// engines, for a cluster of shards without replicas.
    pub replicated: bool,
    /// Replication path of each local table (see [`DEFAULT_ZOOKEEPER_PATH`]).
    pub zookeeper_path: String,
    /// Replica name of each local table (see [`DEFAULT_REPLICA_NAME`]).
    pub replica_name: String,
    /// Send DDL with `ON CLUSTER` (distributed DDL, needs ZooKeeper and
    /// `distributed_ddl` in the servers' config); `false` creates the tables on the
    /// server the collector talks to only (each server then needs them created by hand,
    /// or a cluster of one server, as in the tests).
    pub on_cluster: bool,
}

impl ClusterConfig {
    /// A replicated cluster with the default paths and distributed DDL.
    pub fn new(name: impl Into<String>) -> Self {
        ClusterConfig {
            name: name.into(),
            replicated: true,
            zookeeper_path: DEFAULT_ZOOKEEPER_PATH.to_owned(),
            replica_name: DEFAULT_REPLICA_NAME.to_owned(),
            on_cluster: true,
        }
    }
}

/// A table's engine on a single server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Engine {
    /// `MergeTree`.
    MergeTree,
    /// `ReplacingMergeTree`, with its version column if it has one.
    Replacing(Option<&'static str>),
}

/// One table of the current schema.
#[derive(Debug, Clone, Copy)]
pub(super) struct TableDef {
    /// The name the queries use.
    pub(super) name: &'static str,
    /// Column definitions, as in `CREATE TABLE`.
    pub(super) columns: &'static str,
    /// Engine on a single server.
    pub(super) engine: Engine,
    /// `PARTITION BY … ORDER BY … SETTINGS …`.
    pub(super) keys: &'static str,
    /// The `Distributed` table's sharding key.
    pub(super) sharding_key: &'static str,
    /// Partitioned by `day` (retention drops its old partitions).
    pub(super) by_day: bool,
}

const BY_SERVICE: &str = "cityHash64(service)";
/// Debug info by module: a build's chunks and claims on one shard.
const BY_BUILD: &str = "cityHash64(build_id)";

/// Every table, as the migrations leave it (column templates as in `schema.rs`).
pub(super) const TABLES: &[TableDef] = &[
    TableDef {
        name: "schema_migrations",
        columns: "version UInt32, applied_at UInt64",
        engine: Engine::MergeTree,
        keys: "ORDER BY version",
        sharding_key: "version",
        by_day: false,
    },
    TableDef {
        name: "instances",
        columns: "service String, instance_id String, host String, pid UInt32, \
                  label_keys Array(String), label_values Array(String), agent_version String, \
                  started_at UInt64, last_seen UInt64",
        engine: Engine::Replacing(Some("last_seen")),
        keys: "ORDER BY (service, instance_id)",
        sharding_key: BY_SERVICE,
        by_day: false,
    },
    TableDef {
        name: "metric_samples",
        columns: "day Date, service String, metric String, instance_id String, ts UInt64, \
                  value Float64",
        engine: Engine::Replacing(None),
        keys: "PARTITION BY day ORDER BY (service, metric, instance_id, ts)",
        sharding_key: BY_SERVICE,
        by_day: true,
    },
    TableDef {
        name: "triggers",
        columns: "day Date, service String, event_id String, instance_id String, ts UInt64, \
                  metric String, reason String, current_value Float64, window_ts Array(UInt64), \
                  window_values Array(Float64), has_rule UInt8, rule_metric String, \
                  rule_enabled UInt8, rule_min Float64, rule_diff Float64, rule_abs Float64, \
                  rule_max Float64, rule_cooldown_ms UInt64, rule_window UInt32, request_id String",
        engine: Engine::Replacing(None),
        keys: "PARTITION BY day ORDER BY (service, ts, event_id)",
        sharding_key: BY_SERVICE,
        by_day: true,
    },
    TableDef {
        name: "incidents",
        columns: "service String, incident_id String, metric String, severity String, \
                  status String, first_event UInt64, last_event UInt64, has_resolved UInt8, \
                  resolved UInt64, instances Array(String), event_ids Array(String), \
                  related Array(String), version UInt64, skipped_captures UInt64",
        engine: Engine::Replacing(Some("version")),
        keys: "ORDER BY (service, incident_id)",
        sharding_key: BY_SERVICE,
        by_day: false,
    },
    TableDef {
        name: "incident_suspects",
        columns: "service String, incident_id String, computed UInt64, kind String, \
                  comparison String, sick_profiles UInt32, comparison_profiles UInt32, \
                  functions Array(String), sick_shares Array(Float64), \
                  comparison_shares Array(Float64), fingerprint String",
        engine: Engine::Replacing(Some("computed")),
        keys: "ORDER BY (service, incident_id)",
        sharding_key: BY_SERVICE,
        by_day: false,
    },
    TableDef {
        name: "incidents_by_id",
        columns: "incident_id String, service String",
        engine: Engine::Replacing(None),
        keys: "ORDER BY incident_id",
        sharding_key: BY_SERVICE,
        by_day: false,
    },
    TableDef {
        name: "writer_epochs",
        columns: "epoch UInt32, nonce UInt64, claimed_at UInt64, holder String",
        engine: Engine::MergeTree,
        keys: "ORDER BY (epoch, nonce)",
        // All claims of one epoch on one shard, where the claimants read them.
        sharding_key: "epoch",
        by_day: false,
    },
    TableDef {
        name: "locations",
        columns: "day Date, num UInt64{codec:Delta, ZSTD(1)}, kind UInt8, module {lc}, \
                  build_id {lc}, offset UInt64{codec:ZSTD(1)}, frames String{codec:ZSTD(3)}",
        engine: Engine::Replacing(None),
        keys: "PARTITION BY day ORDER BY num",
        // Shared by services: a location's copies land on one shard, where merges fold them.
        sharding_key: "num",
        by_day: true,
    },
    TableDef {
        name: "location_ids",
        columns: "day Date, id FixedString(16), num UInt64",
        engine: Engine::Replacing(None),
        keys: "PARTITION BY day ORDER BY id",
        sharding_key: "cityHash64(id)",
        by_day: true,
    },
    TableDef {
        name: "stacks",
        columns: "day Date, service {lc}, num UInt64{codec:Delta, ZSTD(1)}, \
                  locations String{codec:ZSTD(3)}",
        engine: Engine::Replacing(None),
        keys: "PARTITION BY day ORDER BY (service, num)",
        sharding_key: BY_SERVICE,
        by_day: true,
    },
    TableDef {
        name: "stack_ids",
        columns: "day Date, service {lc}, id FixedString(16), num UInt64",
        engine: Engine::Replacing(None),
        keys: "PARTITION BY day ORDER BY (service, id)",
        sharding_key: BY_SERVICE,
        by_day: true,
    },
    TableDef {
        name: "symbols",
        columns: "id FixedString(16), at UInt64, frames String{codec:ZSTD(3)}",
        engine: Engine::Replacing(Some("at")),
        keys: "ORDER BY id",
        sharding_key: "cityHash64(id)",
        by_day: false,
    },
    TableDef {
        name: "profiles",
        columns: "day Date, service {lc}, started UInt64{codec:Delta, ZSTD(1)}, \
                  profile_id String, event_id String{codec:ZSTD(1)}, instance_id {lc}, \
                  kind {lc}, duration_ns UInt64{codec:T64, ZSTD(1)}, label_keys Array({lc}), \
                  label_values Array(String){codec:ZSTD(1)}, error String{codec:ZSTD(1)}, \
                  size_bytes UInt64{codec:T64, ZSTD(1)}, format {lc}, \
                  header String{codec:ZSTD(3)}, samples String{codec:ZSTD(3)}, \
                  original String{codec:ZSTD(1)}",
        engine: Engine::Replacing(None),
        keys: "PARTITION BY day ORDER BY (service, started, profile_id) \
               SETTINGS index_granularity = 64",
        sharding_key: BY_SERVICE,
        by_day: true,
    },
    TableDef {
        name: "profile_ids",
        columns: "day Date, service {lc}, profile_id String, started UInt64",
        engine: Engine::Replacing(None),
        keys: "PARTITION BY day ORDER BY (service, profile_id)",
        sharding_key: BY_SERVICE,
        by_day: true,
    },
    TableDef {
        name: "parked_events",
        columns: "day Date, parked UInt64, source String, service String, error String, \
                  payload String{codec:ZSTD(1)}",
        engine: Engine::MergeTree,
        keys: "PARTITION BY day ORDER BY parked",
        sharding_key: BY_SERVICE,
        by_day: true,
    },
    TableDef {
        name: "skip_notices",
        columns: "day Date, service String, event_id String, instance_id String, \
                  kinds Array(String), at UInt64",
        engine: Engine::Replacing(None),
        keys: "PARTITION BY day ORDER BY (at, event_id)",
        sharding_key: BY_SERVICE,
        by_day: true,
    },
    // The control plane (`control.rs`).
    TableDef {
        name: "rule_changes",
        columns: "service String, selector String, metric String, version UInt64, \
                  has_text UInt8, rule_text String, changed_at UInt64, author String, \
                  note String",
        engine: Engine::Replacing(None),
        keys: "ORDER BY (service, selector, metric, version)",
        sharding_key: BY_SERVICE,
        by_day: false,
    },
    TableDef {
        name: "capture_pauses",
        columns: "scope String, version UInt64, until UInt64, reason String, \
                  changed_at UInt64, author String, note String",
        engine: Engine::Replacing(None),
        keys: "ORDER BY (scope, version)",
        sharding_key: "cityHash64(scope)",
        by_day: false,
    },
    TableDef {
        name: "capture_requests",
        columns: "service String, request_id String, selector String, has_instance UInt8, \
                  instance_id String, kinds Array(String), purpose String, \
                  has_cpu_duration UInt8, cpu_duration_ms UInt64, window_start UInt64, \
                  window_end UInt64, has_incident UInt8, incident_id String, created UInt64, \
                  author String, note String",
        engine: Engine::Replacing(None),
        keys: "ORDER BY (service, request_id)",
        sharding_key: BY_SERVICE,
        by_day: false,
    },
    TableDef {
        name: "capture_dispatches",
        columns: "request_id String, node_id String, instances Array(String), at UInt64",
        engine: Engine::Replacing(Some("at")),
        keys: "ORDER BY (request_id, node_id)",
        sharding_key: "cityHash64(request_id)",
        by_day: false,
    },
    TableDef {
        name: "capture_outcomes",
        columns: "request_id String, instance_id String, service String, has_event UInt8, \
                  event_id String, captured Array(String), refused_kinds Array(String), \
                  refused_reasons Array(String), refused_details Array(String), at UInt64",
        engine: Engine::Replacing(Some("at")),
        keys: "ORDER BY (request_id, instance_id)",
        // A request's answers all carry its service.
        sharding_key: BY_SERVICE,
        by_day: false,
    },
    TableDef {
        name: "agent_reports",
        columns: "service String, instance_id String, node_id String, connected UInt8, \
                  rules_version UInt64, refused_metrics Array(String), \
                  refused_reasons Array(String), at UInt64",
        engine: Engine::Replacing(Some("at")),
        keys: "ORDER BY (service, instance_id)",
        sharding_key: BY_SERVICE,
        by_day: false,
    },
    TableDef {
        name: "control_nodes",
        columns: "node_id String, agents UInt64, seen UInt64",
        engine: Engine::Replacing(Some("seen")),
        keys: "ORDER BY node_id",
        sharding_key: "cityHash64(node_id)",
        by_day: false,
    },
    // Debug info uploads (`debuginfo.rs`).
    TableDef {
        name: "debuginfo",
        columns: "build_id String, source String, total_bytes UInt64, offset UInt64, \
                  data String{codec:ZSTD(1)}",
        engine: Engine::Replacing(None),
        keys: "ORDER BY (build_id, source, total_bytes, offset)",
        sharding_key: BY_BUILD,
        by_day: false,
    },
    TableDef {
        name: "debuginfo_claims",
        columns: "build_id String, holder String, since UInt64, at UInt64, until UInt64",
        engine: Engine::MergeTree,
        keys: "ORDER BY (build_id, at)",
        sharding_key: BY_BUILD,
        by_day: false,
    },
];

/// `name` as a backquoted identifier.
pub(super) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// `text` as a single-quoted string literal.
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl ClusterConfig {
    /// ` ON CLUSTER name`, or nothing without distributed DDL.
    pub(super) fn on_cluster_clause(&self) -> String {
        if self.on_cluster {
            format!(" ON CLUSTER {}", ident(&self.name))
        } else {
            String::new()
        }
    }

    /// The local table's engine.
    fn local_engine(&self, database: &str, table: &TableDef) -> String {
        let (family, version) = match table.engine {
            Engine::MergeTree => ("MergeTree", None),
            Engine::Replacing(version) => ("ReplacingMergeTree", version),
        };
        if !self.replicated {
            return match version {
                Some(v) => format!("{family}({v})"),
                None => family.to_owned(),
            };
        }
        let path = self
            .zookeeper_path
            .replace("{database}", database)
            .replace("{table}", table.name);
        let mut args = vec![literal(&path), literal(&self.replica_name)];
        args.extend(version.map(str::to_owned));
        format!("Replicated{family}({})", args.join(", "))
    }

    /// `CREATE DATABASE` for the cluster.
    pub fn create_database(&self, database: &str) -> String {
        format!(
            "CREATE DATABASE IF NOT EXISTS {}{}",
            ident(database),
            self.on_cluster_clause()
        )
    }

    /// The DDL of every table for a server of `version`, in order: for each, its local
    /// table, then its `Distributed` table.
    pub fn ddl(&self, database: &str, version: ServerVersion) -> Vec<String> {
        let features = Features::of(version);
        let db = ident(database);
        let on = self.on_cluster_clause();
        let mut out = Vec::with_capacity(TABLES.len() * 2);
        for t in TABLES {
            let local = format!("{}_local", t.name);
            out.push(format!(
                "CREATE TABLE IF NOT EXISTS {db}.{}{on} ({}) ENGINE = {} {}",
                ident(&local),
                render(t.columns, features),
                self.local_engine(database, t),
                t.keys
            ));
            out.push(format!(
                "CREATE TABLE IF NOT EXISTS {db}.{}{on} AS {db}.{} \
                 ENGINE = Distributed({}, {}, {}, {})",
                ident(t.name),
                ident(&local),
                literal(&self.name),
                literal(database),
                literal(&local),
                t.sharding_key
            ));
        }
        out
    }
}

/// The day-partitioned tables (retention drops their old partitions).
fn day_partitioned() -> impl Iterator<Item = &'static str> {
    TABLES.iter().filter(|t| t.by_day).map(|t| t.name)
}

impl ClickHouseStore {
    /// Creates what is missing of the cluster schema (every statement is `IF NOT
    /// EXISTS`) and records its version. A database that holds the single-server schema,
    /// or an older cluster schema, is refused: neither is changed behind the operator's
    /// back.
    pub(super) async fn create_cluster_schema(
        &self,
        cluster: &ClusterConfig,
        database: &str,
    ) -> Result<(), StoreError> {
        let engines: Vec<String> = self
            .client
            .query(
                "SELECT engine FROM system.tables
                 WHERE database = currentDatabase() AND name = 'schema_migrations'",
            )
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        let current = match engines.first().map(String::as_str) {
            None => 0,
            Some("Distributed") => self
                .client
                .query("SELECT toUInt32(max(version)) FROM schema_migrations")
                .fetch_one::<u32>()
                .await
                .map_err(|e| self.err(e))?,
            Some(engine) => {
                return Err(StoreError::Migration {
                    version: CLUSTER_SCHEMA_VERSION,
                    message: format!(
                        "database {database} holds the single-server schema (schema_migrations is {engine}); \
                         give the cluster schema a database of its own ([clickhouse] database)"
                    ),
                })
            }
        };
        if current > CLUSTER_SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported: CLUSTER_SCHEMA_VERSION,
            });
        }
        if current != 0 && current < CLUSTER_SCHEMA_VERSION {
            return Err(StoreError::Migration {
                version: CLUSTER_SCHEMA_VERSION,
                message: format!(
                    "the cluster schema in {database} is version {current}; a cluster is not migrated \
                     automatically: apply the changes of the newer migrations to the *_local tables \
                     ON CLUSTER, then insert version {CLUSTER_SCHEMA_VERSION} into schema_migrations"
                ),
            });
        }
        for sql in cluster.ddl(database, self.version) {
            self.client
                .query(&sql)
                .execute()
                .await
                .map_err(|e| StoreError::Migration {
                    version: CLUSTER_SCHEMA_VERSION,
                    message: format!("{e} (in: {sql})"),
                })?;
        }
        if current == 0 {
            let mut insert = self
                .client
                .insert::<MigrationRow>("schema_migrations")
                .await
                .map_err(|e| self.err(e))?;
            insert
                .write(&MigrationRow {
                    version: CLUSTER_SCHEMA_VERSION,
                    applied_at: now_nanos(),
                })
                .await
                .map_err(|e| self.err(e))?;
            insert.end().await.map_err(|e| self.err(e))?;
            tracing::info!(
                cluster = %cluster.name,
                replicated = cluster.replicated,
                version = CLUSTER_SCHEMA_VERSION,
                "ClickHouse cluster schema created"
            );
        }
        Ok(())
    }

    /// Retention on a cluster: the days older than the cutoff found through the
    /// Distributed tables, their partitions dropped from the local tables (on every
    /// server with distributed DDL).
    pub(super) async fn expire_on_cluster(
        &self,
        cluster: &ClusterConfig,
        cutoff_unix_nanos: u64,
    ) -> Result<Expired, StoreError> {
        let cutoff = date_text(day_of(cutoff_unix_nanos));
        let on = cluster.on_cluster_clause();
        let mut expired = Expired::default();
        for table in day_partitioned() {
            // Only our own table names and dates we format: nothing from outside.
            let days: Vec<u16> = self
                .client
                .query(&format!(
                    "SELECT DISTINCT toUInt16(day) FROM {table} WHERE day < toDate(?) ORDER BY 1"
                ))
                .bind(&cutoff)
                .fetch_all()
                .await
                .map_err(|e| self.err(e))?;
            for day in days {
                self.client
                    .query(&format!(
                        "ALTER TABLE {table}_local{on} DROP PARTITION ID '{}'",
                        date_text(day).replace('-', "")
                    ))
                    .execute()
                    .await
                    .map_err(|e| self.err(e))?;
                expired.partitions += 1;
            }
        }
        let cutoff_start = cutoff_unix_nanos - cutoff_unix_nanos % (86_400 * 1_000_000_000);
        let gone: Vec<String> = self
            .client
            .query(
                "SELECT incident_id FROM incidents GROUP BY incident_id HAVING max(last_event) < ?",
            )
            .bind(cutoff_start)
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        for chunk in gone.chunks(2000) {
            for table in ["incidents_by_id", "incident_suspects", "incidents"] {
                self.client
                    .query(&format!(
                        "ALTER TABLE {table}_local{on} DELETE WHERE has(?, incident_id)"
                    ))
                    .bind(chunk)
                    .execute()
                    .await
                    .map_err(|e| self.err(e))?;
            }
            expired.rows += chunk.len() as u64;
        }
        self.client
            .query(&format!(
                "ALTER TABLE instances_local{on} DELETE WHERE last_seen < ?"
            ))
            .bind(cutoff_start)
            .execute()
            .await
            .map_err(|e| self.err(e))?;
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::{Step, MIGRATIONS};
    use super::*;

    const NEW: ServerVersion = ServerVersion {
        major: 26,
        minor: 9,
    };
    const OLD: ServerVersion = ServerVersion {
        major: 18,
        minor: 16,
    };

    #[test]
    fn tables_describe_the_last_migration() {
        assert_eq!(
            CLUSTER_SCHEMA_VERSION as usize,
            MIGRATIONS.len(),
            "a migration was added: update cluster::TABLES to the schema it leaves, then CLUSTER_SCHEMA_VERSION"
        );
    }

    #[test]
    fn every_migrated_table_has_a_definition() {
        // Each table a migration creates (and does not drop again) is in TABLES.
        let mut created: Vec<String> = Vec::new();
        let mut dropped: Vec<String> = Vec::new();
        for step in MIGRATIONS.iter().flat_map(|m| m.iter()) {
            let Step::Sql(statement) = step else { continue };
            let words: Vec<&str> = statement.split_whitespace().collect();
            match words.as_slice() {
                ["CREATE", "TABLE", "IF", "NOT", "EXISTS", name, ..] => {
                    created.push((*name).to_owned())
                }
                ["DROP", "TABLE", "IF", "EXISTS", name] => dropped.push((*name).to_owned()),
                _ => {}
            }
        }
        for name in created.iter().filter(|n| !dropped.contains(n)) {
            assert!(
                TABLES.iter().any(|t| t.name == name),
                "table {name} of the migrations is missing from cluster::TABLES"
            );
        }
        for t in TABLES {
            assert!(
                t.name == "schema_migrations" || created.contains(&t.name.to_owned()),
                "{} is in cluster::TABLES but no migration creates it",
                t.name
            );
        }
    }

    #[test]
    fn every_table_gets_a_replicated_local_and_a_distributed_table() {
        let cluster = ClusterConfig::new("holmes");
        let ddl = cluster.ddl("holmes", NEW);
        assert_eq!(ddl.len(), TABLES.len() * 2);
        for (t, pair) in TABLES.iter().zip(ddl.chunks(2)) {
            let (local, dist) = (&pair[0], &pair[1]);
            let path = format!(
                "'/clickhouse/tables/{{shard}}/holmes/{}', '{{replica}}'",
                t.name
            );
            assert!(
                local.starts_with(&format!(
                    "CREATE TABLE IF NOT EXISTS `holmes`.`{}_local` ON CLUSTER `holmes` (",
                    t.name
                )),
                "{local}"
            );
            let engine = match t.engine {
                Engine::MergeTree => format!("ENGINE = ReplicatedMergeTree({path})"),
                Engine::Replacing(None) => {
                    format!("ENGINE = ReplicatedReplacingMergeTree({path})")
                }
                Engine::Replacing(Some(v)) => {
                    format!("ENGINE = ReplicatedReplacingMergeTree({path}, {v})")
                }
            };
            assert!(local.contains(&engine), "{local}\nwants {engine}");
            assert!(local.ends_with(t.keys), "{local}");
            assert_eq!(
                dist,
                &format!(
                    "CREATE TABLE IF NOT EXISTS `holmes`.`{0}` ON CLUSTER `holmes` AS `holmes`.`{0}_local` \
                     ENGINE = Distributed('holmes', 'holmes', '{0}_local', {1})",
                    t.name, t.sharding_key
                )
            );
            if t.columns.contains("service ") {
                assert_eq!(t.sharding_key, "cityHash64(service)", "{}", t.name);
            }
        }
        // The version columns survive replication.
        assert!(ddl.iter().any(|d| d.contains(
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/holmes/incidents', '{replica}', version)"
        )));
        assert!(ddl.iter().any(|d| d.contains(
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/holmes/instances', '{replica}', last_seen)"
        )));
    }

    #[test]
    fn without_replication_or_distributed_ddl_the_plain_engines_stay() {
        let cluster = ClusterConfig {
            replicated: false,
            on_cluster: false,
            ..ClusterConfig::new("one")
        };
        let ddl = cluster.ddl("db", OLD);
        assert!(ddl.iter().all(|d| !d.contains("ON CLUSTER")));
        assert!(ddl.iter().all(|d| !d.contains("Replicated")));
        assert!(ddl
            .iter()
            .any(|d| d.contains("`db`.`incidents_local` (")
                && d.contains("ReplacingMergeTree(version)")));
        assert_eq!(
            cluster.create_database("db"),
            "CREATE DATABASE IF NOT EXISTS `db`"
        );
        assert_eq!(
            ClusterConfig::new("c").create_database("db"),
            "CREATE DATABASE IF NOT EXISTS `db` ON CLUSTER `c`"
        );
    }

    #[test]
    fn custom_paths_are_filled_in() {
        let cluster = ClusterConfig {
            zookeeper_path: "/ch/{shard}/x/{table}".to_owned(),
            replica_name: "{replica}-a".to_owned(),
            ..ClusterConfig::new("c")
        };
        let ddl = cluster.ddl("db", OLD);
        assert!(ddl[0]
            .contains("ReplicatedMergeTree('/ch/{shard}/x/schema_migrations', '{replica}-a')"));
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(ident("a`b"), "`a\\`b`");
        assert_eq!(literal("it's"), "'it\\'s'");
    }
}
