//! What the handle, the agent thread and the sender share: the rules in force, the
//! registered runtimes, waiting capture requests, the delivery path and a few counters.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use holmes_proto::{CaptureRequest, ConfigUpdate, RuleConfig};

use crate::capture::requests::CaptureQueue;
use crate::config::AgentConfig;
use crate::delivery::sender::Control;
use crate::delivery::Delivery;
use crate::event_id;
use crate::rules::RuleBook;
use crate::sample::runtimes::Runtimes;

/// State shared by the handle, the monitor loop and the sender.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The rules in force; the monitor picks up a new version on its next wake-up.
    pub(crate) rules: RuleBook,
    /// Runtimes whose tasks are counted and dumped.
    pub(crate) runtimes: Runtimes,
    /// Captures asked for by the collector or the host, taken by the agent thread.
    pub(crate) requests: CaptureQueue,
    /// The way to the dump folder and the collector.
    pub(crate) delivery: Arc<Delivery>,
    /// Sampling rounds taken.
    pub(crate) samples: AtomicU64,
    /// Trigger events made (rules that fired and requested captures).
    pub(crate) triggers: AtomicU64,
    /// Set by stop(); the agent thread checks it whenever it wakes.
    pub(crate) stop_requested: AtomicBool,
}

impl Shared {
    pub(crate) fn new(cfg: &AgentConfig) -> Self {
        Shared {
            rules: RuleBook::new(cfg.rules.clone()),
            runtimes: Runtimes::new(cfg.runtimes.clone()),
            requests: CaptureQueue::default(),
            delivery: Arc::new(Delivery::new(cfg.outbox_bytes)),
            samples: AtomicU64::new(0),
            triggers: AtomicU64::new(0),
            stop_requested: AtomicBool::new(false),
        }
    }
}

impl Control for Shared {
    fn rules(&self) -> Vec<RuleConfig> {
        self.rules.configs()
    }

    fn apply_rules(&self, update: &ConfigUpdate) {
        self.rules.apply(update);
    }

    fn request_capture(&self, request: CaptureRequest) -> bool {
        self.requests.push(request, event_id::new())
    }
}
