//! [`Store`] on SQLite: each method, answered here or by the module of its tables.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;

use super::{
    control, debuginfo, incidents, labels_from_sql, labels_to_sql, migrate, nanos_from_sql,
    nanos_to_sql, profiles, skips, suspects, triggers, SqliteStore, NANOS_PER_DAY,
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
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn upsert_instance(&self, instance: &InstanceInfo) -> Result<(), StoreError> {
        let i = instance.clone();
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO instances
                    (service, instance_id, host, pid, labels, agent_version, started_at, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (service, instance_id) DO UPDATE SET
                    host = excluded.host, pid = excluded.pid, labels = excluded.labels,
                    agent_version = excluded.agent_version, started_at = excluded.started_at,
                    last_seen = excluded.last_seen
                 WHERE excluded.last_seen >= instances.last_seen",
                )?
                .execute(params![
                    i.service,
                    i.instance_id,
                    i.host,
                    i.pid,
                    labels_to_sql(&i.labels),
                    i.agent_version,
                    nanos_to_sql(i.started_at_unix_nanos),
                    nanos_to_sql(i.last_seen_unix_nanos),
                ])?;
                Ok(())
            })
            .await
    }

    async fn insert_metrics(&self, points: &[MetricPoint]) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let points = points.to_vec();
        self.writer
            .write(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "INSERT OR IGNORE INTO metric_samples (service, metric, instance_id, ts, value)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for p in &points {
                    stmt.execute(params![
                        p.service,
                        p.metric.as_str(),
                        p.instance_id,
                        nanos_to_sql(p.unix_nanos),
                        p.value
                    ])?;
                }
                Ok(())
            })
            .await
    }

    async fn list_services(
        &self,
        active_since_unix_nanos: u64,
    ) -> Result<Vec<ServiceSummary>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT service, SUM(last_seen >= ?1), MAX(last_seen)
                 FROM instances GROUP BY service ORDER BY service",
            )?;
            let rows = stmt.query_map(params![nanos_to_sql(active_since_unix_nanos)], |r| {
                Ok(ServiceSummary {
                    service: r.get(0)?,
                    instances: nanos_from_sql(r.get(1)?),
                    last_seen_unix_nanos: nanos_from_sql(r.get(2)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn list_instances(&self, service: &str) -> Result<Vec<InstanceInfo>, StoreError> {
        let service = service.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT service, instance_id, host, pid, labels, agent_version, started_at, last_seen
                 FROM instances WHERE service = ?1 ORDER BY instance_id",
            )?;
            let rows = stmt.query_map(params![service], |r| {
                Ok((
                    InstanceInfo {
                        service: r.get(0)?,
                        instance_id: r.get(1)?,
                        host: r.get(2)?,
                        pid: r.get(3)?,
                        labels: BTreeMap::new(),
                        agent_version: r.get(5)?,
                        started_at_unix_nanos: nanos_from_sql(r.get(6)?),
                        last_seen_unix_nanos: nanos_from_sql(r.get(7)?),
                    },
                    r.get::<_, String>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (mut info, labels) = row?;
                info.labels = labels_from_sql("instances.labels", &labels)?;
                out.push(info);
            }
            Ok(out)
        })
        .await
    }

    async fn query_metrics(&self, query: &MetricQuery) -> Result<Vec<MetricPoint>, StoreError> {
        let q = query.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT instance_id, ts, value FROM metric_samples
                 WHERE service = ?1 AND metric = ?2 AND ts >= ?3 AND ts < ?4
                 ORDER BY instance_id, ts LIMIT ?5",
            )?;
            let rows = stmt.query_map(
                params![
                    q.service,
                    q.metric.as_str(),
                    nanos_to_sql(q.since_unix_nanos),
                    nanos_to_sql(q.until_unix_nanos),
                    nanos_to_sql(q.limit)
                ],
                |r| {
                    Ok(MetricPoint {
                        service: q.service.clone(),
                        instance_id: r.get(0)?,
                        metric: q.metric,
                        unix_nanos: nanos_from_sql(r.get(1)?),
                        value: r.get(2)?,
                    })
                },
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn insert_triggers(&self, triggers: &[TriggerRecord]) -> Result<(), StoreError> {
        if triggers.is_empty() {
            return Ok(());
        }
        let triggers = triggers.to_vec();
        self.writer
            .write(move |conn| triggers::insert(conn, &triggers))
            .await
    }

    async fn query_triggers(&self, query: &TriggerQuery) -> Result<Vec<TriggerRecord>, StoreError> {
        let q = query.clone();
        self.read(move |conn| triggers::query(conn, &q)).await
    }

    async fn insert_profile(&self, profile: &ProfileRecord) -> Result<(), StoreError> {
        // The record is copied once into the writer; a profile is at most tens of MiB.
        let p = profile.clone();
        let numbering = Arc::clone(&self.numbering);
        let service = profile.service.clone();
        let numbered = self
            .writer
            .write(move |conn| profiles::insert(conn, &numbering, &p))
            .await?;
        if let Some(n) = numbered {
            self.numbering.written(&service, &n);
        }
        Ok(())
    }

    fn stacks_known_by_key(
        &self,
        service: &str,
        started_unix_nanos: u64,
        scope: u64,
        stacks: &[crate::StackByKey<'_>],
        locations: &[crate::LocationByKey<'_>],
    ) -> crate::KnownByKey {
        let day = profiles::day_of(started_unix_nanos);
        self.numbering
            .known_by_key(service, day, scope, stacks, locations)
    }

    async fn query_profiles(&self, query: &ProfileQuery) -> Result<Vec<ProfileMeta>, StoreError> {
        let q = query.clone();
        self.read(move |conn| profiles::query(conn, &q)).await
    }

    async fn get_profile(
        &self,
        service: &str,
        profile_id: &str,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        let mut found = self
            .get_profiles(service, std::slice::from_ref(&profile_id.to_owned()))
            .await?;
        Ok(found.pop())
    }

    async fn get_profiles(
        &self,
        service: &str,
        profile_ids: &[String],
    ) -> Result<Vec<ProfileRecord>, StoreError> {
        let (service, ids) = (service.to_owned(), profile_ids.to_vec());
        self.read(move |conn| profiles::get_many(conn, &service, &ids))
            .await
    }

    async fn merge_profiles(&self, query: &MergeQuery) -> Result<MergedProfile, StoreError> {
        let q = query.clone();
        self.read(move |conn| profiles::merge(conn, &q)).await
    }

    async fn stack_count(&self, service: &str) -> Result<u64, StoreError> {
        let service = service.to_owned();
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM stacks WHERE service = ?1")?
                .query_row(params![service], |r| r.get(0))?;
            Ok(nanos_from_sql(n))
        })
        .await
    }

    async fn insert_symbols(
        &self,
        symbols: &[(LocationId, Vec<StackFrame>)],
    ) -> Result<(), StoreError> {
        let symbols = symbols.to_vec();
        self.writer
            .write(move |conn| profiles::insert_symbols(conn, &symbols))
            .await
    }

    async fn unsymbolized_offsets(&self, build_id: &str) -> Result<Vec<u64>, StoreError> {
        let build_id = build_id.to_owned();
        self.read(move |conn| debuginfo::unsymbolized(conn, &build_id))
            .await
    }

    async fn insert_debuginfo(&self, chunks: &[DebugInfoChunkRecord]) -> Result<(), StoreError> {
        let chunks = chunks.to_vec();
        self.writer
            .write(move |conn| debuginfo::insert(conn, &chunks))
            .await
    }

    async fn debuginfo_status(
        &self,
        build_id: &str,
    ) -> Result<Option<DebugInfoStatus>, StoreError> {
        let build_id = build_id.to_owned();
        self.read(move |conn| debuginfo::status(conn, &build_id))
            .await
    }

    async fn read_debuginfo(&self, build_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let build_id = build_id.to_owned();
        self.read(move |conn| debuginfo::read(conn, &build_id))
            .await
    }

    async fn debuginfo_builds(&self) -> Result<Vec<String>, StoreError> {
        self.read(debuginfo::builds).await
    }

    async fn claim_debuginfo_upload(
        &self,
        build_id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let (build_id, holder) = (build_id.to_owned(), holder.to_owned());
        let now = migrate::now_nanos();
        self.writer
            .write(move |conn| debuginfo::claim(conn, &build_id, &holder, lease, now))
            .await
    }

    async fn release_debuginfo_upload(
        &self,
        build_id: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        let (build_id, holder) = (build_id.to_owned(), holder.to_owned());
        self.writer
            .write(move |conn| debuginfo::release(conn, &build_id, &holder))
            .await
    }

    async fn upsert_incident(&self, incident: &IncidentRecord) -> Result<(), StoreError> {
        let i = incident.clone();
        self.writer
            .write(move |conn| incidents::upsert(conn, &i))
            .await
    }

    async fn query_incidents(
        &self,
        query: &IncidentQuery,
    ) -> Result<Vec<IncidentRecord>, StoreError> {
        let q = query.clone();
        self.read(move |conn| incidents::query(conn, &q)).await
    }

    async fn get_incident(&self, incident_id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        let id = incident_id.to_owned();
        self.read(move |conn| incidents::get(conn, &id)).await
    }

    async fn put_incident_suspects(&self, suspects: &IncidentSuspects) -> Result<(), StoreError> {
        let s = suspects.clone();
        self.writer.write(move |conn| suspects::put(conn, &s)).await
    }

    async fn get_incident_suspects(
        &self,
        service: &str,
        incident_id: &str,
    ) -> Result<Option<IncidentSuspects>, StoreError> {
        let (service, id) = (service.to_owned(), incident_id.to_owned());
        self.read(move |conn| suspects::get(conn, &service, &id))
            .await
    }

    async fn incidents_with_fingerprint(
        &self,
        service: &str,
        fingerprint: &str,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        let (service, fingerprint) = (service.to_owned(), fingerprint.to_owned());
        self.read(move |conn| suspects::with_fingerprint(conn, &service, &fingerprint, limit))
            .await
    }

    async fn expire_before(&self, cutoff_unix_nanos: u64) -> Result<Expired, StoreError> {
        // Whole UTC days, as on ClickHouse.
        let day_start = cutoff_unix_nanos - cutoff_unix_nanos % NANOS_PER_DAY;
        let before = nanos_to_sql(day_start);
        let day = i64::from(profiles::day_of(day_start));
        self.writer
            .write(move |conn| {
                let mut rows = 0u64;
                for sql in [
                    "DELETE FROM metric_samples WHERE ts < ?1",
                    "DELETE FROM triggers WHERE ts < ?1",
                    "DELETE FROM profiles WHERE started < ?1",
                    // An incident's suspects go with it.
                    "DELETE FROM incident_suspects WHERE incident_id IN
                        (SELECT incident_id FROM incidents WHERE last_event < ?1)",
                    "DELETE FROM incidents WHERE last_event < ?1",
                    "DELETE FROM instances WHERE last_seen < ?1",
                    "DELETE FROM parked_events WHERE parked < ?1",
                    "DELETE FROM skip_notices WHERE at < ?1",
                ] {
                    rows += conn.execute(sql, params![before])? as u64;
                }
                // Stacks and locations carry the last day a profile used them (see
                // `numbering`): those of earlier days no kept profile refers to.
                for sql in [
                    "DELETE FROM stacks WHERE day < ?1",
                    "DELETE FROM locations WHERE day < ?1",
                ] {
                    rows += conn.execute(sql, params![day])? as u64;
                }
                Ok(Expired {
                    rows,
                    partitions: 0,
                })
            })
            .await
    }

    async fn park_event(&self, event: &ParkedEvent) -> Result<(), StoreError> {
        let e = event.clone();
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO parked_events (source, service, parked, error, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    e.source,
                    e.service,
                    nanos_to_sql(e.parked_unix_nanos),
                    e.error,
                    e.payload
                ])?;
                Ok(())
            })
            .await
    }

    async fn parked_events(&self, limit: u64) -> Result<Vec<ParkedEvent>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT source, service, parked, error, payload FROM parked_events
                 ORDER BY parked DESC, id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![nanos_to_sql(limit)], |r| {
                Ok(ParkedEvent {
                    source: r.get(0)?,
                    service: r.get(1)?,
                    parked_unix_nanos: nanos_from_sql(r.get(2)?),
                    error: r.get(3)?,
                    payload: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn change_rules(&self, edits: &[RuleEdit], by: &ChangedBy) -> Result<u64, StoreError> {
        let (edits, by) = (edits.to_vec(), by.clone());
        self.writer
            .write(move |conn| control::change_rules(conn, &edits, &by))
            .await
    }

    async fn rules_in_force(&self, service: Option<&str>) -> Result<Vec<RuleChange>, StoreError> {
        let service = service.map(str::to_owned);
        self.read(move |conn| control::rules_in_force(conn, service.as_deref()))
            .await
    }

    async fn rule_history(&self, service: &str, limit: u64) -> Result<Vec<RuleChange>, StoreError> {
        let service = service.to_owned();
        self.read(move |conn| control::rule_history(conn, &service, limit))
            .await
    }

    async fn change_pause(&self, edit: &PauseEdit, by: &ChangedBy) -> Result<u64, StoreError> {
        let (edit, by) = (edit.clone(), by.clone());
        self.writer
            .write(move |conn| control::change_pause(conn, &edit, &by))
            .await
    }

    async fn pauses(&self) -> Result<Vec<PauseRecord>, StoreError> {
        self.read(control::pauses).await
    }

    async fn control_version(&self) -> Result<u64, StoreError> {
        self.read(control::control_version).await
    }

    async fn insert_capture_request(
        &self,
        request: &CaptureRequestRecord,
    ) -> Result<(), StoreError> {
        let r = request.clone();
        self.writer
            .write(move |conn| control::insert_capture_request(conn, &r))
            .await
    }

    async fn capture_requests(
        &self,
        query: &CaptureRequestQuery,
    ) -> Result<Vec<CaptureRequestRecord>, StoreError> {
        let q = query.clone();
        self.read(move |conn| control::capture_requests(conn, &q))
            .await
    }

    async fn get_capture_request(
        &self,
        request_id: &str,
    ) -> Result<Option<CaptureRequestRecord>, StoreError> {
        let id = request_id.to_owned();
        self.read(move |conn| control::get_capture_request(conn, &id))
            .await
    }

    async fn record_capture_dispatch(&self, dispatch: &CaptureDispatch) -> Result<(), StoreError> {
        let d = dispatch.clone();
        self.writer
            .write(move |conn| control::record_capture_dispatch(conn, &d))
            .await
    }

    async fn capture_dispatches(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<CaptureDispatch>, StoreError> {
        let ids = request_ids.to_vec();
        self.read(move |conn| control::capture_dispatches(conn, &ids))
            .await
    }

    async fn insert_skip_notices(&self, notices: &[SkipNotice]) -> Result<(), StoreError> {
        if notices.is_empty() {
            return Ok(());
        }
        let notices = notices.to_vec();
        self.writer
            .write(move |conn| notices.iter().try_for_each(|n| skips::insert(conn, n)))
            .await
    }

    async fn skip_notices(
        &self,
        since_unix_nanos: u64,
        limit: u64,
    ) -> Result<Vec<SkipNotice>, StoreError> {
        self.read(move |conn| skips::since(conn, since_unix_nanos, limit))
            .await
    }

    async fn record_capture_outcome(
        &self,
        outcome: &CaptureOutcomeRecord,
    ) -> Result<(), StoreError> {
        let o = outcome.clone();
        self.writer
            .write(move |conn| control::record_capture_outcome(conn, &o))
            .await
    }

    async fn capture_outcomes(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<CaptureOutcomeRecord>, StoreError> {
        let ids = request_ids.to_vec();
        self.read(move |conn| control::capture_outcomes(conn, &ids))
            .await
    }

    async fn record_agent_report(&self, report: &AgentReport) -> Result<(), StoreError> {
        let r = report.clone();
        self.writer
            .write(move |conn| control::record_agent_report(conn, &r))
            .await
    }

    async fn agent_reports(&self, service: &str) -> Result<Vec<AgentReport>, StoreError> {
        let service = service.to_owned();
        self.read(move |conn| control::agent_reports(conn, &service))
            .await
    }

    async fn record_control_node(&self, node: &ControlNode) -> Result<(), StoreError> {
        let n = node.clone();
        self.writer
            .write(move |conn| control::record_control_node(conn, &n))
            .await
    }

    async fn control_nodes(
        &self,
        seen_since_unix_nanos: u64,
    ) -> Result<Vec<ControlNode>, StoreError> {
        self.read(move |conn| control::control_nodes(conn, seen_since_unix_nanos))
            .await
    }
}
