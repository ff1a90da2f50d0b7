//! Captures asked for by the host (`HolmesHandle::capture_now`) or the collector (a
//! `CaptureRequest`), waiting for the agent thread to take them. Bounded: a full queue
//! refuses the request.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use holmes_proto::CaptureRequest;

/// Requests that may wait at once; more are refused.
const MAX_WAITING: usize = 8;

/// A capture asked for, waiting for the agent thread.
#[derive(Debug)]
pub(crate) struct PendingCapture {
    pub(crate) request: CaptureRequest,
    /// The id its trigger event will have.
    pub(crate) event_id: String,
    /// When it was queued.
    pub(crate) queued: Instant,
}

/// The waiting requests, oldest first.
#[derive(Debug, Default)]
pub(crate) struct CaptureQueue {
    waiting: Mutex<VecDeque<PendingCapture>>,
}

impl CaptureQueue {
    /// Queues a request whose trigger event will be `event_id`; false when too many are
    /// already waiting.
    pub(crate) fn push(&self, request: CaptureRequest, event_id: String) -> bool {
        let mut waiting = self.lock();
        if waiting.len() >= MAX_WAITING {
            return false;
        }
        waiting.push_back(PendingCapture {
            request,
            event_id,
            queued: Instant::now(),
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
mod tests {
    use super::*;

    fn request(id: &str) -> CaptureRequest {
        CaptureRequest {
            request_id: id.to_owned(),
            kinds: Vec::new(),
            cpu_duration: None,
            purpose: holmes_proto::CapturePurpose::Operator,
            window: None,
            incident_id: None,
        }
    }

    #[test]
    fn requests_wait_in_order_and_a_full_queue_refuses() {
        let q = CaptureQueue::default();
        for i in 0..MAX_WAITING {
            assert!(q.push(request(&i.to_string()), format!("e{i}")));
        }
        assert!(!q.push(request("late"), "e".into()));
        let first = q.pop().unwrap();
        assert_eq!(first.request.request_id, "0");
        q.push_front(first);
        assert_eq!(q.pop().unwrap().event_id, "e0");
        assert_eq!(q.pop().unwrap().event_id, "e1");
    }
}
