//! gRPC ingest: one bidirectional stream per agent.
//!
//! When tokens are configured ([`crate::auth`]), the stream must carry one, valid for
//! the service its `Hello` names; nothing of a refused stream is stored.
//! The stream must open with `Hello` (right version, valid names), which is answered
//! by recording the instance and, when the configuration has rules for the service, by
//! one `ConfigUpdate`; every durable message after it (metric windows, trigger events,
//! profile chunks) is stored and then acknowledged by sequence number. Profile chunks
//! are put together first ([`profiles`]): a profile is stored once its last chunk is in,
//! and since acknowledgements are cumulative, none reaches the first chunk of a profile
//! that is not stored yet. Whatever goes wrong with one agent ends that agent's stream
//! with a clear status and nothing else.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holmes_proto::names::{validate_labels, validate_name};
use holmes_proto::pb::ingest_server::Ingest;
use holmes_proto::{
    pb, AgentBody, AgentMessage, CollectorMessage, Hello, MetricWindow, TriggerEvent,
};
use holmes_storage::{
    InstanceInfo, MetricPoint, ProfileContents, ProfileRecord, Store, StoreError, TriggerRecord,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::IngestAuth;
use crate::clock::unix_nanos_now;
use crate::error::store_status;
use crate::query::reason_name;
use crate::rules::{update_for, ServiceRules};

pub mod live;
pub mod normalize;
pub mod profiles;

use normalize::Limits;
use profiles::{Assembler, Step};

/// How long a new stream may take to send its `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failing store write is retried, with backoff, before the agent's stream
/// ends with UNAVAILABLE (the agent then reconnects and resends what was not
/// acknowledged). Meanwhile the stream reads nothing more: its agent keeps the data.
pub const STORE_RETRY_FOR: Duration = Duration::from_secs(15);

/// Runs a store write until it succeeds or [`STORE_RETRY_FOR`] has passed, backing off
/// from 100 ms to 2 s between attempts.
async fn retry_store<'a, F>(what: &'static str, mut write: F) -> Result<(), Status>
where
    F: FnMut() -> Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'a>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        match write().await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(what, attempt, "store write succeeded after retrying");
                }
                return Ok(());
            }
            Err(err) if started.elapsed() + delay < STORE_RETRY_FOR => {
                tracing::warn!(what, attempt, retry_in_ms = delay.as_millis() as u64, error = %err, "store write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            Err(err) => return Err(store_status(&err)),
        }
    }
}

/// How often an instance's `last_seen` is refreshed while its stream is open.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(30);

/// The `Ingest` gRPC service.
#[derive(Clone)]
pub struct IngestService {
    store: Arc<dyn Store>,
    rules: Arc<ServiceRules>,
    closing: watch::Receiver<bool>,
    max_profile_bytes: u64,
    profile_limits: Limits,
    auth: IngestAuth,
    incidents: Option<Arc<crate::incidents::Incidents>>,
    live: Arc<live::LiveAgents>,
}

impl IngestService {
    /// A service writing to `store` and pushing `rules` (checked with
    /// [`crate::rules::check`]) to the agents of their services; streams end when
    /// `closing` turns true.
    pub fn new(store: Arc<dyn Store>, rules: ServiceRules, closing: watch::Receiver<bool>) -> Self {
        IngestService {
            store,
            rules: Arc::new(rules),
            closing,
            max_profile_bytes: crate::config::DEFAULT_MAX_PROFILE_BYTES,
            profile_limits: Limits::default(),
            auth: IngestAuth::default(),
            incidents: None,
            live: Arc::default(),
        }
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

    /// The registry of connected agents (for "capture now"), shared with the API.
    pub fn live_agents(&self) -> Arc<live::LiveAgents> {
        Arc::clone(&self.live)
    }

    /// Correlates every stored trigger event into incidents.
    pub fn with_incidents(mut self, incidents: Arc<crate::incidents::Incidents>) -> Self {
        self.incidents = Some(incidents);
        self
    }

    /// Bounds for decoding profiles (decompressed size, item counts, stack depth)
    /// instead of [`Limits::default`]; a profile beyond them is stored as refused.
    pub fn with_profile_limits(mut self, limits: Limits) -> Self {
        self.profile_limits = limits;
        self
    }

    /// The `ConfigUpdate` for a newly connected agent, if its service has rules.
    fn rule_update(&self, hello: &Hello) -> Option<pb::CollectorMessage> {
        match update_for(&self.rules, hello) {
            Ok(Some(update)) => {
                let rules: Vec<String> = update
                    .rules
                    .iter()
                    .map(|r| format!("{}: {}", r.metric, holmes_proto::rule_spec::format(r)))
                    .collect();
                tracing::info!(service = %hello.service, instance = %hello.instance_id, version = update.version, rules = %rules.join("; "), "pushing configured rules");
                Some(pb::CollectorMessage::from(&CollectorMessage::ConfigUpdate(
                    update,
                )))
            }
            Ok(None) => None,
            Err(err) => {
                // Only reachable with a configuration that skipped validation.
                tracing::error!(service = %hello.service, error = %err, "configured rules not pushed");
                None
            }
        }
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
        .map_err(|e| Status::invalid_argument(format!("invalid hello: {e}")))
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

fn points(hello: &Hello, window: &MetricWindow) -> Vec<MetricPoint> {
    let mut out = Vec::new();
    for series in &window.series {
        for s in series.samples.iter().filter(|s| s.value.is_finite()) {
            out.push(MetricPoint {
                service: hello.service.clone(),
                instance_id: hello.instance_id.clone(),
                metric: series.metric,
                unix_nanos: s.unix_nanos,
                value: s.value,
            });
        }
    }
    out
}

fn trigger_record(hello: &Hello, t: TriggerEvent) -> TriggerRecord {
    TriggerRecord {
        service: hello.service.clone(),
        instance_id: hello.instance_id.clone(),
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
        self.store
            .upsert_instance(&instance_info(&hello, unix_nanos_now()))
            .await
            .map_err(|e| store_status(&e))?;
        tracing::info!(%peer, service = %hello.service, instance = %hello.instance_id, agent_version = %hello.agent_version, "agent connected");

        let (tx, rx) = mpsc::channel(256);
        if let Some(update) = self.rule_update(&hello) {
            // The channel is new and empty, so this is the stream's first message.
            tx.send(Ok(update))
                .await
                .map_err(|_| Status::cancelled("agent went away"))?;
        }
        let session = Session {
            hello,
            incidents: self.incidents.clone(),
            store: Arc::clone(&self.store),
            tx,
            last_acked: 0,
            highest_stored: 0,
            profiles: Assembler::new(self.max_profile_bytes),
            profile_limits: self.profile_limits,
            last_touch: Instant::now(),
        };
        let live = Arc::clone(&self.live);
        let (service, stream) = (
            session.hello.service.clone(),
            live.add(
                &session.hello.service,
                &session.hello.instance_id,
                session.tx.clone(),
            ),
        );
        let closing = self.closing.clone();
        tokio::spawn(async move {
            session.run(inbound, closing).await;
            live.remove(&service, stream);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct Session {
    hello: Hello,
    incidents: Option<Arc<crate::incidents::Incidents>>,
    profile_limits: Limits,
    store: Arc<dyn Store>,
    tx: mpsc::Sender<Result<pb::CollectorMessage, Status>>,
    last_acked: u64,
    /// Highest sequence number of a message stored on this stream.
    highest_stored: u64,
    /// Profiles whose chunks are still coming.
    profiles: Assembler,
    last_touch: Instant,
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::AgentMessage>,
        mut closing: watch::Receiver<bool>,
    ) {
        let end = loop {
            let next = tokio::select! {
                next = inbound.message() => next,
                _ = closing.wait_for(|c| *c) => {
                    break Some(Status::unavailable("collector is shutting down; reconnect"));
                }
            };
            match next {
                Ok(Some(raw)) => match AgentMessage::try_from(raw) {
                    Ok(msg) => {
                        if let Err(status) = self.handle(msg).await {
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
        if let Some(status) = end
            .as_ref()
            .filter(|s| !matches!(s.code(), tonic::Code::Unknown | tonic::Code::Cancelled))
        {
            tracing::warn!(service = %self.hello.service, instance = %self.hello.instance_id, code = ?status.code(), error = status.message(), "agent stream ended with an error");
        } else {
            // A clean close, or the connection dropping (agent process gone).
            tracing::info!(service = %self.hello.service, instance = %self.hello.instance_id, "agent disconnected");
        }
        // Record when it was last heard from; a failure here only makes last_seen older.
        let _ = self
            .store
            .upsert_instance(&instance_info(&self.hello, unix_nanos_now()))
            .await;
        if let Some(status) = end {
            let _ = self.tx.send(Err(status)).await;
        }
    }

    async fn handle(&mut self, msg: AgentMessage) -> Result<(), Status> {
        match msg.body {
            AgentBody::Hello(_) => Err(Status::invalid_argument("hello sent twice on one stream")),
            AgentBody::Heartbeat(_) => self.touch_if_due().await,
            AgentBody::MetricWindow(window) => {
                if msg.seq == 0 {
                    return Err(Status::invalid_argument(
                        "metric window without a sequence number",
                    ));
                }
                let points = points(&self.hello, &window);
                retry_store("metrics", || self.store.insert_metrics(&points)).await?;
                self.stored(msg.seq).await?;
                self.touch_if_due().await
            }
            AgentBody::Trigger(trigger) => {
                if msg.seq == 0 {
                    return Err(Status::invalid_argument(
                        "trigger event without a sequence number",
                    ));
                }
                let record = trigger_record(&self.hello, trigger);
                retry_store("trigger", || {
                    self.store.insert_triggers(std::slice::from_ref(&record))
                })
                .await?;
                tracing::info!(
                    service = %record.service,
                    instance = %record.instance_id,
                    metric = record.metric.map_or("none", |m| m.as_str()),
                    reason = reason_name(record.reason),
                    current = record.current,
                    event_id = %record.event_id,
                    "trigger stored"
                );
                // Stored first: an incident always has its triggers in the store.
                if let Some(incidents) = &self.incidents {
                    incidents.observe(&record).await;
                }
                self.stored(msg.seq).await?;
                self.touch_if_due().await
            }
            AgentBody::ProfileChunk(chunk) => {
                if msg.seq == 0 {
                    return Err(Status::invalid_argument(
                        "profile chunk without a sequence number",
                    ));
                }
                let chunks = chunk.chunk_count;
                if let Step::Complete(mut record) =
                    self.profiles.push(&self.hello, msg.seq, chunk)?
                {
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
                        chunks,
                        error = record.error.as_deref().unwrap_or(""),
                        "profile stored"
                    );
                    self.stored(msg.seq).await?;
                }
                self.touch_if_due().await
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
        let (data, result) = tokio::task::spawn_blocking(move || {
            let result = normalize::normalize(&data, limits, &id, &service, started);
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

    /// Records that the message `seq` is in the store and acknowledges everything now
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
