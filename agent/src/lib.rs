#![doc = include_str!("../README.md")]
// The agent runs inside other people's services: a panic here is a panic there.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod alloc;
mod capture;
#[allow(dead_code)] // some parsers only serve the fixture tests
mod cgroup;
mod config;
mod debuginfo;
mod delivery;
mod dump;
mod event_id;
mod monitor;
mod outbox;
#[allow(dead_code)] // the decoder serves the tests
mod pprof;
#[allow(dead_code)] // some parsers only serve the fixture tests
mod procfs;
mod rules;
mod sampler;
mod sender;
mod spool;
mod transport;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::Notify;

pub use alloc::{allocated_bytes, CountingAllocator, SamplingAllocator};
pub use holmes_proto::{Metric, ProfileKind};
pub use rules::{Decision, Rule};
pub use transport::{Compression, DEFAULT_COMPRESSION};

pub use config::{
    ConfigError, HolmesBuilder, DEFAULT_COLLECT_INTERVAL, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_CPU_PROFILE_DURATION, DEFAULT_FLIGHT_RECORDER_WINDOW, DEFAULT_FLUSH_TIMEOUT,
    DEFAULT_MAX_BACKOFF, DEFAULT_MEMORY_FAST_INTERVAL, DEFAULT_OUTBOX_BYTES,
    DEFAULT_PREWARM_SYMBOLS, DEFAULT_SEND_INTERVAL, DEFAULT_SPOOL_BYTES, MAX_DURATION_SETTING,
    MIN_COLLECT_INTERVAL,
};

/// Entry point: `Holmes::builder()` or `Holmes::from_env()`.
#[derive(Debug)]
pub struct Holmes;

impl Holmes {
    /// An empty builder; only the service name is required.
    pub fn builder() -> HolmesBuilder {
        HolmesBuilder::default()
    }

    /// A builder filled from the `HOLMES_*` environment variables. Settings made on it
    /// afterwards win over the environment.
    pub fn from_env() -> Result<HolmesBuilder, ConfigError> {
        HolmesBuilder::default().with_env()
    }
}

/// Why an agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The agent's thread could not be created.
    #[error("cannot start the agent thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl HolmesBuilder {
    /// Checks the configuration and starts the agent on its own thread.
    ///
    /// A disabled agent (`.enabled(false)` or `HOLMES_ENABLED=false`) returns a handle
    /// that does nothing.
    pub fn start(self) -> Result<HolmesHandle, StartError> {
        let cfg = self.resolve()?;
        let shared = Arc::new(Shared::new(&cfg));
        let service = cfg.service.clone();
        let instance = cfg.instance.clone();
        if !cfg.enabled {
            tracing::info!(target: "holmes", %service, "agent disabled");
            return Ok(HolmesHandle {
                service,
                instance,
                shared,
                thread: None,
            });
        }
        let thread = monitor::spawn(cfg, Arc::clone(&shared))?;
        Ok(HolmesHandle {
            service,
            instance,
            shared,
            thread: Some(thread),
        })
    }
}

/// A running agent. Dropping it leaves the agent running for the rest of the process;
/// call [`HolmesHandle::stop`] at shutdown to flush and end it.
#[derive(Debug)]
#[must_use = "dropping the handle leaves the agent running without a way to stop() and flush it"]
pub struct HolmesHandle {
    service: String,
    instance: String,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Counters describing what the agent has done, for health checks and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentStats {
    /// Sampling rounds taken.
    pub samples: u64,
    /// Durable messages sent (resends included).
    pub sent: u64,
    /// Highest sequence number the collector acknowledged.
    pub acked_seq: u64,
    /// Messages waiting for an acknowledgement.
    pub unacked: u64,
    /// Bytes held by unacknowledged messages (approximate wire size).
    pub unacked_bytes: u64,
    /// Messages lost: dropped because the outbox or the spool was full (oldest metric
    /// windows first, profiles last), or unreadable in the spool (counted in `corrupt`).
    pub dropped: u64,
    /// Messages held in the spool folder (all unacknowledged ones, with a spool).
    pub spooled: u64,
    /// Bytes of the spool's files.
    pub spooled_bytes: u64,
    /// Messages found in the spool at start, from an earlier run, and queued again.
    pub recovered: u64,
    /// Spool files that could not be used: torn or corrupt, or a profile missing chunks.
    pub corrupt: u64,
    /// Rules that fired.
    pub triggers: u64,
    /// Whether a stream to the collector is open now.
    pub connected: bool,
    /// Streams opened so far.
    pub connections: u64,
}

impl HolmesHandle {
    /// The service name in use.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The instance id in use.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// What the agent has done so far.
    pub fn stats(&self) -> AgentStats {
        let s = &self.shared;
        let outbox = s.lock_outbox();
        let (spooled, spooled_bytes) = outbox.spooled();
        AgentStats {
            samples: s.samples.load(Ordering::Relaxed),
            sent: s.sent.load(Ordering::Relaxed),
            acked_seq: outbox.acked(),
            unacked: outbox.len() as u64,
            unacked_bytes: outbox.bytes() as u64,
            dropped: outbox.dropped(),
            spooled,
            spooled_bytes,
            recovered: outbox.recovered(),
            corrupt: outbox.corrupt(),
            triggers: s.triggers.load(Ordering::Relaxed),
            connected: s.connected.load(Ordering::Relaxed),
            connections: s.connections.load(Ordering::Relaxed),
        }
    }

    /// The rules in force, by metric.
    pub fn rules(&self) -> BTreeMap<Metric, Rule> {
        self.shared.rule_book().1
    }

    /// Replaces a metric's rule at run time; its window is kept, so there is no second
    /// warm-up. Fails for metrics without rules.
    pub fn set_rule(&self, metric: Metric, rule: Rule) -> Result<(), RuleError> {
        self.shared.update_rule(metric, |_| rule)
    }

    /// Turns a metric's rule on, keeping its thresholds.
    pub fn enable_rule(&self, metric: Metric) -> Result<(), RuleError> {
        self.shared.update_rule(metric, |r| r.enabled(true))
    }

    /// Turns a metric's rule off, keeping its thresholds.
    pub fn disable_rule(&self, metric: Metric) -> Result<(), RuleError> {
        self.shared.update_rule(metric, |r| r.enabled(false))
    }

    /// Captures profiles now, whatever the rules say, like the collector's "capture now".
    /// Returns the id of the trigger event the profiles will belong to; they arrive in
    /// the dump folder and at the collector like any other capture.
    pub fn capture_now(&self, kinds: &[ProfileKind]) -> Result<String, CaptureNowError> {
        if self.thread.is_none() {
            return Err(CaptureNowError::Disabled);
        }
        let event = event_id::new();
        let accepted = self.shared.request_capture(
            holmes_proto::CaptureRequest {
                request_id: event_id::new(),
                kinds: kinds.to_vec(),
                cpu_duration: None,
            },
            event.clone(),
        );
        if !accepted {
            return Err(CaptureNowError::Busy);
        }
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
        Ok(event)
    }

    /// Counts the alive tasks of another tokio runtime in the `tasks` metric.
    pub fn register_runtime(&self, handle: tokio::runtime::Handle) {
        self.shared
            .runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
    }

    /// Stops the agent: sends the last metric window, waits up to the flush timeout
    /// (default [`DEFAULT_FLUSH_TIMEOUT`]) for the collector to acknowledge what is
    /// queued, then ends the agent's thread. Blocks the caller for at most that long.
    pub fn stop(mut self) -> AgentStats {
        self.shared.stop_requested.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::error!(target: "holmes", "the agent thread panicked");
            }
        }
        self.stats()
    }
}

/// Why a capture was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureNowError {
    /// The agent is disabled.
    #[error("the agent is disabled")]
    Disabled,
    /// Too many requests are already waiting.
    #[error("too many capture requests are waiting; try again shortly")]
    Busy,
}

/// A rule change that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The metric has no rule (only cpu, memory, threads, tasks and heap do).
    #[error("metric {0} has no rule; rules exist for cpu, memory, threads, tasks and heap")]
    NoRule(Metric),
}

/// The rules in force and a version that changes with every edit.
#[derive(Debug)]
struct RuleBook {
    rules: BTreeMap<Metric, Rule>,
    collector_version: u64,
}

/// A capture asked for by the host or the collector, waiting for the agent thread.
#[derive(Debug)]
pub(crate) struct PendingCapture {
    pub(crate) request: holmes_proto::CaptureRequest,
    /// The id its trigger event will have.
    pub(crate) event_id: String,
    pub(crate) queued: std::time::Instant,
}

/// State shared by the handle, the monitor loop and the sender.
#[derive(Debug)]
pub(crate) struct Shared {
    rules: Mutex<RuleBook>,
    /// Bumped on every rule edit; the monitor compares it each tick.
    rules_version: AtomicU64,
    runtimes: Mutex<Vec<tokio::runtime::Handle>>,
    triggers: AtomicU64,
    /// Set by stop(); the agent thread checks it whenever it wakes.
    stop_requested: AtomicBool,
    /// Captures asked for by the collector or the host, taken by the agent thread.
    /// Waiting capture requests, each with the id of the trigger event it will make and
    /// when it was queued.
    capture_requests: Mutex<std::collections::VecDeque<PendingCapture>>,
    outbox: Mutex<outbox::Outbox>,
    /// The disk spool, when configured; opened by the agent thread as it starts.
    spool: OnceLock<spool::Spool>,
    /// Whether a spool write failed since the last one that worked (to log once).
    spool_failing: AtomicBool,
    /// Woken when a message is queued.
    queued: Notify,
    samples: AtomicU64,
    sent: AtomicU64,
    connections: AtomicU64,
    connected: AtomicBool,
}

impl Shared {
    fn new(cfg: &config::AgentConfig) -> Self {
        Shared {
            rules: Mutex::new(RuleBook {
                rules: cfg.rules.clone(),
                collector_version: 0,
            }),
            rules_version: AtomicU64::new(0),
            runtimes: Mutex::new(cfg.runtimes.clone()),
            triggers: AtomicU64::new(0),
            stop_requested: AtomicBool::new(false),
            capture_requests: Mutex::new(std::collections::VecDeque::new()),
            outbox: Mutex::new(outbox::Outbox::new(cfg.outbox_bytes)),
            spool: OnceLock::new(),
            spool_failing: AtomicBool::new(false),
            queued: Notify::new(),
            samples: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connected: AtomicBool::new(false),
        }
    }

    /// The rule book's version and rules.
    fn rule_book(&self) -> (u64, BTreeMap<Metric, Rule>) {
        let book = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        (
            self.rules_version.load(Ordering::Acquire),
            book.rules.clone(),
        )
    }

    fn update_rule(
        &self,
        metric: Metric,
        edit: impl FnOnce(Rule) -> Rule,
    ) -> Result<(), RuleError> {
        let mut book = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let rule = book
            .rules
            .get_mut(&metric)
            .ok_or(RuleError::NoRule(metric))?;
        *rule = edit(*rule);
        self.rules_version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Applies rules pushed by the collector, unless an equal or newer version is in force.
    fn apply_config_update(&self, update: &holmes_proto::ConfigUpdate) {
        let mut book = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        if update.version < book.collector_version {
            tracing::debug!(target: "holmes", version = update.version, "ignoring an older rule update");
            return;
        }
        book.collector_version = update.version;
        for config in &update.rules {
            if let Some(rule) = book.rules.get_mut(&config.metric) {
                *rule = Rule::from_config(config);
            } else {
                tracing::warn!(target: "holmes", metric = %config.metric, "ignoring a pushed rule for a metric that has none");
            }
        }
        self.rules_version.fetch_add(1, Ordering::AcqRel);
        tracing::info!(target: "holmes", version = update.version, rules = update.rules.len(), "rules updated by the collector");
    }

    /// Queues a capture request; false when too many are already waiting.
    fn request_capture(&self, request: holmes_proto::CaptureRequest, event_id: String) -> bool {
        const MAX_WAITING: usize = 8;
        let mut queue = self
            .capture_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if queue.len() >= MAX_WAITING {
            return false;
        }
        queue.push_back(PendingCapture {
            request,
            event_id,
            queued: std::time::Instant::now(),
        });
        true
    }

    /// The next waiting capture request.
    fn next_capture_request(&self) -> Option<PendingCapture> {
        self.capture_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Puts a request that has to wait back at the head of the queue.
    fn requeue_capture_request(&self, pending: PendingCapture) {
        self.capture_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_front(pending);
    }

    fn runtimes(&self) -> Vec<tokio::runtime::Handle> {
        self.runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The outbox; a poisoned lock is taken over, since every outbox operation leaves
    /// it consistent before anything can panic.
    fn lock_outbox(&self) -> MutexGuard<'_, outbox::Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}
