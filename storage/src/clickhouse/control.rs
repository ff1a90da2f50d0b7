//! The control plane on ClickHouse (migration 9): central rule changes and pauses (a row
//! per change: the history), capture requests, who each node asked and what each agent
//! answered, agents' reports and the nodes' sightings.
//!
//! None of these tables is partitioned or expired: they grow with operators' actions
//! and the fleet's size, not with time. Rows that may arrive twice (a retried insert)
//! fold at merges, and reads take the latest with `LIMIT 1 BY`. Agents' reports and
//! capture outcomes come from the whole fleet at once (every agent answers a rule
//! change within seconds), so they go through batches like metric samples. Capture
//! requests, dispatches and outcomes are in [`captures`].

use clickhouse::Row;
use holmes_proto::RuleRefusal;
use serde::{Deserialize, Serialize};

use super::batch::{BatchConfig, Batcher, Weigh};
use super::schema::Step;
use super::ClickHouseStore;
use crate::stored_names::metric_from_name;
use crate::{
    AgentReport, ChangedBy, ControlNode, PauseEdit, PauseRecord, RuleChange, RuleEdit, StoreError,
};

mod captures;

use captures::OutcomeRow;
pub(super) use captures::{
    capture_dispatches, capture_outcomes, capture_requests, get_capture_request,
    insert_capture_request, record_capture_dispatch, record_capture_outcome,
};

/// Migration 9: the control plane's tables.
pub(super) const MIGRATION: &[Step] = &[
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS rule_changes (
        service String,
        selector String,
        metric String,
        version UInt64,
        has_text UInt8,
        rule_text String,
        changed_at UInt64,
        author String,
        note String
    ) ENGINE = ReplacingMergeTree ORDER BY (service, selector, metric, version)",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS capture_pauses (
        scope String,
        version UInt64,
        until UInt64,
        reason String,
        changed_at UInt64,
        author String,
        note String
    ) ENGINE = ReplacingMergeTree ORDER BY (scope, version)",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS capture_requests (
        service String,
        request_id String,
        selector String,
        has_instance UInt8,
        instance_id String,
        kinds Array(String),
        purpose String,
        has_cpu_duration UInt8,
        cpu_duration_ms UInt64,
        window_start UInt64,
        window_end UInt64,
        has_incident UInt8,
        incident_id String,
        created UInt64,
        author String,
        note String
    ) ENGINE = ReplacingMergeTree ORDER BY (service, request_id)",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS capture_dispatches (
        request_id String,
        node_id String,
        instances Array(String),
        at UInt64
    ) ENGINE = ReplacingMergeTree(at) ORDER BY (request_id, node_id)",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS capture_outcomes (
        request_id String,
        instance_id String,
        service String,
        has_event UInt8,
        event_id String,
        captured Array(String),
        refused_kinds Array(String),
        refused_reasons Array(String),
        refused_details Array(String),
        at UInt64
    ) ENGINE = ReplacingMergeTree(at) ORDER BY (request_id, instance_id)",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS agent_reports (
        service String,
        instance_id String,
        node_id String,
        connected UInt8,
        rules_version UInt64,
        refused_metrics Array(String),
        refused_reasons Array(String),
        at UInt64
    ) ENGINE = ReplacingMergeTree(at) ORDER BY (service, instance_id)",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS control_nodes (
        node_id String,
        agents UInt64,
        seen UInt64
    ) ENGINE = ReplacingMergeTree(seen) ORDER BY node_id",
    ),
];

/// The batched control tables.
pub(super) struct Batches {
    outcomes: Batcher<OutcomeRow>,
    reports: Batcher<ReportRow>,
}

impl Batches {
    pub(super) fn start(client: &clickhouse::Client, config: BatchConfig) -> Self {
        Batches {
            outcomes: Batcher::start(client.clone(), "capture_outcomes", config),
            reports: Batcher::start(client.clone(), "agent_reports", config),
        }
    }
}

#[derive(Row, Serialize, Deserialize)]
struct RuleRow {
    service: String,
    selector: String,
    metric: String,
    version: u64,
    has_text: u8,
    rule_text: String,
    changed_at: u64,
    author: String,
    note: String,
}

impl RuleRow {
    fn decode(self) -> Result<RuleChange, StoreError> {
        Ok(RuleChange {
            edit: RuleEdit {
                metric: metric_from_name("rule_changes.metric", &self.metric)?,
                service: self.service,
                selector: self.selector,
                text: (self.has_text != 0).then_some(self.rule_text),
            },
            version: self.version,
            by: ChangedBy {
                author: self.author,
                note: self.note,
                unix_nanos: self.changed_at,
            },
        })
    }
}

#[derive(Row, Serialize, Deserialize)]
struct PauseRow {
    scope: String,
    version: u64,
    until: u64,
    reason: String,
    changed_at: u64,
    author: String,
    note: String,
}

#[derive(Row, Serialize, Deserialize)]
struct ReportRow {
    service: String,
    instance_id: String,
    node_id: String,
    connected: u8,
    rules_version: u64,
    refused_metrics: Vec<String>,
    refused_reasons: Vec<String>,
    at: u64,
}

impl Weigh for ReportRow {
    fn weight(&self) -> usize {
        self.service.len()
            + self.instance_id.len()
            + self.node_id.len()
            + self
                .refused_metrics
                .iter()
                .chain(&self.refused_reasons)
                .map(|s| s.len() + 1)
                .sum::<usize>()
            + 24
    }
}

#[derive(Row, Serialize, Deserialize)]
struct NodeRow {
    node_id: String,
    agents: u64,
    seen: u64,
}

impl ClickHouseStore {
    /// Rows inserted on their own, not batched (the rare control-plane writes).
    pub(super) async fn insert_rows<T>(&self, table: &str, rows: &[T]) -> Result<(), StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<T>(table)
            .await
            .map_err(|e| self.err(e))?;
        for row in rows {
            insert.write(row).await.map_err(|e| self.err(e))?;
        }
        insert.end().await.map_err(|e| self.err(e))
    }
}

pub(super) async fn control_version(store: &ClickHouseStore) -> Result<u64, StoreError> {
    store
        .client
        .query(
            "SELECT toUInt64(max(v)) FROM (
                SELECT max(version) AS v FROM rule_changes
                UNION ALL SELECT max(version) AS v FROM capture_pauses)",
        )
        .fetch_one()
        .await
        .map_err(|e| store.err(e))
}

pub(super) async fn change_rules(
    store: &ClickHouseStore,
    edits: &[RuleEdit],
    by: &ChangedBy,
) -> Result<u64, StoreError> {
    let version = control_version(store).await? + 1;
    let rows: Vec<RuleRow> = edits
        .iter()
        .map(|e| RuleRow {
            service: e.service.clone(),
            selector: e.selector.clone(),
            metric: e.metric.as_str().to_owned(),
            version,
            has_text: u8::from(e.text.is_some()),
            rule_text: e.text.clone().unwrap_or_default(),
            changed_at: by.unix_nanos,
            author: by.author.clone(),
            note: by.note.clone(),
        })
        .collect();
    store.insert_rows("rule_changes", &rows).await?;
    Ok(version)
}

pub(super) async fn rules_in_force(
    store: &ClickHouseStore,
    service: Option<&str>,
) -> Result<Vec<RuleChange>, StoreError> {
    let rows: Vec<RuleRow> = store
        .client
        .query(
            "SELECT ?fields FROM (
                SELECT * FROM rule_changes WHERE (? = 0 OR service = ?)
                ORDER BY version DESC LIMIT 1 BY service, selector, metric
             ) ORDER BY service, selector, metric",
        )
        .bind(u8::from(service.is_some()))
        .bind(service.unwrap_or(""))
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    rows.into_iter().map(RuleRow::decode).collect()
}

pub(super) async fn rule_history(
    store: &ClickHouseStore,
    service: &str,
    limit: u64,
) -> Result<Vec<RuleChange>, StoreError> {
    let rows: Vec<RuleRow> = store
        .client
        .query(
            "SELECT ?fields FROM rule_changes WHERE service = ?
             ORDER BY version DESC, selector, metric
             LIMIT 1 BY version, selector, metric
             LIMIT ?",
        )
        .bind(service)
        .bind(limit)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    rows.into_iter().map(RuleRow::decode).collect()
}

pub(super) async fn change_pause(
    store: &ClickHouseStore,
    edit: &PauseEdit,
    by: &ChangedBy,
) -> Result<u64, StoreError> {
    let version = control_version(store).await? + 1;
    let row = PauseRow {
        scope: edit.scope.clone(),
        version,
        until: edit.until_unix_nanos,
        reason: edit.reason.clone(),
        changed_at: by.unix_nanos,
        author: by.author.clone(),
        note: by.note.clone(),
    };
    store.insert_rows("capture_pauses", &[row]).await?;
    Ok(version)
}

pub(super) async fn pauses(store: &ClickHouseStore) -> Result<Vec<PauseRecord>, StoreError> {
    let rows: Vec<PauseRow> = store
        .client
        .query(
            "SELECT ?fields FROM (
                SELECT * FROM capture_pauses ORDER BY version DESC LIMIT 1 BY scope
             ) ORDER BY scope",
        )
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    Ok(rows
        .into_iter()
        .map(|r| PauseRecord {
            edit: PauseEdit {
                scope: r.scope,
                until_unix_nanos: r.until,
                reason: r.reason,
            },
            version: r.version,
            by: ChangedBy {
                author: r.author,
                note: r.note,
                unix_nanos: r.changed_at,
            },
        })
        .collect())
}

pub(super) async fn record_agent_report(
    store: &ClickHouseStore,
    a: &AgentReport,
) -> Result<(), StoreError> {
    let row = ReportRow {
        service: a.service.clone(),
        instance_id: a.instance_id.clone(),
        node_id: a.node_id.clone(),
        connected: u8::from(a.connected),
        rules_version: a.rules_version,
        refused_metrics: a
            .refused
            .iter()
            .map(|r| r.metric.as_str().to_owned())
            .collect(),
        refused_reasons: a.refused.iter().map(|r| r.reason.clone()).collect(),
        at: a.unix_nanos,
    };
    let result = store.batches.control.reports.insert(vec![row]).await;
    store.batched("agent_reports", result)
}

pub(super) async fn agent_reports(
    store: &ClickHouseStore,
    service: &str,
) -> Result<Vec<AgentReport>, StoreError> {
    let rows: Vec<ReportRow> = store
        .client
        .query(
            "SELECT ?fields FROM (
                SELECT * FROM agent_reports WHERE service = ?
                ORDER BY at DESC LIMIT 1 BY instance_id
             ) ORDER BY instance_id",
        )
        .bind(service)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    rows.into_iter()
        .map(|r| {
            const WHAT: &str = "agent_reports.refused";
            if r.refused_metrics.len() != r.refused_reasons.len() {
                return Err(StoreError::Corrupt {
                    what: WHAT,
                    value: format!("{:?} / {:?}", r.refused_metrics, r.refused_reasons),
                });
            }
            let refused = r
                .refused_metrics
                .iter()
                .zip(r.refused_reasons)
                .map(|(m, reason)| {
                    Ok(RuleRefusal {
                        metric: metric_from_name(WHAT, m)?,
                        reason,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            Ok(AgentReport {
                service: r.service,
                instance_id: r.instance_id,
                node_id: r.node_id,
                connected: r.connected != 0,
                rules_version: r.rules_version,
                refused,
                unix_nanos: r.at,
            })
        })
        .collect()
}

pub(super) async fn record_control_node(
    store: &ClickHouseStore,
    n: &ControlNode,
) -> Result<(), StoreError> {
    let row = NodeRow {
        node_id: n.node_id.clone(),
        agents: n.agents,
        seen: n.seen_unix_nanos,
    };
    store.insert_rows("control_nodes", &[row]).await
}

pub(super) async fn control_nodes(
    store: &ClickHouseStore,
    since: u64,
) -> Result<Vec<ControlNode>, StoreError> {
    let rows: Vec<NodeRow> = store
        .client
        .query(
            "SELECT ?fields FROM (
                SELECT * FROM control_nodes ORDER BY seen DESC LIMIT 1 BY node_id
             ) WHERE seen >= ? ORDER BY node_id",
        )
        .bind(since)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    Ok(rows
        .into_iter()
        .map(|r| ControlNode {
            node_id: r.node_id,
            agents: r.agents,
            seen_unix_nanos: r.seen,
        })
        .collect())
}
