//! The persisted outbox: one SQLite row per (alert, hook), written before `notify`
//! returns and updated by the delivery task, so that a restart loses nothing and an
//! alert queued twice (same incident, kind and version) is stored once.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::AlertError;

/// File name of the outbox inside the data directory.
pub const OUTBOX_FILE: &str = "alerts.sqlite3";

/// Finished rows (delivered or failed) are kept this long, so that an alert re-queued
/// soon after is still recognised, then removed.
pub(crate) const KEEP_FINISHED_MS: i64 = 7 * 24 * 60 * 60 * 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alerts (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id        TEXT    NOT NULL,
    hook            TEXT    NOT NULL,
    incident_id     TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    failed_at       INTEGER,
    last_error      TEXT,
    UNIQUE (alert_id, hook)
);
CREATE INDEX IF NOT EXISTS alerts_pending_order
    ON alerts (hook, incident_id, seq) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX IF NOT EXISTS alerts_pending_due
    ON alerts (next_attempt_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX IF NOT EXISTS alerts_finished
    ON alerts (coalesce(delivered_at, failed_at)) WHERE delivered_at IS NOT NULL OR failed_at IS NOT NULL;
";

/// An alert for one hook, about to be queued.
#[derive(Debug, Clone)]
pub(crate) struct NewAlert {
    pub(crate) alert_id: String,
    pub(crate) hook: String,
    pub(crate) incident_id: String,
    pub(crate) kind: &'static str,
    pub(crate) body: String,
}

/// A queued alert whose time has come.
#[derive(Debug, Clone)]
pub(crate) struct DueAlert {
    pub(crate) seq: i64,
    pub(crate) alert_id: String,
    pub(crate) hook: String,
    pub(crate) incident_id: String,
    pub(crate) kind: String,
    pub(crate) body: String,
    pub(crate) created_at_ms: i64,
    pub(crate) attempts: u32,
}

/// Counts of the outbox's rows by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Waiting for (another) attempt.
    pub pending: u64,
    /// Accepted by their hook.
    pub delivered: u64,
    /// Refused for good, given up, or for a hook no longer configured.
    pub failed: u64,
}

/// The outbox file, open.
pub(crate) struct Outbox {
    conn: Connection,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Outbox {
    /// Opens (creating if needed) the outbox in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Outbox, AlertError> {
        let path = dir.join(OUTBOX_FILE);
        let open_error = |source| AlertError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|source| AlertError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let conn = Connection::open(&path).map_err(open_error)?;
        // FULL: a committed alert survives a power cut, not only a crash.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_error)?;
        conn.execute_batch(SCHEMA).map_err(open_error)?;
        Ok(Outbox { conn })
    }

    /// Queues `alerts` in one transaction; an (alert, hook) already there is left alone.
    /// Returns how many were new. Refuses when the pending rows would exceed `max_pending`.
    pub(crate) fn enqueue(
        &mut self,
        alerts: &[NewAlert],
        now_ms: i64,
        max_pending: u64,
    ) -> Result<usize, AlertError> {
        let tx = self.conn.transaction()?;
        let pending = count(tx.query_row(
            "SELECT count(*) FROM alerts WHERE delivered_at IS NULL AND failed_at IS NULL",
            [],
            |r| r.get(0),
        )?);
        let wanted = u64::try_from(alerts.len()).unwrap_or(u64::MAX);
        if pending.saturating_add(wanted) > max_pending {
            let fresh = alerts
                .iter()
                .map(|a| {
                    tx.query_row(
                        "SELECT 1 FROM alerts WHERE alert_id = ?1 AND hook = ?2",
                        params![a.alert_id, a.hook],
                        |_| Ok(()),
                    )
                    .optional()
                    .map(|found| found.is_none())
                })
                .collect::<Result<Vec<bool>, _>>()?;
            // Re-queuing what is already there needs no room.
            if fresh.iter().any(|f| *f) {
                return Err(AlertError::OutboxFull {
                    pending,
                    max: max_pending,
                });
            }
            return Ok(0);
        }
        let mut inserted = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO alerts
                     (alert_id, hook, incident_id, kind, body, created_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            )?;
            for a in alerts {
                inserted += insert.execute(params![
                    a.alert_id,
                    a.hook,
                    a.incident_id,
                    a.kind,
                    a.body,
                    now_ms
                ])?;
            }
        }
        tx.commit()?;
        Ok(inserted)
    }

    /// Pending alerts due by `now_ms`, oldest first, at most `limit`; an alert waits while
    /// an earlier one of the same incident for the same hook is pending, so that a hook
    /// never hears of a resolve before the open.
    pub(crate) fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<DueAlert>, AlertError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, alert_id, hook, incident_id, kind, body, created_at, attempts
             FROM alerts o
             WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= ?1
               AND NOT EXISTS (
                   SELECT 1 FROM alerts p
                   WHERE p.hook = o.hook AND p.incident_id = o.incident_id AND p.seq < o.seq
                     AND p.delivered_at IS NULL AND p.failed_at IS NULL)
             ORDER BY seq
             LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![now_ms, limit], |r| {
            Ok(DueAlert {
                seq: r.get(0)?,
                alert_id: r.get(1)?,
                hook: r.get(2)?,
                incident_id: r.get(3)?,
                kind: r.get(4)?,
                body: r.get(5)?,
                created_at_ms: r.get(6)?,
                attempts: u32::try_from(r.get::<_, i64>(7)?).unwrap_or(u32::MAX),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// When the next pending alert is due, if any is pending.
    pub(crate) fn next_due(&self) -> Result<Option<i64>, AlertError> {
        Ok(self.conn.query_row(
            "SELECT min(next_attempt_at) FROM alerts WHERE delivered_at IS NULL AND failed_at IS NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// Records a delivery.
    pub(crate) fn delivered(&self, seq: i64, attempts: u32, now_ms: i64) -> Result<(), AlertError> {
        self.conn.execute(
            "UPDATE alerts SET delivered_at = ?2, attempts = ?3, last_error = NULL WHERE seq = ?1",
            params![seq, now_ms, attempts],
        )?;
        Ok(())
    }

    /// Records a failed attempt to be tried again at `next_ms`.
    pub(crate) fn retry(
        &self,
        seq: i64,
        attempts: u32,
        next_ms: i64,
        error: &str,
    ) -> Result<(), AlertError> {
        self.conn.execute(
            "UPDATE alerts SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 WHERE seq = ?1",
            params![seq, attempts, next_ms, error],
        )?;
        Ok(())
    }

    /// Records that the alert will not be delivered.
    pub(crate) fn failed(
        &self,
        seq: i64,
        attempts: u32,
        now_ms: i64,
        error: &str,
    ) -> Result<(), AlertError> {
        self.conn.execute(
            "UPDATE alerts SET attempts = ?2, failed_at = ?3, last_error = ?4 WHERE seq = ?1",
            params![seq, attempts, now_ms, error],
        )?;
        Ok(())
    }

    /// Fails the pending alerts of hooks not in `hooks` (removed or renamed since they
    /// were queued); returns how many, by hook.
    pub(crate) fn fail_unknown_hooks(
        &self,
        hooks: &[String],
        now_ms: i64,
    ) -> Result<Vec<(String, u64)>, AlertError> {
        let mut stmt = self.conn.prepare(
            "SELECT hook, count(*) FROM alerts
             WHERE delivered_at IS NULL AND failed_at IS NULL GROUP BY hook",
        )?;
        let pending = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, count(r.get(1)?))))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut gone = Vec::new();
        for (hook, n) in pending {
            if hooks.contains(&hook) {
                continue;
            }
            self.conn.execute(
                "UPDATE alerts SET failed_at = ?2, last_error = ?3
                 WHERE hook = ?1 AND delivered_at IS NULL AND failed_at IS NULL",
                params![
                    hook,
                    now_ms,
                    format!("hook {hook:?} is no longer configured")
                ],
            )?;
            gone.push((hook, n));
        }
        Ok(gone)
    }

    /// Removes finished rows older than `keep_ms`, and the oldest finished rows beyond
    /// `keep_rows`; returns how many went.
    pub(crate) fn prune(
        &self,
        now_ms: i64,
        keep_ms: i64,
        keep_rows: u64,
    ) -> Result<usize, AlertError> {
        let mut removed = self.conn.execute(
            "DELETE FROM alerts
             WHERE (delivered_at IS NOT NULL OR failed_at IS NOT NULL)
               AND coalesce(delivered_at, failed_at) < ?1",
            params![now_ms.saturating_sub(keep_ms)],
        )?;
        removed += self.conn.execute(
            "DELETE FROM alerts WHERE seq IN (
                 SELECT seq FROM alerts
                 WHERE delivered_at IS NOT NULL OR failed_at IS NOT NULL
                 ORDER BY coalesce(delivered_at, failed_at) DESC
                 LIMIT -1 OFFSET ?1)",
            params![i64::try_from(keep_rows).unwrap_or(i64::MAX)],
        )?;
        Ok(removed)
    }

    /// Rows by state.
    pub(crate) fn stats(&self) -> Result<OutboxStats, AlertError> {
        Ok(self.conn.query_row(
            "SELECT
                 coalesce(sum(delivered_at IS NULL AND failed_at IS NULL), 0),
                 coalesce(sum(delivered_at IS NOT NULL), 0),
                 coalesce(sum(failed_at IS NOT NULL), 0)
             FROM alerts",
            [],
            |r| {
                Ok(OutboxStats {
                    pending: count(r.get(0)?),
                    delivered: count(r.get(1)?),
                    failed: count(r.get(2)?),
                })
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str, hook: &str, incident: &str) -> NewAlert {
        NewAlert {
            alert_id: id.to_owned(),
            hook: hook.to_owned(),
            incident_id: incident.to_owned(),
            kind: "opened",
            body: "{}".to_owned(),
        }
    }

    #[test]
    fn queues_once_keeps_per_incident_order_and_caps_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path()).unwrap();
        let first = [
            alert("i1-opened-v1", "a", "i1"),
            alert("i1-opened-v1", "b", "i1"),
        ];
        assert_eq!(o.enqueue(&first, 10, 3).unwrap(), 2);
        assert_eq!(
            o.enqueue(&first, 11, 3).unwrap(),
            0,
            "same alert queued once"
        );
        assert_eq!(
            o.enqueue(&[alert("i1-resolved-v2", "a", "i1")], 12, 3)
                .unwrap(),
            1
        );
        let full = o
            .enqueue(&[alert("i2-opened-v1", "a", "i2")], 13, 3)
            .unwrap_err();
        assert_eq!(full.to_string(), "alert outbox full: 3 alerts pending (alerts.max_pending = 3); are the hooks reachable?");
        assert_eq!(
            o.enqueue(&first, 14, 3).unwrap(),
            0,
            "a re-queue needs no room"
        );

        let due = o.due(100, 10).unwrap();
        let ids: Vec<_> = due
            .iter()
            .map(|d| (d.alert_id.as_str(), d.hook.as_str()))
            .collect();
        assert_eq!(
            ids,
            [("i1-opened-v1", "a"), ("i1-opened-v1", "b")],
            "resolve waits for open"
        );
        o.retry(due[0].seq, 1, 500, "HTTP 500").unwrap();
        o.delivered(due[1].seq, 1, 101).unwrap();
        assert!(
            o.due(200, 10).unwrap().is_empty(),
            "resolve waits for its open's retry"
        );
        assert_eq!(o.next_due().unwrap(), Some(12));
        o.delivered(due[0].seq, 2, 501).unwrap();
        let due = o.due(600, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].alert_id, "i1-resolved-v2");

        let gone = o.fail_unknown_hooks(&["b".to_owned()], 700).unwrap();
        assert_eq!(gone, [("a".to_owned(), 1)]);
        assert_eq!(
            o.stats().unwrap(),
            OutboxStats {
                pending: 0,
                delivered: 2,
                failed: 1
            }
        );
        assert_eq!(o.prune(800, 1_000, 1).unwrap(), 2);
        assert_eq!(
            o.stats().unwrap(),
            OutboxStats {
                pending: 0,
                delivered: 0,
                failed: 1
            }
        );
        assert_eq!(o.prune(10_000, 1_000, 10).unwrap(), 1);
    }
}
