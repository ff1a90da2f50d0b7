//! Central control of the fleet: rules and pauses as data in the store, pushed live to
//! every connected agent on whichever node it is connected to, and capture requests that
//! reach every agent of a service across all nodes.
//!
//! The store is the source of truth; nodes share nothing else. Every node that takes
//! agent streams (`all`, `ingest`) runs a small loop ([`sync`]) that every
//! `[control] poll` (1 s) reads the store's control version — one number, the highest
//! rule or pause version — and reloads the rules and pauses when it moved; each agent
//! stream then compares the update its agent should have with the last one it sent and
//! sends the difference ([`agent`]). The same loop picks up new capture requests and
//! asks its agents that match, recording whom it asked; agents' answers (which version
//! they applied and what they refused, what they captured and refused) are recorded by
//! the node the agent is connected to. A change made through one node's API wakes that
//! node's loop at once; other nodes see it within one poll. Polling was chosen over a
//! control topic because it works the same in every topology (single node, Kafka,
//! several single-node collectors sharing one ClickHouse) at the cost of one tiny query
//! per node per poll, and a change reaching agents on other nodes up to one poll later.
//!
//! - [`rules`]: rule layers (per service, optionally per label selector), checked as
//!   agents check them, and resolved into the rules one agent gets.
//! - [`state`]: the rules and pauses read from the store, and each agent's update.
//! - [`edit`]: changes made through the API (rules, pauses), checked and versioned.
//! - [`capture`]: "capture now" for a whole service, a label selector or one instance.
//! - [`sync`]: the per-node loop; [`agent`]: the per-stream side.
//! - [`seed`]: the config file's `[rules]` as the first central rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holmes_storage::{SkipNotice, Store};
use serde::Deserialize;
use tokio::sync::{mpsc, watch, Notify};

use crate::clock::unix_nanos_now;
use crate::ingest::live::LiveAgents;

pub mod agent;
pub mod capture;
pub mod edit;
pub mod rules;
pub mod seed;
pub mod skips;
pub mod state;
pub mod sync;

use state::ControlState;

/// How often a node reads the control version unless `[control] poll` says otherwise.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// How long a capture request waits for the nodes to ask their agents unless
/// `[control] dispatch_wait` says otherwise.
pub const DEFAULT_DISPATCH_WAIT: Duration = Duration::from_secs(5);
/// The least time between two operators' capture requests of one service unless
/// `[control] capture_min_interval` says otherwise.
pub const DEFAULT_CAPTURE_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// The `[control]` section.
///
/// ```toml
/// [control]
/// poll = "1s"            # how often each node reads the store for changes
/// dispatch_wait = "5s"   # how long POST …/capture waits for every node to ask its agents
/// capture_min_interval = "5s"  # least time between two capture requests of a service
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// How often a node reads the store's control version and new capture requests.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// How long a capture request waits for every node with agents to ask them.
    #[serde(with = "humantime_serde")]
    pub dispatch_wait: Duration,
    /// The least time between two capture requests of one service made through the API
    /// (an operator's; alerts' are one per alert), on any node: sooner is answered 429
    /// with the time to wait. `0s`: no limit.
    #[serde(with = "humantime_serde")]
    pub capture_min_interval: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            poll: DEFAULT_POLL,
            dispatch_wait: DEFAULT_DISPATCH_WAIT,
            capture_min_interval: DEFAULT_CAPTURE_MIN_INTERVAL,
        }
    }
}

/// A `[control]` setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[control] {0}")]
pub struct ControlConfigError(String);

impl ControlConfig {
    /// Checks the ranges: `poll` from 50 ms to 1 min, `dispatch_wait` at most 1 min,
    /// `capture_min_interval` at most 1 h.
    pub fn validate(&self) -> Result<(), ControlConfigError> {
        if self.poll < Duration::from_millis(50) || self.poll > Duration::from_secs(60) {
            return Err(ControlConfigError(format!(
                "poll = \"{}\" is out of range; between 50ms and 1m",
                humantime::format_duration(self.poll)
            )));
        }
        if self.dispatch_wait > Duration::from_secs(60) {
            return Err(ControlConfigError(format!(
                "dispatch_wait = \"{}\" is too long; at most 1m",
                humantime::format_duration(self.dispatch_wait)
            )));
        }
        if self.capture_min_interval > Duration::from_secs(3600) {
            return Err(ControlConfigError(format!(
                "capture_min_interval = \"{}\" is too long; at most 1h",
                humantime::format_duration(self.capture_min_interval)
            )));
        }
        Ok(())
    }
}

/// The control plane of one collector node, shared by its agent streams, its loop and
/// its API.
pub struct Control {
    store: Arc<dyn Store>,
    live: Arc<LiveAgents>,
    node_id: String,
    /// Whether agents connect to this node (`all`, `ingest`).
    takes_agents: bool,
    config: ControlConfig,
    state: watch::Sender<Arc<ControlState>>,
    poke: Notify,
    /// When this node started, nanoseconds since the Unix epoch.
    started_unix_nanos: u64,
    /// Capture requests this node has asked its agents for (bounded).
    dispatched: Mutex<sync::RecentIds>,
    /// Skip notices (by event id) this node has handed to its agents (bounded).
    skips_told: Mutex<sync::RecentIds>,
    /// Skip notices to store, on a node without agent streams ([`skips`]).
    skip_queue: mpsc::Sender<SkipNotice>,
    /// Their receiving end, until [`Control::start`] starts the task that stores them.
    skip_queued: Mutex<Option<mpsc::Receiver<SkipNotice>>>,
    /// When this node last accepted an operator's capture request, by service (those
    /// within `capture_min_interval` only).
    capture_asked: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("node_id", &self.node_id)
            .field("takes_agents", &self.takes_agents)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// The control plane of a node named `node_id` over `store`, pushing to `live`
    /// when `takes_agents`. Call [`Control::start`] before agents connect.
    pub fn new(
        store: Arc<dyn Store>,
        live: Arc<LiveAgents>,
        node_id: String,
        takes_agents: bool,
        config: ControlConfig,
    ) -> Arc<Control> {
        let (state, _) = watch::channel(Arc::new(ControlState::default()));
        let (skip_queue, skip_queued) = mpsc::channel(skips::QUEUE);
        Arc::new(Control {
            store,
            live,
            node_id,
            takes_agents,
            config,
            state,
            poke: Notify::new(),
            started_unix_nanos: unix_nanos_now(),
            dispatched: Mutex::new(sync::RecentIds::default()),
            skips_told: Mutex::new(sync::RecentIds::default()),
            skip_queue,
            skip_queued: Mutex::new(Some(skip_queued)),
            capture_asked: Mutex::default(),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The store it works on.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The state as this node last read it; changes are announced on the receiver.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ControlState>> {
        self.state.subscribe()
    }

    /// Wakes this node's loop now (after a change made through this node).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Tells the agent `instance` of `service` not to send its profiles of the kinds
    /// `kinds` of the event `event_id` (the capture budget, [`crate::incident::budget`]).
    /// A node that takes agents tells it if it is connected here; a node without agent
    /// streams (a Kafka processor) queues a [`SkipNotice`] to be stored when the decision
    /// is `new` ([`skips`]), and the node the agent is connected to tells it within a
    /// `[control] poll`. Never waits.
    pub fn skip_profiles(
        &self,
        service: &str,
        instance: &str,
        event_id: &str,
        kinds: &[holmes_proto::ProfileKind],
        new: bool,
    ) -> SkipDelivery {
        if self.takes_agents {
            return if self.tell_skip(service, instance, event_id, kinds) {
                SkipDelivery::Told
            } else {
                SkipDelivery::NotConnected
            };
        }
        if !new {
            return SkipDelivery::Noticed;
        }
        let notice = SkipNotice {
            event_id: event_id.to_owned(),
            service: service.to_owned(),
            instance_id: instance.to_owned(),
            kinds: kinds.to_vec(),
            unix_nanos: unix_nanos_now(),
        };
        match self.skip_queue.try_send(notice) {
            Ok(()) => SkipDelivery::Noticed,
            Err(_) => SkipDelivery::NotNoticed,
        }
    }

    /// Sends `SkipProfiles` to the agent if it is connected here; whether it took it.
    fn tell_skip(
        &self,
        service: &str,
        instance: &str,
        event_id: &str,
        kinds: &[holmes_proto::ProfileKind],
    ) -> bool {
        let skip = holmes_proto::CollectorMessage::SkipProfiles(holmes_proto::SkipProfiles {
            event_id: event_id.to_owned(),
            kinds: kinds.to_vec(),
        });
        self.live.tell(service, instance, &skip)
    }
}

/// What became of a capture-budget skip ([`Control::skip_profiles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipDelivery {
    /// The agent, connected here, was told.
    Told,
    /// The agent is not connected here (or its outbound queue is full).
    NotConnected,
    /// Queued to be stored for the node the agent is connected to (or queued before: a
    /// resent event).
    Noticed,
    /// The queue of notices is full: the agent is not told.
    NotNoticed,
}

impl SkipDelivery {
    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipDelivery::Told => "told",
            SkipDelivery::NotConnected => "not connected here",
            SkipDelivery::Noticed => "noticed for its node",
            SkipDelivery::NotNoticed => "notice queue full",
        }
    }
}

/// A name for this node, unique per run: `<host>/<grpc address>/<start time in hex>`.
pub fn node_name(grpc_addr: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "collector".to_owned());
    format!("{host}/{grpc_addr}/{:x}", unix_nanos_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_has_defaults_and_ranges() {
        let c: ControlConfig = toml::from_str("").unwrap();
        assert_eq!(c, ControlConfig::default());
        let c: ControlConfig = toml::from_str("poll = \"200ms\"").unwrap();
        assert_eq!(c.poll, Duration::from_millis(200));
        c.validate().unwrap();
        let fast: ControlConfig = toml::from_str("poll = \"1ms\"").unwrap();
        assert_eq!(
            fast.validate().unwrap_err().to_string(),
            "[control] poll = \"1ms\" is out of range; between 50ms and 1m"
        );
        assert!(toml::from_str::<ControlConfig>("pol = \"1s\"").is_err());
    }
}
