//! Domain types of the protocol: what agents and the collector say to each other,
//! free of protobuf details (no `Option` for required fields, no raw enum integers).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A measured quantity of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// CPU used, percent of the container's CPU limit (or of all cores).
    CpuPercent,
    /// Memory used, percent of the container's memory limit (or of host RAM).
    MemoryPercent,
    /// Resident set size in bytes.
    RssBytes,
    /// Operating-system threads.
    Threads,
    /// Alive tokio tasks.
    Tasks,
    /// Heap in use, percent of the memory limit.
    HeapPercent,
    /// Heap in use according to the allocator, bytes.
    HeapBytes,
    /// Open file descriptors.
    OpenFds,
    /// Percent of the interval the CPU quota throttled the container.
    CpuThrottledPercent,
}

impl Metric {
    /// Every metric, in wire order.
    pub const ALL: [Metric; 9] = [
        Metric::CpuPercent,
        Metric::MemoryPercent,
        Metric::RssBytes,
        Metric::Threads,
        Metric::Tasks,
        Metric::HeapPercent,
        Metric::HeapBytes,
        Metric::OpenFds,
        Metric::CpuThrottledPercent,
    ];

    /// Short name used in the API, the CLI, storage and environment variables.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::CpuPercent => "cpu",
            Metric::MemoryPercent => "memory",
            Metric::RssBytes => "rss",
            Metric::Threads => "threads",
            Metric::Tasks => "tasks",
            Metric::HeapPercent => "heap",
            Metric::HeapBytes => "heap_bytes",
            Metric::OpenFds => "fds",
            Metric::CpuThrottledPercent => "cpu_throttled",
        }
    }

    /// The unit its values are in.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::CpuPercent
            | Metric::MemoryPercent
            | Metric::HeapPercent
            | Metric::CpuThrottledPercent => "percent",
            Metric::RssBytes | Metric::HeapBytes => "bytes",
            Metric::Threads | Metric::Tasks | Metric::OpenFds => "count",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A metric name that is not one of [`Metric::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric {0:?}; known metrics: cpu, memory, rss, threads, tasks, heap, heap_bytes, fds, cpu_throttled")]
pub struct UnknownMetric(pub String);

impl FromStr for Metric {
    type Err = UnknownMetric;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMetric(s.to_owned()))
    }
}

/// One observation of a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When it was taken, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
    /// The value, in the metric's unit.
    pub value: f64,
}

/// The samples of one metric, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    /// Which metric.
    pub metric: Metric,
    /// Oldest first.
    pub samples: Vec<Sample>,
}

/// Samples taken since the previous window, one series per metric.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricWindow {
    /// Each metric at most once.
    pub series: Vec<MetricSeries>,
}

/// A trigger rule (mosn/holmes semantics, see the protocol file).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    /// The metric it watches.
    pub metric: Metric,
    /// A disabled rule never fires.
    pub enabled: bool,
    /// Below this nothing fires.
    pub min: f64,
    /// Percent above the window average that fires.
    pub diff: f64,
    /// Absolute value above which it fires.
    pub abs: f64,
    /// At or above this it stays silent; 0 means no ceiling.
    pub max: f64,
    /// Sleep after firing.
    pub cooldown: Duration,
    /// Samples in the ring window.
    pub window: u32,
}

/// Why a trigger fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerReason {
    /// Above the rule's absolute threshold.
    Abs,
    /// Above the window average by the rule's percentage.
    Diff,
    /// A capture was requested.
    Requested,
    /// The agent's periodic baseline, between incidents.
    Baseline,
}

impl TriggerReason {
    /// Every reason.
    pub const ALL: [TriggerReason; 4] = [
        TriggerReason::Abs,
        TriggerReason::Diff,
        TriggerReason::Requested,
        TriggerReason::Baseline,
    ];

    /// Short name used in the API, the store and logs: `abs`, `diff`, `requested`,
    /// `baseline`.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerReason::Abs => "abs",
            TriggerReason::Diff => "diff",
            TriggerReason::Requested => "requested",
            TriggerReason::Baseline => "baseline",
        }
    }

    /// The reason a short name stands for.
    pub fn from_name(name: &str) -> Option<TriggerReason> {
        TriggerReason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// What a profile measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileKind {
    /// On-CPU samples.
    Cpu,
    /// Heap in use and allocated.
    Heap,
    /// Every OS thread's stack.
    Threads,
    /// The tokio task dump.
    Tasks,
}

impl ProfileKind {
    /// Short name used in the API, file names and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Cpu => "cpu",
            ProfileKind::Heap => "heap",
            ProfileKind::Threads => "threads",
            ProfileKind::Tasks => "tasks",
        }
    }
}

/// Identifies an agent and its process; the first message of every stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// Protocol version the agent speaks.
    pub protocol_version: u32,
    /// Service name.
    pub service: String,
    /// Instance id, unique among the service's instances.
    pub instance_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Agent library version.
    pub agent_version: String,
    /// Rules active when it connected.
    pub rules: Vec<RuleConfig>,
    /// Process start, nanoseconds since the Unix epoch.
    pub started_at_unix_nanos: u64,
    /// Sampling interval.
    pub collect_interval: Duration,
    /// Version of the collector's rules in force (0: the agent's own rules only).
    pub rules_version: u64,
    /// The executable the agent lives in.
    pub executable: Option<Module>,
    /// Whether the agent uploads its executable's debug info when asked.
    pub debuginfo_upload: bool,
}

/// A loaded object file: the executable, a shared library or the vDSO.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Module {
    /// File name without directories ("checkout", "libc.so.6", "[vdso]").
    pub name: String,
    /// GNU build id as lowercase hex; empty when the object has none.
    pub build_id: String,
}

/// How a profile's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProfileFormat {
    /// gzip-compressed pprof.
    #[default]
    PprofGzip,
    /// A [`crate::native::NativeProfile`] (protobuf, not compressed).
    Native,
    /// A [`crate::native::NativeProfile`] whose tables extend its stream's
    /// ([`crate::native::stream`]); decoded by the stream's reader, never stored as such.
    NativeStream,
}

impl ProfileFormat {
    /// Short name for logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileFormat::PprofGzip => "pprof",
            ProfileFormat::Native => "native",
            ProfileFormat::NativeStream => "native-stream",
        }
    }
}

/// A rule fired or a capture was requested.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerEvent {
    /// Unique event id.
    pub event_id: String,
    /// The metric that fired; `None` for a requested capture.
    pub metric: Option<Metric>,
    /// Why.
    pub reason: TriggerReason,
    /// The value that fired.
    pub current: f64,
    /// The window at the time, oldest first.
    pub window: Vec<Sample>,
    /// The rule as it was; `None` for a requested capture.
    pub rule: Option<RuleConfig>,
    /// When, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
    /// Profiles being captured for it.
    pub planned: Vec<ProfileKind>,
    /// The capture request it answers, if any.
    pub request_id: Option<String>,
}

/// One chunk of a captured profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileChunk {
    /// Unique profile id.
    pub profile_id: String,
    /// Trigger event it belongs to.
    pub event_id: String,
    /// What it measures.
    pub kind: ProfileKind,
    /// Position, from 0.
    pub chunk_index: u32,
    /// Number of chunks, at least 1.
    pub chunk_count: u32,
    /// Size of the whole profile.
    pub total_bytes: u64,
    /// This chunk's bytes of the profile (see `format`).
    pub data: Vec<u8>,
    /// Capture start, nanoseconds since the Unix epoch.
    pub started_unix_nanos: u64,
    /// Capture length.
    pub duration: Duration,
    /// Set when the capture failed.
    pub error: Option<String>,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// How the profile's bytes are encoded.
    pub format: ProfileFormat,
}

/// Keep-alive with agent health counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// When, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
    /// Messages dropped because buffers were full.
    pub dropped_messages: u64,
    /// Messages waiting for an ack.
    pub unacked_messages: u64,
    /// Version of the collector's rules in force.
    pub rules_version: u64,
}

/// What one agent message carries.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentBody {
    /// First message of a stream.
    Hello(Hello),
    /// Metric samples.
    MetricWindow(MetricWindow),
    /// A trigger.
    Trigger(TriggerEvent),
    /// A piece of a profile.
    ProfileChunk(ProfileChunk),
    /// Keep-alive.
    Heartbeat(Heartbeat),
    /// What the agent did with a `ConfigUpdate` (not sequenced).
    ConfigApplied(ConfigApplied),
    /// What the agent did with a `CaptureRequest` (not sequenced).
    CaptureOutcome(CaptureOutcome),
    /// A piece of a debug info upload (not sequenced).
    DebugInfoChunk(DebugInfoChunk),
}

/// A message from an agent with its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentMessage {
    /// For messages that must become durable: strictly increasing from 1 over the agent
    /// process's life, kept on resend. 0 for `Hello` and `Heartbeat`.
    pub seq: u64,
    /// The payload.
    pub body: AgentBody,
}

/// Replaces rules in a running agent.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigUpdate {
    /// Increasing configuration version.
    pub version: u64,
    /// New rules by metric.
    pub rules: Vec<RuleConfig>,
    /// `rules` is the whole central rule set: metrics not listed return to the agent's
    /// own rules.
    pub replace: bool,
    /// Captures paused until then, if they are.
    pub pause: Option<CapturePause>,
}

/// Captures paused by an operator (a deploy window, a known incident).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePause {
    /// Until when, nanoseconds since the Unix epoch.
    pub until_unix_nanos: u64,
    /// Why, for the agent's log.
    pub reason: String,
}

/// What an agent did with a [`ConfigUpdate`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigApplied {
    /// The update's version.
    pub version: u64,
    /// Rules refused (the previous rule stays for those metrics).
    pub refused: Vec<RuleRefusal>,
}

/// A pushed rule an agent did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRefusal {
    /// The rule's metric.
    pub metric: Metric,
    /// Why.
    pub reason: String,
}

/// Asks an agent to capture now.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureRequest {
    /// Request id, echoed in the trigger event.
    pub request_id: String,
    /// Profiles to capture.
    pub kinds: Vec<ProfileKind>,
    /// Length of a CPU profile; `None` for the agent's default.
    pub cpu_duration: Option<Duration>,
    /// Why the collector asks.
    pub purpose: CapturePurpose,
    /// For CPU: the flight recorder's samples over this wall-clock interval instead of
    /// a new profile.
    pub window: Option<TimeWindow>,
    /// The incident it is a control for.
    pub incident_id: Option<String>,
}

/// A wall-clock interval, nanoseconds since the Unix epoch, `start < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeWindow {
    /// First nanosecond.
    pub start_unix_nanos: u64,
    /// End, exclusive.
    pub end_unix_nanos: u64,
}

/// Why a capture is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CapturePurpose {
    /// An operator asked.
    #[default]
    Operator,
    /// A healthy instance compared with an incident's sick ones.
    Control,
    /// An external alert asked for profiles of its moment.
    Alert,
}

impl CapturePurpose {
    /// Short name for the API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CapturePurpose::Operator => "operator",
            CapturePurpose::Control => "control",
            CapturePurpose::Alert => "alert",
        }
    }
}

/// What an agent did with a [`CaptureRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOutcome {
    /// The request.
    pub request_id: String,
    /// The trigger event the profiles are sent under, if it captured anything.
    pub event_id: Option<String>,
    /// Kinds captured.
    pub captured: Vec<ProfileKind>,
    /// Kinds refused, with why.
    pub refused: Vec<CaptureRefusal>,
}

/// A kind an agent did not capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRefusal {
    /// Which kind.
    pub kind: ProfileKind,
    /// Why.
    pub reason: RefusalReason,
    /// Details for people.
    pub detail: String,
}

/// Why an agent refused a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// Another capture of that kind is running.
    Busy,
    /// Above the `cpu_max` gate.
    CpuMax,
    /// Requested too often.
    RateLimited,
    /// Captures are paused.
    Paused,
    /// The agent cannot capture that kind.
    Unsupported,
    /// The capture failed.
    Failed,
    /// Not said, or a reason this version does not know.
    Other,
}

impl RefusalReason {
    /// Short name for the API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Busy => "busy",
            RefusalReason::CpuMax => "cpu_max",
            RefusalReason::RateLimited => "rate_limited",
            RefusalReason::Paused => "paused",
            RefusalReason::Unsupported => "unsupported",
            RefusalReason::Failed => "failed",
            RefusalReason::Other => "other",
        }
    }
}

/// Do not send the profiles of an event that are not sent yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipProfiles {
    /// The trigger event.
    pub event_id: String,
    /// Kinds to skip; empty: all.
    pub kinds: Vec<ProfileKind>,
}

/// Upload a module's debug info from `offset` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugInfoRequest {
    /// The module's GNU build id (lowercase hex).
    pub build_id: String,
    /// First byte wanted.
    pub offset: u64,
}

/// A piece of a debug info upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugInfoChunk {
    /// The module's GNU build id (lowercase hex).
    pub build_id: String,
    /// Where `data` starts in the upload.
    pub offset: u64,
    /// Size of the whole upload.
    pub total_bytes: u64,
    /// The bytes, at most [`crate::MAX_CHUNK_BYTES`].
    pub data: Vec<u8>,
}

/// A message from the collector to an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum CollectorMessage {
    /// Messages up to and including this sequence number are durable.
    Ack {
        /// Highest acknowledged sequence number.
        seq: u64,
    },
    /// New rules.
    ConfigUpdate(ConfigUpdate),
    /// Capture now.
    CaptureRequest(CaptureRequest),
    /// Upload debug info.
    DebugInfoRequest(DebugInfoRequest),
    /// Do not send an event's remaining profiles.
    SkipProfiles(SkipProfiles),
}

/// One event of one agent inside the collector's pipeline (between its `ingest` and
/// `process` roles; `pipeline.proto` on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineEvent {
    /// The agent's service.
    pub service: String,
    /// The agent's instance id.
    pub instance_id: String,
    /// What happened.
    pub body: PipelineBody,
}

/// What a [`PipelineEvent`] carries.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineBody {
    /// A metric window.
    Metrics(MetricWindow),
    /// A trigger event.
    Trigger(TriggerEvent),
    /// A whole profile.
    Profile(PipelineProfile),
}

/// A complete profile, its chunks put together.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineProfile {
    /// Profile id the agent made.
    pub profile_id: String,
    /// The trigger event it was captured for.
    pub event_id: String,
    /// What it measures.
    pub kind: ProfileKind,
    /// Capture start, nanoseconds since the Unix epoch.
    pub started_unix_nanos: u64,
    /// Capture length.
    pub duration: Duration,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Why the capture failed; such a profile has no data.
    pub error: Option<String>,
    /// The profile's bytes, as the agent sent them.
    pub data: Vec<u8>,
    /// How `data` is encoded.
    pub format: ProfileFormat,
}
