//! The records a [`crate::Store`] keeps.

use std::collections::BTreeMap;
use std::time::Duration;

use holmes_proto::{Metric, ProfileKind, RuleConfig, Sample, TriggerReason};

/// One agent process as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceInfo {
    /// Service name.
    pub service: String,
    /// Instance id, unique within the service.
    pub instance_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Labels the agent reported.
    pub labels: BTreeMap<String, String>,
    /// Agent library version.
    pub agent_version: String,
    /// Process start, nanoseconds since the Unix epoch.
    pub started_at_unix_nanos: u64,
    /// Last time the collector heard from it, nanoseconds since the Unix epoch.
    pub last_seen_unix_nanos: u64,
}

/// One sample of one metric of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// Which metric.
    pub metric: Metric,
    /// When, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
    /// The value, in the metric's unit.
    pub value: f64,
}

/// A service as the services list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    /// Service name.
    pub service: String,
    /// Instances seen since the cut-off asked for.
    pub instances: u64,
    /// Last time any instance was heard from, nanoseconds since the Unix epoch.
    pub last_seen_unix_nanos: u64,
}

/// Which metric points to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricQuery {
    /// Service name.
    pub service: String,
    /// Which metric.
    pub metric: Metric,
    /// From, inclusive, nanoseconds since the Unix epoch.
    pub since_unix_nanos: u64,
    /// To, exclusive.
    pub until_unix_nanos: u64,
    /// At most this many points.
    pub limit: u64,
}

/// A trigger event as stored: a rule fired (or a capture was requested) in one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerRecord {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// Event id the agent made, unique within the service.
    pub event_id: String,
    /// The metric that fired; `None` for a requested capture.
    pub metric: Option<Metric>,
    /// Why it fired.
    pub reason: TriggerReason,
    /// The value that fired.
    pub current: f64,
    /// The rule's window at the time, oldest first.
    pub window: Vec<Sample>,
    /// The rule as it was; `None` for a requested capture.
    pub rule: Option<RuleConfig>,
    /// When it fired, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
    /// The capture request it answers, if any. `Some("")` is stored as `None`, as on
    /// the wire.
    pub request_id: Option<String>,
}

/// Which trigger events to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerQuery {
    /// Service name.
    pub service: String,
    /// Only this metric's triggers; `None` for all, requested captures included.
    pub metric: Option<Metric>,
    /// From, inclusive, nanoseconds since the Unix epoch.
    pub since_unix_nanos: u64,
    /// To, exclusive.
    pub until_unix_nanos: u64,
    /// At most this many events.
    pub limit: u64,
}

/// A captured profile as stored: the agent's gzip-compressed pprof bytes, exactly as
/// sent, with what the agent said about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRecord {
    /// Profile id the agent made: 128 random bits in hex, unique across the fleet.
    pub profile_id: String,
    /// The trigger event it was captured for.
    pub event_id: String,
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// What it measures.
    pub kind: ProfileKind,
    /// When the capture started, nanoseconds since the Unix epoch.
    pub started_unix_nanos: u64,
    /// How long the capture ran (kept to the nanosecond, up to `u64::MAX` of them).
    pub duration: Duration,
    /// Extra labels, e.g. `phase=pre-trigger`.
    pub labels: BTreeMap<String, String>,
    /// Why the capture failed; such a profile has no data. `Some("")` is stored as
    /// `None`, as on the wire.
    pub error: Option<String>,
    /// The gzip-compressed pprof `profile.proto`, byte for byte as the agent sent it.
    pub data: Vec<u8>,
}

/// A stored profile without its bytes, as profile lists show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileMeta {
    /// Profile id.
    pub profile_id: String,
    /// The trigger event it was captured for.
    pub event_id: String,
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// What it measures.
    pub kind: ProfileKind,
    /// When the capture started, nanoseconds since the Unix epoch.
    pub started_unix_nanos: u64,
    /// How long the capture ran.
    pub duration: Duration,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Why the capture failed, if it did.
    pub error: Option<String>,
    /// Size of the stored bytes.
    pub size_bytes: u64,
}

impl ProfileRecord {
    /// The record without its bytes.
    pub fn meta(&self) -> ProfileMeta {
        ProfileMeta {
            profile_id: self.profile_id.clone(),
            event_id: self.event_id.clone(),
            service: self.service.clone(),
            instance_id: self.instance_id.clone(),
            kind: self.kind,
            started_unix_nanos: self.started_unix_nanos,
            duration: self.duration,
            labels: self.labels.clone(),
            error: self.error.clone(),
            size_bytes: self.data.len() as u64,
        }
    }
}

/// Which profiles to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileQuery {
    /// Service name.
    pub service: String,
    /// Only the profiles of this trigger event; `None` for all.
    pub event_id: Option<String>,
    /// Only profiles of this kind; `None` for all.
    pub kind: Option<ProfileKind>,
    /// Capture started from, inclusive, nanoseconds since the Unix epoch.
    pub since_unix_nanos: u64,
    /// To, exclusive.
    pub until_unix_nanos: u64,
    /// At most this many profiles.
    pub limit: u64,
}

/// One frame of a stored stack: function, source file and line (empty and 0 when
/// unknown).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StackFrame {
    /// Function name, demangled.
    pub function: String,
    /// Source file.
    pub file: String,
    /// Line in the file.
    pub line: u32,
}

/// A distinct call stack, innermost frame first, stored once however many samples and
/// profiles use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    /// [`stack_id`] of `frames`.
    pub stack_id: u64,
    /// Frames, leaf first.
    pub frames: Vec<StackFrame>,
}

impl Stack {
    /// A stack with its content id.
    pub fn new(frames: Vec<StackFrame>) -> Self {
        Stack {
            stack_id: stack_id(&frames),
            frames,
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The hash of one frame: 64-bit FNV-1a over its function, file and line, each field
/// ended by a byte no name contains.
pub fn frame_hash(frame: &StackFrame) -> u64 {
    let h = fnv(FNV_OFFSET, frame.function.as_bytes());
    let h = fnv(h, &[0xff]);
    let h = fnv(h, frame.file.as_bytes());
    let h = fnv(h, &[0xff]);
    fnv(h, &frame.line.to_le_bytes())
}

/// The content hash that keys a stack, from its frames' [`frame_hash`]es in order (leaf
/// first): 64-bit FNV-1a over their little-endian bytes. Computing it from frame hashes
/// lets a decoder hash each location of a profile once, not once per sample. Stable
/// across versions and machines (stored ids depend on it); two different stacks share an
/// id with probability about n²/2⁶⁵ for n distinct stacks.
pub fn stack_id_of_hashes(frame_hashes: impl IntoIterator<Item = u64>) -> u64 {
    frame_hashes
        .into_iter()
        .fold(FNV_OFFSET, |h, f| fnv(h, &f.to_le_bytes()))
}

/// [`stack_id_of_hashes`] of `frames`.
pub fn stack_id(frames: &[StackFrame]) -> u64 {
    stack_id_of_hashes(frames.iter().map(frame_hash))
}

/// One sample of a normalized profile: a stack, one value per sample type, labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSample {
    /// The [`Stack`] it was taken in.
    pub stack_id: u64,
    /// One value per [`ProfileContents::sample_types`] entry.
    pub values: Vec<i64>,
    /// String labels (numeric ones become their decimal text), in profile order.
    pub labels: Vec<(String, String)>,
}

/// What a profile holds, normalized: its distinct stacks and its samples referring to
/// them. The original bytes stay in the [`ProfileRecord`] for exact download; this form
/// is what merges, flame graphs and comparisons read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileContents {
    /// The profile's id ([`ProfileRecord::profile_id`]).
    pub profile_id: String,
    /// Service name.
    pub service: String,
    /// When the capture started, nanoseconds since the Unix epoch.
    pub started_unix_nanos: u64,
    /// (type, unit) of each sample value, e.g. `("cpu", "nanoseconds")`.
    pub sample_types: Vec<(String, String)>,
    /// Every distinct stack the samples use, each once.
    pub stacks: Vec<Stack>,
    /// The samples; two samples of one stack stay two (their labels may differ).
    pub samples: Vec<StackSample>,
}

/// What [`crate::Store::expire_before`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// Rows deleted (the embedded store counts them).
    pub rows: u64,
    /// Whole day partitions dropped (ClickHouse).
    pub partitions: u64,
}

/// How bad an incident is: one instance, or several instances of the service together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// A lone instance's spike.
    Instance,
    /// Several instances of one service spiking together.
    Fleet,
}

impl Severity {
    /// `instance` or `fleet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Instance => "instance",
            Severity::Fleet => "fleet",
        }
    }

    /// The severity named `name`, if any.
    pub fn from_name(name: &str) -> Option<Severity> {
        match name {
            "instance" => Some(Severity::Instance),
            "fleet" => Some(Severity::Fleet),
            _ => None,
        }
    }
}

/// Whether an incident is still going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncidentStatus {
    /// Triggers keep coming, or came within the quiet period.
    Open,
    /// Quiet for the quiet period.
    Resolved,
}

impl IncidentStatus {
    /// `open` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Resolved => "resolved",
        }
    }

    /// The status named `name`, if any.
    pub fn from_name(name: &str) -> Option<IncidentStatus> {
        match name {
            "open" => Some(IncidentStatus::Open),
            "resolved" => Some(IncidentStatus::Resolved),
            _ => None,
        }
    }
}

/// Trigger events of one service and metric, close in time, seen as one problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRecord {
    /// 32 lowercase hex digits, derived from the service, metric and first event.
    pub incident_id: String,
    /// Service name.
    pub service: String,
    /// The metric whose rules fired.
    pub metric: Metric,
    /// Instance or fleet.
    pub severity: Severity,
    /// Open or resolved.
    pub status: IncidentStatus,
    /// Time of its earliest trigger event, nanoseconds since the Unix epoch.
    pub first_event_unix_nanos: u64,
    /// Time of its latest trigger event.
    pub last_event_unix_nanos: u64,
    /// When it was resolved (collector time); `None` while open.
    pub resolved_unix_nanos: Option<u64>,
    /// Instances that fired, sorted.
    pub instances: Vec<String>,
    /// Its trigger events' ids, sorted.
    pub event_ids: Vec<String>,
    /// Incidents of other services that overlapped it in time, sorted.
    pub related: Vec<String>,
    /// Increases with every change; the store keeps the highest version of an id.
    pub version: u64,
}

/// Which incidents to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentQuery {
    /// Only this service's; `None` for all services.
    pub service: Option<String>,
    /// Only incidents in this status; `None` for both.
    pub status: Option<IncidentStatus>,
    /// Incidents whose last event is at or after this time.
    pub since_unix_nanos: u64,
    /// ... and whose first event is before this time.
    pub until_unix_nanos: u64,
    /// At most this many, newest first (by first event, then id).
    pub limit: u64,
}
