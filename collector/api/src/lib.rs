#![doc = include_str!("../README.md")]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod control;

/// The largest `limit` any query takes: more is refused with 400, since a store asked
/// for `u64::MAX` rows may try to hold them (metrics points default to this many).
pub const MAX_LIMIT: u64 = 100_000;
/// Points returned by one metrics query unless `limit` says otherwise.
pub const DEFAULT_POINT_LIMIT: u64 = 100_000;
/// `since` when the metrics query gives none.
pub const DEFAULT_SINCE: &str = "10m";
/// Trigger events returned by one query unless `limit` says otherwise.
pub const DEFAULT_TRIGGER_LIMIT: u64 = 1_000;
/// `since` when the triggers query gives none.
pub const DEFAULT_TRIGGER_SINCE: &str = "1h";
/// Profiles returned by one query unless `limit` says otherwise.
pub const DEFAULT_PROFILE_LIMIT: u64 = 1_000;
/// `since` when the profiles query gives none.
pub const DEFAULT_PROFILE_SINCE: &str = "1h";
/// Functions in a profile's top list unless `limit` says otherwise.
pub const DEFAULT_TOP_LIMIT: u64 = 20;
/// Incidents listed unless `limit` says otherwise.
pub const DEFAULT_INCIDENT_LIMIT: u64 = 200;
/// How far back incident lists look unless `since` says otherwise.
pub const DEFAULT_INCIDENT_SINCE: &str = "24h";

/// Length of a profile or incident id: 128 bits in hex.
pub const PROFILE_ID_LEN: usize = 32;

/// `Ok` for a profile id as agents make them (incident ids have the same form): 32
/// lowercase hex digits. The error says what is wrong, quoting (the start of) the id.
pub fn validate_profile_id(id: &str) -> Result<(), String> {
    if id.len() == PROFILE_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Ok(());
    }
    let shown: String = id.chars().take(2 * PROFILE_ID_LEN).collect();
    let more = if shown.len() < id.len() { "..." } else { "" };
    Err(format!(
        "profile id {shown:?}{more} is not {PROFILE_ID_LEN} lowercase hex digits"
    ))
}

/// `/api/v1/services/{service}/profiles/{profile_id}`: where a profile is downloaded
/// (pprof). Profile ids are scoped to their service.
pub fn download_path(service: &str, profile_id: &str) -> String {
    format!("/api/v1/services/{service}/profiles/{profile_id}")
}

/// `/api/v1/services/{service}/profiles/{profile_id}/top`: a profile's costliest
/// functions.
pub fn top_path(service: &str, profile_id: &str) -> String {
    format!("/api/v1/services/{service}/profiles/{profile_id}/top")
}

/// `/api/v1/services/{service}/profiles/{profile_id}/flamegraph.svg`: a profile's
/// flame graph.
pub fn flamegraph_path(service: &str, profile_id: &str) -> String {
    format!("/api/v1/services/{service}/profiles/{profile_id}/flamegraph.svg")
}

/// JSON has no NaN or infinity (serde_json writes them as `null`); reads `null` as NaN
/// so that a client still gets the rest of the answer.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One service in the services list (`GET /api/v1/services`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceJson {
    /// Service name.
    pub service: String,
    /// Active instances.
    pub instances: u64,
    /// Last heard from, RFC 3339.
    pub last_seen: String,
    /// Same, milliseconds since the Unix epoch.
    pub last_seen_unix_ms: u64,
}

/// One instance of a service (`GET /api/v1/services/{service}/instances`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceJson {
    /// Instance id.
    pub instance: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Agent library version.
    pub agent_version: String,
    /// Process start, RFC 3339.
    pub started_at: String,
    /// Last heard from, RFC 3339.
    pub last_seen: String,
    /// Whether its stream to a collector is open, as the collectors recorded it
    /// (`null`: no collector of this version recorded it).
    #[serde(default)]
    pub connected: Option<bool>,
    /// The version of the central rules it has in force, as it last reported (0: its
    /// own rules only; `null`: never reported).
    #[serde(default)]
    pub rules_version: Option<u64>,
    /// Connected and behind the service's current rules version: it has not applied the
    /// latest change (yet).
    #[serde(default)]
    pub rules_pending: bool,
    /// Pushed rules it refused, with why.
    #[serde(default)]
    pub rules_refused: Vec<control::RuleRefusalJson>,
}

/// A metric's series, one per instance (`GET /api/v1/services/{service}/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsJson {
    /// Service name.
    pub service: String,
    /// Metric name.
    pub metric: String,
    /// Unit of the values.
    pub unit: String,
    /// Start of the range, RFC 3339.
    pub since: String,
    /// End of the range (exclusive), RFC 3339.
    pub until: String,
    /// One series per instance.
    pub series: Vec<SeriesJson>,
}

/// The points of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeriesJson {
    /// Instance id.
    pub instance: String,
    /// Points, oldest first.
    pub points: Vec<PointJson>,
}

/// One point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PointJson {
    /// When, RFC 3339.
    pub ts: String,
    /// When, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The value; `null` in JSON if it is not a finite number, read back as NaN.
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, required = true))]
    pub value: f64,
}

/// The trigger events of one service in a time range
/// (`GET /api/v1/services/{service}/triggers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TriggersJson {
    /// Service name.
    pub service: String,
    /// Start of the range, RFC 3339.
    pub since: String,
    /// End of the range (exclusive), RFC 3339.
    pub until: String,
    /// The events, oldest first (ties by event id).
    pub triggers: Vec<TriggerJson>,
}

/// One trigger event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TriggerJson {
    /// Event id the agent made.
    pub event_id: String,
    /// Instance it fired in.
    pub instance: String,
    /// Metric name; `null` for a requested capture.
    pub metric: Option<String>,
    /// `abs`, `diff` or `requested`.
    pub reason: String,
    /// The value that fired; `null` in JSON if it is not a finite number.
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, required = true))]
    pub current: f64,
    /// When it fired, RFC 3339.
    pub ts: String,
    /// Same, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The rule's window at the time, oldest first.
    pub window: Vec<PointJson>,
    /// The rule as it was; `null` for a requested capture.
    pub rule: Option<RuleJson>,
    /// The capture request it answers, if any.
    pub request_id: Option<String>,
}

/// A trigger rule as it was when it fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleJson {
    /// Whether it was enabled.
    pub enabled: bool,
    /// Below this nothing fires.
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, required = true))]
    pub min: f64,
    /// Percent above the window average that fires; `null` when switched off.
    pub diff: Option<f64>,
    /// Absolute value above which it fires; `null` when switched off.
    pub abs: Option<f64>,
    /// At or above this it stays silent; 0 means no ceiling.
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, required = true))]
    pub max: f64,
    /// Sleep after firing, milliseconds.
    pub cooldown_ms: u64,
    /// Samples in the rule's window.
    pub window: u32,
}

/// The profiles of one service in a time range
/// (`GET /api/v1/services/{service}/profiles`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfilesJson {
    /// Service name.
    pub service: String,
    /// Start of the range, RFC 3339.
    pub since: String,
    /// End of the range (exclusive), RFC 3339.
    pub until: String,
    /// The profiles, by capture start (ties by profile id).
    pub profiles: Vec<ProfileJson>,
}

/// One profile, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileJson {
    /// Profile id: 32 lowercase hex digits.
    pub profile_id: String,
    /// The trigger event it was captured for.
    pub event_id: String,
    /// Instance it was captured in.
    pub instance: String,
    /// `cpu`, `heap`, `threads` or `tasks`.
    pub kind: String,
    /// When the capture started, RFC 3339.
    pub started: String,
    /// Same, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// How long the capture ran, milliseconds.
    pub duration_ms: u64,
    /// Extra labels, e.g. `phase=pre-trigger`.
    pub labels: BTreeMap<String, String>,
    /// Why the capture failed; `null` when it worked.
    pub error: Option<String>,
    /// Size of the gzip-compressed pprof bytes (0 for a failed capture).
    pub size_bytes: u64,
    /// Where to download the bytes ([`download_path`]); `null` for a failed capture,
    /// which has none.
    pub download: Option<String>,
}

/// The functions that cost the most in one profile
/// (`GET /api/v1/services/{service}/profiles/{profile_id}/top`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopJson {
    /// Profile id.
    pub profile_id: String,
    /// The sample type summed, e.g. `cpu`.
    pub sample_type: String,
    /// Its unit, e.g. `nanoseconds`.
    pub unit: String,
    /// Sum over all samples.
    pub total: i64,
    /// Samples in the profile.
    pub samples: u64,
    /// Distinct stacks among them.
    pub stacks: u64,
    /// Functions by flat value, at most `limit`.
    pub functions: Vec<FunctionTotal>,
}

/// One function's share of a profile, as `go tool pprof -top` counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionTotal {
    /// Function name.
    pub function: String,
    /// Sum of the samples where it is the leaf.
    pub flat: i64,
    /// Sum of the samples it is on the stack of.
    pub cum: i64,
}

/// One incident, as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IncidentJson {
    /// 32 hex digits.
    pub incident_id: String,
    /// Service name.
    pub service: String,
    /// Metric whose rules fired.
    pub metric: String,
    /// `instance` or `fleet`.
    pub severity: String,
    /// `open` or `resolved`.
    pub status: String,
    /// First trigger, RFC 3339.
    pub first_event: String,
    /// Same, milliseconds since the Unix epoch.
    pub first_event_unix_ms: u64,
    /// Latest trigger, RFC 3339.
    pub last_event: String,
    /// When it resolved, RFC 3339; `null` while open.
    pub resolved: Option<String>,
    /// Instances that fired.
    pub instances: Vec<String>,
    /// Its trigger events.
    pub event_ids: Vec<String>,
    /// Related incidents of other services.
    pub related: Vec<String>,
    /// Captures its sick instances planned beyond the fleet's capture budget (`[incidents]
    /// max_profiles_per_incident` of each kind): not stored, and their agents told not
    /// to send them. Older collectors do not send it (0).
    #[serde(default)]
    pub skipped_captures: u64,
}

/// A list of incidents (`GET /api/v1/incidents`,
/// `GET /api/v1/services/{service}/incidents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IncidentsJson {
    /// The service; `null` for the whole fleet.
    pub service: Option<String>,
    /// Start of the range, RFC 3339.
    pub since: String,
    /// End of the range (exclusive), RFC 3339.
    pub until: String,
    /// Newest first.
    pub incidents: Vec<IncidentJson>,
}

/// One incident in detail (`GET /api/v1/incidents/{incident_id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IncidentDetailJson {
    /// The incident.
    pub incident: IncidentJson,
    /// Its trigger events, oldest first.
    pub triggers: Vec<TriggerJson>,
    /// The profiles captured for them, oldest first.
    pub profiles: Vec<ProfileJson>,
    /// The profile kind the suspects come from (`cpu` for CPU incidents, ...); `null`
    /// until they were computed (no profile of that kind stored yet).
    pub suspect_kind: Option<String>,
    /// What the sick instances' profiles were compared against: `controls` (healthy
    /// instances of the service, captured for the incident over the same moment),
    /// `baselines` (the service's profiles from before it) or `none`; `null` until the
    /// suspects were computed.
    pub comparison: Option<String>,
    /// When the suspects were computed (they are computed when the incident changes or
    /// gets profiles, and stored with it), RFC 3339; `null` before.
    pub suspects_computed: Option<String>,
    /// Functions that grew most in the sick instances against the comparison, most
    /// suspect first.
    pub suspects: Vec<Suspect>,
    /// Profiles of the sick instances behind the suspects.
    pub sick_profiles: u64,
    /// Profiles of the comparison behind them.
    pub comparison_profiles: u64,
    /// Related incidents of other services.
    pub related: Vec<IncidentJson>,
    /// Its fingerprint: 32 hex digits from the profile kind and its top three suspects'
    /// functions (in any order); `null` without suspects. Incidents of the service with
    /// the same fingerprint are the same problem coming back.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Values of its instances' `version` label (sorted; empty when none has one).
    #[serde(default)]
    pub versions: Vec<String>,
    /// Earlier incidents of the service with the same fingerprint, newest first (at
    /// most 20): when the problem was seen before, and in which versions.
    #[serde(default)]
    pub earlier: Vec<EarlierIncident>,
}

/// An earlier incident with the same fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EarlierIncident {
    /// 32 hex digits.
    pub incident_id: String,
    /// Its first trigger, RFC 3339.
    pub first_event: String,
    /// Its latest trigger, RFC 3339.
    pub last_event: String,
    /// Values of its instances' `version` label (sorted; empty when none has one).
    pub versions: Vec<String>,
}

/// A function suspected of causing an incident, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Suspect {
    /// The function's full path (`crate::module::function`).
    pub function: String,
    /// Its share of the sick instances' profiles, counting everything it calls, 0 to 1
    /// (for CPU: of the CPU time those profiles saw).
    pub sick_share: f64,
    /// Its share of the comparison's profiles (healthy controls or baselines), 0 to 1;
    /// 0 without a comparison.
    pub comparison_share: f64,
    /// `sick_share - comparison_share`: how much it grew.
    pub growth: f64,
}

/// What every failed API request answers, with a 4xx or 5xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorJson {
    /// What went wrong, in one line.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn profile_ids_are_32_lowercase_hex_digits() {
        assert_eq!(validate_profile_id(ID), Ok(()));
        for bad in [
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            &format!("{ID}0"),
            "../etc/passwd",
        ] {
            assert!(validate_profile_id(bad).is_err(), "{bad}");
        }
        let long = "x".repeat(1000);
        let err = validate_profile_id(&long).unwrap_err();
        assert!(err.len() < 200, "{err}");
        assert!(
            err.ends_with("\"... is not 32 lowercase hex digits"),
            "{err}"
        );
    }

    #[test]
    fn null_values_read_back_as_nan() {
        let point: PointJson = serde_json::from_str(
            r#"{"ts": "1970-01-01T00:00:01.000Z", "unix_ms": 1000, "value": null}"#,
        )
        .unwrap();
        assert!(point.value.is_nan());
        assert_eq!(point.unix_ms, 1000);
    }
}

/// The answer to `PUT /api/v1/debuginfo/{build_id}` (`holmes debuginfo upload`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DebugInfoUploadJson {
    /// The module's GNU build id.
    pub build_id: String,
    /// Size of the stored debug info (this upload's, or the one stored before).
    pub bytes: u64,
    /// Whether this upload was stored; `false` when the build's debug info was complete
    /// already (uploading again changes nothing).
    pub stored: bool,
}
