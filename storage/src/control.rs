//! The records of the control plane: central rules and their history, pauses of
//! captures, capture requests with who was asked and what each agent answered, what each
//! agent reports about the rules in force, and the collector nodes that push to agents.
//!
//! Rule changes and pauses share one version sequence (the *control version*): every
//! change gets the next number, so a node that polls [`crate::Store::control_version`]
//! sees any change as a new number, and the version an agent is sent only grows.

use std::time::Duration;

use holmes_proto::{
    CapturePurpose, CaptureRefusal, Metric, ProfileKind, RefusalReason, RuleRefusal, TimeWindow,
};

use crate::StoreError;

/// Who changes the control state, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedBy {
    /// Who: a person (`alice`), or `config file` for seeds.
    pub author: String,
    /// Why, free text (may be empty).
    pub note: String,
    /// When, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
}

/// One metric of one rule layer set or deleted: what a caller asks the store to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEdit {
    /// The service.
    pub service: String,
    /// The agents the layer applies to: `k=v[,k=v]` sorted by key (see
    /// [`canonical_selector`]); empty for every agent of the service.
    pub selector: String,
    /// The metric.
    pub metric: Metric,
    /// The rule text (`holmes_proto::rule_spec` form); `None` deletes the layer's rule.
    pub text: Option<String>,
}

/// A recorded rule change: the edit, its version and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleChange {
    /// What changed.
    pub edit: RuleEdit,
    /// The control version it was recorded under.
    pub version: u64,
    /// Who and when.
    pub by: ChangedBy,
}

/// A pause of captures: of one service, or of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseEdit {
    /// The service, or empty for the whole fleet.
    pub scope: String,
    /// Until when, nanoseconds since the Unix epoch; 0 lifts the pause.
    pub until_unix_nanos: u64,
    /// Why (a deploy window, a known incident).
    pub reason: String,
}

/// A recorded pause change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRecord {
    /// What was set.
    pub edit: PauseEdit,
    /// The control version it was recorded under.
    pub version: u64,
    /// Who and when.
    pub by: ChangedBy,
}

/// A capture asked of the agents of a service, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRequestRecord {
    /// Request id: 32 lowercase hex digits, unique across the fleet.
    pub request_id: String,
    /// The service.
    pub service: String,
    /// Only agents whose labels match (`k=v[,k=v]`, [`canonical_selector`]); empty: all.
    pub selector: String,
    /// Only this instance, if set.
    pub instance_id: Option<String>,
    /// Profiles asked for.
    pub kinds: Vec<ProfileKind>,
    /// Why.
    pub purpose: CapturePurpose,
    /// Length of a CPU profile; `None`: the agent's default. Kept to the millisecond.
    pub cpu_duration: Option<Duration>,
    /// For CPU: the flight recorder's samples over this interval instead of a new profile.
    pub window: Option<TimeWindow>,
    /// The incident it is for, if any.
    pub incident_id: Option<String>,
    /// Who asked.
    pub by: ChangedBy,
}

/// Which capture requests to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRequestQuery {
    /// One service, or all.
    pub service: Option<String>,
    /// Asked at or after, nanoseconds since the Unix epoch.
    pub since_unix_nanos: u64,
    /// Asked before.
    pub until_unix_nanos: u64,
    /// At most this many.
    pub limit: u64,
}

/// The agents one collector node asked for one capture request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureDispatch {
    /// The request.
    pub request_id: String,
    /// The node (see [`ControlNode`]).
    pub node_id: String,
    /// The instances it reached, sorted; empty when none of the service's agents is
    /// connected to it.
    pub instances: Vec<String>,
    /// When, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
}

/// The capture budget's word to one agent: do not send the profiles of these kinds of
/// one of its trigger events (its incident keeps enough of them). A node without agent
/// streams (a Kafka processor) stores it; the node the agent is connected to reads it
/// and tells the agent (`SkipProfiles`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipNotice {
    /// The trigger event whose profiles are skipped.
    pub event_id: String,
    /// The agent's service.
    pub service: String,
    /// The agent.
    pub instance_id: String,
    /// The kinds skipped.
    pub kinds: Vec<ProfileKind>,
    /// When it was decided, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
}

/// What one agent answered to a capture request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOutcomeRecord {
    /// The request.
    pub request_id: String,
    /// The agent's service.
    pub service: String,
    /// The agent.
    pub instance_id: String,
    /// The trigger event its profiles come under, if it captured anything.
    pub event_id: Option<String>,
    /// Kinds captured.
    pub captured: Vec<ProfileKind>,
    /// Kinds refused, each with why.
    pub refused: Vec<CaptureRefusal>,
    /// When the answer arrived, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
}

/// What an agent last told a collector node about the central rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReport {
    /// The agent's service.
    pub service: String,
    /// The agent.
    pub instance_id: String,
    /// The node its stream is (or was) on.
    pub node_id: String,
    /// Whether its stream is open.
    pub connected: bool,
    /// The central rules' version it has in force (0: its own rules only).
    pub rules_version: u64,
    /// Pushed rules it refused, from its last answer (`ConfigApplied`).
    pub refused: Vec<RuleRefusal>,
    /// When, nanoseconds since the Unix epoch; of two reports of one agent the later
    /// one is kept.
    pub unix_nanos: u64,
}

/// A collector node that takes agent streams (`all` or `ingest`), as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlNode {
    /// Its id, unique per run (`<host>/<grpc address>/<start time>`).
    pub node_id: String,
    /// Agents connected to it.
    pub agents: u64,
    /// Last time it said it was alive, nanoseconds since the Unix epoch.
    pub seen_unix_nanos: u64,
}

/// The canonical form of a label selector: `k=v` pairs sorted by key and joined by
/// commas, spaces around keys and values trimmed. `Err` names what is wrong: a pair
/// without `=`, a key that is not a name, a key given twice.
pub fn canonical_selector(text: &str) -> Result<String, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| format!("selector part {part:?} is not key=value"))?;
        holmes_proto::names::validate_name("label key", k).map_err(|e| e.to_string())?;
        if v.chars().count() > holmes_proto::names::MAX_LABEL_VALUE_LEN {
            return Err(format!(
                "selector value of {k:?} is longer than {} characters",
                holmes_proto::names::MAX_LABEL_VALUE_LEN
            ));
        }
        if pairs.iter().any(|(key, _)| key == k) {
            return Err(format!("selector names the label {k:?} twice"));
        }
        pairs.push((k.to_owned(), v.to_owned()));
    }
    pairs.sort();
    Ok(pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(","))
}

/// The `(key, value)` pairs of a canonical selector.
pub fn selector_pairs(selector: &str) -> Vec<(&str, &str)> {
    selector
        .split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .collect()
}

/// The purpose a stored name ([`CapturePurpose::as_str`]) stands for.
pub(crate) fn purpose_from_name(
    what: &'static str,
    name: &str,
) -> Result<CapturePurpose, StoreError> {
    [
        CapturePurpose::Operator,
        CapturePurpose::Control,
        CapturePurpose::Alert,
    ]
    .into_iter()
    .find(|p| p.as_str() == name)
    .ok_or_else(|| StoreError::Corrupt {
        what,
        value: name.to_owned(),
    })
}

/// The refusal reason a stored name ([`RefusalReason::as_str`]) stands for.
pub(crate) fn refusal_from_name(
    what: &'static str,
    name: &str,
) -> Result<RefusalReason, StoreError> {
    [
        RefusalReason::Busy,
        RefusalReason::CpuMax,
        RefusalReason::RateLimited,
        RefusalReason::Paused,
        RefusalReason::Unsupported,
        RefusalReason::Failed,
        RefusalReason::Other,
    ]
    .into_iter()
    .find(|r| r.as_str() == name)
    .ok_or_else(|| StoreError::Corrupt {
        what,
        value: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_have_one_form() {
        assert_eq!(
            canonical_selector(" zone = a ,version=1.4.2").unwrap(),
            "version=1.4.2,zone=a"
        );
        assert_eq!(canonical_selector("").unwrap(), "");
        assert_eq!(
            selector_pairs("version=1.4.2,zone=a"),
            vec![("version", "1.4.2"), ("zone", "a")]
        );
        assert!(selector_pairs("").is_empty());
        assert_eq!(
            canonical_selector("zone").unwrap_err(),
            "selector part \"zone\" is not key=value"
        );
        assert_eq!(
            canonical_selector("zone=a,zone=b").unwrap_err(),
            "selector names the label \"zone\" twice"
        );
        assert!(canonical_selector("zo ne=a")
            .unwrap_err()
            .starts_with("label key \"zo ne\""));
    }

    #[test]
    fn names_parse_back() {
        for p in [
            CapturePurpose::Operator,
            CapturePurpose::Control,
            CapturePurpose::Alert,
        ] {
            assert_eq!(purpose_from_name("p", p.as_str()).unwrap(), p);
        }
        assert_eq!(
            refusal_from_name("r", "rate_limited").unwrap(),
            RefusalReason::RateLimited
        );
        assert!(refusal_from_name("r", "nope").is_err());
    }
}
