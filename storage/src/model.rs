//! The records a [`crate::Store`] keeps.

use std::collections::BTreeMap;
use std::time::Duration;

use holmes_proto::{Metric, ProfileFormat, ProfileKind, RuleConfig, Sample, TriggerReason};

use crate::contents::ProfileContents;

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

/// A captured profile as stored: what the agent said about it, its normalized
/// contents, and (only with `keep_originals`) the bytes exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRecord {
    /// Profile id the agent made: 128 random bits in hex. Unique within its service:
    /// every lookup is by `(service, profile_id)`, so another service reusing the id
    /// touches nothing of this one.
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
    /// Why the capture failed (or why the collector refused it); such a profile has no
    /// contents. `Some("")` is stored as `None`, as on the wire.
    pub error: Option<String>,
    /// How many bytes the agent sent.
    pub size_bytes: u64,
    /// How the agent encoded them.
    pub format: ProfileFormat,
    /// The contents, normalized; `None` for a failed capture.
    pub contents: Option<ProfileContents>,
    /// The bytes exactly as sent, kept only when the collector is told to
    /// (`keep_originals`).
    pub original: Option<Vec<u8>>,
}

/// A stored profile without its contents, as profile lists show it.
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
    /// How many bytes the agent sent.
    pub size_bytes: u64,
    /// How the agent encoded them.
    pub format: ProfileFormat,
}

impl ProfileRecord {
    /// The record without its contents.
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
            size_bytes: self.size_bytes,
            format: self.format,
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

/// Which profiles to merge into one (a service's flame graph over a time range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeQuery {
    /// Service name.
    pub service: String,
    /// Profiles of this kind.
    pub kind: ProfileKind,
    /// Capture started from, inclusive, nanoseconds since the Unix epoch.
    pub since_unix_nanos: u64,
    /// To, exclusive.
    pub until_unix_nanos: u64,
    /// At most this many profiles (the newest ones).
    pub limit: u64,
}

/// Profiles merged: one sample per distinct stack, its values summed per sample type
/// (types matched by name and unit), labels dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergedProfile {
    /// How many profiles were merged.
    pub profiles: u64,
    /// The merged contents (its header holds the union of the sample types).
    pub contents: ProfileContents,
}

/// A pipeline event the processor could not store and set aside, so that it does not
/// block the events after it (see the Kafka pipeline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    /// Where it came from, e.g. `kafka:holmes-events/3@1200`.
    pub source: String,
    /// Service name, if the event could be read.
    pub service: String,
    /// When it was parked, nanoseconds since the Unix epoch.
    pub parked_unix_nanos: u64,
    /// Why.
    pub error: String,
    /// The event's bytes as received.
    pub payload: Vec<u8>,
}

/// What [`crate::Store::expire_before`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// Rows deleted (the embedded store counts them; ClickHouse: rows of the tables it
    /// expires by mutation, stacks, locations, incidents and instances).
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
    /// Captures (one trigger event's profiles of one kind) its sick instances planned
    /// beyond the fleet's capture budget (`[incidents] max_profiles_per_incident` per
    /// kind): acknowledged and not stored, and their agents told not to send them.
    pub skipped_captures: u64,
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

/// What an incident's sick profiles were compared against to rank its suspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Profiles of healthy instances of the service captured for the incident, over the
    /// same moment.
    Controls,
    /// The service's profiles from before the incident (agents' periodic baselines,
    /// earlier captures).
    Baselines,
    /// Nothing to compare with: suspects rank by their share in the sick profiles.
    None,
}

impl Comparison {
    /// `controls`, `baselines` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Controls => "controls",
            Comparison::Baselines => "baselines",
            Comparison::None => "none",
        }
    }

    /// The comparison named `name`, if any.
    pub fn from_name(name: &str) -> Option<Comparison> {
        match name {
            "controls" => Some(Comparison::Controls),
            "baselines" => Some(Comparison::Baselines),
            "none" => Some(Comparison::None),
            _ => None,
        }
    }
}

/// One function suspected of causing an incident, with its evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct SuspectRecord {
    /// The function's full path (`crate::module::function`).
    pub function: String,
    /// Its inclusive share (the function with everything it calls) of the sick
    /// instances' profiles, 0 to 1.
    pub sick_share: f64,
    /// Its inclusive share of the comparison's profiles, 0 to 1 (0 without one).
    pub comparison_share: f64,
}

/// An incident's suspects as computed when it last changed, stored with it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentSuspects {
    /// The incident.
    pub incident_id: String,
    /// Its service.
    pub service: String,
    /// The profile kind they come from.
    pub kind: ProfileKind,
    /// What the sick profiles were compared against.
    pub comparison: Comparison,
    /// Profiles of the sick instances behind them.
    pub sick_profiles: u32,
    /// Profiles of the comparison behind them.
    pub comparison_profiles: u32,
    /// When they were computed (collector time); the store keeps the latest.
    pub computed_unix_nanos: u64,
    /// Most suspect first.
    pub suspects: Vec<SuspectRecord>,
}

/// How many top suspects make an incident's fingerprint.
pub const FINGERPRINT_SUSPECTS: usize = 3;

impl IncidentSuspects {
    /// The incident's fingerprint: 32 hex digits (BLAKE3) of the profile kind and the
    /// functions of its top [`FINGERPRINT_SUSPECTS`] suspects in name order (two
    /// incidents whose top suspects trade places are the same problem); `None` without
    /// suspects. Incidents of one service with the same fingerprint are the same problem
    /// coming back.
    pub fn fingerprint(&self) -> Option<String> {
        if self.suspects.is_empty() {
            return None;
        }
        let mut top: Vec<&str> = self
            .suspects
            .iter()
            .take(FINGERPRINT_SUSPECTS)
            .map(|s| s.function.as_str())
            .collect();
        top.sort_unstable();
        let mut h = blake3::Hasher::new();
        h.update(self.kind.as_str().as_bytes());
        for f in top {
            h.update(&[0]);
            h.update(f.as_bytes());
        }
        let bytes = h.finalize();
        bytes
            .as_bytes()
            .first_chunk::<16>()
            .map(crate::location::hex)
    }
}
