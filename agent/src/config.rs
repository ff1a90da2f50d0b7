//! The agent's configuration: a by-value builder with documented defaults, and the
//! `HOLMES_*` environment variables that fill whatever code left unset.
//!
//! Precedence: a value set in code wins over the environment, which wins over the
//! `DEFAULT_*` constants — whatever the order of the calls.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use holmes_proto::names::{self, NameError};
use holmes_proto::rule_spec::{self, RULE_METRICS};
use holmes_proto::Metric;

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
/// How long `stop()` waits for unacknowledged messages to be acknowledged.
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
/// Whether the agent loads the executable's debug info right after start rather than on
/// the first capture (`HOLMES_PREWARM_SYMBOLS`). On: the first profile is on disk sooner
/// and start-up pays instead. See `.prewarm_symbols()` for the measured costs.
pub const DEFAULT_PREWARM_SYMBOLS: bool = true;
/// Longest interval, timeout or backoff accepted for any setting.
pub const MAX_DURATION_SETTING: Duration = Duration::from_secs(3600);

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
    pub(crate) dump_dir: Option<PathBuf>,
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
    pub(crate) prewarm_symbols: Option<bool>,
    pub(crate) transport: crate::transport::TransportSettings,
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
    /// code win over a variable's label of the same key.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Folder for local dumps (`HOLMES_DUMP_DIR`).
    pub fn dump_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dump_dir = Some(dir.into());
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

    /// How long [`crate::HolmesHandle::stop`] waits for acknowledgements (default
    /// [`DEFAULT_FLUSH_TIMEOUT`]).
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

    /// Loads the executable's debug info on the agent's thread right after start, so the
    /// first capture does not wait for it (`HOLMES_PREWARM_SYMBOLS`, default
    /// [`DEFAULT_PREWARM_SYMBOLS`]). Off, the first capture loads it. Either way it stays
    /// loaded for the rest of the process; prewarming only moves the cost to start-up
    /// and spends it in processes that never capture.
    pub fn prewarm_symbols(mut self, on: bool) -> Self {
        self.prewarm_symbols = Some(on);
        self
    }

    /// Turns the agent on or off (`HOLMES_ENABLED`); a disabled agent starts nothing.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// Fills every setting not made in code from the `HOLMES_*` environment variables.
    /// A malformed variable is an error naming it.
    pub fn with_env(self) -> Result<Self, ConfigError> {
        self.with_env_from(|name| std::env::var(name).ok())
    }

    /// Like [`Self::with_env`], reading variables through `lookup` (for tests and for
    /// hosts that keep their settings elsewhere).
    pub fn with_env_from(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |var: &'static str| lookup(var).filter(|v| !v.trim().is_empty());
        if self.enabled.is_none() {
            if let Some(v) = get("HOLMES_ENABLED") {
                self.enabled = Some(parse_bool("HOLMES_ENABLED", &v)?);
            }
        }
        if self.service.is_none() {
            self.service = get("HOLMES_SERVICE");
        }
        if self.instance.is_none() {
            self.instance = get("HOLMES_INSTANCE");
        }
        if self.collector.is_none() {
            self.collector = get("HOLMES_COLLECTOR");
        }
        self.transport.fill_from_env(get)?;
        if let Some(v) = get("HOLMES_LABELS") {
            self.env_labels = parse_labels("HOLMES_LABELS", &v)?;
        }
        if self.dump_dir.is_none() {
            self.dump_dir = get("HOLMES_DUMP_DIR").map(PathBuf::from);
        }
        if self.collect_interval.is_none() {
            if let Some(v) = get("HOLMES_INTERVAL") {
                self.collect_interval = Some(parse_duration("HOLMES_INTERVAL", &v)?);
            }
        }
        if self.send_interval.is_none() {
            if let Some(v) = get("HOLMES_SEND_INTERVAL") {
                self.send_interval = Some(parse_duration("HOLMES_SEND_INTERVAL", &v)?);
            }
        }
        if self.outbox_bytes.is_none() {
            if let Some(v) = get("HOLMES_OUTBOX_BYTES") {
                self.outbox_bytes = Some(parse_bytes("HOLMES_OUTBOX_BYTES", &v)?);
            }
        }
        if self.spool_dir.is_none() {
            self.spool_dir = get("HOLMES_SPOOL_DIR").map(PathBuf::from);
        }
        if self.spool_bytes.is_none() {
            if let Some(v) = get("HOLMES_SPOOL_BYTES") {
                self.spool_bytes = Some(parse_bytes("HOLMES_SPOOL_BYTES", &v)?);
            }
        }
        for (var, metric) in RULE_VARS {
            if let Some(v) = get(var) {
                let base = rule_spec::default_rule(metric)
                    .ok_or_else(|| invalid(var, &v, "this metric has no rule"))?;
                let config =
                    rule_spec::apply(&base, &v).map_err(|e| invalid(var, &v, e.to_string()))?;
                self.env_rules.insert(metric, Rule::from_config(&config));
            }
        }
        if self.cpu_max.is_none() {
            if let Some(v) = get("HOLMES_CPU_MAX") {
                let n: f64 = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite() && *n >= 0.0)
                    .ok_or_else(|| invalid("HOLMES_CPU_MAX", &v, "expected a percentage >= 0"))?;
                self.cpu_max = Some(n);
            }
        }
        if self.flight_recorder.is_none() {
            if let Some(v) = get("HOLMES_FLIGHT_RECORDER") {
                self.flight_recorder = Some(parse_bool("HOLMES_FLIGHT_RECORDER", &v)?);
            }
        }
        if self.flight_recorder_window.is_none() {
            if let Some(v) = get("HOLMES_FLIGHT_RECORDER_WINDOW") {
                self.flight_recorder_window =
                    Some(parse_duration("HOLMES_FLIGHT_RECORDER_WINDOW", &v)?);
            }
        }
        if self.cpu_profile_duration.is_none() {
            if let Some(v) = get("HOLMES_CPU_PROFILE_DURATION") {
                self.cpu_profile_duration =
                    Some(parse_duration("HOLMES_CPU_PROFILE_DURATION", &v)?);
            }
        }
        if self.prewarm_symbols.is_none() {
            if let Some(v) = get("HOLMES_PREWARM_SYMBOLS") {
                self.prewarm_symbols = Some(parse_bool("HOLMES_PREWARM_SYMBOLS", &v)?);
            }
        }
        if self.log_decisions.is_none() {
            if let Some(v) = get("HOLMES_LOG_DECISIONS") {
                self.log_decisions = Some(parse_bool("HOLMES_LOG_DECISIONS", &v)?);
            }
        }
        if self.memory_fast_interval.is_none() {
            if let Some(v) = get("HOLMES_MEMORY_FAST_INTERVAL") {
                self.memory_fast_interval = Some(if v.trim().eq_ignore_ascii_case("off") {
                    None
                } else {
                    Some(parse_duration("HOLMES_MEMORY_FAST_INTERVAL", &v)?)
                });
            }
        }
        Ok(self)
    }

    /// Checks every setting and resolves defaults.
    pub(crate) fn resolve(self) -> Result<AgentConfig, ConfigError> {
        let service = self.service.ok_or(ConfigError::MissingService)?;
        names::validate_name("service", &service)?;
        let instance = match self.instance {
            Some(i) => i,
            None => default_instance_id(),
        };
        names::validate_name("instance id", &instance)?;
        let mut labels = self.env_labels;
        labels.extend(self.labels);
        names::validate_labels(&labels)?;
        let collector = self.collector.map(|c| validate_collector(&c)).transpose()?;
        let transport = self.transport.resolve(collector.as_deref())?;
        let collect_interval = self.collect_interval.unwrap_or(DEFAULT_COLLECT_INTERVAL);
        if collect_interval < MIN_COLLECT_INTERVAL {
            return Err(ConfigError::OutOfRange {
                setting: "collect_interval",
                value: format!("{collect_interval:?}"),
                reason: format!("at least {MIN_COLLECT_INTERVAL:?}"),
            });
        }
        let durations = [
            ("collect_interval", Some(collect_interval)),
            ("send_interval", self.send_interval),
            ("flush_timeout", self.flush_timeout),
            ("max_backoff", self.max_backoff),
            ("flight_recorder_window", self.flight_recorder_window),
            ("cpu_profile_duration", self.cpu_profile_duration),
        ];
        for (setting, value) in durations {
            if let Some(v) = value.filter(|v| *v > MAX_DURATION_SETTING) {
                return Err(ConfigError::OutOfRange {
                    setting,
                    value: format!("{v:?}"),
                    reason: format!("at most {MAX_DURATION_SETTING:?}"),
                });
            }
        }
        let outbox_bytes = self.outbox_bytes.unwrap_or(DEFAULT_OUTBOX_BYTES);
        if outbox_bytes < 64 * 1024 {
            return Err(ConfigError::OutOfRange {
                setting: "outbox_bytes",
                value: outbox_bytes.to_string(),
                reason: "at least 64 KiB".to_owned(),
            });
        }
        let spool_bytes = self.spool_bytes.unwrap_or(DEFAULT_SPOOL_BYTES);
        if spool_bytes < 1024 * 1024 {
            return Err(ConfigError::OutOfRange {
                setting: "spool_bytes",
                value: spool_bytes.to_string(),
                reason: "at least 1 MiB".to_owned(),
            });
        }
        let mut rules = BTreeMap::new();
        for metric in RULE_METRICS {
            let rule = self
                .rules
                .get(&metric)
                .or_else(|| self.env_rules.get(&metric))
                .copied()
                .or_else(|| Rule::default_for(metric));
            if let Some(rule) = rule {
                rules.insert(metric, rule);
            }
        }
        for metric in self.rules.keys().filter(|m| !RULE_METRICS.contains(m)) {
            tracing::warn!(target: "holmes", %metric, "ignoring a rule for a metric that has none");
        }
        let memory_fast_interval = self
            .memory_fast_interval
            .unwrap_or(Some(DEFAULT_MEMORY_FAST_INTERVAL))
            .filter(|fast| *fast < collect_interval)
            .map(|fast| fast.max(MIN_COLLECT_INTERVAL));
        let cpu_max = self.cpu_max.unwrap_or(0.0);
        if !cpu_max.is_finite() || cpu_max < 0.0 {
            return Err(ConfigError::OutOfRange {
                setting: "cpu_max",
                value: cpu_max.to_string(),
                reason: "a percentage >= 0 (0: no gate)".to_owned(),
            });
        }
        Ok(AgentConfig {
            flight_recorder: self.flight_recorder.unwrap_or(true),
            flight_recorder_window: self
                .flight_recorder_window
                .unwrap_or(DEFAULT_FLIGHT_RECORDER_WINDOW)
                .max(Duration::from_secs(1)),
            cpu_profile_duration: self
                .cpu_profile_duration
                .unwrap_or(DEFAULT_CPU_PROFILE_DURATION)
                .max(Duration::from_millis(100)),
            prewarm_symbols: self.prewarm_symbols.unwrap_or(DEFAULT_PREWARM_SYMBOLS),
            rules,
            cpu_max,
            log_decisions: self.log_decisions.unwrap_or(false),
            memory_fast_interval,
            runtimes: self.runtimes,
            enabled: self.enabled.unwrap_or(true),
            service,
            instance,
            host: hostname(),
            labels,
            collector,
            dump_dir: self.dump_dir,
            collect_interval,
            send_interval: self
                .send_interval
                .unwrap_or(DEFAULT_SEND_INTERVAL)
                .max(collect_interval),
            outbox_bytes,
            spool_dir: self.spool_dir,
            spool_bytes,
            flush_timeout: self.flush_timeout.unwrap_or(DEFAULT_FLUSH_TIMEOUT),
            max_backoff: self
                .max_backoff
                .unwrap_or(DEFAULT_MAX_BACKOFF)
                .max(Duration::from_millis(100)),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            transport,
        })
    }
}

/// The variables holding each metric's rule.
const RULE_VARS: [(&str, Metric); 5] = [
    ("HOLMES_RULE_MEMORY", Metric::MemoryPercent),
    ("HOLMES_RULE_CPU", Metric::CpuPercent),
    ("HOLMES_RULE_THREADS", Metric::Threads),
    ("HOLMES_RULE_TASKS", Metric::Tasks),
    ("HOLMES_RULE_HEAP", Metric::HeapPercent),
];

/// A checked configuration.
#[derive(Debug, Clone)]
pub(crate) struct AgentConfig {
    pub(crate) flight_recorder: bool,
    pub(crate) flight_recorder_window: Duration,
    pub(crate) cpu_profile_duration: Duration,
    pub(crate) prewarm_symbols: bool,
    pub(crate) rules: BTreeMap<Metric, Rule>,
    pub(crate) cpu_max: f64,
    pub(crate) log_decisions: bool,
    pub(crate) memory_fast_interval: Option<Duration>,
    pub(crate) runtimes: Vec<tokio::runtime::Handle>,
    pub(crate) enabled: bool,
    pub(crate) service: String,
    pub(crate) instance: String,
    pub(crate) host: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) collector: Option<String>,
    pub(crate) dump_dir: Option<PathBuf>,
    pub(crate) collect_interval: Duration,
    pub(crate) send_interval: Duration,
    pub(crate) outbox_bytes: usize,
    pub(crate) spool_dir: Option<PathBuf>,
    pub(crate) spool_bytes: usize,
    pub(crate) flush_timeout: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) transport: crate::transport::Transport,
}

impl AgentConfig {
    /// Where local dumps go: the configured folder, or `<tmp>/holmes` when there is no
    /// collector to send to; `None` when a collector is set and no folder is.
    pub(crate) fn effective_dump_dir(&self) -> Option<PathBuf> {
        match (&self.dump_dir, &self.collector) {
            (Some(dir), _) => Some(dir.clone()),
            (None, None) => Some(std::env::temp_dir().join("holmes")),
            (None, Some(_)) => None,
        }
    }
}

fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidEnv {
        var,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(var, value, "expected true or false")),
    }
}

fn parse_duration(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim())
        .map_err(|e| invalid(var, value, format!("{e} (write e.g. 1s, 500ms, 2m)")))
}

fn parse_bytes(var: &'static str, value: &str) -> Result<usize, ConfigError> {
    let v = value.trim();
    let (digits, unit) = v
        .find(|c: char| !c.is_ascii_digit())
        .map_or((v, ""), |i| v.split_at(i));
    let n: usize = digits.parse().map_err(|_| {
        invalid(
            var,
            value,
            "expected a size such as 4194304, 512KiB or 4MiB",
        )
    })?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        other => return Err(invalid(var, value, format!("unknown unit {other:?}"))),
    };
    n.checked_mul(mult)
        .ok_or_else(|| invalid(var, value, "too large"))
}

fn parse_labels(var: &'static str, value: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut labels = BTreeMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| invalid(var, value, format!("{pair:?} is not key=value")))?;
        let k = k.trim();
        names::validate_name("label key", k).map_err(|e| invalid(var, value, e.to_string()))?;
        labels.insert(k.to_owned(), v.trim().to_owned());
    }
    Ok(labels)
}

fn validate_collector(url: &str) -> Result<String, ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidCollector {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    // https:// is checked against the build's features with the TLS settings.
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(bad("expected http://host:port or https://host:port"));
    };
    if rest.trim_end_matches('/').is_empty() {
        return Err(bad("no host"));
    }
    tonic::transport::Endpoint::from_shared(url.to_owned()).map_err(|e| bad(&e.to_string()))?;
    Ok(url.to_owned())
}

/// The machine's host name, or "unknown".
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `<hostname>-<pid>`, with characters outside the name alphabet replaced by `-`.
fn default_instance_id() -> String {
    let raw = format!("{}-{}", hostname(), std::process::id());
    let mut id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if id.len() > names::MAX_NAME_LEN {
        id = id.split_off(id.len() - names::MAX_NAME_LEN);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn environment_fills_what_code_left_unset() {
        let cfg = HolmesBuilder::default()
            .service("from-code")
            .label("region", "code")
            .with_env_from(env(&[
                ("HOLMES_SERVICE", "from-env"),
                ("HOLMES_COLLECTOR", "http://10.0.0.1:7070"),
                ("HOLMES_INSTANCE", "pod-7"),
                ("HOLMES_LABELS", "region=env, zone = a ,"),
                ("HOLMES_INTERVAL", "250ms"),
                ("HOLMES_SEND_INTERVAL", "2s"),
                ("HOLMES_OUTBOX_BYTES", "8MiB"),
                ("HOLMES_DUMP_DIR", "/var/tmp/holmes"),
            ]))
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(cfg.service, "from-code");
        assert_eq!(cfg.instance, "pod-7");
        assert_eq!(cfg.collector.as_deref(), Some("http://10.0.0.1:7070"));
        assert_eq!(cfg.labels.get("region").map(String::as_str), Some("code"));
        assert_eq!(cfg.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(cfg.collect_interval, Duration::from_millis(250));
        assert_eq!(cfg.send_interval, Duration::from_secs(2));
        assert_eq!(cfg.outbox_bytes, 8 * 1024 * 1024);
        assert_eq!(cfg.dump_dir, Some(PathBuf::from("/var/tmp/holmes")));
    }

    #[test]
    fn spool_settings_come_from_code_then_environment_then_defaults() {
        let base = || HolmesBuilder::default().service("s");
        let cfg = base().resolve().unwrap();
        assert_eq!(
            (cfg.spool_dir, cfg.spool_bytes),
            (None, DEFAULT_SPOOL_BYTES)
        );
        let vars = env(&[
            ("HOLMES_SPOOL_DIR", "/var/spool/holmes"),
            ("HOLMES_SPOOL_BYTES", "64MiB"),
        ]);
        let cfg = base().with_env_from(&vars).unwrap().resolve().unwrap();
        assert_eq!(cfg.spool_dir, Some(PathBuf::from("/var/spool/holmes")));
        assert_eq!(cfg.spool_bytes, 64 * 1024 * 1024);
        let cfg = base()
            .spool_dir("/tmp/mine")
            .spool_bytes(2 * 1024 * 1024)
            .with_env_from(&vars)
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(cfg.spool_dir, Some(PathBuf::from("/tmp/mine")));
        assert_eq!(cfg.spool_bytes, 2 * 1024 * 1024);
        let err = base()
            .with_env_from(env(&[("HOLMES_SPOOL_BYTES", "lots")]))
            .unwrap_err();
        assert!(err.to_string().starts_with("HOLMES_SPOOL_BYTES="), "{err}");
        assert!(matches!(
            base().spool_bytes(1000).resolve(),
            Err(ConfigError::OutOfRange {
                setting: "spool_bytes",
                ..
            })
        ));
    }

    #[test]
    fn code_wins_even_when_set_after_the_environment() {
        let cfg = HolmesBuilder::default()
            .with_env_from(env(&[("HOLMES_SERVICE", "env"), ("HOLMES_INTERVAL", "5s")]))
            .unwrap()
            .service("code")
            .collect_interval(Duration::from_secs(2))
            .resolve()
            .unwrap();
        assert_eq!(cfg.service, "code");
        assert_eq!(cfg.collect_interval, Duration::from_secs(2));
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let cfg = HolmesBuilder::default()
            .service("svc")
            .with_env_from(env(&[]))
            .unwrap()
            .resolve()
            .unwrap();
        assert!(cfg.enabled);
        assert_eq!(cfg.collect_interval, DEFAULT_COLLECT_INTERVAL);
        assert_eq!(cfg.send_interval, DEFAULT_SEND_INTERVAL);
        assert_eq!(cfg.outbox_bytes, DEFAULT_OUTBOX_BYTES);
        assert_eq!(cfg.collector, None);
        assert!(cfg.instance.ends_with(&format!("-{}", std::process::id())));
        names::validate_name("instance", &cfg.instance).unwrap();
    }

    #[test]
    fn malformed_variables_are_errors_naming_the_variable() {
        let cases = [
            ("HOLMES_INTERVAL", "soon"),
            ("HOLMES_SEND_INTERVAL", "5 parsecs"),
            ("HOLMES_LABELS", "region"),
            ("HOLMES_LABELS", "bad key=v"),
            ("HOLMES_OUTBOX_BYTES", "4 bananas"),
            ("HOLMES_ENABLED", "maybe"),
        ];
        for (var, value) in cases {
            let err = HolmesBuilder::default()
                .with_env_from(env(&[(var, value)]))
                .unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with(&format!("{var}=")), "{text}");
            assert!(matches!(err, ConfigError::InvalidEnv { var: v, .. } if v == var));
        }
    }

    #[test]
    fn rules_come_from_code_then_environment_then_defaults() {
        let cfg = HolmesBuilder::default()
            .service("svc")
            .cpu_rule(Rule::new().abs(50.0))
            .with_env_from(env(&[
                ("HOLMES_RULE_CPU", "abs=99"),
                ("HOLMES_RULE_MEMORY", "abs=90,cooldown=2m"),
                ("HOLMES_RULE_THREADS", "off"),
                ("HOLMES_CPU_MAX", "85"),
                ("HOLMES_LOG_DECISIONS", "true"),
                ("HOLMES_MEMORY_FAST_INTERVAL", "off"),
            ]))
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(cfg.rules[&Metric::CpuPercent], Rule::new().abs(50.0));
        let mem = cfg.rules[&Metric::MemoryPercent];
        assert_eq!(
            (mem.min, mem.diff, mem.abs),
            (10.0, 25.0, 90.0),
            "env applies over the default"
        );
        assert_eq!(mem.cooldown, Duration::from_secs(120));
        assert!(!cfg.rules[&Metric::Threads].is_enabled());
        assert_eq!(
            cfg.rules[&Metric::Tasks],
            Rule::default_for(Metric::Tasks).unwrap()
        );
        assert_eq!(cfg.cpu_max, 85.0);
        assert!(cfg.log_decisions);
        assert_eq!(cfg.memory_fast_interval, None);
    }

    #[test]
    fn symbol_prewarming_comes_from_code_then_environment_then_the_default() {
        let base = || HolmesBuilder::default().service("s");
        let cfg = base().with_env_from(env(&[])).unwrap().resolve().unwrap();
        assert_eq!(cfg.prewarm_symbols, DEFAULT_PREWARM_SYMBOLS);
        let off = env(&[("HOLMES_PREWARM_SYMBOLS", "off")]);
        let cfg = base().with_env_from(&off).unwrap().resolve().unwrap();
        assert!(!cfg.prewarm_symbols);
        let cfg = base()
            .prewarm_symbols(true)
            .with_env_from(&off)
            .unwrap()
            .resolve()
            .unwrap();
        assert!(cfg.prewarm_symbols);
        let err = base()
            .with_env_from(env(&[("HOLMES_PREWARM_SYMBOLS", "soon")]))
            .unwrap_err();
        assert!(
            err.to_string().starts_with("HOLMES_PREWARM_SYMBOLS="),
            "{err}"
        );
    }

    #[test]
    fn malformed_rule_variables_name_the_variable() {
        for (var, value) in [
            ("HOLMES_RULE_MEMORY", "abs=lots"),
            ("HOLMES_RULE_CPU", "speed=3"),
            ("HOLMES_RULE_HEAP", "abs"),
            ("HOLMES_CPU_MAX", "-3"),
            ("HOLMES_MEMORY_FAST_INTERVAL", "quick"),
        ] {
            let err = HolmesBuilder::default()
                .with_env_from(env(&[(var, value)]))
                .unwrap_err();
            assert!(err.to_string().starts_with(&format!("{var}=")), "{err}");
        }
    }

    #[test]
    fn the_fast_memory_path_defaults_on_and_stays_below_the_interval() {
        let cfg = HolmesBuilder::default().service("s").resolve().unwrap();
        assert_eq!(cfg.memory_fast_interval, Some(DEFAULT_MEMORY_FAST_INTERVAL));
        let slow = HolmesBuilder::default()
            .service("s")
            .collect_interval(Duration::from_millis(50))
            .resolve()
            .unwrap();
        assert_eq!(
            slow.memory_fast_interval, None,
            "pointless when sampling is faster"
        );
    }

    #[test]
    fn bad_settings_are_refused_at_start() {
        let resolve = |b: HolmesBuilder| b.resolve().unwrap_err();
        assert_eq!(
            resolve(HolmesBuilder::default()),
            ConfigError::MissingService
        );
        assert!(matches!(
            resolve(HolmesBuilder::default().service("bad name")),
            ConfigError::InvalidName(_)
        ));
        for url in ["127.0.0.1:7070", "ftp://x", "http://", "https://"] {
            assert!(
                matches!(
                    resolve(HolmesBuilder::default().service("s").collector(url)),
                    ConfigError::InvalidCollector { .. }
                ),
                "{url}"
            );
        }
        assert!(matches!(
            resolve(
                HolmesBuilder::default()
                    .service("s")
                    .collect_interval(Duration::from_millis(1))
            ),
            ConfigError::OutOfRange { .. }
        ));
        assert!(matches!(
            resolve(
                HolmesBuilder::default()
                    .service("s")
                    .max_backoff(Duration::MAX)
            ),
            ConfigError::OutOfRange {
                setting: "max_backoff",
                ..
            }
        ));
    }
}
