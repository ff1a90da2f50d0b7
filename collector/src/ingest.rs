//! Ingest: the gRPC service agents connect to, one bidirectional stream each.
//!
//! When tokens are configured ([`crate::auth`]), the stream must carry one, valid for
//! the service its `Hello` names; nothing of a refused stream is stored.
//! The stream must open with `Hello` (right version, valid names), which is answered
//! by recording the instance and, when the service or the fleet has central rules or a
//! pause, by a `ConfigUpdate` ([`crate::control::agent`]: later changes follow on the
//! same stream, and the agent's answers are recorded); every durable message after it (metric windows, trigger events,
//! profile chunks) is handed to the [`Sink`] as a [`PipelineEvent`](crate::process::PipelineEvent) and acknowledged by
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
//! [`STREAM_HEADER`] metadata, which this service sets while all streams' tables have
//! room ([`limits::StreamTableBudget`]). A stream's tables are
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
use holmes_proto::{pb, AgentBody, AgentMessage, CollectorMessage, Hello};
use holmes_storage::{InstanceInfo, Store};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::IngestAuth;
use crate::clock::unix_nanos_now;
use crate::control::agent::AgentControl;
use crate::control::Control;
use crate::error::store_status;
use crate::process::normalize;
use crate::process::Sink;

pub mod alertmanager;
pub mod assemble;
pub mod debuginfo;
pub mod foreign;
pub mod http;
pub mod limits;
pub mod live;
pub mod otlp;
pub mod pyroscope;
mod session;
pub(crate) mod silent;

use assemble::Assembler;
use session::Session;

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
    table_budget: Arc<limits::StreamTableBudget>,
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
            table_budget: limits::StreamTableBudget::new(&limits::LimitsConfig::default()),
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
        self.table_budget = limits::StreamTableBudget::new(limits);
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
        let offers_stream_form = self.table_budget.offers_stream_form();
        if !offers_stream_form {
            // Debug: while the budget stays near full every connect says it, and
            // holmes_ingest_stream_table_bytes shows it anyway.
            tracing::debug!(service = %hello.service, instance = %hello.instance_id, held = self.table_budget.held(), max = self.table_budget.max(), "stream form not offered: the agent streams' tables are near [limits] max_stream_table_bytes");
        }
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
            table_share: self.table_budget.share(),
            end_after: None,
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
        // This collector reads the agent's stream form, while its streams' tables have
        // room (`limits::StreamTableBudget`).
        if offers_stream_form {
            response.metadata_mut().insert(
                STREAM_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests;
