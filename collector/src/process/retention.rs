//! Retention: data older than the configured number of days is removed, at start and
//! then every [`RETENTION_INTERVAL`], by whole UTC days (see
//! [`holmes_storage::Store::expire_before`]).

use std::sync::Arc;
use std::time::Duration;

use holmes_storage::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::unix_nanos_now;

/// How often expired days are looked for.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

const NANOS_PER_DAY: u64 = 86_400 * 1_000_000_000;

/// Runs retention for `days` days on `store` until `closed` turns true; `None` when
/// `days` is 0 (keep everything).
pub fn spawn(
    store: Arc<dyn Store>,
    days: u32,
    mut closed: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    if days == 0 {
        tracing::info!("retention off: data is kept forever (retention_days = 0)");
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            let cutoff = unix_nanos_now().saturating_sub(u64::from(days) * NANOS_PER_DAY);
            match store.expire_before(cutoff).await {
                Ok(expired) => tracing::info!(
                    days,
                    cutoff = %crate::clock::rfc3339(cutoff),
                    rows = expired.rows,
                    partitions = expired.partitions,
                    "retention ran"
                ),
                // Tried again at the next interval; nothing is lost by waiting.
                Err(err) => tracing::warn!(days, error = %err, "retention failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(RETENTION_INTERVAL) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
        }
    }))
}
