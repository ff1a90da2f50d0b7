//! Captures asked for by the host (`HolmesHandle::capture_now`) or the collector (a
//! `CaptureRequest`), waiting for the agent thread to take them. Bounded: a full queue
//! refuses the request. The collector's requests are also rate-limited per kind
//! ([`RateLimit`]); the host's are not.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use holmes_proto::CaptureRequest;

/// Requests that may wait at once; more are refused.
const MAX_WAITING: usize = 8;

/// Who asked for a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The host, through the handle: trusted, not rate-limited, not paused.
    Host,
    /// The collector: rate-limited per kind, paused when it says so, answered with a
    /// `CaptureOutcome`.
    Collector,
}

/// A capture asked for, waiting for the agent thread.
#[derive(Debug)]
pub(crate) struct PendingCapture {
    pub(crate) request: CaptureRequest,
    /// The id its trigger event will have.
    pub(crate) event_id: String,
    /// When it was queued.
    pub(crate) queued: Instant,
    pub(crate) origin: Origin,
}

/// At most one requested capture of each kind per interval (kinds as
/// `Job::limit_key` names them). Only captures that start count: a request refused for
/// another reason does not use the kind's turn.
#[derive(Debug)]
pub(crate) struct RateLimit {
    every: Duration,
    last: HashMap<&'static str, Instant>,
}

impl RateLimit {
    pub(crate) fn new(every: Duration) -> Self {
        RateLimit {
            every,
            last: HashMap::new(),
        }
    }

    /// Why `kind` may not be captured at `now`, or `None` when it may.
    pub(crate) fn refusal(&self, kind: &'static str, now: Instant) -> Option<String> {
        let last = self.last.get(kind)?;
        let since = now.saturating_duration_since(*last);
        (since < self.every).then(|| {
            format!(
                "at most one requested {kind} capture per {}; the last started {} ago",
                humantime::format_duration(self.every),
                humantime::format_duration(Duration::from_millis(
                    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
                ))
            )
        })
    }

    /// Records that a capture of `kind` started at `now`.
    pub(crate) fn started(&mut self, kind: &'static str, now: Instant) {
        self.last.insert(kind, now);
    }
}

/// The waiting requests, oldest first.
#[derive(Debug, Default)]
pub(crate) struct CaptureQueue {
    waiting: Mutex<VecDeque<PendingCapture>>,
}

impl CaptureQueue {
    /// Queues a request whose trigger event will be `event_id`; false when too many are
    /// already waiting.
    pub(crate) fn push(&self, request: CaptureRequest, event_id: String, origin: Origin) -> bool {
        let mut waiting = self.lock();
        if waiting.len() >= MAX_WAITING {
            return false;
        }
        waiting.push_back(PendingCapture {
            request,
            event_id,
            queued: Instant::now(),
            origin,
        });
        true
    }

    /// The oldest waiting request.
    pub(crate) fn pop(&self) -> Option<PendingCapture> {
        self.lock().pop_front()
    }

    /// Puts a request that has to wait longer back at the head.
    pub(crate) fn push_front(&self, pending: PendingCapture) {
        self.lock().push_front(pending);
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<PendingCapture>> {
        // Nothing panics while it is held; a poisoned lock is taken over.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
