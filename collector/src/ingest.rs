//! Ingest: the gRPC service agents connect to, one bidirectional stream each.
//!
//! When tokens are configured ([`crate::auth`]), the stream must carry one, valid for
//! the service its `Hello` names; nothing of a refused stream is stored.
//! The stream must open with `Hello` (right version, valid names), which is answered
//! by recording the instance and, when the service or the fleet has central rules or a
//! pause, by a `ConfigUpdate` ([`crate::control::agent`]: later changes follow on the
//! same stream, and the agent's answers are recorded); every durable message after it (metric windows, trigger events,
//! profile chunks) is handed to the [`Sink`] as a [`PipelineEvent`] and acknowledged by
//! sequence number once the sink says it is durable (stored, or acknowledged by Kafka;
//! see [`crate::process`]). Profile chunks are put together first ([`assemble`]): a
//! profile is handed on once its last chunk is in,
//! and since acknowledgements are cumulative, none reaches the first chunk of a profile
//! that is not durable yet. Whatever goes wrong with one agent ends that agent's stream
//! with a clear status and nothing else.
//!
//! A stream's events are handed on concurrently, up to [`MAX_DELIVERIES`] at once and one
//! profile at a time, so that a trigger or a metric window does not wait behind its
//! agent's profile being decoded and stored: only its triggers keep their order, and a
//! profile is handed on once every trigger before it is durable (a trigger's incident
//! decides which of its profiles are stored). Acknowledgements still follow the
//! sequence numbers.
//!
//! Agents that can send their profiles in the stream form (each stack defined once per
//! stream, `holmes_proto::native::stream`) do so once `connect` answers with the
//! [`STREAM_HEADER`] metadata, which this service always sets. A stream's tables are
//! read here, in sequence order, as each of its profiles completes
//! ([`crate::process::normalize::StreamTables`]); the profile travels on decoded (to the
//! [`Sink::deliver_decoded`]), as the agent's self-contained form where it must be bytes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holmes_proto::names::{
    validate_labels, validate_name, validate_text, MAX_HOST_LEN, MAX_VERSION_LEN,
};
use holmes_proto::native::stream::STREAM_HEADER;
use holmes_proto::pb::ingest_server::Ingest;
use holmes_proto::{pb, AgentBody, AgentMessage, CollectorMessage, Hello, ProfileFormat};
use holmes_storage::{InstanceInfo, ProfileContents, Store};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::IngestAuth;
use crate::clock::unix_nanos_now;
use crate::control::agent::AgentControl;
use crate::control::Control;
use crate::error::store_status;
use crate::process::normalize::{self, StreamTables};
use crate::process::{PipelineBody, PipelineEvent, PipelineProfile, Sink, SinkError};

pub mod alertmanager;
pub mod assemble;
pub mod debuginfo;
pub mod foreign;
pub mod http;
pub mod limits;
pub mod live;
pub mod otlp;
pub mod pyroscope;
pub(crate) mod silent;

use assemble::{Assembler, Step};

/// How long a new stream may take to send its `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an instance's `last_seen` is refreshed while its stream is open.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(30);
/// Events of one stream handed to the sink at once; past this, reading the stream waits.
pub const MAX_DELIVERIES: usize = 16;

/// The `Ingest` gRPC service.
#[derive(Clone)]
pub struct IngestService {
    store: Arc<dyn Store>,
    control: Arc<Control>,
    closing: watch::Receiver<bool>,
    max_profile_bytes: u64,
    auth: IngestAuth,
    sink: Arc<dyn Sink>,
    live: Arc<live::LiveAgents>,
    uploads: Option<Arc<debuginfo::Uploads>>,
    slots: Arc<limits::StreamSlots>,
    limits: limits::LimitsConfig,
    profile_limits: normalize::Limits,
    max_clock_skew: Duration,
}

impl IngestService {
    /// A service handing what agents send to `sink`, recording instances in `store`,
    /// registering streams in `live` and keeping their agents in step with `control`;
    /// streams end when `closing` turns true.
    pub fn new(
        store: Arc<dyn Store>,
        sink: Arc<dyn Sink>,
        control: Arc<Control>,
        live: Arc<live::LiveAgents>,
        closing: watch::Receiver<bool>,
    ) -> Self {
        IngestService {
            store,
            control,
            closing,
            max_profile_bytes: crate::config::DEFAULT_MAX_PROFILE_BYTES,
            auth: IngestAuth::default(),
            sink,
            live,
            uploads: None,
            slots: limits::StreamSlots::new(&limits::LimitsConfig::default()),
            limits: limits::LimitsConfig::default(),
            profile_limits: normalize::Limits::default(),
            max_clock_skew: crate::process::skew::DEFAULT_MAX_CLOCK_SKEW,
        }
    }

    /// Reads profiles in the stream form as the processor reads the others: held to its
    /// limits, dated as it dates them (`max_clock_skew`).
    pub fn with_profile_settings(mut self, settings: &crate::process::ProfileSettings) -> Self {
        self.profile_limits = settings.limits;
        self.max_clock_skew = settings.max_clock_skew;
        self
    }

    /// Asks agents that offer it for their executable's debug info when the store lacks
    /// it ([`debuginfo`]); without this, offers are ignored.
    pub fn with_uploads(mut self, uploads: Arc<debuginfo::Uploads>) -> Self {
        self.uploads = Some(uploads);
        self
    }

    /// Caps streams and unfinished profiles as `limits` says instead of its defaults.
    pub fn with_limits(mut self, limits: &limits::LimitsConfig) -> Self {
        self.slots = limits::StreamSlots::new(limits);
        self.limits = limits.clone();
        self
    }

    /// Requires agents to present a token valid for their service (open by default).
    pub fn with_auth(mut self, auth: IngestAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Refuses profiles larger than `max_profile_bytes` (all chunks together) instead of
    /// [`crate::config::DEFAULT_MAX_PROFILE_BYTES`].
    pub fn with_max_profile_bytes(mut self, max_profile_bytes: u64) -> Self {
        self.max_profile_bytes = max_profile_bytes;
        self
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<pb::CollectorMessage, Status>> + Send>>;

/// Turns a failure to read the agent's stream into the status the agent should see.
fn read_status(status: &Status) -> Status {
    match status.code() {
        // tonic reports undecodable bytes as INTERNAL; it is the client's fault.
        tonic::Code::Internal => Status::invalid_argument(format!(
            "malformed message from agent: {}",
            status.message()
        )),
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => Status::resource_exhausted(
            format!("message from agent too large: {}", status.message()),
        ),
        _ => status.clone(),
    }
}

fn check_hello(hello: &Hello) -> Result<(), Status> {
    if hello.protocol_version != holmes_proto::PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "unsupported protocol version {}; this collector speaks version {}",
            hello.protocol_version,
            holmes_proto::PROTOCOL_VERSION
        )));
    }
    validate_name("service", &hello.service)
        .and_then(|()| validate_name("instance id", &hello.instance_id))
        .and_then(|()| validate_labels(&hello.labels))
        .and_then(|()| validate_text("host", &hello.host, MAX_HOST_LEN))
        .and_then(|()| validate_text("agent version", &hello.agent_version, MAX_VERSION_LEN))
        .map_err(|e| {
            crate::metrics::metrics().ingest_refused("invalid_id");
            Status::invalid_argument(format!("invalid hello: {e}"))
        })
}

/// Checks the ids an agent's message introduces (event and request ids end up in
/// storage keys, URLs and alert bodies, so they follow the name rules).
fn check_ids(body: &AgentBody) -> Result<(), Status> {
    let (what, event_id, request_id) = match body {
        AgentBody::Trigger(t) => ("trigger", Some(&t.event_id), t.request_id.as_ref()),
        AgentBody::CaptureOutcome(o) => {
            ("capture outcome", o.event_id.as_ref(), Some(&o.request_id))
        }
        _ => return Ok(()),
    };
    event_id
        .map_or(Ok(()), |id| validate_name("event id", id))
        .and_then(|()| request_id.map_or(Ok(()), |id| validate_name("request id", id)))
        .map_err(|e| {
            crate::metrics::metrics().ingest_refused("invalid_id");
            Status::invalid_argument(format!("invalid {what}: {e}"))
        })
}

fn instance_info(hello: &Hello, last_seen: u64) -> InstanceInfo {
    InstanceInfo {
        service: hello.service.clone(),
        instance_id: hello.instance_id.clone(),
        host: hello.host.clone(),
        pid: hello.pid,
        labels: hello.labels.clone(),
        agent_version: hello.agent_version.clone(),
        started_at_unix_nanos: hello.started_at_unix_nanos,
        last_seen_unix_nanos: last_seen,
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type ConnectStream = OutStream;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        // A stream over the caps is refused before anything is read from it.
        let slot = self
            .slots
            .take(request.remote_addr().map(|a| a.ip()))
            .inspect_err(|status| {
                tracing::warn!(%peer, code = ?status.code(), error = status.message(), "rejected agent stream");
            })?;
        // A stream without a token is refused before anything is read from it.
        let token = self.auth.token_of(request.metadata()).inspect_err(|status| {
            tracing::warn!(%peer, code = ?status.code(), error = status.message(), "rejected agent stream");
        })?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!("no hello within {HELLO_TIMEOUT:?}"))
            })?
            .map_err(|s| {
                let status = read_status(&s);
                tracing::warn!(%peer, code = ?status.code(), error = status.message(), "rejected agent stream");
                status
            })?
            .ok_or_else(|| Status::invalid_argument("stream ended before hello"))?;
        let hello = match AgentMessage::try_from(first) {
            Ok(AgentMessage {
                body: AgentBody::Hello(hello),
                ..
            }) => hello,
            Ok(_) => return Err(Status::invalid_argument("the first message must be hello")),
            Err(e) => {
                return Err(Status::invalid_argument(format!(
                    "malformed first message: {e}"
                )))
            }
        };
        if let Err(status) = self
            .auth
            .authorize(&hello.service, token.as_deref())
            .and_then(|()| check_hello(&hello))
        {
            tracing::warn!(%peer, service = %hello.service, instance = %hello.instance_id, code = ?status.code(), error = status.message(), "rejected agent stream");
            return Err(status);
        }
        if !self.auth.has_own_token(&hello.service) {
            limits::check_new_identity(
                self.store.as_ref(),
                &self.limits,
                &hello.service,
                &hello.instance_id,
            )
            .await
            .inspect_err(|status| {
                tracing::warn!(%peer, service = %hello.service, instance = %hello.instance_id, code = ?status.code(), error = status.message(), "rejected agent stream");
            })?;
        }
        self.store
            .upsert_instance(&instance_info(&hello, unix_nanos_now()))
            .await
            .map_err(|e| store_status(&e))?;
        tracing::info!(%peer, service = %hello.service, instance = %hello.instance_id, agent_version = %hello.agent_version, "agent connected");

        let (tx, rx) = mpsc::channel(256);
        let mut control = AgentControl::new(&self.control, &hello);
        control.connected().await;
        if let Some(update) = control.next_update() {
            tracing::info!(service = %hello.service, instance = %hello.instance_id, version = update.version, rules = update.rules.len(), paused = update.pause.is_some(), "pushing central rules");
            // The channel is new and empty, so this is the stream's first message.
            tx.send(Ok(pb::CollectorMessage::from(
                &CollectorMessage::ConfigUpdate(update),
            )))
            .await
            .map_err(|_| Status::cancelled("agent went away"))?;
        }
        let offer = match (&self.uploads, &hello.executable) {
            (Some(uploads), Some(exe))
                if hello.debuginfo_upload
                    && crate::symbolize::upload::check_build_id(&exe.build_id).is_ok() =>
            {
                Some(uploads.offered(&exe.build_id, tx.clone()).await)
            }
            _ => None,
        };
        let session = Session {
            uploads: self.uploads.clone(),
            offer,
            hello,
            control,
            sink: Arc::clone(&self.sink),
            store: Arc::clone(&self.store),
            tx,
            last_acked: 0,
            highest_stored: 0,
            deliveries: VecDeque::new(),
            last_trigger: None,
            profiles: Assembler::new(self.max_profile_bytes),
            tables: None,
            profile_limits: self.profile_limits,
            max_clock_skew: self.max_clock_skew,
            profile_idle_timeout: self.limits.profile_idle_timeout,
            last_touch: Instant::now(),
        };
        let live = Arc::clone(&self.live);
        let (service, stream) = (
            session.hello.service.clone(),
            live.add(
                &session.hello.service,
                &session.hello.instance_id,
                &session.hello.labels,
                session.tx.clone(),
            ),
        );
        let closing = self.closing.clone();
        tokio::spawn(async move {
            session.run(inbound, closing).await;
            live.remove(&service, stream);
            drop(slot);
        });
        let mut response = Response::new(Box::pin(ReceiverStream::new(rx)) as OutStream);
        // This collector reads the agent's stream form.
        response.metadata_mut().insert(
            STREAM_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        Ok(response)
    }
}

/// An event handed to the sink: its sequence number, and the task making it durable.
struct Delivery {
    seq: u64,
    /// Whether it is a profile.
    profile: bool,
    handle: tokio::task::JoinHandle<Result<(), Status>>,
}

/// Waits for the oldest delivery to finish (forever when there is none): its sequence
/// number and outcome. Cancel-safe: a delivery leaves the queue only once finished.
async fn next_delivered(deliveries: &mut VecDeque<Delivery>) -> (u64, Result<(), Status>) {
    let Some(oldest) = deliveries.front_mut() else {
        return std::future::pending().await;
    };
    let result = match (&mut oldest.handle).await {
        Ok(result) => result,
        Err(err) => Err(Status::internal(format!(
            "storing the message failed: {err}"
        ))),
    };
    let seq = oldest.seq;
    deliveries.pop_front();
    (seq, result)
}

/// Waits until `at`, or forever when there is no `at`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Counts one agent message by type.
fn count_message(body: &AgentBody) {
    let r#type = match body {
        AgentBody::Hello(_) => "hello",
        AgentBody::Heartbeat(_) => "heartbeat",
        AgentBody::MetricWindow(_) => "metrics",
        AgentBody::Trigger(_) => "trigger",
        AgentBody::ProfileChunk(_) => "profile_chunk",
        _ => "answer",
    };
    crate::metrics::metrics()
        .ingest_messages
        .get_or_create(&crate::metrics::MessageLabels { r#type })
        .inc();
}

struct Session {
    hello: Hello,
    uploads: Option<Arc<debuginfo::Uploads>>,
    /// The executable's debug info upload this agent offered.
    offer: Option<debuginfo::Offer>,
    control: AgentControl,
    sink: Arc<dyn Sink>,
    store: Arc<dyn Store>,
    tx: mpsc::Sender<Result<pb::CollectorMessage, Status>>,
    last_acked: u64,
    /// Highest sequence number of a message made durable on this stream.
    highest_stored: u64,
    /// Events handed to the sink and not durable yet, in sequence order.
    deliveries: VecDeque<Delivery>,
    /// Turns true once the stream's latest trigger is durable (dropped unset if it
    /// failed): what comes after it waits for it.
    last_trigger: Option<watch::Receiver<bool>>,
    /// Profiles whose chunks are still coming.
    profiles: Assembler,
    /// The stream's tables, once it sent a profile in the stream form.
    tables: Option<Box<StreamTables>>,
    profile_limits: normalize::Limits,
    max_clock_skew: Duration,
    /// How long an unfinished profile waits for its next chunk.
    profile_idle_timeout: Duration,
    last_touch: Instant,
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::AgentMessage>,
        mut closing: watch::Receiver<bool>,
    ) {
        // Once a delivery failed, nothing after it is acknowledged.
        let mut failed = false;
        let end = loop {
            let stalled = self.profiles.stalest().map(|(id, at)| {
                (
                    id.to_owned(),
                    tokio::time::Instant::from_std(at + self.profile_idle_timeout),
                )
            });
            let next = tokio::select! {
                next = inbound.message() => Some(Ok(next)),
                delivered = next_delivered(&mut self.deliveries) => Some(Err(delivered)),
                () = self.control.changed() => None,
                _ = closing.wait_for(|c| *c) => {
                    break Some(Status::unavailable("collector is shutting down; reconnect"));
                }
                () = sleep_until_some(stalled.as_ref().map(|(_, at)| *at)) => {
                    crate::metrics::metrics().ingest_refused("profile_idle");
                    let id = stalled.map(|(id, _)| id).unwrap_or_default();
                    break Some(Status::resource_exhausted(format!(
                        "profile {id}: no chunk for {}, the limit for an unfinished profile ([limits] profile_idle_timeout); its chunks are dropped, send it again",
                        humantime::format_duration(self.profile_idle_timeout)
                    )));
                }
            };
            let next = match next {
                Some(Ok(next)) => next,
                Some(Err((seq, result))) => {
                    if let Err(status) = self.delivered(seq, result).await {
                        failed = true;
                        break Some(status);
                    }
                    continue;
                }
                None => {
                    if let Err(status) = self.push_update().await {
                        break Some(status);
                    }
                    continue;
                }
            };
            match next {
                Ok(Some(raw)) => match AgentMessage::try_from(raw) {
                    Ok(msg) => {
                        if let Err(status) = self.handle(msg).await {
                            // A delivery that failed while waiting for room, or the message.
                            failed = true;
                            break Some(status);
                        }
                    }
                    Err(e) => {
                        break Some(Status::invalid_argument(format!("malformed message: {e}")))
                    }
                },
                Ok(None) => break None,
                Err(status) => break Some(read_status(&status)),
            }
        };
        // What was handed on is finished and, up to the first failure, acknowledged (the
        // agent may still be there to hear it).
        while !self.deliveries.is_empty() {
            let (seq, result) = next_delivered(&mut self.deliveries).await;
            if !failed {
                failed = self.delivered(seq, result).await.is_err();
            }
        }
        if let Some(status) = end
            .as_ref()
            .filter(|s| !matches!(s.code(), tonic::Code::Unknown | tonic::Code::Cancelled))
        {
            tracing::warn!(service = %self.hello.service, instance = %self.hello.instance_id, code = ?status.code(), error = status.message(), "agent stream ended with an error");
        } else {
            // A clean close, or the connection dropping (agent process gone).
            tracing::info!(service = %self.hello.service, instance = %self.hello.instance_id, "agent disconnected");
        }
        if let (Some(uploads), Some(offer)) = (&self.uploads, self.offer.take()) {
            uploads.withdrawn(offer).await;
        }
        // Record when it was last heard from; a failure here only makes last_seen older.
        let _ = self
            .store
            .upsert_instance(&instance_info(&self.hello, unix_nanos_now()))
            .await;
        self.control.closed().await;
        if let Some(status) = end {
            let _ = self.tx.send(Err(status)).await;
        }
    }

    async fn handle(&mut self, msg: AgentMessage) -> Result<(), Status> {
        count_message(&msg.body);
        check_ids(&msg.body)?;
        match msg.body {
            AgentBody::Hello(_) => Err(Status::invalid_argument("hello sent twice on one stream")),
            AgentBody::Heartbeat(heartbeat) => {
                self.control.heartbeat(heartbeat.rules_version).await;
                self.touch_if_due().await
            }
            AgentBody::ConfigApplied(_)
            | AgentBody::CaptureOutcome(_)
            | AgentBody::DebugInfoChunk(_)
                if msg.seq != 0 =>
            {
                Err(Status::invalid_argument(
                    "an agent's answer must not carry a sequence number",
                ))
            }
            AgentBody::ConfigApplied(applied) => {
                self.control.applied(applied).await;
                Ok(())
            }
            AgentBody::CaptureOutcome(outcome) => {
                for refused in &outcome.refused {
                    crate::metrics::metrics().capture_skipped(refused.reason.as_str());
                }
                self.control.outcome(outcome).await;
                Ok(())
            }
            AgentBody::DebugInfoChunk(chunk) => {
                if let Some(uploads) = &self.uploads {
                    // The upload resumes later from what the store holds.
                    if let Err(err) = uploads.chunk(self.offer.as_ref(), chunk).await {
                        tracing::warn!(service = %self.hello.service, instance = %self.hello.instance_id, error = %err, "debug info chunk not stored");
                    }
                }
                Ok(())
            }
            AgentBody::MetricWindow(window) => {
                if msg.seq == 0 {
                    return Err(Status::invalid_argument(
                        "metric window without a sequence number",
                    ));
                }
                self.deliver(msg.seq, PipelineBody::Metrics(window), None)
                    .await?;
                self.touch_if_due().await
            }
            AgentBody::Trigger(trigger) => {
                if msg.seq == 0 {
                    return Err(Status::invalid_argument(
                        "trigger event without a sequence number",
                    ));
                }
                self.deliver(msg.seq, PipelineBody::Trigger(trigger), None)
                    .await?;
                self.touch_if_due().await
            }
            AgentBody::ProfileChunk(chunk) => {
                if msg.seq == 0 {
                    return Err(Status::invalid_argument(
                        "profile chunk without a sequence number",
                    ));
                }
                crate::metrics::metrics().bytes_in(crate::metrics::Source::Agent, chunk.data.len());
                let step = self.profiles.push(msg.seq, chunk).inspect_err(|_| {
                    crate::metrics::metrics()
                        .profile_refused(crate::metrics::Source::Agent, "bad_chunks");
                })?;
                if let Step::Complete(mut profile) = step {
                    if profile.error.is_none() {
                        crate::metrics::metrics()
                            .profile_ingested(crate::metrics::Source::Agent, profile.kind);
                    }
                    let decoded = if profile.format == ProfileFormat::NativeStream {
                        self.read_stream_form(&mut profile).await?
                    } else {
                        None
                    };
                    self.deliver(msg.seq, PipelineBody::Profile(profile), decoded)
                        .await?;
                }
                self.touch_if_due().await
            }
        }
    }

    /// Reads a profile in the stream form with the stream's tables: its contents, or
    /// `None` with the profile marked refused.
    async fn read_stream_form(
        &mut self,
        profile: &mut PipelineProfile,
    ) -> Result<Option<ProfileContents>, Status> {
        // Stored as what it is once read: the agent's own form.
        profile.format = ProfileFormat::Native;
        if profile.error.is_some() {
            return Ok(None);
        }
        let mut tables = self.tables.take().unwrap_or_default();
        let data = std::mem::take(&mut profile.data);
        let limits = self.profile_limits;
        // Stacks the store knows by key are left out when the sink stores these
        // contents as they are.
        let known = self.sink.stores_by_key().then(|| {
            let (store, service) = (Arc::clone(&self.store), self.hello.service.clone());
            // The day the processor will store it on.
            let started = crate::process::skew::Skew::now(self.max_clock_skew)
                .started(profile.started_unix_nanos);
            move |scope: u64, keys: &[u32]| {
                store.stacks_known_by_key(&service, started, scope, keys)
            }
        });
        // CPU work (more for a profile of many new stacks): on the blocking pool, the
        // tables going along and coming back.
        let (tables, data, result) = tokio::task::spawn_blocking(move || {
            let known = known.as_ref().map(|k| k as normalize::KnownStacks<'_>);
            let result = tables.decode(&data, limits, known);
            (tables, data, result)
        })
        .await
        .map_err(|e| {
            Status::internal(format!(
                "reading profile {} failed: {e}; its stream's tables are lost, reconnect",
                profile.profile_id
            ))
        })?;
        self.tables = Some(tables);
        profile.data = data;
        match result {
            Ok(contents) => Ok(Some(contents)),
            Err(err) => {
                crate::metrics::metrics().profile_refused(
                    crate::metrics::Source::Agent,
                    crate::metrics::normalize_reason(&err),
                );
                tracing::warn!(service = %self.hello.service, instance = %self.hello.instance_id, profile_id = %profile.profile_id, event_id = %profile.event_id, kind = profile.kind.as_str(), bytes = profile.data.len(), error = %err, "profile refused");
                profile.error = Some(format!("refused by the collector: {err}"));
                Ok(None)
            }
        }
    }

    /// Sends the agent the update the node's changed state gives it, if any.
    async fn push_update(&mut self) -> Result<(), Status> {
        let Some(update) = self.control.next_update() else {
            return Ok(());
        };
        tracing::info!(service = %self.hello.service, instance = %self.hello.instance_id, version = update.version, rules = update.rules.len(), paused = update.pause.is_some(), "pushing central rules");
        self.tx
            .send(Ok(pb::CollectorMessage::from(
                &CollectorMessage::ConfigUpdate(update),
            )))
            .await
            .map_err(|_| Status::cancelled("agent went away"))
    }

    /// Hands one event to the sink, to be acknowledged once durable (see
    /// [`Session::delivered`]); waits first while [`MAX_DELIVERIES`] are in progress.
    async fn deliver(
        &mut self,
        seq: u64,
        body: PipelineBody,
        decoded: Option<ProfileContents>,
    ) -> Result<(), Status> {
        // One profile of a stream at a time (each is decoded whole, so this keeps memory
        // bounded as before); its metric windows and triggers pass it.
        let profile = matches!(body, PipelineBody::Profile(_));
        while self.deliveries.len() >= MAX_DELIVERIES
            || (profile && self.deliveries.iter().any(|d| d.profile))
        {
            let (seq, result) = next_delivered(&mut self.deliveries).await;
            self.delivered(seq, result).await?;
        }
        // Triggers keep their order, and a profile waits for the triggers before it.
        let (after, done) = match body {
            PipelineBody::Metrics(_) => (None, None),
            PipelineBody::Profile(_) => (self.last_trigger.clone(), None),
            PipelineBody::Trigger(_) => {
                let (done, waiting) = watch::channel(false);
                (self.last_trigger.replace(waiting), Some(done))
            }
        };
        let event = PipelineEvent {
            service: self.hello.service.clone(),
            instance_id: self.hello.instance_id.clone(),
            body,
        };
        let sink = Arc::clone(&self.sink);
        let handle = tokio::spawn(async move {
            if let Some(mut after) = after {
                let stored = after.wait_for(|durable| *durable).await.is_ok();
                if !stored {
                    return Err(Status::unavailable(
                        "an earlier trigger event of this stream was not stored; resend from it",
                    ));
                }
            }
            let (service, instance) = (event.service.clone(), event.instance_id.clone());
            let delivered = match decoded {
                Some(contents) => sink.deliver_decoded(event, contents).await,
                None => sink.deliver(event).await,
            };
            let result = delivered.map_err(|err| match err {
                SinkError::Store(err) => store_status(&err),
                SinkError::Broker(why) => {
                    tracing::warn!(%service, %instance, seq, error = %why, "event not acknowledged by the broker; the agent keeps it");
                    Status::unavailable(format!("the collector's pipeline did not take the message: {why}; resend later"))
                }
            });
            if let (Some(done), Ok(())) = (done, &result) {
                let _ = done.send(true);
            }
            result
        });
        self.deliveries.push_back(Delivery {
            seq,
            profile,
            handle,
        });
        Ok(())
    }

    /// Takes the outcome of the oldest delivery: acknowledges what is now durable, or
    /// ends the stream.
    async fn delivered(&mut self, seq: u64, result: Result<(), Status>) -> Result<(), Status> {
        result?;
        self.stored(seq).await
    }

    /// Records that the message `seq` is durable and acknowledges everything now
    /// durable: up to the highest stored sequence number, but short of the first chunk of
    /// any profile still being put together.
    async fn stored(&mut self, seq: u64) -> Result<(), Status> {
        self.highest_stored = self.highest_stored.max(seq);
        let durable = match self.profiles.oldest_pending_seq() {
            Some(first) => self.highest_stored.min(first.saturating_sub(1)),
            None => self.highest_stored,
        };
        self.ack(durable).await
    }

    async fn ack(&mut self, seq: u64) -> Result<(), Status> {
        if seq <= self.last_acked {
            return Ok(());
        }
        self.last_acked = seq;
        let ack = pb::CollectorMessage::from(&CollectorMessage::Ack { seq });
        self.tx
            .send(Ok(ack))
            .await
            .map_err(|_| Status::cancelled("agent went away"))
    }

    async fn touch_if_due(&mut self) -> Result<(), Status> {
        if self.last_touch.elapsed() < TOUCH_INTERVAL {
            return Ok(());
        }
        self.last_touch = Instant::now();
        self.store
            .upsert_instance(&instance_info(&self.hello, unix_nanos_now()))
            .await
            .map_err(|e| store_status(&e))
    }
}

#[cfg(test)]
mod tests;
