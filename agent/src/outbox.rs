//! Messages waiting for the collector's acknowledgement, in memory, under a byte cap.
//!
//! Every durable message gets the next sequence number here and stays until an `Ack`
//! covers it, so a reconnect resends exactly what the collector has not stored. When
//! the cap is reached the oldest metric windows go first (they are the cheapest to
//! lose), then the oldest of anything; every drop is counted.

use std::collections::VecDeque;

use holmes_proto::{AgentBody, AgentMessage};

/// Rough wire size of a message, for the byte cap.
fn approx_bytes(body: &AgentBody) -> usize {
    const OVERHEAD: usize = 64;
    OVERHEAD
        + match body {
            AgentBody::MetricWindow(w) => w.series.iter().map(|s| 8 + s.samples.len() * 20).sum(),
            AgentBody::ProfileChunk(p) => p.data.len() + 128,
            AgentBody::Trigger(t) => 256 + t.window.len() * 20,
            AgentBody::Hello(_) | AgentBody::Heartbeat(_) => 0,
        }
}

#[derive(Debug)]
pub(crate) struct Outbox {
    queue: VecDeque<(AgentMessage, usize)>,
    bytes: usize,
    cap: usize,
    next_seq: u64,
    acked: u64,
    dropped: u64,
}

impl Outbox {
    pub(crate) fn new(cap: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            bytes: 0,
            cap,
            next_seq: 1,
            acked: 0,
            dropped: 0,
        }
    }

    /// Queues a durable message and returns its sequence number.
    pub(crate) fn push(&mut self, body: AgentBody) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let size = approx_bytes(&body);
        while self.bytes + size > self.cap && !self.queue.is_empty() {
            let victim = self
                .queue
                .iter()
                .position(|(m, _)| matches!(m.body, AgentBody::MetricWindow(_)))
                .unwrap_or(0);
            if let Some((_, freed)) = self.queue.remove(victim) {
                self.bytes -= freed;
                self.dropped += 1;
            }
        }
        self.queue.push_back((AgentMessage { seq, body }, size));
        self.bytes += size;
        seq
    }

    /// Forgets every message up to and including `seq`.
    pub(crate) fn ack(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        self.acked = seq;
        while let Some((m, size)) = self.queue.front() {
            if m.seq > seq {
                break;
            }
            self.bytes -= *size;
            self.queue.pop_front();
        }
    }

    /// Up to `max` messages with a sequence number above `seq`, oldest first.
    pub(crate) fn after(&self, seq: u64, max: usize) -> Vec<AgentMessage> {
        self.queue
            .iter()
            .filter(|(m, _)| m.seq > seq)
            .take(max)
            .map(|(m, _)| m.clone())
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
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
        })
    }

    #[test]
    fn numbers_from_one_and_forgets_what_is_acked() {
        let mut o = Outbox::new(1 << 20);
        assert_eq!(o.push(window(1)), 1);
        assert_eq!(o.push(window(1)), 2);
        assert_eq!(o.push(window(1)), 3);
        o.ack(2);
        assert_eq!(o.len(), 1);
        assert_eq!(
            o.after(0, 10).iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![3]
        );
        o.ack(1); // a stale ack changes nothing
        assert_eq!((o.len(), o.acked()), (1, 2));
        o.ack(3);
        assert_eq!((o.len(), o.bytes()), (0, 0));
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
        let seqs: Vec<u64> = o.after(0, 10).iter().map(|m| m.seq).collect();
        assert!(seqs.contains(&1) && seqs.contains(&4), "{seqs:?}");
        assert!(!seqs.contains(&2), "{seqs:?}");
        assert!(o.dropped() >= 1);
        assert!(o.bytes() <= 2_000);
    }
}
