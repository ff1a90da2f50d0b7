//! Batched inserts: rows from many concurrent callers (one per agent stream) gathered
//! into one `INSERT` per table, so ClickHouse makes one part per batch instead of one
//! per profile.
//!
//! Each table has a [`Batcher`] with its own task. A caller hands over its rows and
//! waits; the task takes submissions until the batch holds [`BatchConfig::max_rows`]
//! rows or [`BatchConfig::max_bytes`] bytes or [`BatchConfig::max_delay`] has passed
//! since its first submission, writes the batch in one `INSERT`, and tells every caller
//! of the batch how it went. When a batch of several callers fails, each caller's rows
//! are written again on their own, so that one caller's bad rows (say, dates spread
//! over more partitions than one insert may touch) fail that caller only, never the
//! other agents sharing its batch. A failed caller has acknowledged nothing yet, so its
//! agent resends: nothing is lost. What waits is bounded: the submission queue holds
//! [`QUEUE_DEPTH`] submissions; beyond it callers wait their turn.

use std::sync::OnceLock;
use std::time::Duration;

use clickhouse::{Client, RowOwned, RowWrite};
use tokio::sync::{mpsc, oneshot};

/// Told of every batch written: its table, rows, how long the `INSERT` took and whether
/// it worked (the collector's `/metrics`).
pub type BatchObserver = fn(table: &'static str, rows: usize, took: Duration, ok: bool);

static OBSERVER: OnceLock<BatchObserver> = OnceLock::new();

/// Sets the process's [`BatchObserver`]; `false` if one was set already.
pub fn set_batch_observer(observer: BatchObserver) -> bool {
    OBSERVER.set(observer).is_ok()
}

/// Submissions that may wait for a batcher's task.
pub(super) const QUEUE_DEPTH: usize = 1024;

/// When a batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Rows that fill a batch.
    pub max_rows: usize,
    /// Approximate bytes that fill a batch.
    pub max_bytes: usize,
    /// How long the first rows of a batch wait for company.
    pub max_delay: Duration,
}

/// Default rows per batch.
pub const DEFAULT_BATCH_ROWS: usize = 200_000;
/// Default bytes per batch.
pub const DEFAULT_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Default wait for company.
pub const DEFAULT_BATCH_DELAY: Duration = Duration::from_millis(50);

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: DEFAULT_BATCH_ROWS,
            max_bytes: DEFAULT_BATCH_BYTES,
            max_delay: DEFAULT_BATCH_DELAY,
        }
    }
}

/// Rows that know their approximate encoded size.
pub(super) trait Weigh {
    /// Bytes this row takes in an `INSERT`, roughly.
    fn weight(&self) -> usize;
}

struct Submission<T> {
    rows: Vec<T>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The batched inserts into one table.
pub(super) struct Batcher<T> {
    table: &'static str,
    tx: mpsc::Sender<Submission<T>>,
}

impl<T> std::fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("table", &self.table)
            .finish()
    }
}

impl<T> Batcher<T>
where
    T: RowOwned + RowWrite + Weigh + Send + Sync + 'static,
{
    /// Starts the task writing to `table` through `client`; it ends when the batcher is
    /// dropped. Needs a tokio runtime.
    pub(super) fn start(client: Client, table: &'static str, config: BatchConfig) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(client, table, config, rx));
        Batcher { table, tx }
    }

    /// Writes `rows` with whatever else arrives meanwhile; returns once they are stored,
    /// or with the error of the `INSERT` that carried them.
    pub(super) async fn insert(&self, rows: Vec<T>) -> Result<(), String> {
        if rows.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Submission { rows, done })
            .await
            .map_err(|_| format!("the batcher of {} has stopped", self.table))?;
        wait.await
            .map_err(|_| format!("the batcher of {} stopped before writing", self.table))?
    }
}

async fn run<T>(
    client: Client,
    table: &'static str,
    config: BatchConfig,
    mut rx: mpsc::Receiver<Submission<T>>,
) where
    T: RowOwned + RowWrite + Weigh + Send + Sync + 'static,
{
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + config.max_delay;
        let mut bytes: usize = first.rows.iter().map(Weigh::weight).sum();
        let mut count = first.rows.len();
        let mut submissions = vec![first];
        while count < config.max_rows && bytes < config.max_bytes {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => {
                    bytes = bytes.saturating_add(s.rows.iter().map(Weigh::weight).sum());
                    count += s.rows.len();
                    submissions.push(s);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let result = write(
            &client,
            table,
            submissions.iter().flat_map(|s| s.rows.iter()),
        )
        .await;
        if let Some(observe) = OBSERVER.get() {
            observe(table, count, started.elapsed(), result.is_ok());
        }
        match result {
            Ok(()) => {
                tracing::debug!(
                    table,
                    rows = count,
                    bytes,
                    callers = submissions.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "batch written"
                );
                for s in submissions {
                    let _ = s.done.send(Ok(()));
                }
            }
            Err(err) if submissions.len() == 1 => {
                tracing::warn!(table, rows = count, error = %err, "batch failed; its caller will be resent");
                for s in submissions {
                    let _ = s.done.send(Err(err.clone()));
                }
            }
            Err(err) => {
                // Whose rows failed it? Each caller's again, alone.
                tracing::warn!(table, rows = count, callers = submissions.len(), error = %err, "batch failed; writing each caller's rows alone");
                for s in submissions {
                    let alone = write(&client, table, s.rows.iter()).await;
                    if let Err(e) = &alone {
                        tracing::warn!(table, rows = s.rows.len(), error = %e, "a caller's rows failed alone; it will be resent");
                    }
                    let _ = s.done.send(alone);
                }
            }
        }
    }
}

async fn write<'a, T>(
    client: &Client,
    table: &str,
    rows: impl Iterator<Item = &'a T>,
) -> Result<(), String>
where
    T: RowOwned + RowWrite + 'a,
{
    let mut insert = client.insert::<T>(table).await.map_err(|e| e.to_string())?;
    for row in rows {
        insert.write(row).await.map_err(|e| e.to_string())?;
    }
    insert.end().await.map_err(|e| e.to_string())
}
