#![doc = include_str!("../README.md")]
// The agent runs inside other people's services: a panic here is a panic there.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

// The stages a sample goes through, in order, then what they share.
mod capture;
mod delivery;
mod monitor;
mod rules;
mod sample;

mod clock;
mod config;
mod event_id;
mod heap;
mod jitter;
mod unwind;

/// What the agent's unit tests and their helpers return: a failed step is an `Err` with
/// what failed, so the tests need no `unwrap` (the crate's code has none either).
#[cfg(test)]
type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A test's step that must fail: its error, or a test failure naming what came instead.
#[cfg(test)]
trait Failure<E> {
    fn failure(self) -> Result<E, String>;
}

#[cfg(test)]
impl<T: std::fmt::Debug, E> Failure<E> for Result<T, E> {
    fn failure(self) -> Result<E, String> {
        match self {
            Ok(value) => Err(format!("expected an error, got {value:?}")),
            Err(err) => Ok(err),
        }
    }
}

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use monitor::Shared;

pub use delivery::transport::{Compression, DEFAULT_COMPRESSION};
pub use heap::{allocated_bytes, CountingAllocator, SamplingAllocator};
pub use holmes_proto::{Metric, ProfileKind};
pub use rules::{Decision, Rule, RuleError};

pub use config::{
    ConfigError, HolmesBuilder, DEFAULT_BASELINE_INTERVAL, DEFAULT_CAPTURE_REQUEST_INTERVAL,
    DEFAULT_COLLECT_INTERVAL, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CPU_PROFILE_DURATION,
    DEFAULT_DEBUGINFO_RATE, DEFAULT_DEBUGINFO_UPLOAD, DEFAULT_DUMP_BYTES,
    DEFAULT_FLIGHT_RECORDER_WINDOW, DEFAULT_FLUSH_TIMEOUT, DEFAULT_MAX_BACKOFF,
    DEFAULT_MEMORY_FAST_INTERVAL, DEFAULT_MIN_PUSHED_COOLDOWN, DEFAULT_MIN_PUSHED_WINDOW,
    DEFAULT_OUTBOX_BYTES, DEFAULT_SEND_INTERVAL, DEFAULT_SPOOL_BYTES, FLIGHT_RECORDER_HISTORY,
    MAX_BASELINE_INTERVAL, MAX_DURATION_SETTING, MAX_REQUESTED_CPU_DURATION, MIN_BASELINE_INTERVAL,
    MIN_COLLECT_INTERVAL, MIN_DEBUGINFO_RATE,
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
    /// Highest sequence number queued. Everything queued up to a moment has arrived
    /// once `acked_seq` reaches what this was then (acknowledgements are cumulative);
    /// `queued_seq - acked_seq` is how far behind the collector is.
    pub queued_seq: u64,
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
    /// Trigger events made: rules that fired and requested captures (not baselines).
    pub triggers: u64,
    /// Version of the collector's rules in force (0: the agent's own rules only).
    pub rules_version: u64,
    /// Profiles the collector asked not to send (its capture budget was spent), dropped
    /// unsent or not captured.
    pub skipped_profiles: u64,
    /// Baselines sent to the collector.
    pub baselines: u64,
    /// CPU time the baselines' captures took, all together.
    pub baseline_cpu: Duration,
    /// Bytes of the baselines' profiles, all together.
    pub baseline_bytes: u64,
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
        let d = &s.delivery;
        let outbox = d.outbox();
        let (spooled, spooled_bytes) = outbox.spooled();
        AgentStats {
            samples: s.samples.load(Ordering::Relaxed),
            sent: d.sent.load(Ordering::Relaxed),
            acked_seq: outbox.acked(),
            queued_seq: outbox.queued(),
            unacked: outbox.len() as u64,
            unacked_bytes: outbox.bytes() as u64,
            dropped: outbox.dropped(),
            spooled,
            spooled_bytes,
            recovered: outbox.recovered(),
            corrupt: outbox.corrupt(),
            triggers: s.triggers.load(Ordering::Relaxed),
            rules_version: s.rules.version(),
            skipped_profiles: outbox.skipped(),
            baselines: s.baselines.load(Ordering::Relaxed),
            baseline_cpu: Duration::from_nanos(s.baseline_cpu_nanos.load(Ordering::Relaxed)),
            baseline_bytes: s.baseline_bytes.load(Ordering::Relaxed),
            connected: d.connected.load(Ordering::Relaxed),
            connections: d.connections.load(Ordering::Relaxed),
        }
    }

    /// The rules in force, by metric.
    pub fn rules(&self) -> BTreeMap<Metric, Rule> {
        self.shared.rules.snapshot().1
    }

    /// Replaces a metric's rule at run time; its window is kept, so there is no second
    /// warm-up. It wins over a rule the collector pushed for that metric until the
    /// collector's next update that sets it. Fails for metrics without rules.
    pub fn set_rule(&self, metric: Metric, rule: Rule) -> Result<(), RuleError> {
        self.shared.rules.update(metric, |_| rule)
    }

    /// Turns a metric's rule on, keeping its thresholds.
    pub fn enable_rule(&self, metric: Metric) -> Result<(), RuleError> {
        self.shared.rules.update(metric, |r| r.enabled(true))
    }

    /// Turns a metric's rule off, keeping its thresholds.
    pub fn disable_rule(&self, metric: Metric) -> Result<(), RuleError> {
        self.shared.rules.update(metric, |r| r.enabled(false))
    }

    /// Captures profiles now, whatever the rules say, like the collector's "capture now".
    /// Returns the id of the trigger event the profiles will belong to; they arrive in
    /// the dump folder and at the collector like any other capture. Unlike the
    /// collector's requests, the host's are neither rate-limited nor paused; `cpu_max`
    /// still holds them back.
    pub fn capture_now(&self, kinds: &[ProfileKind]) -> Result<String, CaptureNowError> {
        if self.thread.is_none() {
            return Err(CaptureNowError::Disabled);
        }
        let event = event_id::new();
        let accepted = self.shared.requests.push(
            holmes_proto::CaptureRequest {
                request_id: event_id::new(),
                kinds: kinds.to_vec(),
                cpu_duration: None,
                purpose: holmes_proto::CapturePurpose::Operator,
                window: None,
                incident_id: None,
            },
            event.clone(),
            capture::requests::Origin::Host,
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
        self.shared.runtimes.register(handle);
    }

    /// Stops the agent: ends a running full-rate CPU capture early (its profile covers
    /// what it got), waits for running captures to queue their profiles, sends the
    /// last metric window, waits for the collector to acknowledge what is queued, then
    /// ends the agent's thread. The waits together take at most the flush timeout
    /// (default [`DEFAULT_FLUSH_TIMEOUT`]); whatever is not acknowledged by then stays
    /// in the spool, if there is one.
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
