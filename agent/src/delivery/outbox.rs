//! Messages waiting for the collector's acknowledgement, under byte caps.
//!
//! Every durable message gets the next sequence number here and stays until an `Ack`
//! covers it, so a reconnect resends exactly what the collector has not stored. A
//! message is held either in memory (capped by `outbox_bytes`) or, with a spool, on disk
//! (capped by `spool_bytes`; memory then holds only its file name). The disk write
//! itself happens before the message gets here, outside the outbox's lock, so nothing
//! here does I/O: the lock is also taken by `HolmesHandle::stats()` on host threads.
//!
//! When a cap is reached, messages are dropped by kind — the oldest metric windows
//! first, then the oldest trigger events, and profiles last — and a profile's chunks go
//! together, never leaving part of one. A profile that may be partly on the wire is not
//! dropped (the collector would wait for its missing chunks). Every drop is counted.

use std::collections::VecDeque;

#[cfg(test)]
use holmes_proto::AgentMessage;
use holmes_proto::{AgentBody, ProfileKind};

#[cfg(test)]
use super::message::approx_bytes;
use super::message::Kind;
use super::spool::SpoolFile;

/// Where a queued message is.
#[derive(Debug, Clone)]
pub(crate) enum Held {
    Memory(Box<AgentBody>),
    Disk(SpoolFile),
}

/// A message handed to the sender: in memory already, or to be read from the spool.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) seq: u64,
    /// Sequence number of the first message of its group (a profile's chunks share it).
    pub(crate) group: u64,
    pub(crate) kind: Kind,
    pub(crate) held: Held,
}

/// Which event and kind a queued profile is, so the collector can have it skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProfileTag {
    pub(crate) event_id: String,
    pub(crate) kind: ProfileKind,
}

impl ProfileTag {
    /// The tag of a profile chunk; `None` for other messages.
    pub(crate) fn of(body: &AgentBody) -> Option<ProfileTag> {
        match body {
            AgentBody::ProfileChunk(c) => Some(ProfileTag {
                event_id: c.event_id.clone(),
                kind: c.kind,
            }),
            _ => None,
        }
    }

    /// Whether a skip of `kinds` (empty: all) of `event_id` covers it.
    pub(crate) fn matches(&self, event_id: &str, kinds: &[ProfileKind]) -> bool {
        self.event_id == event_id && (kinds.is_empty() || kinds.contains(&self.kind))
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    group: u64,
    kind: Kind,
    bytes: u64,
    held: Held,
    /// For profiles queued by this process; recovered ones are known once read back.
    tag: Option<ProfileTag>,
}

/// What queuing a message did.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Whether the new message (or profile) was queued; false when it was dropped itself.
    pub(crate) queued: bool,
    /// Dropped messages by kind: victims, and the new message when it was refused.
    pub(crate) dropped: Vec<(Kind, u64)>,
    /// Spool files of every dropped message, to delete outside the lock.
    pub(crate) files: Vec<SpoolFile>,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    queue: VecDeque<Entry>,
    mem_bytes: u64,
    mem_cap: u64,
    disk_bytes: u64,
    /// Messages held on disk.
    disk_count: u64,
    disk_cap: u64,
    next_seq: u64,
    acked: u64,
    /// Highest sequence number handed to the sender on its current stream.
    handed_out: u64,
    dropped: u64,
    corrupt: u64,
    recovered: u64,
    /// Profiles the collector asked not to send, removed unsent.
    skipped: u64,
}

impl Outbox {
    /// An outbox keeping at most `mem_cap` bytes of messages in memory and, once
    /// [`Self::set_disk_cap`] is called, `disk_cap` bytes of spool files.
    pub(crate) fn new(mem_cap: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            mem_bytes: 0,
            mem_cap: mem_cap as u64,
            disk_bytes: 0,
            disk_count: 0,
            disk_cap: 0,
            next_seq: 1,
            acked: 0,
            handed_out: 0,
            dropped: 0,
            corrupt: 0,
            recovered: 0,
            skipped: 0,
        }
    }

    /// Allows `cap` bytes of messages on disk (the spool is open).
    pub(crate) fn set_disk_cap(&mut self, cap: u64) {
        self.disk_cap = cap;
    }

    /// Queues a message held in memory and returns its sequence number, or `None` when
    /// it was dropped at once.
    #[cfg(test)]
    pub(crate) fn push(&mut self, body: AgentBody) -> Option<u64> {
        let kind = Kind::of(&body)?;
        let bytes = approx_bytes(&body);
        let before = self.next_seq;
        let a = self.push_group(kind, vec![(Held::Memory(Box::new(body)), bytes)]);
        a.queued.then_some(before)
    }

    /// Queues messages that go together — one message, or all chunks of a profile —
    /// under consecutive sequence numbers, making room by dropping older messages if a
    /// cap requires it. All or none of them are queued.
    pub(crate) fn push_group(&mut self, kind: Kind, items: Vec<(Held, u64)>) -> Admission {
        self.push_tagged(kind, items, None)
    }

    /// [`Self::push_group`] for a profile whose event and kind are known.
    pub(crate) fn push_tagged(
        &mut self,
        kind: Kind,
        items: Vec<(Held, u64)>,
        tag: Option<&ProfileTag>,
    ) -> Admission {
        let mut admission = Admission::default();
        if items.is_empty() {
            admission.queued = true;
            return admission;
        }
        let (mut need_mem, mut need_disk) = (0u64, 0u64);
        for (held, bytes) in &items {
            match held {
                Held::Memory(_) => need_mem += bytes,
                Held::Disk(_) => need_disk += bytes,
            }
        }
        // Refused up front when dropping everything it may displace would not make room,
        // so nothing is dropped in vain.
        let mut fits = (self.mem_bytes + need_mem <= self.mem_cap
            || self.mem_bytes + need_mem <= self.mem_cap + self.freeable(kind, false))
            && (need_disk == 0
                || self.disk_bytes + need_disk <= self.disk_cap
                || self.disk_bytes + need_disk <= self.disk_cap + self.freeable(kind, true));
        while fits {
            let over_mem = self.mem_bytes + need_mem > self.mem_cap;
            let over_disk = need_disk > 0 && self.disk_bytes + need_disk > self.disk_cap;
            if !over_mem && !over_disk {
                break;
            }
            match self.victim(kind, over_mem, over_disk) {
                Some(group) => {
                    let (victim_kind, n, files) = self.remove_group(group);
                    self.dropped += n;
                    admission.dropped.push((victim_kind, n));
                    admission.files.extend(files);
                }
                None => fits = false,
            }
        }
        if !fits {
            let n = items.len() as u64;
            self.dropped += n;
            admission.dropped.push((kind, n));
            admission
                .files
                .extend(items.into_iter().filter_map(|(held, _)| match held {
                    Held::Disk(f) => Some(f),
                    Held::Memory(_) => None,
                }));
            return admission;
        }
        let group = self.next_seq;
        for (held, bytes) in items {
            match held {
                Held::Memory(_) => self.mem_bytes += bytes,
                Held::Disk(_) => {
                    self.disk_bytes += bytes;
                    self.disk_count += 1;
                }
            }
            self.queue.push_back(Entry {
                seq: self.next_seq,
                group,
                kind,
                bytes,
                held,
                tag: tag.cloned(),
            });
            self.next_seq += 1;
        }
        admission.queued = true;
        admission
    }

    /// Queues what the spool held at start, counting it as recovered.
    pub(crate) fn push_recovered(&mut self, kind: Kind, items: Vec<(Held, u64)>) -> Admission {
        let n = items.len() as u64;
        let admission = self.push_group(kind, items);
        if admission.queued {
            self.recovered += n;
        }
        admission
    }

    /// The group to drop to make room for a `kind` message, or `None` when the new
    /// message itself is the one to drop: the oldest group of the cheapest kind that
    /// frees bytes where they are short, skipping a profile that may be on the wire.
    fn victim(&self, incoming: Kind, over_mem: bool, over_disk: bool) -> Option<u64> {
        for kind in [Kind::Window, Kind::Trigger, Kind::Profile] {
            let found = self.queue.iter().find(|e| {
                e.kind == kind
                    && match e.held {
                        Held::Memory(_) => over_mem,
                        Held::Disk(_) => over_disk,
                    }
                    && !(kind == Kind::Profile && e.group <= self.handed_out)
            });
            if let Some(e) = found {
                return Some(e.group);
            }
            if kind == incoming {
                return None;
            }
        }
        None
    }

    /// Bytes (on disk, or in memory) that messages dropped before a `kind` one would free.
    fn freeable(&self, kind: Kind, disk: bool) -> u64 {
        self.queue
            .iter()
            .filter(|e| {
                e.kind <= kind
                    && matches!(e.held, Held::Disk(_)) == disk
                    && !(e.kind == Kind::Profile && e.group <= self.handed_out)
            })
            .map(|e| e.bytes)
            .sum()
    }

    /// Takes a group out of the queue: its kind, how many messages it had, its files.
    fn remove_group(&mut self, group: u64) -> (Kind, u64, Vec<SpoolFile>) {
        let mut files = Vec::new();
        let mut kind = Kind::Window;
        let mut n = 0;
        let (mut mem, mut disk, mut on_disk) = (0, 0, 0);
        self.queue.retain(|e| {
            if e.group != group {
                return true;
            }
            kind = e.kind;
            n += 1;
            match &e.held {
                Held::Memory(_) => mem += e.bytes,
                Held::Disk(f) => {
                    disk += e.bytes;
                    on_disk += 1;
                    files.push(f.clone());
                }
            }
            false
        });
        self.mem_bytes -= mem;
        self.disk_bytes -= disk;
        self.disk_count -= on_disk;
        (kind, n, files)
    }

    /// Forgets every message up to and including `seq`; returns their spool files.
    pub(crate) fn ack(&mut self, seq: u64) -> Vec<SpoolFile> {
        let mut files = Vec::new();
        if seq <= self.acked {
            return files;
        }
        self.acked = seq;
        while let Some(e) = self.queue.front() {
            if e.seq > seq {
                break;
            }
            match &e.held {
                Held::Memory(_) => self.mem_bytes -= e.bytes,
                Held::Disk(f) => {
                    self.disk_bytes -= e.bytes;
                    self.disk_count -= 1;
                    files.push(f.clone());
                }
            }
            self.queue.pop_front();
        }
        files
    }

    /// Messages with a sequence number above `seq`, oldest first: up to `max`, plus the
    /// rest of a profile begun within them, so a profile is handed out whole. The sender
    /// asks from the acknowledged number when a stream starts and from the last message
    /// it sent afterwards; what it was handed on its current stream is not dropped.
    pub(crate) fn after(&mut self, seq: u64, max: usize) -> Vec<Pending> {
        if seq < self.handed_out {
            self.handed_out = seq; // a new stream
        }
        let mut out: Vec<Pending> = Vec::new();
        for e in self.queue.iter().filter(|e| e.seq > seq) {
            if out.len() >= max && out.last().is_none_or(|last| last.group != e.group) {
                break;
            }
            out.push(Pending {
                seq: e.seq,
                group: e.group,
                kind: e.kind,
                held: e.held.clone(),
            });
        }
        if let Some(last) = out.last() {
            self.handed_out = self.handed_out.max(last.seq);
        }
        out
    }

    /// Drops groups whose messages cannot be read back; returns their files and counts
    /// only messages still queued (one acknowledged or dropped meanwhile is no loss).
    pub(crate) fn discard(&mut self, groups: &[u64]) -> (u64, Vec<SpoolFile>) {
        let mut files = Vec::new();
        let mut lost = 0;
        for &group in groups {
            let (_, n, f) = self.remove_group(group);
            lost += n;
            files.extend(f);
        }
        self.corrupt += lost;
        (lost, files)
    }

    /// Removes the profiles of `event_id` (of `kinds`; empty: all) that are not on the
    /// wire, as the collector asked; returns how many profiles and their files. Only
    /// profiles this process queued are known by event here; recovered ones are checked
    /// when read back ([`Self::skip_groups`]).
    pub(crate) fn skip(&mut self, event_id: &str, kinds: &[ProfileKind]) -> (u64, Vec<SpoolFile>) {
        let mut groups: Vec<u64> = self
            .queue
            .iter()
            .filter(|e| {
                e.group > self.handed_out
                    && e.tag.as_ref().is_some_and(|t| t.matches(event_id, kinds))
            })
            .map(|e| e.group)
            .collect();
        groups.dedup();
        self.skip_groups(&groups)
    }

    /// Removes whole groups the collector asked not to send; counts them as skipped
    /// profiles, not as losses.
    pub(crate) fn skip_groups(&mut self, groups: &[u64]) -> (u64, Vec<SpoolFile>) {
        let mut files = Vec::new();
        let mut profiles = 0;
        for &group in groups {
            let (_, n, f) = self.remove_group(group);
            if n > 0 {
                profiles += 1;
            }
            files.extend(f);
        }
        self.skipped += profiles;
        (profiles, files)
    }

    /// Profiles the collector asked not to send, not sent (or sent no further).
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Counts a profile skipped before it was queued.
    pub(crate) fn count_skipped(&mut self) {
        self.skipped += 1;
    }

    /// Counts spool files found unusable at start.
    pub(crate) fn count_corrupt(&mut self, n: u64) {
        self.corrupt += n;
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest sequence number queued so far (0: none).
    pub(crate) fn queued(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Messages lost: dropped for room, or unreadable in the spool.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped + self.corrupt
    }

    /// Messages lost because the spool could not give them back.
    pub(crate) fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// Messages loaded from the spool at start.
    pub(crate) fn recovered(&self) -> u64 {
        self.recovered
    }

    /// Bytes held in memory and on disk.
    pub(crate) fn bytes(&self) -> usize {
        usize::try_from(self.mem_bytes + self.disk_bytes).unwrap_or(usize::MAX)
    }

    /// Messages held on disk, and their bytes.
    pub(crate) fn spooled(&self) -> (u64, u64) {
        (self.disk_count, self.disk_bytes)
    }

    /// Messages to send, in memory, with their numbers (tests).
    #[cfg(test)]
    fn resident_after(&mut self, seq: u64, max: usize) -> Vec<AgentMessage> {
        self.after(seq, max)
            .into_iter()
            .filter_map(|p| match p.held {
                Held::Memory(body) => Some(AgentMessage {
                    seq: p.seq,
                    body: *body,
                }),
                Held::Disk(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holmes_proto::{Metric, MetricSeries, MetricWindow, ProfileChunk, ProfileKind, Sample};

    fn window(n: usize) -> AgentBody {
        AgentBody::MetricWindow(MetricWindow {
            series: vec![MetricSeries {
                metric: Metric::CpuPercent,
                samples: vec![
                    Sample {
                        unix_nanos: 1,
                        value: 1.0
                    };
                    n
                ],
            }],
        })
    }

    fn chunk(bytes: usize) -> AgentBody {
        AgentBody::ProfileChunk(ProfileChunk {
            profile_id: "p".into(),
            event_id: "e".into(),
            kind: ProfileKind::Cpu,
            chunk_index: 0,
            chunk_count: 1,
            total_bytes: bytes as u64,
            data: vec![0; bytes],
            started_unix_nanos: 0,
            duration: Default::default(),
            error: None,
            labels: Default::default(),
            format: Default::default(),
        })
    }

    /// The queued sequence numbers, without handing anything out.
    fn seqs(o: &mut Outbox) -> Vec<u64> {
        o.queue.iter().map(|e| e.seq).collect()
    }

    /// A file-backed message of `bytes` bytes named after `n`.
    fn on_disk(n: u64, bytes: u64) -> (Held, u64) {
        (
            Held::Disk(SpoolFile::named(format!("{n:016x}.w.hsp"))),
            bytes,
        )
    }

    #[test]
    fn numbers_from_one_and_forgets_what_is_acked() {
        let mut o = Outbox::new(1 << 20);
        assert_eq!(o.queued(), 0, "nothing queued yet");
        assert_eq!(o.push(window(1)), Some(1));
        assert_eq!(o.push(window(1)), Some(2));
        assert_eq!(o.push(window(1)), Some(3));
        assert_eq!(o.queued(), 3);
        o.ack(2);
        assert_eq!(o.len(), 1);
        // Acknowledging does not change what was queued: the collector is 1 behind.
        assert_eq!(o.queued() - o.acked(), 1);
        assert_eq!(
            o.resident_after(0, 10)
                .iter()
                .map(|m| m.seq)
                .collect::<Vec<_>>(),
            vec![3]
        );
        o.ack(1); // a stale ack changes nothing
        assert_eq!((o.len(), o.acked()), (1, 2));
        o.ack(3);
        assert_eq!((o.len(), o.bytes()), (0, 0));
        assert_eq!(o.queued(), o.acked(), "everything queued has arrived");
    }

    #[test]
    fn resends_everything_after_a_sequence_number() {
        let mut o = Outbox::new(1 << 20);
        for _ in 0..5 {
            o.push(window(1));
        }
        let seqs: Vec<u64> = o.after(2, 2).iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![3, 4]);
    }

    #[test]
    fn drops_oldest_metric_windows_before_profiles_when_full() {
        let mut o = Outbox::new(2_000);
        o.push(chunk(600)); // seq 1
        o.push(window(10)); // seq 2
        o.push(window(10)); // seq 3
        o.push(chunk(600)); // seq 4, forces windows out, oldest first
        let seqs = seqs(&mut o);
        assert!(seqs.contains(&1) && seqs.contains(&4), "{seqs:?}");
        assert!(!seqs.contains(&2), "{seqs:?}");
        assert!(o.dropped() >= 1);
        assert!(o.bytes() <= 2_000);
    }

    #[test]
    fn drops_windows_then_triggers_then_whole_profiles_oldest_first() {
        // Disk cap 1000: each message is 100 bytes on disk.
        let mut o = Outbox::new(64 * 1024);
        o.set_disk_cap(1_000);
        let push = |o: &mut Outbox, kind, n: u64, first: u64| {
            o.push_group(kind, (0..n).map(|i| on_disk(first + i, 100)).collect())
        };
        push(&mut o, Kind::Profile, 3, 100); // seqs 1-3
        push(&mut o, Kind::Trigger, 1, 200); // 4
        push(&mut o, Kind::Window, 1, 300); // 5
        push(&mut o, Kind::Profile, 2, 400); // 6-7
        push(&mut o, Kind::Trigger, 1, 500); // 8
        push(&mut o, Kind::Window, 1, 600); // 9
        push(&mut o, Kind::Window, 1, 700); // 10: full now
        assert_eq!(o.spooled(), (10, 1_000));

        // A trigger pushes out the oldest window; another, the next window.
        let a = push(&mut o, Kind::Trigger, 1, 800); // 11
        assert!(a.queued);
        assert_eq!(a.dropped, [(Kind::Window, 1)]);
        assert_eq!(a.files.len(), 1, "the victim's file is to be deleted");
        push(&mut o, Kind::Trigger, 1, 900); // 12, drops 9
        push(&mut o, Kind::Trigger, 1, 950); // 13, drops 10: no windows left
        assert_eq!(seqs(&mut o), [1, 2, 3, 4, 6, 7, 8, 11, 12, 13]);

        // A window now is the cheapest thing there: it is refused, nothing else goes.
        let a = push(&mut o, Kind::Window, 1, 960);
        assert!(!a.queued);
        assert_eq!(a.dropped, [(Kind::Window, 1)]);
        assert_eq!(a.files.len(), 1, "its own file is to be deleted");

        // A two-chunk profile drops the two oldest triggers, not a profile.
        let a = push(&mut o, Kind::Profile, 2, 970); // 14-15: a refused one has no number
        assert_eq!(a.dropped, [(Kind::Trigger, 1), (Kind::Trigger, 1)]);
        assert_eq!(seqs(&mut o), [1, 2, 3, 6, 7, 11, 12, 13, 14, 15]);

        // With only triggers and profiles left, a three-chunk profile drops the three
        // triggers; a next one drops the oldest profile, whole.
        push(&mut o, Kind::Profile, 3, 980);
        assert_eq!(seqs(&mut o), [1, 2, 3, 6, 7, 14, 15, 16, 17, 18]);
        let a = push(&mut o, Kind::Profile, 2, 990);
        assert_eq!(a.dropped, [(Kind::Profile, 3)]);
        assert_eq!(seqs(&mut o), [6, 7, 14, 15, 16, 17, 18, 19, 20]);
        assert!(o.spooled().1 <= 1_000);
        assert_eq!(o.dropped(), 3 + 1 + 2 + 3 + 3);
    }

    #[test]
    fn a_profile_on_the_wire_is_not_dropped() {
        let mut o = Outbox::new(64 * 1024);
        o.set_disk_cap(500);
        o.push_group(Kind::Profile, (0..3).map(|i| on_disk(i, 100)).collect()); // 1-3
                                                                                // The sender takes chunk 0 (and with it the whole profile).
        let handed: Vec<u64> = o.after(0, 1).iter().map(|p| p.seq).collect();
        assert_eq!(handed, [1, 2, 3], "a profile is handed out whole");
        o.push_group(Kind::Profile, (3..5).map(|i| on_disk(i, 100)).collect()); // 4-5
                                                                                // Another profile needs room: the oldest one not on the wire goes.
        let a = o.push_group(Kind::Profile, (5..7).map(|i| on_disk(i, 100)).collect());
        assert_eq!(a.dropped, [(Kind::Profile, 2)]);
        assert_eq!(seqs(&mut o), [1, 2, 3, 6, 7]);
        // One that only fits without 1-3 is refused, and costs nothing else.
        let a = o.push_group(Kind::Profile, (7..10).map(|i| on_disk(i, 100)).collect());
        assert!(!a.queued);
        assert_eq!(a.dropped, [(Kind::Profile, 3)]);
        assert_eq!(seqs(&mut o), [1, 2, 3, 6, 7]);
        // A new stream (after a reconnect) starts from the acknowledged number; until
        // it takes the profile again, what the old stream was handed may go.
        assert!(o.after(0, 0).is_empty());
        let a = o.push_group(Kind::Profile, (10..13).map(|i| on_disk(i, 100)).collect());
        assert!(a.queued);
        assert_eq!(a.dropped, [(Kind::Profile, 3)]);
    }

    #[test]
    fn a_profile_bigger_than_the_cap_is_refused_whole() {
        let mut o = Outbox::new(64 * 1024);
        o.push(window(1));
        let chunks: Vec<(Held, u64)> = (0..3)
            .map(|_| (Held::Memory(Box::new(chunk(30_000))), 30_000))
            .collect();
        let a = o.push_group(Kind::Profile, chunks);
        assert!(!a.queued);
        assert_eq!(a.dropped, [(Kind::Profile, 3)]);
        assert_eq!(o.len(), 1, "nothing else was dropped for it");
    }

    #[test]
    fn acks_return_the_files_to_delete_and_free_the_disk_budget() {
        let mut o = Outbox::new(64 * 1024);
        o.set_disk_cap(10_000);
        o.push_group(Kind::Window, vec![on_disk(1, 100)]);
        o.push_group(Kind::Trigger, vec![on_disk(2, 200)]);
        o.push(window(1)); // a spool write that failed stays in memory
        assert_eq!(o.spooled(), (2, 300));
        let files = o.ack(2);
        assert_eq!(files.len(), 2);
        assert_eq!(o.spooled(), (0, 0));
        assert!(o.ack(3).is_empty());
        assert_eq!(o.bytes(), 0);
    }

    fn tag(event: &str, kind: ProfileKind) -> Option<ProfileTag> {
        Some(ProfileTag {
            event_id: event.into(),
            kind,
        })
    }

    #[test]
    fn skipped_profiles_not_on_the_wire_are_removed_and_counted() {
        let mut o = Outbox::new(64 * 1024);
        o.set_disk_cap(10_000);
        let profile = |o: &mut Outbox, first: u64, t| {
            o.push_tagged(
                Kind::Profile,
                (first..first + 2).map(|i| on_disk(i, 10)).collect(),
                Option::as_ref(&t),
            )
        };
        profile(&mut o, 0, tag("e1", ProfileKind::Cpu)); // 1-2, about to be sent
        assert_eq!(o.after(0, 1).len(), 2);
        profile(&mut o, 2, tag("e1", ProfileKind::Cpu)); // 3-4
        profile(&mut o, 4, tag("e1", ProfileKind::Heap)); // 5-6
        profile(&mut o, 6, tag("e2", ProfileKind::Cpu)); // 7-8
        o.push_group(Kind::Trigger, vec![on_disk(9, 10)]); // 9
        let (profiles, files) = o.skip("e1", &[ProfileKind::Cpu]);
        assert_eq!((profiles, files.len()), (1, 2), "the one on the wire stays");
        assert_eq!(seqs(&mut o), [1, 2, 5, 6, 7, 8, 9]);
        // Empty kinds: every kind of the event.
        let (profiles, _) = o.skip("e1", &[]);
        assert_eq!(profiles, 1);
        assert_eq!(seqs(&mut o), [1, 2, 7, 8, 9]);
        assert_eq!(o.skipped(), 2);
        assert_eq!(o.dropped(), 0, "skipped is not lost");
        assert_eq!(o.spooled(), (5, 50));
    }

    #[test]
    fn unreadable_groups_are_discarded_and_counted_once() {
        let mut o = Outbox::new(64 * 1024);
        o.set_disk_cap(10_000);
        o.push_group(Kind::Profile, (0..2).map(|i| on_disk(i, 10)).collect());
        o.push_group(Kind::Trigger, vec![on_disk(5, 10)]);
        let (lost, files) = o.discard(&[1]);
        assert_eq!((lost, files.len()), (2, 2));
        let (lost, _) = o.discard(&[1]);
        assert_eq!(lost, 0, "already gone");
        assert_eq!((o.dropped(), o.corrupt(), o.len()), (2, 2, 1));
    }
}
