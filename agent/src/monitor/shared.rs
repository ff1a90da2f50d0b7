//! What the handle, the agent thread and the sender share: the rules in force, the
//! registered runtimes, waiting capture requests, the delivery path and a few counters.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use holmes_proto::{CaptureRequest, ConfigApplied, ConfigUpdate, RuleConfig};

use crate::capture::requests::{CaptureQueue, Origin};
use crate::clock::unix_nanos_now;
use crate::config::AgentConfig;
use crate::delivery::sender::Control;
use crate::delivery::Delivery;
use crate::event_id;
use crate::rules::{Applied, RuleBook};
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
    /// Baselines sent, the CPU time their captures took and the bytes of their profiles.
    pub(crate) baselines: AtomicU64,
    pub(crate) baseline_cpu_nanos: AtomicU64,
    pub(crate) baseline_bytes: AtomicU64,
    /// Set by stop(); the agent thread checks it whenever it wakes.
    pub(crate) stop_requested: AtomicBool,
}

impl Shared {
    pub(crate) fn new(cfg: &AgentConfig) -> Self {
        Shared {
            rules: RuleBook::new(cfg.rules.clone(), cfg.floors),
            runtimes: Runtimes::new(cfg.runtimes.clone()),
            requests: CaptureQueue::default(),
            delivery: Arc::new(Delivery::new(cfg.outbox_bytes)),
            samples: AtomicU64::new(0),
            triggers: AtomicU64::new(0),
            baselines: AtomicU64::new(0),
            baseline_cpu_nanos: AtomicU64::new(0),
            baseline_bytes: AtomicU64::new(0),
            stop_requested: AtomicBool::new(false),
        }
    }
}

impl Control for Shared {
    fn rules(&self) -> Vec<RuleConfig> {
        self.rules.configs()
    }

    fn rules_version(&self) -> u64 {
        self.rules.version()
    }

    fn apply_config(&self, update: &ConfigUpdate) -> Option<ConfigApplied> {
        let version = update.version;
        let was_paused = self.rules.paused(unix_nanos_now()).is_some();
        match self.rules.apply(update) {
            Applied::Stale { in_force } => {
                tracing::info!(target: "holmes", version, in_force, "ignoring a configuration older than the one in force");
                None
            }
            Applied::Applied { answer, changed } => {
                for (metric, from, to) in &changed {
                    tracing::info!(target: "holmes", version, %metric, from = %from, to = %to, "rule changed by the collector");
                }
                for refusal in &answer.refused {
                    tracing::warn!(target: "holmes", version, metric = %refusal.metric, reason = %refusal.reason, "refused a rule pushed by the collector");
                }
                match &update.pause {
                    Some(pause) => {
                        let until = std::time::UNIX_EPOCH
                            + std::time::Duration::from_nanos(pause.until_unix_nanos);
                        tracing::info!(target: "holmes", version, until = %humantime::format_rfc3339_seconds(until), reason = %pause.reason, "captures paused by the collector");
                    }
                    None if was_paused => {
                        tracing::info!(target: "holmes", version, "captures resumed by the collector")
                    }
                    None => {}
                }
                tracing::info!(target: "holmes", version, replace = update.replace, rules = update.rules.len(), changed = changed.len(), refused = answer.refused.len(), "configuration from the collector applied");
                Some(answer)
            }
        }
    }

    fn request_capture(&self, request: CaptureRequest) -> bool {
        self.requests
            .push(request, event_id::new(), Origin::Collector)
    }
}
