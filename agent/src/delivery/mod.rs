//! Delivery, the last stage: what leaves the agent. Trigger events and profiles go to
//! the local dump folder ([`dump`]); with a collector, every durable message (metric
//! window, trigger event, profile chunk) is written to the disk spool first when there
//! is one ([`spool`]), numbered in the outbox ([`outbox`]) until the collector
//! acknowledges it, and sent by the [`sender`] over the gRPC stream ([`transport`]).
//!
//! [`Delivery`] is that path: queue, read back for sending, delete when acknowledged or
//! dropped, or skipped when the collector asks not to send an event's profiles. It also
//! holds the few unsequenced answers to the collector (`ConfigApplied`, `CaptureOutcome`)
//! until the stream takes them. Every file operation here runs on the agent's own threads — `holmes-agent`
//! (windows, trigger events, opening the spool), `holmes-capture` (profiles) and
//! `holmes-sender` (reads and deletions) — and never under the outbox lock, which host
//! threads take for `stats()`.

pub(crate) mod dump;
mod message;
mod outbox;
pub(crate) mod sender;
mod spool;
pub(crate) mod transport;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use holmes_proto::{AgentBody, AgentMessage, ProfileKind};
use tokio::sync::Notify;

use message::{approx_bytes, Kind};
use outbox::{Admission, Held, Outbox, ProfileTag};
use spool::Spool;

/// Unsequenced answers waiting for a stream; beyond this the oldest is dropped (they
/// answer a collector that may be gone by now).
const MAX_REPLIES: usize = 64;
/// Skips remembered, for profiles not captured or not queued yet; the oldest is
/// forgotten beyond this.
const MAX_SKIPS: usize = 256;

/// The messages on their way to the collector, and what the stream did with them.
#[derive(Debug)]
pub(crate) struct Delivery {
    outbox: Mutex<Outbox>,
    /// The disk spool, when configured; opened by the agent thread as it starts.
    spool: OnceLock<Spool>,
    /// Whether a spool write failed since the last one that worked (to log once).
    spool_failing: AtomicBool,
    /// Woken when a message is queued.
    pub(crate) queued: Notify,
    /// Durable messages sent (resends included).
    pub(crate) sent: AtomicU64,
    /// Streams opened so far.
    pub(crate) connections: AtomicU64,
    /// Whether a stream is open now.
    pub(crate) connected: AtomicBool,
    /// Answers to the collector that carry no sequence number, oldest first.
    replies: Mutex<VecDeque<AgentBody>>,
    /// The collector's skips, newest last: event id and kinds (empty: all).
    skips: Mutex<VecDeque<(String, Vec<ProfileKind>)>>,
}

impl Delivery {
    /// An empty delivery keeping at most `outbox_bytes` of messages in memory.
    pub(crate) fn new(outbox_bytes: usize) -> Self {
        Delivery {
            outbox: Mutex::new(Outbox::new(outbox_bytes)),
            spool: OnceLock::new(),
            spool_failing: AtomicBool::new(false),
            queued: Notify::new(),
            sent: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            replies: Mutex::new(VecDeque::new()),
            skips: Mutex::new(VecDeque::new()),
        }
    }

    /// Queues an unsequenced answer for the collector (sent on the current stream, or
    /// the next one).
    pub(crate) fn reply(&self, body: AgentBody) {
        {
            let mut replies = self.replies.lock().unwrap_or_else(|p| p.into_inner());
            if replies.len() >= MAX_REPLIES {
                replies.pop_front();
                tracing::debug!(target: "holmes", "too many answers for the collector waiting; dropped the oldest");
            }
            replies.push_back(body);
        }
        self.queued.notify_one();
    }

    /// The answers waiting for the stream, oldest first.
    pub(crate) fn take_replies(&self) -> Vec<AgentBody> {
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect()
    }

    /// The collector does not want the profiles of `event_id` of `kinds` (empty: all):
    /// those queued and not on the wire are removed with their spool files, and those
    /// still to come are not queued. Returns how many queued profiles were removed.
    pub(crate) fn skip(&self, event_id: &str, kinds: &[ProfileKind]) -> u64 {
        {
            let mut skips = self.skips.lock().unwrap_or_else(|p| p.into_inner());
            if skips.len() >= MAX_SKIPS {
                skips.pop_front();
            }
            skips.push_back((event_id.to_owned(), kinds.to_vec()));
        }
        let (profiles, files) = self.outbox().skip(event_id, kinds);
        if let Some(spool) = self.spool.get() {
            spool.remove(files);
        }
        profiles
    }

    /// Whether the collector asked not to send `kind` profiles of `event_id`.
    pub(crate) fn is_skipped(&self, event_id: &str, kind: ProfileKind) -> bool {
        let tag = ProfileTag {
            event_id: event_id.to_owned(),
            kind,
        };
        self.skips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(event, kinds)| tag.matches(event, kinds))
    }

    /// The outbox; a poisoned lock is taken over, since every outbox operation leaves
    /// it consistent before anything can panic.
    pub(crate) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the spool folder and queues what an earlier run left in it. Called once,
    /// by the agent thread before its first sample; without it messages stay in memory.
    pub(crate) fn open_spool(&self, dir: &Path, cap: u64) {
        let started = Instant::now();
        let opened = match Spool::open(dir) {
            Ok(opened) => opened,
            Err(err) => {
                tracing::warn!(target: "holmes", dir = %dir.display(), error = %err, "spool unusable; unacknowledged messages are kept in memory only");
                return;
            }
        };
        self.outbox().set_disk_cap(cap);
        let found = opened.found;
        let messages = found.len();
        // Set before queuing, so that the sender can read what it is handed.
        let spool = self.spool.get_or_init(|| opened.spool);
        self.outbox().count_corrupt(opened.discarded);
        let mut iter = found.into_iter().peekable();
        let mut admissions = Vec::new();
        while let Some(first) = iter.next() {
            let kind = first.kind;
            let profile = first.profile.clone();
            let mut items = vec![(Held::Disk(first.file), first.bytes)];
            while let Some(next) = iter.next_if(|n| profile.is_some() && n.profile == profile) {
                items.push((Held::Disk(next.file), next.bytes));
            }
            admissions.push(self.outbox().push_recovered(kind, items));
        }
        for admission in admissions {
            self.settle(admission);
        }
        let (recovered, bytes) = {
            let outbox = self.outbox();
            (outbox.recovered(), outbox.spooled().1)
        };
        tracing::info!(
            target: "holmes",
            dir = %spool.dir().display(),
            found = messages,
            recovered,
            bytes,
            discarded = opened.discarded,
            took_ms = started.elapsed().as_millis() as u64,
            "spool opened"
        );
        if opened.discarded > 0 {
            tracing::warn!(target: "holmes", dir = %spool.dir().display(), files = opened.discarded, "deleted spool files a crash left incomplete");
        }
        if recovered > 0 {
            self.queued.notify_one();
        }
    }

    /// Queues one durable message for the collector.
    pub(crate) fn enqueue(&self, body: AgentBody) {
        self.enqueue_group(vec![body]);
    }

    /// Queues messages that go together (a profile's chunks): all of them or none.
    pub(crate) fn enqueue_group(&self, bodies: Vec<AgentBody>) {
        let Some(kind) = bodies.first().and_then(Kind::of) else {
            return;
        };
        let tag = bodies.first().and_then(ProfileTag::of);
        if let Some(tag) = &tag {
            if self.is_skipped(&tag.event_id, tag.kind) {
                self.outbox().count_skipped();
                tracing::debug!(target: "holmes", event_id = %tag.event_id, kind = tag.kind.as_str(), "not queuing a profile the collector asked to skip");
                return;
            }
        }
        let items = match self.spool.get() {
            Some(spool) => match spool.write(&bodies) {
                Ok(files) => {
                    if self.spool_failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(target: "holmes", dir = %spool.dir().display(), "spool writes work again");
                    }
                    files
                        .into_iter()
                        .map(|(file, bytes)| (Held::Disk(file), bytes))
                        .collect()
                }
                Err(err) => {
                    if !self.spool_failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(target: "holmes", dir = %spool.dir().display(), error = %err, kind = kind.as_str(), "cannot write to the spool; keeping messages in memory until it works again");
                    }
                    in_memory(bodies)
                }
            },
            None => in_memory(bodies),
        };
        let admission = self.outbox().push_tagged(kind, items, tag.as_ref());
        let queued = admission.queued;
        self.settle(admission);
        if queued {
            self.queued.notify_one();
        }
    }

    /// The collector stored everything up to `seq`: forget it, delete its files.
    pub(crate) fn ack(&self, seq: u64) {
        let files = self.outbox().ack(seq);
        if let Some(spool) = self.spool.get() {
            spool.remove(files);
        }
    }

    /// Up to `max` messages after `seq` to send (more to finish a profile), read from
    /// the spool where they are only there. A message that cannot be read is dropped
    /// and counted — with the rest of its profile, so none is sent in part.
    pub(crate) fn pending_after(&self, seq: u64, max: usize) -> Vec<AgentMessage> {
        loop {
            let batch = self.outbox().after(seq, max);
            let mut out: Vec<(u64, AgentMessage)> = Vec::with_capacity(batch.len());
            let mut bad: Vec<u64> = Vec::new();
            let mut skipped: Vec<u64> = Vec::new();
            for p in batch {
                if bad.last() == Some(&p.group) || skipped.last() == Some(&p.group) {
                    continue;
                }
                let body = match p.held {
                    Held::Memory(body) => *body,
                    Held::Disk(file) => {
                        let read = match self.spool.get() {
                            Some(spool) => spool
                                .read(&file)
                                .map_err(|e| (e.is_missing(), e.to_string())),
                            None => Err((false, "no spool".to_owned())),
                        };
                        match read {
                            Ok(body) if Kind::of(&body) == Some(p.kind) => body,
                            Ok(_) => {
                                tracing::warn!(target: "holmes", file = file.name(), "a spool file holds another kind of message than its name says; dropping it");
                                bad.push(p.group);
                                continue;
                            }
                            Err((missing, error)) => {
                                if !missing {
                                    tracing::warn!(target: "holmes", file = file.name(), error = %error, "cannot read a spooled message; dropping it");
                                }
                                bad.push(p.group);
                                continue;
                            }
                        }
                    }
                };
                // Profiles recovered from the spool are known by event only now.
                if let Some(tag) = ProfileTag::of(&body) {
                    if self.is_skipped(&tag.event_id, tag.kind) {
                        skipped.push(p.group);
                        out.retain(|(group, _)| *group != p.group);
                        continue;
                    }
                }
                out.push((p.group, AgentMessage { seq: p.seq, body }));
            }
            if !skipped.is_empty() {
                let (_, files) = self.outbox().skip_groups(&skipped);
                if let Some(spool) = self.spool.get() {
                    spool.remove(files);
                }
                if bad.is_empty() {
                    // Their batch is asked for again without them.
                    continue;
                }
            }
            if bad.is_empty() {
                return out.into_iter().map(|(_, m)| m).collect();
            }
            let (lost, files) = self.outbox().discard(&bad);
            if let Some(spool) = self.spool.get() {
                spool.remove(files);
            }
            if lost > 0 {
                tracing::warn!(target: "holmes", messages = lost, corrupt_total = self.outbox().corrupt(), "dropped unreadable spooled messages");
            }
            // Their batch is asked for again without them.
        }
    }

    /// Deletes the files of what was dropped and reports the drops.
    fn settle(&self, admission: Admission) {
        if let Some(spool) = self.spool.get() {
            spool.remove(admission.files);
        }
        if admission.dropped.is_empty() {
            return;
        }
        let total = self.outbox().dropped();
        for (kind, messages) in admission.dropped {
            // Loud for the first drop and then at every power of two; a long outage
            // drops a window every send interval.
            if total.is_power_of_two() || messages > 1 {
                tracing::warn!(target: "holmes", kind = kind.as_str(), messages, dropped_total = total, "outbox full: dropped unacknowledged messages (oldest metric windows first, profiles last)");
            } else {
                tracing::debug!(target: "holmes", kind = kind.as_str(), messages, dropped_total = total, "outbox full: dropped unacknowledged messages");
            }
        }
    }
}

fn in_memory(bodies: Vec<AgentBody>) -> Vec<(Held, u64)> {
    bodies
        .into_iter()
        .map(|body| {
            let bytes = approx_bytes(&body);
            (Held::Memory(Box::new(body)), bytes)
        })
        .collect()
}
