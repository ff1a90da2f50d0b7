//! Debug info uploads from agents: asked for when an agent that offers them connects and
//! the store lacks its executable's debug info, put together chunk by chunk in the
//! store, resumed with another agent of the build when the uploading one goes away.
//!
//! At most one agent of a build uploads at a time across the deployment: this collector
//! asks one of its agents only while it holds the build's claim in the store
//! ([`Store::claim_debuginfo_upload`], refreshed as chunks arrive, given back when the
//! upload completes or its last agent of the build leaves). The other agents of the
//! build wait as standbys; a claim held by another collector is tried again every
//! [`RETRY_INTERVAL`]. An upload resumes from the bytes the store holds (the agents of
//! one build all send the same blob), so a stream that ends mid-upload costs only the
//! chunk in flight.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holmes_proto::{pb, CollectorMessage, DebugInfoChunk, DebugInfoRequest};
use holmes_storage::{DebugInfoChunkRecord, DebugInfoSource, Store, StoreError};
use tokio::sync::{mpsc, watch, Mutex};
use tonic::Status;

use crate::symbolize::{Completed, Symbolizer};

/// How long a claim holds without being refreshed.
pub const CLAIM_LEASE: Duration = Duration::from_secs(120);
/// How often builds with waiting agents but no upload here try for the claim again, and
/// an upload that stopped sending is asked again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(15);
/// An upload that sent nothing for this long is asked again (from the stored offset),
/// of another agent if there is one.
const STALLED_AFTER: Duration = Duration::from_secs(60);
/// Largest debug info upload taken from an agent.
pub const MAX_AGENT_UPLOAD_BYTES: u64 = 1 << 30;
/// Largest chunk (the protocol's limit).
const MAX_CHUNK_BYTES: usize = 1 << 20;
/// Chunks are written to the store in groups of about this many bytes (one write per
/// group, not per chunk); what a crash loses of a group is asked for again.
const WRITE_BYTES: usize = 8 << 20;

type Outbound = mpsc::Sender<Result<pb::CollectorMessage, Status>>;

/// The uploads of this collector's agents.
pub struct Uploads {
    store: Arc<dyn Store>,
    symbolizer: Option<Arc<Symbolizer>>,
    /// This collector, as claims name it.
    holder: String,
    next_stream: AtomicU64,
    requests: AtomicU64,
    state: Mutex<BTreeMap<String, Build>>,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// One build with agents here that offer its upload.
#[derive(Default)]
struct Build {
    /// The agents of the build that offer uploads, by stream.
    streams: BTreeMap<u64, Outbound>,
    /// The stream uploading now, while this collector holds the claim.
    uploader: Option<u64>,
    /// The next byte expected.
    expected: u64,
    /// When the claim was last written.
    claimed_at: Option<Instant>,
    /// When the upload last made progress (or was asked for).
    progress_at: Option<Instant>,
    started_at: Option<Instant>,
    /// Complete in the store: nothing to do.
    complete: bool,
    /// Chunks received and not written yet (up to [`WRITE_BYTES`]).
    pending: Vec<DebugInfoChunkRecord>,
    pending_bytes: usize,
}

impl Build {
    /// Writes the chunks received so far; on failure they are dropped, and the upload
    /// resumes from what the store holds.
    async fn write_pending(&mut self, store: &dyn Store, build_id: &str) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunks = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let written = store.insert_debuginfo(&chunks).await;
        if written.is_err() {
            tracing::warn!(
                build_id,
                "debug info chunks not stored; the upload is asked again"
            );
            self.uploader = None;
        }
        written
    }
}

/// A stream's handle on its build's upload, given back when the stream ends.
#[derive(Debug)]
pub struct Offer {
    build_id: String,
    stream: u64,
}

impl Uploads {
    /// Uploads into `store`; `symbolizer` (when this node processes) is told when a
    /// build's debug info is complete.
    pub fn new(store: Arc<dyn Store>, symbolizer: Option<Arc<Symbolizer>>) -> Arc<Uploads> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Arc::new(Uploads {
            store,
            symbolizer,
            holder: format!("{host}/{}/{nonce:08x}", std::process::id()),
            next_stream: AtomicU64::new(1),
            requests: AtomicU64::new(0),
            state: Mutex::default(),
        })
    }

    /// `DebugInfoRequest`s sent to agents so far.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Retries builds waiting for the claim, and stalled uploads, every
    /// [`RETRY_INTERVAL`] until `closing`.
    pub fn spawn(
        self: &Arc<Self>,
        mut closing: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RETRY_INTERVAL);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = async { let _ = closing.wait_for(|c| *c).await; } => return,
                    _ = tick.tick() => this.retry().await,
                }
            }
        })
    }

    /// An agent of `build_id` that offers its upload connected on `tx`: asks it for the
    /// upload if the store lacks the build's debug info and no other agent uploads it.
    pub async fn offered(&self, build_id: &str, tx: Outbound) -> Offer {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().await;
        let build = state.entry(build_id.to_owned()).or_default();
        build.streams.insert(stream, tx);
        if !build.complete && build.uploader.is_none() {
            if let Err(err) = self.start(build_id, build).await {
                tracing::warn!(build_id, error = %err, "cannot start a debug info upload");
            }
        }
        Offer {
            build_id: build_id.to_owned(),
            stream,
        }
    }

    /// The stream of `offer` ended: an upload it was sending goes on with another agent
    /// of the build, or gives the claim back.
    pub async fn withdrawn(&self, offer: Offer) {
        let mut state = self.state.lock().await;
        let Some(build) = state.get_mut(&offer.build_id) else {
            return;
        };
        build.streams.remove(&offer.stream);
        if build.uploader == Some(offer.stream) {
            let _ = build
                .write_pending(self.store.as_ref(), &offer.build_id)
                .await;
            build.uploader = None;
            tracing::info!(build_id = %offer.build_id, at = build.expected, "the agent uploading debug info went away");
            if let Err(err) = self.start(&offer.build_id, build).await {
                tracing::warn!(build_id = %offer.build_id, error = %err, "cannot resume a debug info upload");
            }
        }
        if build.streams.is_empty() {
            if build.uploader.is_none() && build.claimed_at.take().is_some() {
                let _ = self
                    .store
                    .release_debuginfo_upload(&offer.build_id, &self.holder)
                    .await;
            }
            state.remove(&offer.build_id);
        }
    }

    /// A chunk from the stream of `offer`: stored if it continues the upload this
    /// collector asked that stream for; ignored otherwise.
    pub async fn chunk(
        &self,
        offer: Option<&Offer>,
        chunk: DebugInfoChunk,
    ) -> Result<(), StoreError> {
        let Some(offer) = offer.filter(|o| o.build_id == chunk.build_id) else {
            tracing::debug!(build_id = %chunk.build_id, "ignoring debug info nobody asked this agent for");
            return Ok(());
        };
        let mut state = self.state.lock().await;
        let Some(build) = state.get_mut(&offer.build_id) else {
            return Ok(());
        };
        if build.uploader != Some(offer.stream) || build.complete {
            return Ok(());
        }
        let len = chunk.data.len() as u64;
        if chunk.data.len() > MAX_CHUNK_BYTES
            || chunk.total_bytes > MAX_AGENT_UPLOAD_BYTES
            || chunk.total_bytes == 0
        {
            tracing::warn!(build_id = %chunk.build_id, bytes = len, total = chunk.total_bytes, "refusing a debug info upload beyond the limits");
            build.uploader = None;
            build.complete = true;
            build.claimed_at = None;
            let _ = self
                .store
                .release_debuginfo_upload(&offer.build_id, &self.holder)
                .await;
            return Ok(());
        }
        let end = chunk.offset.saturating_add(len);
        if chunk.offset > build.expected {
            // A gap (a chunk lost): ask again from what the store has.
            tracing::info!(build_id = %chunk.build_id, at = chunk.offset, expected = build.expected, "debug info chunk past a gap; asking again");
            let (stream, at) = (offer.stream, build.expected);
            self.request(&offer.build_id, build, stream, at).await;
            return Ok(());
        }
        if end <= build.expected && len > 0 {
            return Ok(());
        }
        build.pending_bytes += chunk.data.len();
        build.pending.push(DebugInfoChunkRecord {
            build_id: chunk.build_id.clone(),
            source: DebugInfoSource::Agent,
            offset: chunk.offset,
            total_bytes: chunk.total_bytes,
            data: chunk.data,
        });
        build.expected = end;
        build.progress_at = Some(Instant::now());
        if build.pending_bytes >= WRITE_BYTES || end >= chunk.total_bytes {
            build
                .write_pending(self.store.as_ref(), &offer.build_id)
                .await?;
        }
        if end >= chunk.total_bytes {
            let status = self.store.debuginfo_status(&offer.build_id).await?;
            if status.is_some_and(|s| s.complete()) {
                tracing::info!(build_id = %offer.build_id, bytes = chunk.total_bytes, took = ?build.started_at.map(|s| s.elapsed()), "debug info upload complete");
                build.complete = true;
                build.uploader = None;
                build.claimed_at = None;
                self.store
                    .release_debuginfo_upload(&offer.build_id, &self.holder)
                    .await?;
                if let Some(symbolizer) = &self.symbolizer {
                    symbolizer.completed(&offer.build_id, Completed::JustNow);
                }
            }
            return Ok(());
        }
        if build
            .claimed_at
            .is_none_or(|at| at.elapsed() > CLAIM_LEASE / 4)
        {
            self.store
                .claim_debuginfo_upload(&offer.build_id, &self.holder, CLAIM_LEASE)
                .await?;
            build.claimed_at = Some(Instant::now());
        }
        Ok(())
    }

    /// Starts (or resumes) the build's upload with one of its agents, if the store
    /// lacks it and this collector gets the claim.
    async fn start(&self, build_id: &str, build: &mut Build) -> Result<(), StoreError> {
        let status = self.store.debuginfo_status(build_id).await?;
        if status.is_some_and(|s| s.complete()) {
            build.complete = true;
            if build.claimed_at.take().is_some() {
                self.store
                    .release_debuginfo_upload(build_id, &self.holder)
                    .await?;
            }
            if let Some(symbolizer) = &self.symbolizer {
                symbolizer.completed(build_id, Completed::Earlier);
            }
            return Ok(());
        }
        if build.streams.is_empty() {
            return Ok(());
        }
        if !self
            .store
            .claim_debuginfo_upload(build_id, &self.holder, CLAIM_LEASE)
            .await?
        {
            tracing::debug!(
                build_id,
                "another collector's agent uploads this build; waiting"
            );
            return Ok(());
        }
        build.claimed_at = Some(Instant::now());
        let from = status
            .filter(|s| s.source == DebugInfoSource::Agent)
            .map_or(0, |s| s.stored_bytes);
        let Some(&stream) = build.streams.keys().next() else {
            return Ok(());
        };
        build.started_at.get_or_insert_with(Instant::now);
        self.request(build_id, build, stream, from).await;
        Ok(())
    }

    /// Asks `stream` for the build's upload from `from`; a stream that is gone is
    /// dropped and the next one asked.
    async fn request(&self, build_id: &str, build: &mut Build, mut stream: u64, from: u64) {
        loop {
            let Some(tx) = build.streams.get(&stream) else {
                build.uploader = None;
                return;
            };
            let msg =
                pb::CollectorMessage::from(&CollectorMessage::DebugInfoRequest(DebugInfoRequest {
                    build_id: build_id.to_owned(),
                    offset: from,
                }));
            if tx.try_send(Ok(msg)).is_ok() {
                self.requests.fetch_add(1, Ordering::Relaxed);
                tracing::info!(build_id, from, "asking an agent for its debug info");
                build.uploader = Some(stream);
                build.expected = from;
                build.progress_at = Some(Instant::now());
                return;
            }
            build.streams.remove(&stream);
            match build.streams.keys().next() {
                Some(&next) => stream = next,
                None => {
                    build.uploader = None;
                    return;
                }
            }
        }
    }

    async fn retry(&self) {
        let mut state = self.state.lock().await;
        let mut stale = Vec::new();
        let builds: Vec<String> = state.keys().cloned().collect();
        for build_id in builds {
            let Some(build) = state.get_mut(&build_id) else {
                continue;
            };
            if build.complete {
                continue;
            }
            let stalled = build.uploader.is_some()
                && build
                    .progress_at
                    .is_some_and(|at| at.elapsed() > STALLED_AFTER);
            if stalled {
                // Ask the next agent (the stalled one last).
                let _ = build.write_pending(self.store.as_ref(), &build_id).await;
                if let Some(stuck) = build.uploader.take() {
                    if let Some(tx) = build.streams.remove(&stuck) {
                        build.streams.insert(stuck, tx);
                    }
                    tracing::info!(
                        build_id,
                        at = build.expected,
                        "debug info upload stalled; asking again"
                    );
                }
            }
            if build.uploader.is_none() {
                if let Err(err) = self.start(&build_id, build).await {
                    tracing::warn!(build_id, error = %err, "cannot start a debug info upload");
                }
            } else if build
                .claimed_at
                .is_some_and(|at| at.elapsed() > CLAIM_LEASE / 4)
            {
                match self
                    .store
                    .claim_debuginfo_upload(&build_id, &self.holder, CLAIM_LEASE)
                    .await
                {
                    Ok(_) => build.claimed_at = Some(Instant::now()),
                    Err(err) => {
                        tracing::warn!(build_id, error = %err, "cannot refresh a debug info upload claim")
                    }
                }
            }
            if build.streams.is_empty() {
                stale.push(build_id);
            }
        }
        for build_id in stale {
            state.remove(&build_id);
        }
    }
}
