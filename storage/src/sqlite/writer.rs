//! Group commit: every write of the embedded store runs on one writer thread, and the
//! writes waiting together share one transaction and so one `fsync`.
//!
//! With `synchronous = FULL` (the default), a commit is durable when it returns — what
//! the collector acknowledges is on disk, even after a power loss — and costs an
//! `fsync` of the write-ahead log. Committing each agent's message on its own would cap
//! the store at one message per `fsync`; here the writer takes every job queued (up to
//! [`MAX_GROUP`]), runs each in a savepoint of one transaction (a job that fails is
//! rolled back alone and fails alone), commits once, and only then answers each job's
//! caller. A failed commit fails every job of the group, whose callers acknowledged
//! nothing yet.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::StoreError;

/// Most jobs committed together.
pub(super) const MAX_GROUP: usize = 256;
/// Jobs that may wait for the writer; beyond it callers wait their turn.
const QUEUE_DEPTH: usize = 4096;

type Outcome = Result<Box<dyn Any + Send>, StoreError>;
type Run = Box<dyn FnOnce(&Connection) -> Outcome + Send>;

struct Job {
    run: Run,
    done: oneshot::Sender<Outcome>,
}

/// The handle of the writer thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::SyncSender<Job>,
    commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(super) fn start(conn: Connection) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_DEPTH);
        let commits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&commits);
        std::thread::Builder::new()
            .name("holmes-sqlite-writer".to_owned())
            .spawn(move || run(&conn, &rx, &counted))
            .map_err(|e| StoreError::Worker(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { tx, commits })
    }

    /// Transactions committed so far (each one `fsync` with `synchronous = FULL`).
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `f` in the next group's transaction; returns its result once the group is
    /// committed (durable), or the error of `f` or of the commit.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, wait) = oneshot::channel();
        let job = Job {
            run: Box::new(move |conn| f(conn).map(|t| Box::new(t) as Box<dyn Any + Send>)),
            done,
        };
        let stopped = || StoreError::Worker("the writer thread has stopped".to_owned());
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(job)) => {
                // A full queue blocks the sender: wait on the blocking pool, not the
                // runtime.
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(job))
                    .await
                    .map_err(|e| StoreError::Worker(e.to_string()))?
                    .map_err(|_| stopped())?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
        }
        let outcome = wait.await.map_err(|_| {
            StoreError::Worker("the writer thread stopped before committing".to_owned())
        })??;
        outcome
            .downcast::<T>()
            .map(|t| *t)
            .map_err(|_| StoreError::Worker("a job's result has the wrong type".to_owned()))
    }
}

fn run(conn: &Connection, rx: &mpsc::Receiver<Job>, commits: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let count = jobs.len();
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(count);
        let mut dones = Vec::with_capacity(count);
        let begun = conn.execute_batch("BEGIN IMMEDIATE");
        for job in jobs {
            dones.push(job.done);
            if let Err(e) = &begun {
                outcomes.push(Err(clone_error(e)));
                continue;
            }
            let outcome = match conn.execute_batch("SAVEPOINT job") {
                Ok(()) => {
                    let outcome = (job.run)(conn);
                    let end = if outcome.is_ok() {
                        conn.execute_batch("RELEASE job")
                    } else {
                        conn.execute_batch("ROLLBACK TO job; RELEASE job")
                    };
                    match end {
                        Ok(()) => outcome,
                        Err(e) => Err(StoreError::Sqlite(e)),
                    }
                }
                Err(e) => Err(StoreError::Sqlite(e)),
            };
            outcomes.push(outcome);
        }
        if begun.is_ok() {
            let committed = conn.execute_batch("COMMIT");
            if committed.is_ok() {
                commits.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = committed {
                tracing::warn!(jobs = count, error = %e, "embedded store commit failed; its writes are not acknowledged");
                let _ = conn.execute_batch("ROLLBACK");
                for o in &mut outcomes {
                    if o.is_ok() {
                        *o = Err(clone_error(&e));
                    }
                }
            }
        }
        for (done, outcome) in dones.into_iter().zip(outcomes) {
            let _ = done.send(outcome);
        }
    }
}

/// A copy of a SQLite error for every job it fails (rusqlite's errors are not `Clone`).
fn clone_error(e: &rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => StoreError::Worker(format!("the group's transaction failed: {other}")),
    }
}
