//! Processing: what happens to an agent's data between its stream and the store, behind
//! a small source/sink abstraction.
//!
//! The ingest side ([`crate::ingest`]) decodes what an agent sends, puts profile chunks
//! together, and hands each durable message as a [`PipelineEvent`] to a [`Sink`]; the
//! agent is acknowledged only once the sink says the event is durable. The processing
//! side is one [`Processor`]: check timestamps against the collector's clock ([`skew`]),
//! normalize profiles ([`normalize`]: decode the agent's own format or pprof, check,
//! each location and stack once), store (retrying a failing store), and hand stored
//! triggers to the incidents ([`crate::incident`], which queue the alerts).
//! [`retention`] removes what is older than `retention_days`.
//!
//! - Single node (`role = "all"`, the default): [`LocalSink`] runs the [`Processor`] in
//!   the ingest path; durable means stored.
//! - Kafka (`role = "ingest"` / `role = "process"`, [`kafka`]): the ingest node's sink
//!   produces the event to a topic, keyed by service, and durable means the broker
//!   acknowledged it; a process node consumes the topic (the source) and runs the same
//!   [`Processor`], committing offsets only after the store write, and parks an event it
//!   cannot store while the store takes others.
//!
//! Every write is idempotent (metric points by service, metric, instance and time;
//! triggers by event id; profiles by service and profile id; incidents remember their
//! event ids), so an event delivered twice — an agent resending after a lost ack, a
//! processor re-reading after a crash — changes nothing the second time.

pub mod kafka;
pub mod normalize;
pub mod retention;
pub mod skew;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use holmes_proto::{PipelineBody, PipelineEvent, PipelineProfile};
use holmes_storage::{ProfileContents, ProfileRecord, Store, StoreError, TriggerRecord};
use tokio::sync::Semaphore;

use crate::incident::Incidents;
use crate::symbolize::Symbolizer;
use normalize::Limits;
use skew::Skew;

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

    /// Makes `event`, a profile already decoded into `contents` (the agent's stream
    /// form, which only its stream can read), durable. By default its contents are
    /// encoded self-contained, in the agent's own form, and handed to
    /// [`Sink::deliver`].
    async fn deliver_decoded(
        &self,
        mut event: PipelineEvent,
        contents: ProfileContents,
    ) -> Result<(), SinkError> {
        if let PipelineBody::Profile(p) = &mut event.body {
            p.data = normalize::native_bytes(&contents);
            p.format = holmes_proto::ProfileFormat::Native;
        }
        self.deliver(event).await
    }

    /// Whether [`Sink::deliver_decoded`] hands the contents to `store`'s own
    /// `insert_profile` as they are, so that they may leave out stacks the store knows
    /// by key (`TableKeys::left_out`). By default not.
    fn stores_by_key(&self) -> bool {
        false
    }
}

/// The single-node sink: processes each event in place.
#[derive(Debug)]
pub struct LocalSink(pub Arc<Processor>);

#[async_trait::async_trait]
impl Sink for LocalSink {
    async fn deliver(&self, event: PipelineEvent) -> Result<(), SinkError> {
        self.0.process(event).await.map_err(SinkError::Store)
    }

    async fn deliver_decoded(
        &self,
        event: PipelineEvent,
        contents: ProfileContents,
    ) -> Result<(), SinkError> {
        self.0
            .process_decoded(event, Some(contents))
            .await
            .map_err(SinkError::Store)
    }

    fn stores_by_key(&self) -> bool {
        // A kept original is encoded from the contents: they must be whole.
        !self.0.settings.keep_originals
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
            // What was left out must come again: no retry brings it.
            Err(err @ StoreError::LeftOutStacks { .. }) => break Err(err),
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

/// What the processor does with profiles besides storing their contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileSettings {
    /// The bounds a profile must stay within.
    pub limits: Limits,
    /// Keep the bytes as sent besides the normalized contents (`keep_originals`).
    pub keep_originals: bool,
    /// How far an agent's timestamps may be from the collector's clock
    /// (`max_clock_skew`).
    pub max_clock_skew: Duration,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        ProfileSettings {
            limits: Limits::default(),
            keep_originals: false,
            max_clock_skew: skew::DEFAULT_MAX_CLOCK_SKEW,
        }
    }
}

/// The processing of events: the same code in every role.
pub struct Processor {
    store: Arc<dyn Store>,
    incidents: Option<Arc<Incidents>>,
    settings: ProfileSettings,
    /// Profiles decoded at once: each may hold its decoded bytes and contents (bounded
    /// by the limits), so a burst of agents cannot make the collector hold a burst of
    /// them.
    decoding: Arc<Semaphore>,
    /// Names native locations of builds whose debug info is known before a profile is
    /// stored.
    symbolizer: Option<Arc<Symbolizer>>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("store", &self.store.backend())
            .field("incidents", &self.incidents.is_some())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Processor {
    /// Stores into `store`, treats profiles as `settings` says, and correlates triggers
    /// with `incidents` when given.
    pub fn new(
        store: Arc<dyn Store>,
        incidents: Option<Arc<Incidents>>,
        settings: ProfileSettings,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Processor {
            store,
            incidents,
            settings,
            decoding: Arc::new(Semaphore::new(cores.max(2))),
            symbolizer: None,
        }
    }

    /// Names the native locations of each profile with `symbolizer` before storing it.
    pub fn with_symbolizer(mut self, symbolizer: Arc<Symbolizer>) -> Self {
        self.symbolizer = Some(symbolizer);
        self
    }

    /// The incidents this processor correlates into, if any.
    pub fn incidents(&self) -> Option<&Arc<Incidents>> {
        self.incidents.as_ref()
    }

    /// The symbolizer naming profiles' native locations, if any.
    pub fn symbolizer(&self) -> Option<&Arc<Symbolizer>> {
        self.symbolizer.as_ref()
    }

    /// The store it writes to.
    pub fn store_handle(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Processes one event: stores it (retrying for [`STORE_RETRY_FOR`]) and, for a
    /// trigger, correlates it once stored. Doing it twice stores nothing new.
    pub async fn process(&self, event: PipelineEvent) -> Result<(), StoreError> {
        self.process_decoded(event, None).await
    }

    /// [`Processor::process`] for an event whose profile is already decoded into
    /// `decoded`.
    pub async fn process_decoded(
        &self,
        event: PipelineEvent,
        decoded: Option<ProfileContents>,
    ) -> Result<(), StoreError> {
        if let Some(trigger) = self.store_decoded(event, decoded).await? {
            self.observe(&trigger).await;
        }
        Ok(())
    }

    /// Correlates a stored trigger event into incidents (if this processor correlates),
    /// spending its incident's capture budget.
    pub async fn observe(&self, trigger: &StoredTrigger) {
        if let Some(incidents) = &self.incidents {
            incidents.observe(&trigger.record, &trigger.planned).await;
        }
    }

    /// [`Processor::observe`] for stored trigger events in their order, their incidents
    /// stored once at the end (a Kafka processor's batch).
    pub async fn observe_all(&self, triggers: &[&StoredTrigger]) {
        if let Some(incidents) = &self.incidents {
            incidents
                .observe_all(triggers.iter().map(|t| (&t.record, t.planned.as_slice())))
                .await;
        }
    }

    /// Stores one event (retrying for [`STORE_RETRY_FOR`]) without correlating it;
    /// returns a trigger event's record, for [`Processor::observe`] once stored. Events
    /// of different services and instances can be stored concurrently; triggers should
    /// be observed in their order, and before the profiles of their events are stored
    /// (their incident's capture budget decides which are).
    pub async fn store(&self, event: PipelineEvent) -> Result<Option<StoredTrigger>, StoreError> {
        self.store_decoded(event, None).await
    }

    /// [`Processor::store`] for an event whose profile is already decoded into
    /// `decoded` (its bytes are then not read).
    pub async fn store_decoded(
        &self,
        event: PipelineEvent,
        decoded: Option<ProfileContents>,
    ) -> Result<Option<StoredTrigger>, StoreError> {
        let PipelineEvent {
            service,
            instance_id,
            body,
        } = event;
        let skew = Skew::now(self.settings.max_clock_skew);
        match body {
            PipelineBody::Metrics(window) => {
                let points = skew.points(&service, &instance_id, &window);
                retry_store("metrics", || self.store.insert_metrics(&points)).await?;
                Ok(None)
            }
            PipelineBody::Trigger(mut trigger) => {
                let planned = std::mem::take(&mut trigger.planned);
                let mut record = trigger_record(service, instance_id, trigger);
                skew.trigger(&mut record);
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
                Ok(Some(StoredTrigger { record, planned }))
            }
            PipelineBody::Profile(profile)
                if self
                    .incidents
                    .as_ref()
                    .is_some_and(|i| i.skips(&profile.event_id, profile.kind)) =>
            {
                // Beyond its incident's capture budget: acknowledged, not stored (the
                // incident counted it when its trigger came).
                tracing::info!(
                    service = %service,
                    instance = %instance_id,
                    kind = profile.kind.as_str(),
                    profile_id = %profile.profile_id,
                    event_id = %profile.event_id,
                    bytes = profile.data.len(),
                    "profile skipped by the incident's capture budget"
                );
                Ok(None)
            }
            PipelineBody::Profile(profile) => {
                let mut record = self
                    .profile_record(service, instance_id, profile, decoded)
                    .await;
                skew.profile(&mut record);
                let mut unnamed = Vec::new();
                if let (Some(symbolizer), Some(contents)) = (&self.symbolizer, &record.contents) {
                    unnamed = symbolizer.name_profile(contents).await;
                }
                retry_store("profile", || self.store.insert_profile(&record)).await?;
                if let (Some(symbolizer), false) = (&self.symbolizer, unnamed.is_empty()) {
                    symbolizer.name_after_store(&unnamed).await;
                }
                tracing::info!(
                    service = %record.service,
                    instance = %record.instance_id,
                    kind = record.kind.as_str(),
                    format = record.format.as_str(),
                    profile_id = %record.profile_id,
                    event_id = %record.event_id,
                    bytes = record.size_bytes,
                    samples = record.contents.as_ref().map_or(0, |c| c.samples.len()),
                    error = record.error.as_deref().unwrap_or(""),
                    "profile stored"
                );
                if let Some(incidents) = &self.incidents {
                    // Its incident's suspects are computed again, off this path.
                    incidents.profile_stored(&record.event_id);
                }
                Ok(None)
            }
        }
    }

    /// The record of a profile: its contents decoded (a profile that fails to decode or
    /// breaks a limit is kept as a failed capture whose error says why, so that it is
    /// acknowledged, listed, and not resent forever), its bytes kept only with
    /// `keep_originals`.
    async fn profile_record(
        &self,
        service: String,
        instance_id: String,
        p: PipelineProfile,
        decoded: Option<ProfileContents>,
    ) -> ProfileRecord {
        let mut record = ProfileRecord {
            profile_id: p.profile_id,
            event_id: p.event_id,
            service,
            instance_id,
            kind: p.kind,
            started_unix_nanos: p.started_unix_nanos,
            duration: p.duration,
            labels: p.labels,
            error: p.error,
            size_bytes: p.data.len() as u64,
            format: p.format,
            contents: None,
            original: None,
        };
        if record.error.is_some() {
            return record;
        }
        if let Some(contents) = decoded {
            if self.settings.keep_originals {
                // What the agent sent only its stream could read: keep its own form.
                record.original = Some(normalize::native_bytes(&contents));
            }
            record.contents = Some(contents);
            return record;
        }
        if p.data.is_empty() {
            return record;
        }
        let (format, limits) = (p.format, self.settings.limits);
        let data = p.data;
        let decoded = {
            // Decoding is CPU work of up to a few hundred milliseconds for a large
            // profile: on the blocking pool, a bounded number at once.
            let _permit = self.decoding.acquire().await;
            tokio::task::spawn_blocking(move || {
                let result = normalize::normalize(format, &data, limits);
                (data, result)
            })
            .await
        };
        let (data, result): (Vec<u8>, Result<ProfileContents, normalize::NormalizeError>) =
            match decoded {
                Ok(done) => done,
                Err(e) => (
                    Vec::new(),
                    Err(normalize::NormalizeError::Malformed(format!(
                        "the decoder failed: {e}"
                    ))),
                ),
            };
        match result {
            Ok(contents) => {
                record.contents = Some(contents);
                if self.settings.keep_originals {
                    record.original = Some(data);
                }
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
                    format = record.format.as_str(),
                    bytes = record.size_bytes,
                    error = %err,
                    "profile refused"
                );
                record.error = Some(format!("refused by the collector: {err}"));
            }
        }
        record
    }
}

/// A stored trigger event, to correlate: its record, and the profile kinds its agent
/// captures for it.
#[derive(Debug, Clone)]
pub struct StoredTrigger {
    /// As stored.
    pub record: TriggerRecord,
    /// The kinds of the agent's captures (`planned`), which its incident's budget
    /// keeps or skips.
    pub planned: Vec<holmes_proto::ProfileKind>,
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
