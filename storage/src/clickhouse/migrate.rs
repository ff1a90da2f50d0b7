//! Running the single-server schema's migrations ([`super::schema::MIGRATIONS`]) under
//! the migration lock, and the TTL a current server gets.

use std::sync::Arc;

use clickhouse::Row;
use serde::Deserialize;

use super::schema::{render, Features, Step, EXPIRING_TABLES, MIGRATIONS};
use super::{convert, now_nanos, ClickHouseStore, MigrationRow};
use crate::numbering::Numbering;
use crate::StoreError;

/// The column each table that migration 8 retires had only in its earlier layout.
fn earlier_layout_column(table: &str) -> &'static str {
    match table {
        "profiles" => "data",
        _ => "functions",
    }
}

#[derive(Row, Deserialize)]
struct ColumnCount {
    n: u64,
}

impl ClickHouseStore {
    async fn has_column(&self, table: &str, column: &str) -> Result<bool, StoreError> {
        let c: ColumnCount = self
            .client
            .query(
                "SELECT count() AS n FROM system.columns
                 WHERE database = currentDatabase() AND table = ? AND name = ?",
            )
            .bind(table)
            .bind(column)
            .fetch_one()
            .await
            .map_err(|e| self.err(e))?;
        Ok(c.n > 0)
    }

    async fn execute(&self, version: u32, sql: &str) -> Result<(), StoreError> {
        self.client
            .query(sql)
            .execute()
            .await
            .map_err(|e| StoreError::Migration {
                version,
                message: e.to_string(),
            })
    }

    async fn run_step(
        &self,
        version: u32,
        step: Step,
        features: Features,
    ) -> Result<(), StoreError> {
        match step {
            Step::Sql(sql) => self.execute(version, &render(sql, features)).await,
            Step::Rebuild { table, create } => {
                let old = format!("{table}_old5");
                // Swap first: from the rename on, writers write into the new table, and
                // whatever they wrote before is in the old one, copied below.
                if !convert::exists(self, &old).await? {
                    self.execute(version, create).await?;
                    self.execute(
                        version,
                        &format!("RENAME TABLE {table} TO {old}, {table}_new TO {table}"),
                    )
                    .await?;
                }
                self.execute(version, &format!("INSERT INTO {table} SELECT * FROM {old}"))
                    .await?;
                self.execute(version, &format!("DROP TABLE {old}")).await
            }
            Step::Retire(table) => {
                let retired = format!("{table}_old");
                if convert::exists(self, table).await?
                    && self.has_column(table, earlier_layout_column(table)).await?
                    && !convert::exists(self, &retired).await?
                {
                    self.execute(version, &format!("RENAME TABLE {table} TO {retired}"))
                        .await?;
                }
                Ok(())
            }
            Step::AddColumn {
                table,
                name,
                definition,
            } => {
                if self.has_column(table, name).await? {
                    return Ok(());
                }
                self.execute(
                    version,
                    &format!("ALTER TABLE {table} ADD COLUMN {definition}"),
                )
                .await
            }
            Step::ConvertProfiles => {
                // Converted profiles are numbered under an epoch of their own.
                let epoch = self.claim_epoch("migration 8").await?;
                let converter = ClickHouseStore {
                    numbering: Arc::new(Numbering::new(epoch)),
                    ..self.clone()
                };
                let converted =
                    convert::convert(&converter)
                        .await
                        .map_err(|e| StoreError::Migration {
                            version,
                            message: e.to_string(),
                        })?;
                if converted > 0 {
                    tracing::info!(
                        profiles = converted,
                        "ClickHouse: profiles converted to the normalized layout"
                    );
                }
                Ok(())
            }
        }
    }

    async fn applied_version(&self) -> Result<u32, StoreError> {
        let applied: Vec<u32> = self
            .client
            .query("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        Ok(applied.last().copied().unwrap_or(0))
    }

    /// Applies the migrations the database lacks, holding the migration lock so that
    /// collectors opening it at once migrate it once; then sets the TTL on servers that
    /// have it.
    pub(super) async fn migrate(&self, retention_days: Option<u32>) -> Result<(), StoreError> {
        self.client
            .query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, applied_at UInt64)
                 ENGINE = MergeTree ORDER BY version",
            )
            .execute()
            .await
            .map_err(|e| self.err(e))?;
        let supported = MIGRATIONS.len() as u32;
        let current = self.applied_version().await?;
        if current > supported {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported,
            });
        }
        let features = Features::of(self.version);
        if current < supported {
            let lock = self.lock_migrations(&holder()).await?;
            let result = self.migrate_locked(supported, features).await;
            let unlocked = self.unlock_migrations(lock).await;
            result?;
            unlocked?;
        }
        if let (true, Some(days @ 1..)) = (features.ttl, retention_days) {
            let ttl = format!("toIntervalDay({days})");
            for table in EXPIRING_TABLES {
                let has: ColumnCount = self
                    .client
                    .query(
                        "SELECT count() AS n FROM system.tables
                         WHERE database = currentDatabase() AND name = ?
                           AND position(create_table_query, ?) > 0",
                    )
                    .bind(*table)
                    .bind(format!("TTL day + {ttl}"))
                    .fetch_one()
                    .await
                    .map_err(|e| self.err(e))?;
                if has.n == 0 {
                    // Existing parts keep their rows until the hourly retention drops
                    // their day: no rewrite of the whole table at open.
                    self.execute(
                        supported,
                        &format!(
                            "ALTER TABLE {table} MODIFY TTL day + {ttl}
                             SETTINGS materialize_ttl_after_modify = 0"
                        ),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn migrate_locked(&self, supported: u32, features: Features) -> Result<(), StoreError> {
        // Read again under the lock: another collector may have migrated meanwhile.
        let current = self.applied_version().await?;
        for (i, steps) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let version = i as u32 + 1;
            for step in *steps {
                self.run_step(version, *step, features).await?;
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
            tracing::info!(version, of = supported, "ClickHouse schema migrated");
        }
        Ok(())
    }
}

/// Who holds the lock, for the other collectors' logs.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!("{host} pid {}", std::process::id())
}
