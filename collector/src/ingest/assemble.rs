//! Profile chunks into whole profiles, one `Assembler` per agent stream.
//!
//! The agent splits a profile into chunks of at most 1 MiB and pushes them together, in
//! order, each with its own sequence number. The assembler checks every chunk against
//! the ones before it (index, count, total size, event, kind, sequence number), keeps
//! the bytes until the last chunk arrives, and then hands over the whole profile to be
//! stored — exactly the bytes sent, never decoded. Anything inconsistent ends the stream
//! with INVALID_ARGUMENT naming the profile and the problem. What one stream holds is
//! bounded: each profile by `max_profile_bytes`, and all of them together by
//! `max_profile_bytes` too — the agent sends a profile's chunks together, one profile
//! after the other, so an honest stream holds one unfinished profile at a time. How long
//! it may stay unfinished is [`crate::ingest::limits::LimitsConfig::profile_idle_timeout`].

use std::collections::HashMap;
use std::time::Instant;

use holmes_api::validate_profile_id;
use holmes_proto::names::{validate_labels, validate_name};
use holmes_proto::{PipelineProfile, ProfileChunk, ProfileFormat, ProfileKind};
use tonic::Status;

/// What a chunk led to.
#[derive(Debug)]
pub(crate) enum Step {
    /// More chunks of the profile are to come.
    Pending,
    /// The profile is whole: store it, then acknowledge the chunk that completed it.
    Complete(PipelineProfile),
}

/// A profile some of whose chunks have arrived.
struct Pending {
    event_id: String,
    kind: ProfileKind,
    format: ProfileFormat,
    chunk_count: u32,
    total_bytes: u64,
    next_index: u32,
    /// Sequence number of chunk 0: nothing from here on may be acknowledged yet.
    first_seq: u64,
    /// Sequence number of the latest chunk.
    last_seq: u64,
    started_unix_nanos: u64,
    duration: std::time::Duration,
    labels: std::collections::BTreeMap<String, String>,
    data: Vec<u8>,
    /// When its latest chunk arrived.
    last_chunk_at: Instant,
}

/// The unfinished profiles of one agent stream.
pub(crate) struct Assembler {
    max_profile_bytes: u64,
    pending: HashMap<String, Pending>,
    /// Sum of the `total_bytes` of the pending profiles.
    reserved: u64,
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Assembler {
    /// An assembler refusing profiles over `max_profile_bytes`.
    pub(crate) fn new(max_profile_bytes: u64) -> Self {
        Assembler {
            max_profile_bytes,
            pending: HashMap::new(),
            reserved: 0,
        }
    }

    /// The sequence number of the oldest chunk held for an unfinished profile: no
    /// acknowledgement may reach it until that profile is stored.
    pub(crate) fn oldest_pending_seq(&self) -> Option<u64> {
        self.pending.values().map(|p| p.first_seq).min()
    }

    /// The unfinished profile whose latest chunk is the oldest: its id, and when that
    /// chunk arrived.
    pub(crate) fn stalest(&self) -> Option<(&str, Instant)> {
        self.pending
            .iter()
            .map(|(id, p)| (id.as_str(), p.last_chunk_at))
            .min_by_key(|(_, at)| *at)
    }

    /// Takes the chunk with sequence number `seq` of the agent's stream.
    pub(crate) fn push(&mut self, seq: u64, chunk: ProfileChunk) -> Result<Step, Status> {
        validate_profile_id(&chunk.profile_id).map_err(Status::invalid_argument)?;
        let id = chunk.profile_id.clone();
        let invalid =
            |problem: String| Status::invalid_argument(format!("profile {id}: {problem}"));
        let index = chunk.chunk_index;
        if index == 0 {
            self.start(seq, &chunk)?;
        } else {
            let Some(p) = self.pending.get(&id) else {
                return Err(invalid(format!(
                    "chunk {index} of {} arrived before chunk 0",
                    chunk.chunk_count
                )));
            };
            if index != p.next_index {
                return Err(invalid(format!(
                    "chunk {index} arrived, expected chunk {}",
                    p.next_index
                )));
            }
            if chunk.chunk_count != p.chunk_count {
                return Err(invalid(format!(
                    "chunk {index} says {} chunks, chunk 0 said {}",
                    chunk.chunk_count, p.chunk_count
                )));
            }
            if chunk.total_bytes != p.total_bytes {
                return Err(invalid(format!(
                    "chunk {index} says {} bytes in total, chunk 0 said {}",
                    chunk.total_bytes, p.total_bytes
                )));
            }
            if chunk.event_id != p.event_id {
                return Err(invalid(format!(
                    "chunk {index} belongs to event {:?}, chunk 0 to {:?}",
                    chunk.event_id, p.event_id
                )));
            }
            if chunk.format != p.format {
                return Err(invalid(format!(
                    "chunk {index} is in the {} format, chunk 0 in {}",
                    chunk.format.as_str(),
                    p.format.as_str()
                )));
            }
            if chunk.kind != p.kind {
                return Err(invalid(format!(
                    "chunk {index} is a {} profile, chunk 0 a {} one",
                    chunk.kind.as_str(),
                    p.kind.as_str()
                )));
            }
            if let Some(error) = &chunk.error {
                return Err(invalid(format!(
                    "chunk {index} reports a failed capture ({error:?}); a failed capture is one empty chunk"
                )));
            }
            if seq <= p.last_seq {
                return Err(invalid(format!(
                    "chunk {index} has seq {seq}, not after chunk {}'s seq {}",
                    index - 1,
                    p.last_seq
                )));
            }
        }
        let Some(p) = self.pending.get_mut(&id) else {
            return Err(invalid(format!("chunk {index} has no profile to join")));
        };
        let held = p.data.len() as u64 + chunk.data.len() as u64;
        if held > p.total_bytes {
            return Err(invalid(format!(
                "chunk {index} brings it to {held} bytes, more than its total_bytes {}",
                p.total_bytes
            )));
        }
        if index > 0 {
            // From the second chunk on the agent is clearly sending the whole profile:
            // allocate it once instead of growing by doubling.
            p.data
                .reserve_exact(to_usize(p.total_bytes).saturating_sub(p.data.len()));
        }
        p.data.extend_from_slice(&chunk.data);
        p.next_index = index.saturating_add(1);
        p.last_seq = seq;
        p.last_chunk_at = Instant::now();
        if p.next_index < p.chunk_count {
            return Ok(Step::Pending);
        }
        let Some(p) = self.pending.remove(&id) else {
            return Err(invalid(format!("chunk {index} has no profile to join")));
        };
        self.reserved = self.reserved.saturating_sub(p.total_bytes);
        if p.data.len() as u64 != p.total_bytes {
            let chunks = if p.chunk_count == 1 {
                "chunk holds"
            } else {
                "chunks hold"
            };
            return Err(invalid(format!(
                "its {} {chunks} {} bytes, total_bytes says {}",
                p.chunk_count,
                p.data.len(),
                p.total_bytes
            )));
        }
        Ok(Step::Complete(PipelineProfile {
            profile_id: id,
            event_id: p.event_id,
            kind: p.kind,
            started_unix_nanos: p.started_unix_nanos,
            duration: p.duration,
            labels: p.labels,
            error: chunk.error.filter(|e| !e.is_empty()),
            data: p.data,
            format: p.format,
        }))
    }

    /// Checks chunk 0 of a profile and starts holding it; a chunk 0 of a profile already
    /// held starts it over (the agent resends it after a reconnect).
    fn start(&mut self, seq: u64, chunk: &ProfileChunk) -> Result<(), Status> {
        let id = &chunk.profile_id;
        let invalid =
            |problem: String| Status::invalid_argument(format!("profile {id}: {problem}"));
        if chunk.total_bytes > self.max_profile_bytes {
            return Err(Status::invalid_argument(format!(
                "profile {id} is {} bytes, the limit is {}",
                chunk.total_bytes, self.max_profile_bytes
            )));
        }
        validate_name("event id", &chunk.event_id).map_err(|e| invalid(e.to_string()))?;
        validate_labels(&chunk.labels).map_err(|e| invalid(e.to_string()))?;
        if let Some(error) = &chunk.error {
            if chunk.chunk_count != 1 || !chunk.data.is_empty() {
                return Err(invalid(format!(
                    "a failed capture ({error:?}) must be one empty chunk, got chunk 0 of {} with {} bytes",
                    chunk.chunk_count,
                    chunk.data.len()
                )));
            }
        }
        if let Some(old) = self.pending.remove(id) {
            self.reserved = self.reserved.saturating_sub(old.total_bytes);
            tracing::debug!(profile_id = %id, "profile started over from chunk 0");
        }
        let would_hold = self.reserved.saturating_add(chunk.total_bytes);
        if would_hold > self.max_profile_bytes {
            crate::metrics::metrics().ingest_refused("unfinished_profiles");
            return Err(Status::resource_exhausted(format!(
                "profile {id}: unfinished profiles on this stream would hold {would_hold} bytes, the limit is {} (max_profile_bytes; send one profile's chunks after the other)",
                self.max_profile_bytes
            )));
        }
        self.reserved = would_hold;
        self.pending.insert(
            id.clone(),
            Pending {
                event_id: chunk.event_id.clone(),
                kind: chunk.kind,
                format: chunk.format,
                chunk_count: chunk.chunk_count,
                total_bytes: chunk.total_bytes,
                next_index: 0,
                first_seq: seq,
                last_seq: seq,
                started_unix_nanos: chunk.started_unix_nanos,
                duration: chunk.duration,
                labels: chunk.labels.clone(),
                data: Vec::with_capacity(chunk.data.len()),
                last_chunk_at: Instant::now(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    /// Chunk `index` of a profile of `data` cut into `count` chunks of `size` bytes.
    fn chunk(data: &[u8], size: usize, index: u32) -> ProfileChunk {
        let count = data.len().div_ceil(size).max(1) as u32;
        let start = (index as usize * size).min(data.len());
        let end = (start + size).min(data.len());
        ProfileChunk {
            profile_id: ID.to_owned(),
            event_id: "ev-1".to_owned(),
            kind: ProfileKind::Cpu,
            chunk_index: index,
            chunk_count: count,
            total_bytes: data.len() as u64,
            data: data[start..end].to_vec(),
            started_unix_nanos: 5,
            duration: Duration::from_millis(1500),
            error: None,
            labels: [("phase".to_owned(), "pre-trigger".to_owned())].into(),
            format: holmes_proto::ProfileFormat::PprofGzip,
        }
    }

    fn message(result: Result<Step, Status>) -> (tonic::Code, String) {
        let status = result.expect_err("the chunk is refused");
        (status.code(), status.message().to_owned())
    }

    #[test]
    fn assembles_chunks_and_holds_back_acks_until_whole() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let mut a = Assembler::new(10_000);
        assert!(matches!(
            a.push(7, chunk(&data, 1000, 0)),
            Ok(Step::Pending)
        ));
        assert_eq!(a.oldest_pending_seq(), Some(7));
        assert!(matches!(
            a.push(8, chunk(&data, 1000, 1)),
            Ok(Step::Pending)
        ));
        let Ok(Step::Complete(p)) = a.push(9, chunk(&data, 1000, 2)) else {
            panic!("the last chunk completes the profile");
        };
        assert_eq!(a.oldest_pending_seq(), None);
        assert!(p.data == data);
        assert_eq!(p.event_id, "ev-1");
        assert_eq!(p.format, ProfileFormat::PprofGzip);
        assert_eq!(p.duration, Duration::from_millis(1500));
        assert_eq!(p.labels["phase"], "pre-trigger");
        assert_eq!(a.reserved, 0);
    }

    #[test]
    fn chunk_zero_starts_a_profile_over() {
        let data = vec![9u8; 30];
        let mut a = Assembler::new(100);
        a.push(1, chunk(&data, 10, 0)).unwrap();
        a.push(2, chunk(&data, 10, 1)).unwrap();
        a.push(1, chunk(&data, 10, 0)).unwrap();
        assert_eq!(a.reserved, 30);
        a.push(2, chunk(&data, 10, 1)).unwrap();
        let Ok(Step::Complete(p)) = a.push(3, chunk(&data, 10, 2)) else {
            panic!("complete");
        };
        assert_eq!(p.data, data);
    }

    #[test]
    fn a_failed_capture_is_one_empty_chunk() {
        let mut failed = chunk(&[], 10, 0);
        failed.error = Some("no perf events".to_owned());
        let Ok(Step::Complete(p)) = Assembler::new(100).push(1, failed.clone()) else {
            panic!("complete");
        };
        assert_eq!(p.error.as_deref(), Some("no perf events"));
        assert!(p.data.is_empty());
        failed.data = vec![1];
        failed.total_bytes = 1;
        assert_eq!(
            message(Assembler::new(100).push(1, failed)),
            (
                tonic::Code::InvalidArgument,
                format!("profile {ID}: a failed capture (\"no perf events\") must be one empty chunk, got chunk 0 of 1 with 1 bytes")
            )
        );
    }

    #[test]
    fn refuses_inconsistent_chunks_naming_profile_and_problem() {
        let data = vec![1u8; 30];
        let started = || {
            let mut a = Assembler::new(1_000);
            a.push(1, chunk(&data, 10, 0)).unwrap();
            a
        };
        type Change = Box<dyn Fn(&mut ProfileChunk)>;
        let cases: Vec<(Change, u32, &str)> = vec![
            (Box::new(|_| {}), 2, "chunk 2 arrived, expected chunk 1"),
            (
                Box::new(|c| c.chunk_count = 4),
                1,
                "chunk 1 says 4 chunks, chunk 0 said 3",
            ),
            (
                Box::new(|c| c.total_bytes = 31),
                1,
                "chunk 1 says 31 bytes in total, chunk 0 said 30",
            ),
            (
                Box::new(|c| c.event_id = "ev-2".to_owned()),
                1,
                "chunk 1 belongs to event \"ev-2\", chunk 0 to \"ev-1\"",
            ),
            (
                Box::new(|c| c.kind = ProfileKind::Heap),
                1,
                "chunk 1 is a heap profile, chunk 0 a cpu one",
            ),
            (
                Box::new(|c| c.data = vec![0; 25]),
                1,
                "chunk 1 brings it to 35 bytes, more than its total_bytes 30",
            ),
        ];
        for (change, index, expected) in cases {
            let mut c = chunk(&data, 10, index);
            change(&mut c);
            assert_eq!(
                message(started().push(2, c)),
                (
                    tonic::Code::InvalidArgument,
                    format!("profile {ID}: {expected}")
                )
            );
        }
        assert_eq!(
            message(started().push(1, chunk(&data, 10, 1))).1,
            format!("profile {ID}: chunk 1 has seq 1, not after chunk 0's seq 1")
        );
        assert_eq!(
            message(Assembler::new(1_000).push(1, chunk(&data, 10, 1))).1,
            format!("profile {ID}: chunk 1 of 3 arrived before chunk 0")
        );
        let mut short = started();
        short.push(2, chunk(&data, 10, 1)).unwrap();
        let mut last = chunk(&data, 10, 2);
        last.data.pop();
        assert_eq!(
            message(short.push(3, last)).1,
            format!("profile {ID}: its 3 chunks hold 29 bytes, total_bytes says 30")
        );
    }

    #[test]
    fn refuses_bad_ids_oversized_profiles_and_overfull_streams() {
        let mut bad = chunk(&[1], 10, 0);
        bad.profile_id = "P-1".to_owned();
        assert_eq!(
            message(Assembler::new(100).push(1, bad)).1,
            "profile id \"P-1\" is not 32 lowercase hex digits"
        );
        assert_eq!(
            message(Assembler::new(20).push(1, chunk(&[0; 30], 10, 0))),
            (
                tonic::Code::InvalidArgument,
                format!("profile {ID} is 30 bytes, the limit is 20")
            )
        );
        let mut bad_event = chunk(&[1], 10, 0);
        bad_event.event_id = "ev 1".to_owned();
        assert!(message(Assembler::new(100).push(1, bad_event))
            .1
            .starts_with(&format!(
                "profile {ID}: event id \"ev 1\" has the character ' '"
            )));

        // A second unfinished profile beside one is refused once both exceed the limit.
        let mut a = Assembler::new(100);
        let mut first = chunk(&[0; 10], 5, 0);
        first.total_bytes = 60;
        a.push(1, first.clone()).unwrap();
        first.profile_id = "ffffffffffffffffffffffffffffffff".to_owned();
        let (code, text) = message(a.push(2, first));
        assert_eq!(code, tonic::Code::ResourceExhausted);
        assert!(
            text.contains("would hold 120 bytes, the limit is 100"),
            "{text}"
        );
    }
}
