//! The stream to the collector: connect, say hello, resend whatever is unacknowledged,
//! then send new messages as they are queued and apply the collector's acks.
//!
//! Profiles queue self-contained. When the collector answers `connect` with the
//! [`STREAM_HEADER`] metadata, a profile that fits one chunk goes out in the stream
//! form instead ([`holmes_proto::native::stream`]): each stack defined once per stream,
//! so that a profile of stacks the stream has had is little more than its samples.
//! Each stream starts its tables empty, so a resend on a new stream defines again what
//! it uses.
//!
//! A collector that is down or goes away never reaches the host: this task just
//! reconnects with exponential backoff and jitter, and logs the first failure of a run
//! at `warn` and the rest at `debug`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holmes_proto::native::stream::{StreamEncoder, STREAM_HEADER};
use holmes_proto::native::NativeProfile;
use holmes_proto::{
    pb, AgentBody, AgentMessage, CaptureOutcome, CaptureRefusal, CaptureRequest, CollectorMessage,
    ConfigApplied, ConfigUpdate, Heartbeat, Hello, ProfileChunk, ProfileFormat, RefusalReason,
    RuleConfig,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::debuginfo::{UploadSettings, Uploads};
use super::transport::Transport;
use super::Delivery;
use crate::clock::unix_nanos_now;
use crate::jitter::Jitter;

/// Longest a single send may wait for the stream before the connection counts as dead.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// A heartbeat goes out when nothing else did for this long.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// First reconnection delay.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Messages sent per round before looking at acks and new work again.
const SEND_BATCH: usize = 16;
/// Most messages waiting in the stream for a debug info chunk to join them.
const UPLOAD_IN_FLIGHT: usize = 2;
/// How soon a full stream is looked at again for room for an upload chunk.
const UPLOAD_RECHECK: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("collector refused the stream: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("stream broke: {0}")]
    Broken(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Where and how to reach the collector.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    /// The collector's address, `http://host:port` or `https://host:port`.
    pub(crate) url: String,
    pub(crate) transport: Transport,
    /// Time allowed to connect and to open the stream.
    pub(crate) connect_timeout: Duration,
    /// Longest wait between two attempts.
    pub(crate) max_backoff: Duration,
}

/// What the stream needs from the rest of the agent: the rules and their version to
/// announce in each hello and heartbeat, and somewhere to put what the collector asks
/// for.
pub(crate) trait Control: Send + Sync {
    /// The rules in force.
    fn rules(&self) -> Vec<RuleConfig>;
    /// Version of the collector's rules in force (0: none).
    fn rules_version(&self) -> u64;
    /// Applies a `ConfigUpdate`; the answer for the collector, or `None` for an update
    /// older than the one in force, which changes nothing and gets no answer.
    fn apply_config(&self, update: &ConfigUpdate) -> Option<ConfigApplied>;
    /// A capture the collector asks for; false when it cannot be queued.
    fn request_capture(&self, request: CaptureRequest) -> bool;
}

/// Runs until the sender thread is told to stop.
pub(crate) async fn run(
    link: Link,
    hello: Hello,
    delivery: Arc<Delivery>,
    control: Arc<dyn Control>,
    uploads: UploadSettings,
) {
    let url = link.url.clone();
    let mut backoff = INITIAL_BACKOFF;
    let mut rng = Jitter::new();
    let mut failures_in_a_row = 0u32;
    loop {
        let started = Instant::now();
        let result = session(&link, &hello, &delivery, &control, &uploads).await;
        delivery.connected.store(false, Ordering::Relaxed);
        let healthy = started.elapsed() > Duration::from_secs(10);
        match result {
            Ok(()) => {
                tracing::info!(target: "holmes", collector = %url, "collector closed the stream; reconnecting");
                failures_in_a_row = 0;
            }
            Err(err) => {
                if failures_in_a_row == 0 && matches!(err, SessionError::Refused { .. }) {
                    tracing::warn!(target: "holmes", collector = %url, error = %err, "collector ended the stream; data stays queued and the agent reconnects");
                } else if failures_in_a_row == 0 {
                    tracing::warn!(target: "holmes", collector = %url, error = %err, "collector unreachable; data stays queued and the agent keeps retrying");
                } else {
                    tracing::debug!(target: "holmes", collector = %url, error = %err, attempt = failures_in_a_row + 1, "collector still unreachable");
                }
                failures_in_a_row = failures_in_a_row.saturating_add(1);
            }
        }
        if healthy {
            backoff = INITIAL_BACKOFF;
        }
        tokio::time::sleep(rng.spread(backoff, 0.25)).await;
        backoff = backoff.saturating_mul(2).min(link.max_backoff);
    }
}

async fn session(
    link: &Link,
    hello: &Hello,
    delivery: &Arc<Delivery>,
    control: &Arc<dyn Control>,
    upload_settings: &UploadSettings,
) -> Result<(), SessionError> {
    let url = link.url.as_str();
    let endpoint = link
        .transport
        .endpoint(url)
        .map_err(|e| SessionError::Connect(source_chain(&e)))?
        .connect_timeout(link.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let channel = tokio::time::timeout(link.connect_timeout, endpoint.connect())
        .await
        .map_err(|_| SessionError::Timeout(link.connect_timeout))?
        .map_err(|e| SessionError::Connect(source_chain(&e)))?;
    let mut client = link.transport.client(channel);

    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(32);
    let mut hello = hello.clone();
    hello.rules = control.rules();
    hello.rules_version = control.rules_version();
    let hello_msg = AgentMessage {
        seq: 0,
        body: AgentBody::Hello(hello.clone()),
    };
    tx.send(pb::AgentMessage::from(&hello_msg))
        .await
        .map_err(|_| SessionError::Broken("stream closed before hello".into()))?;
    let response = tokio::time::timeout(
        link.connect_timeout,
        client.connect(link.transport.request(ReceiverStream::new(rx))),
    )
    .await
    .map_err(|_| SessionError::Timeout(link.connect_timeout))?
    .map_err(|s| SessionError::Refused {
        code: s.code(),
        message: s.message().to_owned(),
    })?;
    let mut tables = response
        .metadata()
        .contains_key(STREAM_HEADER)
        .then(StreamEncoder::sender);
    let mut inbound = response.into_inner();
    delivery.connected.store(true, Ordering::Relaxed);
    delivery.connections.fetch_add(1, Ordering::Relaxed);
    tracing::info!(target: "holmes", collector = %url, service = %hello.service, instance = %hello.instance_id, "connected to collector");

    // Debug info the collector asks for comes from an upload thread, chunk by chunk; it
    // ends with this stream.
    let (uploads, mut upload_chunks) = Uploads::new(upload_settings.clone());

    // Acks are read on their own task so that a long resend can never stall them (and
    // with them the collector's side of the stream).
    let (reader_delivery, reader_control) = (Arc::clone(delivery), Arc::clone(control));
    let mut reader = tokio::spawn(async move {
        loop {
            match inbound.message().await {
                Ok(Some(msg)) => {
                    handle_inbound(&reader_delivery, reader_control.as_ref(), &uploads, msg)
                }
                Ok(None) => return Ok(()),
                Err(status) => {
                    return Err(SessionError::Refused {
                        code: status.code(),
                        message: status.message().to_owned(),
                    })
                }
            }
        }
    });

    let mut reader_done = None;
    let result = async {
        // Resend everything the collector has not acknowledged, then follow new work.
        let mut sent_upto = delivery.outbox().acked();
        let mut last_send = Instant::now();
        loop {
            for body in delivery.take_replies() {
                send(&tx, pb::AgentMessage::from(&AgentMessage { seq: 0, body })).await?;
            }
            let batch = delivery.pending_after(sent_upto, SEND_BATCH);
            let more = batch.len() >= SEND_BATCH;
            for msg in &batch {
                let wire = match &mut tables {
                    Some(tables) => stream_form(tables, msg),
                    None => pb::AgentMessage::from(msg),
                };
                send(&tx, wire).await?;
                sent_upto = msg.seq;
                delivery.sent.fetch_add(1, Ordering::Relaxed);
                last_send = Instant::now();
            }
            if more && !reader.is_finished() {
                continue;
            }
            let heartbeat_due = last_send + HEARTBEAT_INTERVAL;
            // An upload chunk goes out only while the stream has little queued, so an
            // upload never holds more than a couple of chunks in memory here.
            let room_for_upload = tx.capacity() + UPLOAD_IN_FLIGHT >= tx.max_capacity();
            tokio::select! {
                _ = delivery.queued.notified() => {}
                Some(chunk) = upload_chunks.recv(), if room_for_upload => {
                    let msg = AgentMessage { seq: 0, body: AgentBody::DebugInfoChunk(chunk) };
                    send(&tx, pb::AgentMessage::from(&msg)).await?;
                    last_send = Instant::now();
                }
                // Nothing wakes this loop when the stream drains: look again shortly.
                _ = tokio::time::sleep(UPLOAD_RECHECK), if !room_for_upload => {}
                _ = tokio::time::sleep_until(heartbeat_due.into()) => {
                    let (dropped, unacked) = {
                        let outbox = delivery.outbox();
                        (outbox.dropped(), outbox.len() as u64)
                    };
                    let beat = AgentMessage {
                        seq: 0,
                        body: AgentBody::Heartbeat(Heartbeat {
                            unix_nanos: unix_nanos_now(),
                            dropped_messages: dropped,
                            unacked_messages: unacked,
                            rules_version: control.rules_version(),
                        }),
                    };
                    send(&tx, pb::AgentMessage::from(&beat)).await?;
                    last_send = Instant::now();
                }
                done = &mut reader => {
                    reader_done = Some(done);
                    break;
                }
            }
        }
        Ok::<(), SessionError>(())
    }
    .await;
    // Either side ending ends the session; the reader's verdict explains why.
    drop(tx);
    let reader_result = match reader_done {
        Some(done) => done,
        None => {
            reader.abort();
            reader.await
        }
    };
    match reader_result {
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) | Err(_) => result,
    }
}

/// `msg` as it goes out on a stream with `tables`: a native profile in one chunk in the
/// stream form, anything else as it is.
fn stream_form(tables: &mut StreamEncoder, msg: &AgentMessage) -> pb::AgentMessage {
    let AgentBody::ProfileChunk(c) = &msg.body else {
        return pb::AgentMessage::from(msg);
    };
    if c.format != ProfileFormat::Native || c.chunk_count != 1 || c.error.is_some() {
        return pb::AgentMessage::from(msg);
    }
    let Ok(profile) = NativeProfile::decode(&c.data) else {
        // Not ours to fix: the collector says what is wrong with it.
        return pb::AgentMessage::from(msg);
    };
    if !StreamEncoder::fits(&profile) {
        return pb::AgentMessage::from(msg);
    }
    let data = tables.encode(&profile);
    pb::AgentMessage::from(&AgentMessage {
        seq: msg.seq,
        body: AgentBody::ProfileChunk(ProfileChunk {
            profile_id: c.profile_id.clone(),
            event_id: c.event_id.clone(),
            kind: c.kind,
            chunk_index: c.chunk_index,
            chunk_count: c.chunk_count,
            total_bytes: data.len() as u64,
            data,
            started_unix_nanos: c.started_unix_nanos,
            duration: c.duration,
            error: None,
            labels: c.labels.clone(),
            format: ProfileFormat::NativeStream,
        }),
    })
}

async fn send(
    tx: &mpsc::Sender<pb::AgentMessage>,
    msg: pb::AgentMessage,
) -> Result<(), SessionError> {
    tokio::time::timeout(SEND_TIMEOUT, tx.send(msg))
        .await
        .map_err(|_| SessionError::Timeout(SEND_TIMEOUT))?
        .map_err(|_| SessionError::Broken("request stream closed".into()))
}

fn handle_inbound(
    delivery: &Delivery,
    control: &dyn Control,
    uploads: &Uploads,
    msg: pb::CollectorMessage,
) {
    match CollectorMessage::try_from(msg) {
        Ok(CollectorMessage::Ack { seq }) => {
            delivery.ack(seq);
        }
        Ok(CollectorMessage::ConfigUpdate(update)) => {
            if let Some(applied) = control.apply_config(&update) {
                delivery.reply(AgentBody::ConfigApplied(applied));
            }
        }
        Ok(CollectorMessage::CaptureRequest(req)) => {
            let (id, kinds) = (req.request_id.clone(), req.kinds.clone());
            let purpose = req.purpose.as_str();
            if control.request_capture(req) {
                tracing::info!(target: "holmes", request_id = %id, ?kinds, purpose, "capture requested by the collector");
            } else {
                tracing::warn!(target: "holmes", request_id = %id, ?kinds, purpose, "refusing a capture request: too many are waiting");
                let detail = "too many capture requests are waiting".to_owned();
                delivery.reply(AgentBody::CaptureOutcome(CaptureOutcome {
                    request_id: id,
                    event_id: None,
                    captured: Vec::new(),
                    refused: kinds
                        .into_iter()
                        .map(|kind| CaptureRefusal {
                            kind,
                            reason: RefusalReason::Busy,
                            detail: detail.clone(),
                        })
                        .collect(),
                }));
            }
        }
        Ok(CollectorMessage::SkipProfiles(skip)) => {
            let removed = delivery.skip(&skip.event_id, &skip.kinds);
            tracing::info!(target: "holmes", event_id = %skip.event_id, kinds = ?skip.kinds, removed, "the collector asked not to send these profiles");
        }
        Ok(CollectorMessage::DebugInfoRequest(request)) => uploads.request(&request),
        Err(err) => {
            tracing::warn!(target: "holmes", error = %err, "ignoring a malformed message from the collector");
        }
    }
}

/// The error and its causes on one line ("transport error: connection refused").
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
