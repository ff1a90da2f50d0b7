//! The agent's configuration: a by-value builder with documented defaults, and the
//! `HOLMES_*` environment variables that fill whatever code left unset.
//!
//! Precedence: a value set in code wins over the environment, which wins over the
//! `DEFAULT_*` constants — whatever the order of the calls.
//!
//! - [`env`]: the `HOLMES_*` variables, parsed into the builder;
//! - [`kubernetes`]: labels from the Downward API's variables;
//! - [`resolve`]: the checks and defaults that turn the builder into an [`AgentConfig`].

mod env;
mod kubernetes;
mod resolve;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use holmes_proto::names::NameError;
use holmes_proto::rule_floors::{Floors, DEFAULT_FLOORS};
use holmes_proto::Metric;

use crate::delivery::dump::DumpFolder;
use crate::delivery::transport::{Compression, Transport, TransportSettings};
use crate::rules::Rule;

/// Sampling interval when neither code nor `HOLMES_INTERVAL` sets one.
pub const DEFAULT_COLLECT_INTERVAL: Duration = Duration::from_secs(1);
/// How often a metric window is sent to the collector (`HOLMES_SEND_INTERVAL`).
pub const DEFAULT_SEND_INTERVAL: Duration = Duration::from_secs(5);
/// Memory kept for messages the collector has not acknowledged (`HOLMES_OUTBOX_BYTES`).
pub const DEFAULT_OUTBOX_BYTES: usize = 4 * 1024 * 1024;
/// Disk kept for messages the collector has not acknowledged, when a spool folder is
/// set (`HOLMES_SPOOL_BYTES`).
pub const DEFAULT_SPOOL_BYTES: usize = 256 * 1024 * 1024;
/// How long `stop()` waits for running captures to finish and for unacknowledged
/// messages to be acknowledged, together.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between two reconnection attempts.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Time allowed to establish a connection to the collector.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest sampling interval accepted.
pub const MIN_COLLECT_INTERVAL: Duration = Duration::from_millis(10);
/// Interval of the cheap RSS-only memory check between two regular samples
/// (`HOLMES_MEMORY_FAST_INTERVAL`; `off` disables it).
pub const DEFAULT_MEMORY_FAST_INTERVAL: Duration = Duration::from_millis(100);
/// Length of the full-rate CPU profile taken after a trigger (`HOLMES_CPU_PROFILE_DURATION`).
pub const DEFAULT_CPU_PROFILE_DURATION: Duration = Duration::from_secs(2);
/// History the CPU flight recorder keeps, shipped as the pre-trigger profile
/// (`HOLMES_FLIGHT_RECORDER_WINDOW`).
pub const DEFAULT_FLIGHT_RECORDER_WINDOW: Duration = Duration::from_secs(10);
/// Whether the agent uploads its executable's debug info when the collector asks for it
/// (`HOLMES_DEBUGINFO_UPLOAD`).
pub const DEFAULT_DEBUGINFO_UPLOAD: bool = true;
/// Bytes per second a debug info upload may send (`HOLMES_DEBUGINFO_RATE`): 1 MiB/s, so
/// a 25 MiB binary's sections take about 10 s, once per build across the fleet.
pub const DEFAULT_DEBUGINFO_RATE: usize = 1024 * 1024;
/// Slowest debug info upload rate accepted (bytes per second).
pub const MIN_DEBUGINFO_RATE: usize = 16 * 1024;
/// Longest interval, timeout or backoff accepted for any setting.
pub const MAX_DURATION_SETTING: Duration = Duration::from_secs(3600);
/// History the CPU flight recorder keeps (at least its shipped window): an incident's
/// healthy controls are asked for the seconds before the sick instances' trigger,
/// seconds after it, and get them from here; a baseline ships all of it.
pub const FLIGHT_RECORDER_HISTORY: Duration = Duration::from_secs(60);
/// Shortest cooldown of a rule the collector pushes (`HOLMES_MIN_PUSHED_COOLDOWN`); a
/// pushed rule below it is refused.
pub const DEFAULT_MIN_PUSHED_COOLDOWN: Duration = DEFAULT_FLOORS.min_cooldown;
/// Smallest window of a rule the collector pushes (`HOLMES_MIN_PUSHED_WINDOW`); a pushed
/// rule below it is refused.
pub const DEFAULT_MIN_PUSHED_WINDOW: u32 = DEFAULT_FLOORS.min_window;
/// Shortest time between two captures of one kind that the collector asks for
/// (`HOLMES_CAPTURE_REQUEST_INTERVAL`); a request sooner is refused as rate-limited.
pub const DEFAULT_CAPTURE_REQUEST_INTERVAL: Duration = Duration::from_secs(30);
/// Longest new CPU profile the collector may ask for; a longer request is cut to it.
pub const MAX_REQUESTED_CPU_DURATION: Duration = Duration::from_secs(30);
/// How often the agent sends a baseline to its collector (`HOLMES_BASELINE_INTERVAL`),
/// jittered by ±20 %.
pub const DEFAULT_BASELINE_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Shortest baseline interval accepted.
pub const MIN_BASELINE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest baseline interval accepted.
pub const MAX_BASELINE_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Disk kept for local dumps (`HOLMES_DUMP_BYTES`); the oldest go first.
pub const DEFAULT_DUMP_BYTES: usize = 128 * 1024 * 1024;

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No service name was given in code or in `HOLMES_SERVICE`.
    #[error("no service name: call .service(\"name\") or set HOLMES_SERVICE")]
    MissingService,
    /// An environment variable holds a value that does not parse.
    #[error("{var}={value:?} is invalid: {reason}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A service name, instance id or label breaks the naming rules.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The collector address is not a usable URL.
    #[error("collector address {url:?} is invalid: {reason}")]
    InvalidCollector {
        /// The address.
        url: String,
        /// Why.
        reason: String,
    },
    /// A setting made in code is out of range.
    #[error("{setting} = {value} is out of range: {reason}")]
    OutOfRange {
        /// The setting.
        setting: &'static str,
        /// Its value.
        value: String,
        /// The allowed range.
        reason: String,
    },
}

/// Builds and starts an agent. Get one from [`crate::Holmes::builder`] or
/// [`crate::Holmes::from_env`].
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until .start() is called"]
pub struct HolmesBuilder {
    pub(crate) enabled: Option<bool>,
    pub(crate) service: Option<String>,
    pub(crate) instance: Option<String>,
    pub(crate) collector: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) env_labels: BTreeMap<String, String>,
    /// Labels found in the Kubernetes Downward API's variables (weakest).
    pub(crate) detected_labels: BTreeMap<String, String>,
    pub(crate) dump_dir: Option<PathBuf>,
    pub(crate) dump_bytes: Option<usize>,
    pub(crate) collect_interval: Option<Duration>,
    pub(crate) send_interval: Option<Duration>,
    pub(crate) outbox_bytes: Option<usize>,
    pub(crate) spool_dir: Option<PathBuf>,
    pub(crate) spool_bytes: Option<usize>,
    pub(crate) flush_timeout: Option<Duration>,
    pub(crate) max_backoff: Option<Duration>,
    pub(crate) rules: BTreeMap<Metric, Rule>,
    pub(crate) env_rules: BTreeMap<Metric, Rule>,
    pub(crate) cpu_max: Option<f64>,
    pub(crate) log_decisions: Option<bool>,
    pub(crate) memory_fast_interval: Option<Option<Duration>>,
    pub(crate) runtimes: Vec<tokio::runtime::Handle>,
    pub(crate) flight_recorder: Option<bool>,
    pub(crate) flight_recorder_window: Option<Duration>,
    pub(crate) cpu_profile_duration: Option<Duration>,
    pub(crate) debuginfo_upload: Option<bool>,
    pub(crate) debuginfo_rate: Option<usize>,
    pub(crate) cpu_cores: Option<f64>,
    pub(crate) min_pushed_cooldown: Option<Duration>,
    pub(crate) min_pushed_window: Option<u32>,
    pub(crate) capture_request_interval: Option<Duration>,
    pub(crate) baseline_interval: Option<Option<Duration>>,
    pub(crate) transport: TransportSettings,
}

impl HolmesBuilder {
    /// Names the service this process belongs to, e.g. `"checkout"` (`HOLMES_SERVICE`).
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// Names this process among the service's instances (`HOLMES_INSTANCE`); the default
    /// is `<hostname>-<pid>`, which is the pod name plus pid on Kubernetes.
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// The collector to stream to, e.g. `"http://127.0.0.1:7070"` (`HOLMES_COLLECTOR`).
    /// Without one the agent works locally and writes captures to the dump folder.
    pub fn collector(mut self, url: impl Into<String>) -> Self {
        self.collector = Some(url.into());
        self
    }

    /// Adds a label such as region or version (`HOLMES_LABELS=k=v,k=v`); labels set in
    /// code win over a variable's label of the same key, and both win over the labels
    /// detected from Kubernetes' Downward API variables (`k8s.pod.name`, …; see the
    /// README).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Folder for local dumps (`HOLMES_DUMP_DIR`). Without one, an agent with no
    /// collector writes to a private folder of its own: `$XDG_RUNTIME_DIR/holmes`, else
    /// `<tmp>/holmes-<uid>`, made `0700` and refused if another user owns it or others
    /// may write to it.
    pub fn dump_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dump_dir = Some(dir.into());
        self
    }

    /// Disk cap of the dump folder (`HOLMES_DUMP_BYTES`, default [`DEFAULT_DUMP_BYTES`],
    /// at least 1 MiB): before a dump is written, the agent's oldest dumps there are
    /// deleted until it fits.
    pub fn dump_bytes(mut self, bytes: usize) -> Self {
        self.dump_bytes = Some(bytes);
        self
    }

    /// Interval between two samples of every metric (`HOLMES_INTERVAL`, default
    /// [`DEFAULT_COLLECT_INTERVAL`]).
    pub fn collect_interval(mut self, interval: Duration) -> Self {
        self.collect_interval = Some(interval);
        self
    }

    /// How often metric windows go to the collector (`HOLMES_SEND_INTERVAL`, default
    /// [`DEFAULT_SEND_INTERVAL`]). The first window goes out right after the first sample.
    pub fn send_interval(mut self, interval: Duration) -> Self {
        self.send_interval = Some(interval);
        self
    }

    /// Memory cap for messages not yet acknowledged by the collector
    /// (`HOLMES_OUTBOX_BYTES`, default [`DEFAULT_OUTBOX_BYTES`]). When full, the oldest
    /// metric windows are dropped and counted.
    pub fn outbox_bytes(mut self, bytes: usize) -> Self {
        self.outbox_bytes = Some(bytes);
        self
    }

    /// Folder for the disk spool (`HOLMES_SPOOL_DIR`; default none: unacknowledged
    /// messages are kept in memory only). With one, every message for the collector is
    /// written there until it is acknowledged, so an unreachable collector or a restart
    /// of the process loses nothing; the next start resends what it finds. One process
    /// per folder (a second one runs without it, with a warning).
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// Disk cap of the spool (`HOLMES_SPOOL_BYTES`, default [`DEFAULT_SPOOL_BYTES`]).
    /// When full, the oldest metric windows are dropped first, then the oldest trigger
    /// events, then the oldest profiles (whole); drops are counted.
    pub fn spool_bytes(mut self, bytes: usize) -> Self {
        self.spool_bytes = Some(bytes);
        self
    }

    /// How long [`crate::HolmesHandle::stop`] waits for running captures and for
    /// acknowledgements, together (default [`DEFAULT_FLUSH_TIMEOUT`]).
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = Some(timeout);
        self
    }

    /// Longest wait between reconnection attempts (default [`DEFAULT_MAX_BACKOFF`]).
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = Some(backoff);
        self
    }

    /// The memory rule, on memory % of the limit (`HOLMES_RULE_MEMORY`; default min 10,
    /// diff 25, abs 80, cooldown 1 min).
    pub fn memory_rule(self, rule: Rule) -> Self {
        self.rule(Metric::MemoryPercent, rule)
    }

    /// The CPU rule, on CPU % of the limit (`HOLMES_RULE_CPU`; default min 10, diff 25,
    /// abs 70, cooldown 1 min).
    pub fn cpu_rule(self, rule: Rule) -> Self {
        self.rule(Metric::CpuPercent, rule)
    }

    /// The OS thread rule (`HOLMES_RULE_THREADS`; default min 10, diff 25, abs 70,
    /// cooldown 1 h).
    pub fn thread_rule(self, rule: Rule) -> Self {
        self.rule(Metric::Threads, rule)
    }

    /// The tokio task rule, over the runtimes registered with [`Self::tokio_runtime`]
    /// (`HOLMES_RULE_TASKS`; default min 3000, diff 20, abs 200000, cooldown 10 min).
    pub fn task_rule(self, rule: Rule) -> Self {
        self.rule(Metric::Tasks, rule)
    }

    /// The heap rule, on allocator bytes as % of the memory limit (`HOLMES_RULE_HEAP`;
    /// default min 10, diff 20, abs 40, cooldown 1 min). Needs allocator statistics:
    /// install [`crate::CountingAllocator`] as the global allocator.
    pub fn heap_rule(self, rule: Rule) -> Self {
        self.rule(Metric::HeapPercent, rule)
    }

    /// Sets the rule of any metric that has one (cpu, memory, threads, tasks, heap);
    /// others are ignored with a warning at start.
    pub fn rule(mut self, metric: Metric, rule: Rule) -> Self {
        self.rules.insert(metric, rule);
        self
    }

    /// Above this CPU % no capture starts, since captures cost CPU too
    /// (`HOLMES_CPU_MAX`; default 0: no gate).
    pub fn cpu_max(mut self, percent: f64) -> Self {
        self.cpu_max = Some(percent);
        self
    }

    /// Logs every rule decision as one line at `info` (`HOLMES_LOG_DECISIONS`; default
    /// off: only firings are logged at `info`, the rest at `trace`).
    pub fn log_decisions(mut self, on: bool) -> Self {
        self.log_decisions = Some(on);
        self
    }

    /// Interval of the cheap RSS-only memory check that catches a spike between two
    /// samples (`HOLMES_MEMORY_FAST_INTERVAL`, default 100 ms); `None` turns it off.
    pub fn memory_fast_interval(mut self, interval: Option<Duration>) -> Self {
        self.memory_fast_interval = Some(interval);
        self
    }

    /// Registers a tokio runtime whose alive tasks count toward the `tasks` metric.
    pub fn tokio_runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtimes.push(handle);
        self
    }

    /// Keeps the always-on, low-rate CPU flight recorder (19 samples per CPU second) on
    /// or off (`HOLMES_FLIGHT_RECORDER`, default on). Without it there are no CPU captures.
    pub fn flight_recorder(mut self, on: bool) -> Self {
        self.flight_recorder = Some(on);
        self
    }

    /// How much CPU history before a trigger is shipped (`HOLMES_FLIGHT_RECORDER_WINDOW`,
    /// default [`DEFAULT_FLIGHT_RECORDER_WINDOW`]).
    pub fn flight_recorder_window(mut self, window: Duration) -> Self {
        self.flight_recorder_window = Some(window);
        self
    }

    /// Length of the full-rate CPU profile after a trigger (`HOLMES_CPU_PROFILE_DURATION`,
    /// default [`DEFAULT_CPU_PROFILE_DURATION`]).
    pub fn cpu_profile_duration(mut self, duration: Duration) -> Self {
        self.cpu_profile_duration = Some(duration);
        self
    }

    /// Whether the agent uploads its executable's debug info when the collector asks for
    /// it (`HOLMES_DEBUGINFO_UPLOAD`, default [`DEFAULT_DEBUGINFO_UPLOAD`]). The collector
    /// asks once per build id across the fleet, for builds nobody uploaded from CI;
    /// without it, such a build's frames stay module + offset at the collector.
    pub fn debuginfo_upload(mut self, on: bool) -> Self {
        self.debuginfo_upload = Some(on);
        self
    }

    /// How fast a debug info upload may go, in bytes per second
    /// (`HOLMES_DEBUGINFO_RATE`, e.g. `512KiB`; default [`DEFAULT_DEBUGINFO_RATE`], at
    /// least [`MIN_DEBUGINFO_RATE`]).
    pub fn debuginfo_rate(mut self, bytes_per_second: usize) -> Self {
        self.debuginfo_rate = Some(bytes_per_second);
        self
    }

    /// Turns the agent on or off (`HOLMES_ENABLED`); a disabled agent starts nothing.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// The number of cores CPU % is computed against (`HOLMES_CPU_CORES`; default: the
    /// detected limit — the cgroup's CPU quota, else the CPUs this process may run on).
    /// CPU % is the process's CPU time over that many cores, so with 4 cores one busy
    /// thread is 25 %. Set it where detection is wrong (a quota the agent cannot see) or
    /// to judge the CPU rule against a share of the machine; a positive, finite number
    /// (`0.5`, `2`, `16`).
    pub fn cpu_cores(mut self, cores: f64) -> Self {
        self.cpu_cores = Some(cores);
        self
    }

    /// The shortest cooldown a rule pushed by the collector may have
    /// (`HOLMES_MIN_PUSHED_COOLDOWN`, default [`DEFAULT_MIN_PUSHED_COOLDOWN`]); an enabled
    /// pushed rule below it is refused and the agent keeps its rule for that metric. The
    /// collector cannot change it.
    pub fn min_pushed_cooldown(mut self, floor: Duration) -> Self {
        self.min_pushed_cooldown = Some(floor);
        self
    }

    /// The smallest window a rule pushed by the collector may have
    /// (`HOLMES_MIN_PUSHED_WINDOW`, default [`DEFAULT_MIN_PUSHED_WINDOW`]); an enabled
    /// pushed rule below it is refused.
    pub fn min_pushed_window(mut self, samples: u32) -> Self {
        self.min_pushed_window = Some(samples);
        self
    }

    /// The shortest time between two captures of one kind the collector may ask for
    /// (`HOLMES_CAPTURE_REQUEST_INTERVAL`, default [`DEFAULT_CAPTURE_REQUEST_INTERVAL`]);
    /// a request sooner is answered `rate_limited`. The host's own
    /// [`capture_now`](crate::HolmesHandle::capture_now) is not limited.
    pub fn capture_request_interval(mut self, interval: Duration) -> Self {
        self.capture_request_interval = Some(interval);
        self
    }

    /// How often a baseline goes to the collector (`HOLMES_BASELINE_INTERVAL`, default
    /// [`DEFAULT_BASELINE_INTERVAL`], each one ±20 % at random; `None` or `off`: none):
    /// the flight recorder's history as a CPU profile, a heap profile where a heap
    /// profiler is installed, and the threads' (and, with task dumps built in, the
    /// tasks') stacks — what this instance looks like between incidents.
    pub fn baseline_interval(mut self, interval: Option<Duration>) -> Self {
        self.baseline_interval = Some(interval);
        self
    }

    /// The collector's token for this service (`HOLMES_TOKEN`), sent as
    /// `authorization: Bearer <token>` with the stream.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.transport.token = Some(token.into());
        self
    }

    /// PEM CA certificate(s) that sign the collector's certificate, for `https://`
    /// collector URLs (`HOLMES_TLS_CA_FILE`); without it the system's trust store is used.
    #[cfg(feature = "tls")]
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.transport.tls_ca_file = Some(path.into());
        self
    }

    /// Compression of what is sent to the collector (`HOLMES_COMPRESSION=zstd|gzip|none`,
    /// default [`DEFAULT_COMPRESSION`](crate::DEFAULT_COMPRESSION)).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.transport.compression = Some(compression);
        self
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AgentConfig {
    pub(crate) flight_recorder: bool,
    pub(crate) flight_recorder_window: Duration,
    pub(crate) cpu_profile_duration: Duration,
    pub(crate) debuginfo_upload: bool,
    /// Bytes per second.
    pub(crate) debuginfo_rate: usize,
    pub(crate) rules: BTreeMap<Metric, Rule>,
    pub(crate) cpu_max: f64,
    /// The host's override of the cores CPU % is computed against.
    pub(crate) cpu_cores: Option<f64>,
    pub(crate) log_decisions: bool,
    pub(crate) memory_fast_interval: Option<Duration>,
    pub(crate) runtimes: Vec<tokio::runtime::Handle>,
    pub(crate) enabled: bool,
    pub(crate) service: String,
    pub(crate) instance: String,
    pub(crate) host: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) collector: Option<String>,
    /// Where local dumps go: the folder the host chose, or the private default when
    /// there is no collector; `None` when a collector is set and no folder is.
    pub(crate) dump: Option<DumpFolder>,
    /// Bounds on rules the collector pushes.
    pub(crate) floors: Floors,
    /// Shortest time between two requested captures of one kind.
    pub(crate) capture_request_interval: Duration,
    /// Mean time between two baselines; `None`: no baselines.
    pub(crate) baseline_interval: Option<Duration>,
    pub(crate) collect_interval: Duration,
    pub(crate) send_interval: Duration,
    pub(crate) outbox_bytes: usize,
    pub(crate) spool_dir: Option<PathBuf>,
    pub(crate) spool_bytes: usize,
    pub(crate) flush_timeout: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) transport: Transport,
}
