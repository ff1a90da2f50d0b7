//! The path of a durable message from the agent's threads to the sender: written to the
//! spool first (when there is one), then numbered in the outbox; read back for sending;
//! deleted when acknowledged or dropped.
//!
//! Every file operation here runs on the agent's own threads — `holmes-agent` (windows,
//! trigger events, opening the spool), `holmes-capture` (profiles) and `holmes-sender`
//! (reads and deletions) — and never under the outbox lock, which host threads take
//! for `stats()`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use holmes_proto::{AgentBody, AgentMessage};

use crate::outbox::{approx_bytes, Admission, Held, Kind};
use crate::spool::Spool;
use crate::Shared;

impl Shared {
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
        self.lock_outbox().set_disk_cap(cap);
        let found = opened.found;
        let messages = found.len();
        // Set before queuing, so that the sender can read what it is handed.
        let spool = self.spool.get_or_init(|| opened.spool);
        self.lock_outbox().count_corrupt(opened.discarded);
        let mut iter = found.into_iter().peekable();
        let mut admissions = Vec::new();
        while let Some(first) = iter.next() {
            let kind = first.kind;
            let profile = first.profile.clone();
            let mut items = vec![(Held::Disk(first.file), first.bytes)];
            while let Some(next) = iter.next_if(|n| profile.is_some() && n.profile == profile) {
                items.push((Held::Disk(next.file), next.bytes));
            }
            admissions.push(self.lock_outbox().push_recovered(kind, items));
        }
        for admission in admissions {
            self.settle(admission);
        }
        let (recovered, bytes) = {
            let outbox = self.lock_outbox();
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
        let admission = self.lock_outbox().push_group(kind, items);
        let queued = admission.queued;
        self.settle(admission);
        if queued {
            self.queued.notify_one();
        }
    }

    /// The collector stored everything up to `seq`: forget it, delete its files.
    pub(crate) fn ack(&self, seq: u64) {
        let files = self.lock_outbox().ack(seq);
        if let Some(spool) = self.spool.get() {
            spool.remove(files);
        }
    }

    /// Up to `max` messages after `seq` to send (more to finish a profile), read from
    /// the spool where they are only there. A message that cannot be read is dropped
    /// and counted — with the rest of its profile, so none is sent in part.
    pub(crate) fn pending_after(&self, seq: u64, max: usize) -> Vec<AgentMessage> {
        loop {
            let batch = self.lock_outbox().after(seq, max);
            let mut out: Vec<(u64, AgentMessage)> = Vec::with_capacity(batch.len());
            let mut bad: Vec<u64> = Vec::new();
            for p in batch {
                if bad.last() == Some(&p.group) {
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
                out.push((p.group, AgentMessage { seq: p.seq, body }));
            }
            if bad.is_empty() {
                return out.into_iter().map(|(_, m)| m).collect();
            }
            let (lost, files) = self.lock_outbox().discard(&bad);
            if let Some(spool) = self.spool.get() {
                spool.remove(files);
            }
            if lost > 0 {
                tracing::warn!(target: "holmes", messages = lost, corrupt_total = self.lock_outbox().corrupt(), "dropped unreadable spooled messages");
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
        let total = self.lock_outbox().dropped();
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
