//! One agent's stream once its `Hello` is accepted ([`Session`]): its messages handled
//! in order, its events handed to the sink and acknowledged once durable, its profiles
//! put together from their chunks and, in the stream form, read with the stream's
//! tables.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holmes_proto::{pb, AgentBody, AgentMessage, CollectorMessage, Hello, ProfileFormat};
use holmes_storage::{ProfileContents, Store};
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use super::assemble::{Assembler, Step};
use super::limits::TableShare;
use super::{check_ids, debuginfo, instance_info, read_status, MAX_DELIVERIES, TOUCH_INTERVAL};
use crate::clock::unix_nanos_now;
use crate::control::agent::AgentControl;
use crate::error::store_status;
use crate::process::normalize::{self, StreamTables};
use crate::process::{PipelineBody, PipelineEvent, PipelineProfile, Sink, SinkError};

/// Stream-form profiles up to this size are read on their session's task rather than
/// on the blocking pool: one of some 45 KiB (1,000 samples, a quarter of its stacks new
/// to the stream) takes about half a millisecond of CPU, and the trip to the pool and
/// back cost more than that spares the runtime (in the ingest bench, context switches
/// fell from 6.3 % of the collector's CPU to 2.8 %, futex calls from 3.7 % to 1.2 %).
const INLINE_READ_BYTES: usize = 64 * 1024;

/// An event handed to the sink: its sequence number, and the task making it durable.
pub(super) struct Delivery {
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

/// One agent's stream, from its accepted `Hello` to its end.
pub(super) struct Session {
    pub(super) hello: Hello,
    pub(super) uploads: Option<Arc<debuginfo::Uploads>>,
    /// The executable's debug info upload this agent offered.
    pub(super) offer: Option<debuginfo::Offer>,
    pub(super) control: AgentControl,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) store: Arc<dyn Store>,
    pub(super) tx: mpsc::Sender<Result<pb::CollectorMessage, Status>>,
    pub(super) last_acked: u64,
    /// Highest sequence number of a message made durable on this stream.
    pub(super) highest_stored: u64,
    /// Events handed to the sink and not durable yet, in sequence order.
    pub(super) deliveries: VecDeque<Delivery>,
    /// Turns true once the stream's latest trigger is durable (dropped unset if it
    /// failed): what comes after it waits for it.
    pub(super) last_trigger: Option<watch::Receiver<bool>>,
    /// Profiles whose chunks are still coming.
    pub(super) profiles: Assembler,
    /// The stream's tables, once it sent a profile in the stream form.
    pub(super) tables: Option<Box<StreamTables>>,
    /// What the tables hold, counted against the node's budget.
    pub(super) table_share: TableShare,
    /// The stream ends with this once what it handed on is acknowledged.
    pub(super) end_after: Option<Status>,
    pub(super) profile_limits: normalize::Limits,
    pub(super) max_clock_skew: Duration,
    /// How long an unfinished profile waits for its next chunk.
    pub(super) profile_idle_timeout: Duration,
    pub(super) last_touch: Instant,
}

impl Session {
    pub(super) async fn run(
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
                        if let Some(status) = self.end_after.take() {
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
            move |scope: u64,
                  stacks: &[holmes_storage::StackByKey<'_>],
                  locations: &[holmes_storage::LocationByKey<'_>]| {
                store.stacks_known_by_key(&service, started, scope, stacks, locations)
            }
        });
        let inline = data.len() <= INLINE_READ_BYTES;
        let read = move || {
            let known = known.as_ref().map(|k| k as normalize::KnownStacks<'_>);
            let result = tables.decode(&data, limits, known);
            (tables, data, result)
        };
        // CPU work, more for a profile of many new stacks: a small profile is read right
        // here, a larger one on the blocking pool, the tables going along and coming back.
        let (tables, data, result) = if inline {
            read()
        } else {
            tokio::task::spawn_blocking(read).await.map_err(|e| {
                Status::internal(format!(
                    "reading profile {} failed: {e}; its stream's tables are lost, reconnect",
                    profile.profile_id
                ))
            })?
        };
        if self.table_share.set(tables.bytes_held()) {
            self.tables = Some(tables);
        } else {
            // Over the node's budget: this profile goes on, the tables go, and the
            // stream ends once what it handed on is acknowledged (see
            // `StreamTableBudget`).
            let (held, max) = (
                self.table_share.budget().held(),
                self.table_share.budget().max(),
            );
            drop(tables);
            self.table_share.set(0);
            crate::metrics::metrics().ingest_refused("stream_table_budget");
            tracing::warn!(service = %self.hello.service, instance = %self.hello.instance_id, held, max, "agent stream ended: the agent streams' tables are over [limits] max_stream_table_bytes");
            self.end_after = Some(Status::resource_exhausted(format!(
                "the agent streams' tables on this collector reached {held} bytes, over its [limits] max_stream_table_bytes = {max}: this stream's are dropped; reconnect"
            )));
        }
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
