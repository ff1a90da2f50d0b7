#![doc = include_str!("../README.md")]
// The agent runs inside other people's services: a panic here is a panic there.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod config;
mod monitor;
mod outbox;
mod sampler;
mod sender;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Notify};

pub use config::{
    ConfigError, HolmesBuilder, DEFAULT_COLLECT_INTERVAL, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FLUSH_TIMEOUT, DEFAULT_MAX_BACKOFF, DEFAULT_OUTBOX_BYTES, DEFAULT_SEND_INTERVAL,
    MAX_DURATION_SETTING, MIN_COLLECT_INTERVAL,
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
        let shared = Arc::new(Shared::new(cfg.outbox_bytes));
        let service = cfg.service.clone();
        let instance = cfg.instance.clone();
        if !cfg.enabled {
            tracing::info!(target: "holmes", %service, "agent disabled");
            return Ok(HolmesHandle {
                service,
                instance,
                shared,
                stop: None,
                thread: None,
            });
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = monitor::spawn(cfg, Arc::clone(&shared), stop_rx)?;
        Ok(HolmesHandle {
            service,
            instance,
            shared,
            stop: Some(stop_tx),
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
    stop: Option<oneshot::Sender<()>>,
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
    /// Messages dropped because the outbox was full.
    pub dropped: u64,
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
        AgentStats {
            samples: s.samples.load(Ordering::Relaxed),
            sent: s.sent.load(Ordering::Relaxed),
            acked_seq: outbox.acked(),
            unacked: outbox.len() as u64,
            unacked_bytes: outbox.bytes() as u64,
            dropped: outbox.dropped(),
            connected: s.connected.load(Ordering::Relaxed),
            connections: s.connections.load(Ordering::Relaxed),
        }
    }

    /// Stops the agent: sends the last metric window, waits up to the flush timeout
    /// (default [`DEFAULT_FLUSH_TIMEOUT`]) for the collector to acknowledge what is
    /// queued, then ends the agent's thread. Blocks the caller for at most that long.
    pub fn stop(mut self) -> AgentStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(target: "holmes", "the agent thread panicked");
            }
        }
        self.stats()
    }
}

/// State shared by the handle, the monitor loop and the sender.
#[derive(Debug)]
pub(crate) struct Shared {
    outbox: Mutex<outbox::Outbox>,
    /// Woken when a message is queued.
    queued: Notify,
    /// Woken when an ack arrives.
    acked: Notify,
    samples: AtomicU64,
    sent: AtomicU64,
    connections: AtomicU64,
    connected: AtomicBool,
}

impl Shared {
    fn new(outbox_bytes: usize) -> Self {
        Shared {
            outbox: Mutex::new(outbox::Outbox::new(outbox_bytes)),
            queued: Notify::new(),
            acked: Notify::new(),
            samples: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connected: AtomicBool::new(false),
        }
    }

    /// The outbox; a poisoned lock is taken over, since every outbox operation leaves
    /// it consistent before anything can panic.
    fn lock_outbox(&self) -> MutexGuard<'_, outbox::Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}
