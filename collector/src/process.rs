//! Processing: what happens to an agent's data between its stream and the store, behind
//! a small source/sink abstraction.
//!
//! The ingest side ([`crate::ingest`]) decodes what an agent sends, puts profile chunks
//! together, and hands each durable message as a [`PipelineEvent`] to a [`Sink`]; the
//! agent is acknowledged only once the sink says the event is durable. The processing
//! side is one [`Processor`]: normalize profiles ([`normalize`]: decode, check, each
//! distinct stack once), store (retrying a failing store), and hand stored triggers to
//! the incidents ([`crate::incident`], which queue the alerts). [`retention`] removes
//! what is older than `retention_days`.
//!
//! - Single node (`role = "all"`, the default): [`LocalSink`] runs the [`Processor`] in
//!   the ingest path; durable means stored.
//! - Kafka (`role = "ingest"` / `role = "process"`, [`kafka`]): the ingest node's sink
//!   produces the event to a topic, keyed by service, and durable means the broker
//!   acknowledged it; a process node consumes the topic (the source) and runs the same
//!   [`Processor`], committing offsets only after the store write.
//!
//! Every write is idempotent (metric points by service, metric, instance and time;
//! triggers by event id; profiles by profile id; incidents remember their event ids), so
//! an event delivered twice — an agent resending after a lost ack, a processor
//! re-reading after a crash — changes nothing the second time.

pub mod kafka;
pub mod normalize;
pub mod retention;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use holmes_proto::{PipelineBody, PipelineEvent, PipelineProfile};
use holmes_storage::{
    MetricPoint, ProfileContents, ProfileRecord, Store, StoreError, TriggerRecord,
};

use crate::incident::Incidents;
use normalize::Limits;

/// How long a failing store write is retried, with backoff, before giving up on the
/// event (the agent's stream then ends with UNAVAILABLE and the agent resends it later;
/// a processor retries the event again without committing its offset).
pub const STORE_RETRY_FOR: Duration = Duration::from_secs(15);

/// Why an event did not become durable.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The store refused the write (after retrying for [`STORE_RETRY_FOR`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker did not acknowledge the event in time.
    #[error("the event was not acknowledged by the broker: {0}")]
    Broker(String),
}

/// Where the ingest side hands events. `deliver` returns once the event is durable: the
/// agent is acknowledged after that, never before.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Makes `event` durable, or says why it is not.
    async fn deliver(&self, event: PipelineEvent) -> Result<(), SinkError>;
}

/// The single-node sink: processes each event in place.
#[derive(Debug)]
pub struct LocalSink(pub Arc<Processor>);

#[async_trait::async_trait]
impl Sink for LocalSink {
    async fn deliver(&self, event: PipelineEvent) -> Result<(), SinkError> {
        self.0.process(event).await.map_err(SinkError::Store)
    }
}

/// Runs a store write until it succeeds or [`STORE_RETRY_FOR`] has passed, backing off
/// from 100 ms to 2 s between attempts.
pub(crate) async fn retry_store<'a, F>(what: &'static str, mut write: F) -> Result<(), StoreError>
where
    F: FnMut() -> Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'a>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1u32;
    let m = crate::metrics::metrics();
    let op = crate::metrics::OpLabels { op: what };
    let result = loop {
        match write().await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(what, attempt, "store write succeeded after retrying");
                }
                break Ok(());
            }
            Err(err) if started.elapsed() + delay < STORE_RETRY_FOR => {
                m.store_retries.get_or_create(&op).inc();
                tracing::warn!(what, attempt, retry_in_ms = delay.as_millis() as u64, error = %err, "store write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            Err(err) => break Err(err),
        }
    };
    m.store_write_seconds
        .get_or_create(&op)
        .observe(started.elapsed().as_secs_f64());
    result
}

/// The processing of events: the same code in every role.
pub struct Processor {
    store: Arc<dyn Store>,
    incidents: Option<Arc<Incidents>>,
    profile_limits: Limits,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("store", &self.store.backend())
            .field("incidents", &self.incidents.is_some())
            .finish_non_exhaustive()
    }
}

impl Processor {
    /// Stores into `store`, decodes profiles within `profile_limits`, and correlates
    /// triggers with `incidents` when given.
    pub fn new(
        store: Arc<dyn Store>,
        incidents: Option<Arc<Incidents>>,
        profile_limits: Limits,
    ) -> Self {
        Processor {
            store,
            incidents,
            profile_limits,
        }
    }

    /// The incidents this processor correlates into, if any.
    pub fn incidents(&self) -> Option<&Arc<Incidents>> {
        self.incidents.as_ref()
    }

    /// Processes one event: stores it (retrying for [`STORE_RETRY_FOR`]) and, for a
    /// trigger, correlates it once stored. Doing it twice stores nothing new.
    pub async fn process(&self, event: PipelineEvent) -> Result<(), StoreError> {
        if let Some(trigger) = self.store(event).await? {
            self.observe(&trigger).await;
        }
        Ok(())
    }

    /// Correlates a stored trigger event into incidents (if this processor correlates).
    pub async fn observe(&self, trigger: &TriggerRecord) {
        if let Some(incidents) = &self.incidents {
            incidents.observe(trigger).await;
        }
    }

    /// Stores one event (retrying for [`STORE_RETRY_FOR`]) without correlating it;
    /// returns the trigger record of a trigger event, for [`Processor::observe`] once
    /// stored. Events of different services and instances can be stored concurrently;
    /// triggers should be observed in their order.
    pub async fn store(&self, event: PipelineEvent) -> Result<Option<TriggerRecord>, StoreError> {
        let PipelineEvent {
            service,
            instance_id,
            body,
        } = event;
        match body {
            PipelineBody::Metrics(window) => {
                let points = points(&service, &instance_id, &window);
                retry_store("metrics", || self.store.insert_metrics(&points)).await?;
                Ok(None)
            }
            PipelineBody::Trigger(trigger) => {
                let record = trigger_record(service, instance_id, trigger);
                retry_store("trigger", || {
                    self.store.insert_triggers(std::slice::from_ref(&record))
                })
                .await?;
                tracing::info!(
                    service = %record.service,
                    instance = %record.instance_id,
                    metric = record.metric.map_or("none", |m| m.as_str()),
                    reason = record.reason.as_str(),
                    current = record.current,
                    event_id = %record.event_id,
                    "trigger stored"
                );
                // Stored first: an incident always has its triggers in the store.
                Ok(Some(record))
            }
            PipelineBody::Profile(profile) => {
                let mut record = profile_record(service, instance_id, profile);
                if let Some(contents) = self.normalize(&mut record).await {
                    retry_store("profile contents", || {
                        self.store.insert_profile_contents(&contents)
                    })
                    .await?;
                }
                retry_store("profile", || self.store.insert_profile(&record)).await?;
                tracing::info!(
                    service = %record.service,
                    instance = %record.instance_id,
                    kind = record.kind.as_str(),
                    profile_id = %record.profile_id,
                    event_id = %record.event_id,
                    bytes = record.data.len(),
                    error = record.error.as_deref().unwrap_or(""),
                    "profile stored"
                );
                Ok(None)
            }
        }
    }

    /// The normalized contents of a profile that holds data. A profile that fails to
    /// decode or breaks a limit is kept as a failed capture whose error says why (its
    /// bytes dropped), so that it is acknowledged, listed, and not resent forever.
    async fn normalize(&self, record: &mut ProfileRecord) -> Option<ProfileContents> {
        if record.error.is_some() || record.data.is_empty() {
            return None;
        }
        let limits = self.profile_limits;
        let data = std::mem::take(&mut record.data);
        let (id, service, started) = (
            record.profile_id.clone(),
            record.service.clone(),
            record.started_unix_nanos,
        );
        // Decoding is CPU work of up to a few hundred milliseconds for a large profile.
        // Stacks the store already holds are left out (their frames not copied again).
        let store = Arc::clone(&self.store);
        let (data, result) = tokio::task::spawn_blocking(move || {
            let stored = |stack_id| store.has_stack(stack_id);
            let result =
                normalize::normalize_new_stacks(&data, limits, &id, &service, started, &stored);
            (data, result)
        })
        .await
        .unwrap_or_else(|e| {
            (
                Vec::new(),
                Err(normalize::NormalizeError::Malformed(format!(
                    "the decoder failed: {e}"
                ))),
            )
        });
        match result {
            Ok(contents) => {
                record.data = data;
                Some(contents)
            }
            Err(err) => {
                let source = match record.labels.get("source").map(String::as_str) {
                    Some("pyroscope") => crate::metrics::Source::Pyroscope,
                    Some("otlp") => crate::metrics::Source::Otlp,
                    _ => crate::metrics::Source::Agent,
                };
                crate::metrics::metrics()
                    .profile_refused(source, crate::metrics::normalize_reason(&err));
                tracing::warn!(
                    service = %record.service,
                    instance = %record.instance_id,
                    profile_id = %record.profile_id,
                    event_id = %record.event_id,
                    kind = record.kind.as_str(),
                    bytes = data.len(),
                    error = %err,
                    "profile refused"
                );
                record.error = Some(format!("refused by the collector: {err}"));
                None
            }
        }
    }
}

fn points(
    service: &str,
    instance_id: &str,
    window: &holmes_proto::MetricWindow,
) -> Vec<MetricPoint> {
    let mut out = Vec::new();
    for series in &window.series {
        for s in series.samples.iter().filter(|s| s.value.is_finite()) {
            out.push(MetricPoint {
                service: service.to_owned(),
                instance_id: instance_id.to_owned(),
                metric: series.metric,
                unix_nanos: s.unix_nanos,
                value: s.value,
            });
        }
    }
    out
}

fn trigger_record(
    service: String,
    instance_id: String,
    t: holmes_proto::TriggerEvent,
) -> TriggerRecord {
    TriggerRecord {
        service,
        instance_id,
        event_id: t.event_id,
        metric: t.metric,
        reason: t.reason,
        current: t.current,
        window: t.window,
        rule: t.rule,
        unix_nanos: t.unix_nanos,
        request_id: t.request_id,
    }
}

fn profile_record(service: String, instance_id: String, p: PipelineProfile) -> ProfileRecord {
    ProfileRecord {
        profile_id: p.profile_id,
        event_id: p.event_id,
        service,
        instance_id,
        kind: p.kind,
        started_unix_nanos: p.started_unix_nanos,
        duration: p.duration,
        labels: p.labels,
        error: p.error,
        data: p.data,
    }
}

/// A put-together profile as a pipeline event body.
pub(crate) fn profile_event(record: ProfileRecord) -> PipelineEvent {
    PipelineEvent {
        service: record.service,
        instance_id: record.instance_id,
        body: PipelineBody::Profile(PipelineProfile {
            profile_id: record.profile_id,
            event_id: record.event_id,
            kind: record.kind,
            started_unix_nanos: record.started_unix_nanos,
            duration: record.duration,
            labels: record.labels,
            error: record.error,
            data: record.data,
            // The assembler only puts together gzip pprof so far.
            format: holmes_proto::ProfileFormat::PprofGzip,
        }),
    }
}
