//! The control plane in the embedded store (migration 7): central rule changes and
//! pauses (one row per change, the history), capture requests, who each node asked and
//! what each agent answered, agents' reports and the nodes' sightings.
//!
//! Lists are stored as length-prefixed text (`<chars>:<text>` repeated), which needs no
//! escaping whatever the strings hold.

use rusqlite::{params, Connection, OptionalExtension};

use super::{nanos_from_sql, nanos_to_sql};
use crate::control::{purpose_from_name, refusal_from_name};
use crate::stored_names::{kind_from_name, metric_from_name};
use crate::{
    AgentReport, CaptureDispatch, CaptureOutcomeRecord, CaptureRequestQuery, CaptureRequestRecord,
    ChangedBy, ControlNode, PauseEdit, PauseRecord, RuleChange, RuleEdit, StoreError,
};
use holmes_proto::{CaptureRefusal, ProfileKind, RuleRefusal, TimeWindow};

/// Migration 7.
pub(super) const SCHEMA: &str = "CREATE TABLE rule_changes (
        service TEXT NOT NULL,
        selector TEXT NOT NULL,
        metric TEXT NOT NULL,
        version INTEGER NOT NULL,
        rule_text TEXT,
        changed_at INTEGER NOT NULL,
        author TEXT NOT NULL,
        note TEXT NOT NULL,
        PRIMARY KEY (service, selector, metric, version)
    ) WITHOUT ROWID;
    CREATE INDEX rule_changes_by_version ON rule_changes (version);
    CREATE TABLE capture_pauses (
        scope TEXT NOT NULL,
        version INTEGER NOT NULL,
        until INTEGER NOT NULL,
        reason TEXT NOT NULL,
        changed_at INTEGER NOT NULL,
        author TEXT NOT NULL,
        note TEXT NOT NULL,
        PRIMARY KEY (scope, version)
    ) WITHOUT ROWID;
    CREATE INDEX capture_pauses_by_version ON capture_pauses (version);
    CREATE TABLE capture_requests (
        request_id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        selector TEXT NOT NULL,
        instance_id TEXT,
        kinds TEXT NOT NULL,
        purpose TEXT NOT NULL,
        cpu_duration_ms INTEGER,
        window_start INTEGER,
        window_end INTEGER,
        incident_id TEXT,
        created INTEGER NOT NULL,
        author TEXT NOT NULL,
        note TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX capture_requests_by_time ON capture_requests (created, request_id);
    CREATE INDEX capture_requests_by_service ON capture_requests (service, created, request_id);
    CREATE TABLE capture_dispatches (
        request_id TEXT NOT NULL,
        node_id TEXT NOT NULL,
        instances TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (request_id, node_id)
    ) WITHOUT ROWID;
    CREATE TABLE capture_outcomes (
        request_id TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        service TEXT NOT NULL,
        event_id TEXT,
        captured TEXT NOT NULL,
        refused TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (request_id, instance_id)
    ) WITHOUT ROWID;
    CREATE TABLE agent_reports (
        service TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        node_id TEXT NOT NULL,
        connected INTEGER NOT NULL,
        rules_version INTEGER NOT NULL,
        refused TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (service, instance_id)
    ) WITHOUT ROWID;
    CREATE TABLE control_nodes (
        node_id TEXT PRIMARY KEY,
        agents INTEGER NOT NULL,
        seen INTEGER NOT NULL
    ) WITHOUT ROWID;";

fn list_to_sql<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let mut out = String::new();
    for item in items {
        let item = item.as_ref();
        out.push_str(&format!("{}:{item}", item.chars().count()));
    }
    out
}

fn list_from_sql(what: &'static str, s: &str) -> Result<Vec<String>, StoreError> {
    let corrupt = || StoreError::Corrupt {
        what,
        value: s.to_owned(),
    };
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (len, tail) = rest.split_once(':').ok_or_else(corrupt)?;
        let len: usize = len.parse().map_err(|_| corrupt())?;
        let end = tail.char_indices().nth(len).map_or(tail.len(), |(i, _)| i);
        if tail[..end].chars().count() != len {
            return Err(corrupt());
        }
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    Ok(out)
}

pub(super) fn kinds_from_sql(what: &'static str, s: &str) -> Result<Vec<ProfileKind>, StoreError> {
    list_from_sql(what, s)?
        .iter()
        .map(|k| kind_from_name(what, k))
        .collect()
}

pub(super) fn kinds_to_sql(kinds: &[ProfileKind]) -> String {
    list_to_sql(kinds.iter().map(|k| k.as_str()))
}

/// The next control version, inside the caller's write transaction.
fn next_version(conn: &Connection) -> Result<u64, StoreError> {
    let max: Option<i64> = conn.query_row(
        "SELECT MAX(v) FROM (SELECT MAX(version) AS v FROM rule_changes
                             UNION ALL SELECT MAX(version) FROM capture_pauses)",
        [],
        |r| r.get(0),
    )?;
    Ok(max.map_or(0, nanos_from_sql) + 1)
}

pub(super) fn change_rules(
    conn: &Connection,
    edits: &[RuleEdit],
    by: &ChangedBy,
) -> Result<u64, StoreError> {
    // In the writer's transaction, begun IMMEDIATE: the write lock first, so that two
    // collectors on one file never read the same highest version.
    let version = next_version(conn)?;
    {
        let mut stmt = conn.prepare_cached(
            "INSERT OR REPLACE INTO rule_changes
                (service, selector, metric, version, rule_text, changed_at, author, note)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for e in edits {
            stmt.execute(params![
                e.service,
                e.selector,
                e.metric.as_str(),
                nanos_to_sql(version),
                e.text,
                nanos_to_sql(by.unix_nanos),
                by.author,
                by.note,
            ])?;
        }
    }
    Ok(version)
}

const RULE_COLUMNS: &str =
    "service, selector, metric, version, rule_text, changed_at, author, note";

type RuleRow = (
    String,
    String,
    String,
    i64,
    Option<String>,
    i64,
    String,
    String,
);

fn rule_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RuleRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn rule_decode(r: RuleRow) -> Result<RuleChange, StoreError> {
    Ok(RuleChange {
        edit: RuleEdit {
            metric: metric_from_name("rule_changes.metric", &r.2)?,
            service: r.0,
            selector: r.1,
            text: r.4,
        },
        version: nanos_from_sql(r.3),
        by: ChangedBy {
            unix_nanos: nanos_from_sql(r.5),
            author: r.6,
            note: r.7,
        },
    })
}

pub(super) fn rules_in_force(
    conn: &Connection,
    service: Option<&str>,
) -> Result<Vec<RuleChange>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RULE_COLUMNS} FROM rule_changes r
         WHERE (?1 IS NULL OR service = ?1)
           AND version = (SELECT MAX(version) FROM rule_changes l
                          WHERE l.service = r.service AND l.selector = r.selector
                            AND l.metric = r.metric)
         ORDER BY service, selector, metric"
    ))?;
    let rows = stmt
        .query_map(params![service], rule_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(rule_decode).collect()
}

pub(super) fn rule_history(
    conn: &Connection,
    service: &str,
    limit: u64,
) -> Result<Vec<RuleChange>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RULE_COLUMNS} FROM rule_changes WHERE service = ?1
         ORDER BY version DESC, selector, metric LIMIT ?2"
    ))?;
    let rows = stmt
        .query_map(params![service, nanos_to_sql(limit)], rule_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(rule_decode).collect()
}

pub(super) fn change_pause(
    conn: &Connection,
    edit: &PauseEdit,
    by: &ChangedBy,
) -> Result<u64, StoreError> {
    let version = next_version(conn)?;
    conn.execute(
        "INSERT OR REPLACE INTO capture_pauses
            (scope, version, until, reason, changed_at, author, note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            edit.scope,
            nanos_to_sql(version),
            nanos_to_sql(edit.until_unix_nanos),
            edit.reason,
            nanos_to_sql(by.unix_nanos),
            by.author,
            by.note,
        ],
    )?;
    Ok(version)
}

pub(super) fn pauses(conn: &Connection) -> Result<Vec<PauseRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT scope, version, until, reason, changed_at, author, note FROM capture_pauses p
         WHERE version = (SELECT MAX(version) FROM capture_pauses l WHERE l.scope = p.scope)
         ORDER BY scope",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(PauseRecord {
            edit: PauseEdit {
                scope: r.get(0)?,
                until_unix_nanos: nanos_from_sql(r.get(2)?),
                reason: r.get(3)?,
            },
            version: nanos_from_sql(r.get(1)?),
            by: ChangedBy {
                unix_nanos: nanos_from_sql(r.get(4)?),
                author: r.get(5)?,
                note: r.get(6)?,
            },
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn control_version(conn: &Connection) -> Result<u64, StoreError> {
    next_version(conn).map(|next| next - 1)
}

pub(super) fn insert_capture_request(
    conn: &Connection,
    r: &CaptureRequestRecord,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO capture_requests
            (request_id, service, selector, instance_id, kinds, purpose, cpu_duration_ms,
             window_start, window_end, incident_id, created, author, note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        r.request_id,
        r.service,
        r.selector,
        r.instance_id,
        kinds_to_sql(&r.kinds),
        r.purpose.as_str(),
        r.cpu_duration
            .map(|d| nanos_to_sql(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        r.window.map(|w| nanos_to_sql(w.start_unix_nanos)),
        r.window.map(|w| nanos_to_sql(w.end_unix_nanos)),
        r.incident_id,
        nanos_to_sql(r.by.unix_nanos),
        r.by.author,
        r.by.note,
    ])?;
    Ok(())
}

const REQUEST_COLUMNS: &str = "request_id, service, selector, instance_id, kinds, purpose,
    cpu_duration_ms, window_start, window_end, incident_id, created, author, note";

/// A `capture_requests` row as read, before its names are decoded.
struct RequestRow {
    record: CaptureRequestRecord,
    kinds: String,
    purpose: String,
}

fn request_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RequestRow> {
    let cpu: Option<i64> = r.get(6)?;
    let start: Option<i64> = r.get(7)?;
    let end: Option<i64> = r.get(8)?;
    Ok(RequestRow {
        record: CaptureRequestRecord {
            request_id: r.get(0)?,
            service: r.get(1)?,
            selector: r.get(2)?,
            instance_id: r.get(3)?,
            kinds: Vec::new(),
            purpose: holmes_proto::CapturePurpose::Operator,
            cpu_duration: cpu.map(|ms| std::time::Duration::from_millis(nanos_from_sql(ms))),
            window: start.zip(end).map(|(s, e)| TimeWindow {
                start_unix_nanos: nanos_from_sql(s),
                end_unix_nanos: nanos_from_sql(e),
            }),
            incident_id: r.get(9)?,
            by: ChangedBy {
                unix_nanos: nanos_from_sql(r.get(10)?),
                author: r.get(11)?,
                note: r.get(12)?,
            },
        },
        kinds: r.get(4)?,
        purpose: r.get(5)?,
    })
}

fn request_decode(row: RequestRow) -> Result<CaptureRequestRecord, StoreError> {
    let mut record = row.record;
    record.kinds = kinds_from_sql("capture_requests.kinds", &row.kinds)?;
    record.purpose = purpose_from_name("capture_requests.purpose", &row.purpose)?;
    Ok(record)
}

pub(super) fn capture_requests(
    conn: &Connection,
    q: &CaptureRequestQuery,
) -> Result<Vec<CaptureRequestRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {REQUEST_COLUMNS} FROM capture_requests
         WHERE (?1 IS NULL OR service = ?1) AND created >= ?2 AND created < ?3
         ORDER BY created DESC, request_id DESC LIMIT ?4"
    ))?;
    let rows = stmt
        .query_map(
            params![
                q.service,
                nanos_to_sql(q.since_unix_nanos),
                nanos_to_sql(q.until_unix_nanos),
                nanos_to_sql(q.limit)
            ],
            request_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(request_decode).collect()
}

pub(super) fn get_capture_request(
    conn: &Connection,
    id: &str,
) -> Result<Option<CaptureRequestRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {REQUEST_COLUMNS} FROM capture_requests WHERE request_id = ?1"
    ))?
    .query_row(params![id], request_row)
    .optional()?
    .map(request_decode)
    .transpose()
}

pub(super) fn record_capture_dispatch(
    conn: &Connection,
    d: &CaptureDispatch,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO capture_dispatches (request_id, node_id, instances, at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        d.request_id,
        d.node_id,
        list_to_sql(&d.instances),
        nanos_to_sql(d.unix_nanos)
    ])?;
    Ok(())
}

/// `?1, ?2, ...` for `n` values.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn capture_dispatches(
    conn: &Connection,
    ids: &[String],
) -> Result<Vec<CaptureDispatch>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT request_id, node_id, instances, at FROM capture_dispatches
         WHERE request_id IN ({}) ORDER BY request_id, node_id",
        placeholders(ids.len())
    ))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(ids), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(request_id, node_id, instances, at)| {
            Ok(CaptureDispatch {
                request_id,
                node_id,
                instances: list_from_sql("capture_dispatches.instances", &instances)?,
                unix_nanos: nanos_from_sql(at),
            })
        })
        .collect()
}

fn refused_to_sql(refused: &[CaptureRefusal]) -> String {
    list_to_sql(
        refused
            .iter()
            .flat_map(|r| [r.kind.as_str(), r.reason.as_str(), r.detail.as_str()]),
    )
}

fn refused_from_sql(s: &str) -> Result<Vec<CaptureRefusal>, StoreError> {
    const WHAT: &str = "capture_outcomes.refused";
    let items = list_from_sql(WHAT, s)?;
    if items.len() % 3 != 0 {
        return Err(StoreError::Corrupt {
            what: WHAT,
            value: s.to_owned(),
        });
    }
    items
        .chunks(3)
        .map(|c| {
            Ok(CaptureRefusal {
                kind: kind_from_name(WHAT, &c[0])?,
                reason: refusal_from_name(WHAT, &c[1])?,
                detail: c[2].clone(),
            })
        })
        .collect()
}

pub(super) fn record_capture_outcome(
    conn: &Connection,
    o: &CaptureOutcomeRecord,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO capture_outcomes
            (request_id, instance_id, service, event_id, captured, refused, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        o.request_id,
        o.instance_id,
        o.service,
        o.event_id,
        kinds_to_sql(&o.captured),
        refused_to_sql(&o.refused),
        nanos_to_sql(o.unix_nanos),
    ])?;
    Ok(())
}

pub(super) fn capture_outcomes(
    conn: &Connection,
    ids: &[String],
) -> Result<Vec<CaptureOutcomeRecord>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT request_id, instance_id, service, event_id, captured, refused, at
         FROM capture_outcomes WHERE request_id IN ({}) ORDER BY request_id, instance_id",
        placeholders(ids.len())
    ))?;
    type Row = (String, String, String, Option<String>, String, String, i64);
    let rows: Vec<Row> = stmt
        .query_map(rusqlite::params_from_iter(ids), |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|r| {
            Ok(CaptureOutcomeRecord {
                captured: kinds_from_sql("capture_outcomes.captured", &r.4)?,
                refused: refused_from_sql(&r.5)?,
                request_id: r.0,
                instance_id: r.1,
                service: r.2,
                event_id: r.3,
                unix_nanos: nanos_from_sql(r.6),
            })
        })
        .collect()
}

pub(super) fn record_agent_report(conn: &Connection, a: &AgentReport) -> Result<(), StoreError> {
    let refused = list_to_sql(
        a.refused
            .iter()
            .flat_map(|r| [r.metric.as_str(), r.reason.as_str()]),
    );
    conn.prepare_cached(
        "INSERT INTO agent_reports
            (service, instance_id, node_id, connected, rules_version, refused, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (service, instance_id) DO UPDATE SET
            node_id = excluded.node_id, connected = excluded.connected,
            rules_version = excluded.rules_version, refused = excluded.refused,
            at = excluded.at
         WHERE excluded.at >= agent_reports.at",
    )?
    .execute(params![
        a.service,
        a.instance_id,
        a.node_id,
        a.connected,
        nanos_to_sql(a.rules_version),
        refused,
        nanos_to_sql(a.unix_nanos),
    ])?;
    Ok(())
}

pub(super) fn agent_reports(
    conn: &Connection,
    service: &str,
) -> Result<Vec<AgentReport>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT service, instance_id, node_id, connected, rules_version, refused, at
         FROM agent_reports WHERE service = ?1 ORDER BY instance_id",
    )?;
    type Row = (String, String, String, bool, i64, String, i64);
    let rows: Vec<Row> = stmt
        .query_map(params![service], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|r| {
            const WHAT: &str = "agent_reports.refused";
            let items = list_from_sql(WHAT, &r.5)?;
            if items.len() % 2 != 0 {
                return Err(StoreError::Corrupt {
                    what: WHAT,
                    value: r.5.clone(),
                });
            }
            let refused = items
                .chunks(2)
                .map(|c| {
                    Ok(RuleRefusal {
                        metric: metric_from_name(WHAT, &c[0])?,
                        reason: c[1].clone(),
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            Ok(AgentReport {
                service: r.0,
                instance_id: r.1,
                node_id: r.2,
                connected: r.3,
                rules_version: nanos_from_sql(r.4),
                refused,
                unix_nanos: nanos_from_sql(r.6),
            })
        })
        .collect()
}

pub(super) fn record_control_node(conn: &Connection, n: &ControlNode) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO control_nodes (node_id, agents, seen) VALUES (?1, ?2, ?3)
         ON CONFLICT (node_id) DO UPDATE SET agents = excluded.agents, seen = excluded.seen
         WHERE excluded.seen >= control_nodes.seen",
    )?
    .execute(params![
        n.node_id,
        nanos_to_sql(n.agents),
        nanos_to_sql(n.seen_unix_nanos)
    ])?;
    Ok(())
}

pub(super) fn control_nodes(conn: &Connection, since: u64) -> Result<Vec<ControlNode>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT node_id, agents, seen FROM control_nodes WHERE seen >= ?1 ORDER BY node_id",
    )?;
    let rows = stmt.query_map(params![nanos_to_sql(since)], |r| {
        Ok(ControlNode {
            node_id: r.get(0)?,
            agents: nanos_from_sql(r.get(1)?),
            seen_unix_nanos: nanos_from_sql(r.get(2)?),
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_roundtrip_whatever_they_hold() {
        let items = vec![
            "a:b".to_owned(),
            String::new(),
            "ünï\ncode 12:".to_owned(),
            "3:x".to_owned(),
        ];
        assert_eq!(list_from_sql("t", &list_to_sql(&items)).unwrap(), items);
        assert!(list_from_sql("t", "").unwrap().is_empty());
        assert!(list_from_sql("t", "5:ab").is_err());
        assert!(list_from_sql("t", "x").is_err());
    }
}
