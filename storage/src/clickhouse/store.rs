//! [`Store`] on ClickHouse: each method, answered here or by the module of its tables
//! ([`super::profiles`], [`super::control`], ...).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{
    control, date_text, day_of, incidents, parked, profiles, retention, skips, stacks, suspects,
    triggers, ClickHouseStore, InstanceRow, MetricReadRow, MetricRow, ServiceRow,
};
use crate::{
    AgentReport, CaptureDispatch, CaptureOutcomeRecord, CaptureRequestQuery, CaptureRequestRecord,
    ChangedBy, ControlNode, DebugInfoChunkRecord, DebugInfoStatus, Expired, IncidentQuery,
    IncidentRecord, IncidentSuspects, InstanceInfo, LocationId, MergeQuery, MergedProfile,
    MetricPoint, MetricQuery, ParkedEvent, PauseEdit, PauseRecord, ProfileMeta, ProfileQuery,
    ProfileRecord, RuleChange, RuleEdit, ServiceSummary, SkipNotice, StackFrame, Store, StoreError,
    TriggerQuery, TriggerRecord,
};

#[async_trait]
impl Store for ClickHouseStore {
    fn backend(&self) -> &'static str {
        "clickhouse"
    }

    async fn upsert_instance(&self, i: &InstanceInfo) -> Result<(), StoreError> {
        let mut insert = self
            .client
            .insert::<InstanceRow>("instances")
            .await
            .map_err(|e| self.err(e))?;
        insert
            .write(&InstanceRow {
                service: i.service.clone(),
                instance_id: i.instance_id.clone(),
                host: i.host.clone(),
                pid: i.pid,
                label_keys: i.labels.keys().cloned().collect(),
                label_values: i.labels.values().cloned().collect(),
                agent_version: i.agent_version.clone(),
                started_at: i.started_at_unix_nanos,
                last_seen: i.last_seen_unix_nanos,
            })
            .await
            .map_err(|e| self.err(e))?;
        insert.end().await.map_err(|e| self.err(e))
    }

    async fn insert_metrics(&self, points: &[MetricPoint]) -> Result<(), StoreError> {
        let rows = points
            .iter()
            .map(|p| MetricRow {
                day: day_of(p.unix_nanos),
                service: p.service.clone(),
                metric: p.metric.as_str(),
                instance_id: p.instance_id.clone(),
                ts: p.unix_nanos,
                value: p.value,
            })
            .collect();
        let result = self.batches.metrics.insert(rows).await;
        self.batched("metric_samples", result)
    }

    async fn list_services(
        &self,
        active_since_unix_nanos: u64,
    ) -> Result<Vec<ServiceSummary>, StoreError> {
        let rows: Vec<ServiceRow> = self
            .client
            .query(
                "SELECT service,
                        toUInt64(uniqExactIf(instance_id, last_seen >= ?)) AS active_instances,
                        max(last_seen) AS last_seen_max
                 FROM instances GROUP BY service ORDER BY service",
            )
            .bind(active_since_unix_nanos)
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| ServiceSummary {
                service: r.service,
                instances: r.active_instances,
                last_seen_unix_nanos: r.last_seen_max,
            })
            .collect())
    }

    async fn list_instances(&self, service: &str) -> Result<Vec<InstanceInfo>, StoreError> {
        let rows: Vec<InstanceRow> = self
            .client
            .query("SELECT ?fields FROM instances FINAL WHERE service = ? ORDER BY instance_id")
            .bind(service)
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|r| {
                if r.label_keys.len() != r.label_values.len() {
                    return Err(StoreError::Corrupt {
                        what: "instances.label_keys/label_values",
                        value: format!("{:?} / {:?}", r.label_keys, r.label_values),
                    });
                }
                let labels: BTreeMap<String, String> =
                    r.label_keys.into_iter().zip(r.label_values).collect();
                Ok(InstanceInfo {
                    service: r.service,
                    instance_id: r.instance_id,
                    host: r.host,
                    pid: r.pid,
                    labels,
                    agent_version: r.agent_version,
                    started_at_unix_nanos: r.started_at,
                    last_seen_unix_nanos: r.last_seen,
                })
            })
            .collect()
    }

    async fn query_metrics(&self, q: &MetricQuery) -> Result<Vec<MetricPoint>, StoreError> {
        if q.since_unix_nanos >= q.until_unix_nanos {
            return Ok(Vec::new());
        }
        // `day` bounds let ClickHouse skip whole partitions; LIMIT 1 BY drops duplicate
        // points that a resend stored twice and no merge has folded yet.
        let rows: Vec<MetricReadRow> = self
            .client
            .query(
                "SELECT instance_id, ts, value FROM metric_samples
                 WHERE service = ? AND metric = ? AND day >= toDate(?) AND day <= toDate(?)
                   AND ts >= ? AND ts < ?
                 ORDER BY instance_id, ts
                 LIMIT 1 BY instance_id, ts
                 LIMIT ?",
            )
            .bind(&q.service)
            .bind(q.metric.as_str())
            .bind(date_text(day_of(q.since_unix_nanos)))
            .bind(date_text(day_of(q.until_unix_nanos.saturating_sub(1))))
            .bind(q.since_unix_nanos)
            .bind(q.until_unix_nanos)
            .bind(q.limit)
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| MetricPoint {
                service: q.service.clone(),
                instance_id: r.instance_id,
                metric: q.metric,
                unix_nanos: r.ts,
                value: r.value,
            })
            .collect())
    }

    async fn insert_triggers(&self, triggers: &[TriggerRecord]) -> Result<(), StoreError> {
        triggers::insert(self, triggers).await
    }

    async fn query_triggers(&self, q: &TriggerQuery) -> Result<Vec<TriggerRecord>, StoreError> {
        triggers::query(self, q).await
    }

    async fn insert_profile(&self, profile: &ProfileRecord) -> Result<(), StoreError> {
        profiles::insert(self, profile).await
    }

    fn stacks_known_by_key(
        &self,
        service: &str,
        started_unix_nanos: u64,
        scope: u64,
        stacks: &[crate::StackByKey<'_>],
        locations: &[crate::LocationByKey<'_>],
    ) -> crate::KnownByKey {
        let day = u32::from(day_of(started_unix_nanos));
        self.numbering
            .known_by_key(service, day, scope, stacks, locations)
    }

    async fn query_profiles(&self, q: &ProfileQuery) -> Result<Vec<ProfileMeta>, StoreError> {
        profiles::query(self, q).await
    }

    async fn get_profile(
        &self,
        service: &str,
        profile_id: &str,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        let mut found =
            profiles::get_many(self, service, std::slice::from_ref(&profile_id.to_owned())).await?;
        Ok(found.pop())
    }

    async fn get_profiles(
        &self,
        service: &str,
        profile_ids: &[String],
    ) -> Result<Vec<ProfileRecord>, StoreError> {
        profiles::get_many(self, service, profile_ids).await
    }

    async fn merge_profiles(&self, query: &MergeQuery) -> Result<MergedProfile, StoreError> {
        profiles::merge(self, query).await
    }

    async fn stack_count(&self, service: &str) -> Result<u64, StoreError> {
        self.client
            .query("SELECT toUInt64(uniqExact(num)) FROM stacks WHERE service = ?")
            .bind(service)
            .fetch_one()
            .await
            .map_err(|e| self.err(e))
    }

    async fn insert_symbols(
        &self,
        symbols: &[(LocationId, Vec<StackFrame>)],
    ) -> Result<(), StoreError> {
        stacks::insert_symbols(self, symbols).await
    }

    async fn unsymbolized_offsets(&self, build_id: &str) -> Result<Vec<u64>, StoreError> {
        self.unsymbolized(build_id).await
    }

    async fn insert_debuginfo(&self, chunks: &[DebugInfoChunkRecord]) -> Result<(), StoreError> {
        self.insert_debuginfo_chunks(chunks).await
    }

    async fn debuginfo_status(
        &self,
        build_id: &str,
    ) -> Result<Option<DebugInfoStatus>, StoreError> {
        self.debuginfo_status_of(build_id).await
    }

    async fn read_debuginfo(&self, build_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read_debuginfo_bytes(build_id).await
    }

    async fn debuginfo_builds(&self) -> Result<Vec<String>, StoreError> {
        self.complete_debuginfo_builds().await
    }

    async fn claim_debuginfo_upload(
        &self,
        build_id: &str,
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        self.claim_upload(build_id, holder, lease).await
    }

    async fn release_debuginfo_upload(
        &self,
        build_id: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        self.release_upload(build_id, holder).await
    }

    async fn upsert_incident(&self, incident: &IncidentRecord) -> Result<(), StoreError> {
        incidents::upsert(self, incident).await
    }

    async fn query_incidents(
        &self,
        query: &IncidentQuery,
    ) -> Result<Vec<IncidentRecord>, StoreError> {
        incidents::query(self, query).await
    }

    async fn get_incident(&self, incident_id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        incidents::get(self, incident_id).await
    }

    async fn put_incident_suspects(&self, s: &IncidentSuspects) -> Result<(), StoreError> {
        suspects::put(self, s).await
    }

    async fn get_incident_suspects(
        &self,
        service: &str,
        incident_id: &str,
    ) -> Result<Option<IncidentSuspects>, StoreError> {
        suspects::get(self, service, incident_id).await
    }

    async fn incidents_with_fingerprint(
        &self,
        service: &str,
        fingerprint: &str,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        suspects::with_fingerprint(self, service, fingerprint, limit).await
    }

    async fn expire_before(&self, cutoff_unix_nanos: u64) -> Result<Expired, StoreError> {
        match &self.cluster {
            Some(cluster) => self.expire_on_cluster(cluster, cutoff_unix_nanos).await,
            None => retention::expire(self, cutoff_unix_nanos).await,
        }
    }

    async fn park_event(&self, event: &ParkedEvent) -> Result<(), StoreError> {
        parked::park(self, event).await
    }

    async fn parked_events(&self, limit: u64) -> Result<Vec<ParkedEvent>, StoreError> {
        parked::list(self, limit).await
    }

    async fn change_rules(&self, edits: &[RuleEdit], by: &ChangedBy) -> Result<u64, StoreError> {
        control::change_rules(self, edits, by).await
    }

    async fn rules_in_force(&self, service: Option<&str>) -> Result<Vec<RuleChange>, StoreError> {
        control::rules_in_force(self, service).await
    }

    async fn rule_history(&self, service: &str, limit: u64) -> Result<Vec<RuleChange>, StoreError> {
        control::rule_history(self, service, limit).await
    }

    async fn change_pause(&self, edit: &PauseEdit, by: &ChangedBy) -> Result<u64, StoreError> {
        control::change_pause(self, edit, by).await
    }

    async fn pauses(&self) -> Result<Vec<PauseRecord>, StoreError> {
        control::pauses(self).await
    }

    async fn control_version(&self) -> Result<u64, StoreError> {
        control::control_version(self).await
    }

    async fn insert_capture_request(
        &self,
        request: &CaptureRequestRecord,
    ) -> Result<(), StoreError> {
        control::insert_capture_request(self, request).await
    }

    async fn capture_requests(
        &self,
        query: &CaptureRequestQuery,
    ) -> Result<Vec<CaptureRequestRecord>, StoreError> {
        control::capture_requests(self, query).await
    }

    async fn get_capture_request(
        &self,
        request_id: &str,
    ) -> Result<Option<CaptureRequestRecord>, StoreError> {
        control::get_capture_request(self, request_id).await
    }

    async fn record_capture_dispatch(&self, dispatch: &CaptureDispatch) -> Result<(), StoreError> {
        control::record_capture_dispatch(self, dispatch).await
    }

    async fn capture_dispatches(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<CaptureDispatch>, StoreError> {
        control::capture_dispatches(self, request_ids).await
    }

    async fn insert_skip_notices(&self, notices: &[SkipNotice]) -> Result<(), StoreError> {
        skips::insert(self, notices).await
    }

    async fn skip_notices(
        &self,
        since_unix_nanos: u64,
        limit: u64,
    ) -> Result<Vec<SkipNotice>, StoreError> {
        skips::since(self, since_unix_nanos, limit).await
    }

    async fn record_capture_outcome(
        &self,
        outcome: &CaptureOutcomeRecord,
    ) -> Result<(), StoreError> {
        control::record_capture_outcome(self, outcome).await
    }

    async fn capture_outcomes(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<CaptureOutcomeRecord>, StoreError> {
        control::capture_outcomes(self, request_ids).await
    }

    async fn record_agent_report(&self, report: &AgentReport) -> Result<(), StoreError> {
        control::record_agent_report(self, report).await
    }

    async fn agent_reports(&self, service: &str) -> Result<Vec<AgentReport>, StoreError> {
        control::agent_reports(self, service).await
    }

    async fn record_control_node(&self, node: &ControlNode) -> Result<(), StoreError> {
        control::record_control_node(self, node).await
    }

    async fn control_nodes(
        &self,
        seen_since_unix_nanos: u64,
    ) -> Result<Vec<ControlNode>, StoreError> {
        control::control_nodes(self, seen_since_unix_nanos).await
    }
}
