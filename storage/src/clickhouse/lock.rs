//! Claims several collectors sharing one ClickHouse agree on without a coordinator: the
//! migration lock and the writers' numbering epochs.
//!
//! Both work the same way, on plain inserts and reads (no transactions, every server
//! version): a writer inserts its claim with a random nonce, then reads the claims; it
//! holds what it claimed only if no other live claim for the same thing is there. Of two
//! writers claiming at once, at least one sees the other (the later insert happens after
//! the earlier one, and each reads after its own insert), and backs off; if both see each
//! other, both back off and try again after a random pause. So two writers never both
//! hold the lock, and never both get an epoch.

use std::time::{Duration, Instant};

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{now_nanos, ClickHouseStore};
use crate::StoreError;

/// A migration-lock claim older than this (not refreshed) belongs to a collector that
/// died: it is ignored.
const LOCK_STALE: Duration = Duration::from_secs(120);
/// How often the holder refreshes its claim.
const LOCK_REFRESH: Duration = Duration::from_secs(20);
/// How long a collector waits for another's migration before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(900);

#[derive(Row, Serialize, Deserialize)]
struct LockRow {
    nonce: u64,
    holder: String,
    at: u64,
    released: u8,
}

#[derive(Row, Serialize, Deserialize)]
struct EpochRow {
    epoch: u32,
    nonce: u64,
    claimed_at: u64,
    holder: String,
}

/// A random nonce (from the standard library's randomly keyed hasher and the clock).
pub(super) fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

/// A pause of 50–550 ms, different for each caller.
fn jitter() -> Duration {
    Duration::from_millis(50 + nonce() % 500)
}

/// The holder of the migration lock; [`MigrationLock::release`] gives it back.
pub(super) struct MigrationLock {
    nonce: u64,
    holder: String,
    refresh: tokio::task::JoinHandle<()>,
}

async fn write_lock(store: &ClickHouseStore, row: &LockRow) -> Result<(), StoreError> {
    let mut insert = store
        .client
        .insert::<LockRow>("schema_lock")
        .await
        .map_err(|e| store.err(e))?;
    insert.write(row).await.map_err(|e| store.err(e))?;
    insert.end().await.map_err(|e| store.err(e))
}

impl ClickHouseStore {
    /// Takes the migration lock, waiting while another collector holds it.
    pub(super) async fn lock_migrations(&self, holder: &str) -> Result<MigrationLock, StoreError> {
        self.client
            .query(
                "CREATE TABLE IF NOT EXISTS schema_lock (
                    nonce UInt64, holder String, at UInt64, released UInt8
                 ) ENGINE = MergeTree ORDER BY (at, nonce)",
            )
            .execute()
            .await
            .map_err(|e| self.err(e))?;
        let started = Instant::now();
        loop {
            let mine = nonce();
            let claim = LockRow {
                nonce: mine,
                holder: holder.to_owned(),
                at: now_nanos(),
                released: 0,
            };
            write_lock(self, &claim).await?;
            let stale_before = now_nanos().saturating_sub(LOCK_STALE.as_nanos() as u64);
            let live: Vec<(u64, String, u64)> = self
                .client
                .query(
                    "SELECT nonce, any(holder), max(at) FROM schema_lock
                     GROUP BY nonce HAVING max(released) = 0 AND max(at) >= ?",
                )
                .bind(stale_before)
                .fetch_all()
                .await
                .map_err(|e| self.err(e))?;
            let others: Vec<&(u64, String, u64)> =
                live.iter().filter(|(n, _, _)| *n != mine).collect();
            if others.is_empty() {
                let store = self.clone();
                let (nonce, name) = (mine, holder.to_owned());
                let refresh = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(LOCK_REFRESH).await;
                        let row = LockRow {
                            nonce,
                            holder: name.clone(),
                            at: now_nanos(),
                            released: 0,
                        };
                        if let Err(err) = write_lock(&store, &row).await {
                            tracing::warn!(error = %err, "cannot refresh the migration lock");
                        }
                    }
                });
                return Ok(MigrationLock {
                    nonce: mine,
                    holder: holder.to_owned(),
                    refresh,
                });
            }
            // Someone else claims it too: back off and let them (or try again).
            write_lock(
                self,
                &LockRow {
                    released: 1,
                    at: now_nanos(),
                    ..claim
                },
            )
            .await?;
            if started.elapsed() > LOCK_WAIT {
                let (_, other, at) = others[0];
                return Err(StoreError::MigrationLocked {
                    holder: other.clone(),
                    since_secs: now_nanos().saturating_sub(*at) / 1_000_000_000,
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            tracing::info!(holder = %others[0].1, "another collector is migrating the store; waiting");
            tokio::time::sleep(jitter()).await;
        }
    }

    /// Gives the migration lock back.
    pub(super) async fn unlock_migrations(&self, lock: MigrationLock) -> Result<(), StoreError> {
        lock.refresh.abort();
        write_lock(
            self,
            &LockRow {
                nonce: lock.nonce,
                holder: lock.holder,
                at: now_nanos(),
                released: 1,
            },
        )
        .await
    }

    /// Claims a numbering epoch no other writer of this database has (see the module
    /// docs and `crate::numbering`).
    pub(super) async fn claim_epoch(&self, holder: &str) -> Result<u32, StoreError> {
        let mut attempt = 0u32;
        loop {
            let max: u32 = self
                .client
                .query("SELECT toUInt32(max(epoch)) FROM writer_epochs")
                .fetch_one()
                .await
                .map_err(|e| self.err(e))?;
            let spread = if attempt == 0 {
                0
            } else {
                (nonce() % 1000) as u32
            };
            let candidate = max
                .checked_add(1 + spread)
                .ok_or(StoreError::NumbersExhausted)?;
            let mine = nonce();
            let mut insert = self
                .client
                .insert::<EpochRow>("writer_epochs")
                .await
                .map_err(|e| self.err(e))?;
            insert
                .write(&EpochRow {
                    epoch: candidate,
                    nonce: mine,
                    claimed_at: now_nanos(),
                    holder: holder.to_owned(),
                })
                .await
                .map_err(|e| self.err(e))?;
            insert.end().await.map_err(|e| self.err(e))?;
            let claims: Vec<u64> = self
                .client
                .query("SELECT nonce FROM writer_epochs WHERE epoch = ?")
                .bind(candidate)
                .fetch_all()
                .await
                .map_err(|e| self.err(e))?;
            if claims.iter().all(|&n| n == mine) {
                return Ok(candidate);
            }
            attempt += 1;
            tokio::time::sleep(jitter()).await;
        }
    }
}
