//! The control plane's documents: central rules and their history, pauses, capture
//! requests and what each agent answered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{validate_profile_id, ProfileJson, RuleJson};

/// The request id of a capture an external alert asked for: this prefix, then the
/// alert's own trigger event id (32 lowercase hex digits).
pub const ALERT_REQUEST_PREFIX: &str = "alert-";

/// Checks a capture request id: 32 lowercase hex digits, or an alert's
/// ([`ALERT_REQUEST_PREFIX`] and 32 of them).
pub fn validate_request_id(id: &str) -> Result<(), String> {
    validate_profile_id(id.strip_prefix(ALERT_REQUEST_PREFIX).unwrap_or(id)).map_err(|_| {
        let shown: String = id.chars().take(64).collect();
        format!(
            "request id {shown:?} is not 32 lowercase hex digits (nor {ALERT_REQUEST_PREFIX} and 32 of them, an alert's)"
        )
    })
}

/// Rule changes listed in a history unless `limit` says otherwise.
pub const DEFAULT_HISTORY_LIMIT: u64 = 100;
/// Capture requests listed unless `limit` says otherwise.
pub const DEFAULT_CAPTURE_LIMIT: u64 = 100;
/// How far back capture request lists look unless `since` says otherwise.
pub const DEFAULT_CAPTURE_SINCE: &str = "24h";

/// A service's central rules (`GET|PUT|DELETE /api/v1/services/{service}/rules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RulesJson {
    /// Service name.
    pub service: String,
    /// The version its agents should have in force (0: nothing central, ever).
    pub version: u64,
    /// The rules in force, by selector (`""`: every agent of the service) and metric.
    pub rules: Vec<CentralRuleJson>,
    /// The service's pause of captures, while it lasts.
    pub pause: Option<PauseJson>,
    /// The fleet's pause of captures, while it lasts.
    pub fleet_pause: Option<PauseJson>,
}

/// One central rule in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CentralRuleJson {
    /// The agents it is for: `k=v[,k=v]` over their labels; `""` for all.
    pub selector: String,
    /// `cpu`, `memory`, `threads`, `tasks` or `heap`.
    pub metric: String,
    /// The rule text as set (`HOLMES_RULE_*` form).
    pub text: String,
    /// The rule an agent of the layer gets: the text over the metric's default rule (and,
    /// for a selector's layer, over the service-wide text).
    pub rule: RuleJson,
    /// The version it was set under.
    pub version: u64,
    /// When, RFC 3339.
    pub changed_at: String,
    /// Who set it.
    pub by: String,
}

/// What `PUT /api/v1/services/{service}/rules` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RulesEditJson {
    /// The agents the rules are for (`k=v[,k=v]`); all of the service when left out.
    #[serde(default)]
    pub selector: String,
    /// Rule texts by metric (`{"cpu": "abs=90,cooldown=2m"}`); other metrics stay.
    pub rules: BTreeMap<String, String>,
    /// Who sets them (kept in the history).
    #[serde(default)]
    pub by: String,
    /// Why (kept in the history).
    #[serde(default)]
    pub note: String,
}

/// A service's rule changes, newest first
/// (`GET /api/v1/services/{service}/rules/history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleHistoryJson {
    /// Service name.
    pub service: String,
    /// The changes, newest first.
    pub changes: Vec<RuleChangeJson>,
}

/// One rule change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleChangeJson {
    /// The version it was recorded under.
    pub version: u64,
    /// When, RFC 3339.
    pub changed_at: String,
    /// Same, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Who (`config file` for the config file's seeds).
    pub by: String,
    /// Why.
    pub note: String,
    /// The layer: `k=v[,k=v]`, `""` for all agents.
    pub selector: String,
    /// The metric.
    pub metric: String,
    /// The text set; `null`: the rule was deleted (agents got their own back).
    pub text: Option<String>,
}

/// A pause of captures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PauseJson {
    /// The service, or `null` for the whole fleet.
    pub service: Option<String>,
    /// Until when, RFC 3339.
    pub until: String,
    /// Same, milliseconds since the Unix epoch.
    pub until_unix_ms: u64,
    /// Why.
    pub reason: String,
    /// Who paused.
    pub by: String,
    /// The version it was recorded under.
    pub version: u64,
}

/// The pauses in force (`GET /api/v1/pause`, `GET /api/v1/services/{service}/pause`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PausesJson {
    /// The service's own pause (`null` for the fleet's route, or when none lasts).
    pub pause: Option<PauseJson>,
    /// The fleet's pause, while it lasts.
    pub fleet_pause: Option<PauseJson>,
    /// The version the service's agents (or, for the fleet, every agent) should have.
    pub version: u64,
}

/// What `PUT /api/v1/pause` and `PUT /api/v1/services/{service}/pause` take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PauseEditJson {
    /// How long, from now (`30m`, `2h`).
    #[serde(rename = "for")]
    pub duration: String,
    /// Why (shown to operators and in the agents' logs).
    #[serde(default)]
    pub reason: String,
    /// Who pauses.
    #[serde(default)]
    pub by: String,
}

/// A capture request as asked (`POST /api/v1/services/{service}/capture`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaptureJson {
    /// Service name.
    pub service: String,
    /// The request id, echoed in each agent's trigger event (`request_id`).
    pub request_id: String,
    /// Profile kinds asked for.
    pub kinds: Vec<String>,
    /// The agents it is for: `k=v[,k=v]` over their labels; `""` for all.
    #[serde(default)]
    pub selector: String,
    /// The one instance it is for, if any.
    #[serde(default)]
    pub instance: Option<String>,
    /// Instances asked (connected then), on every node.
    pub instances: Vec<String>,
    /// Collector nodes that asked their agents.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Nodes with agents that had not asked theirs yet when the answer was given.
    #[serde(default)]
    pub pending_nodes: Vec<String>,
}

/// Capture requests of a service, newest first
/// (`GET /api/v1/services/{service}/captures`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapturesJson {
    /// Service name.
    pub service: String,
    /// Start of the range, RFC 3339.
    pub since: String,
    /// End of the range (exclusive), RFC 3339.
    pub until: String,
    /// The requests, newest first.
    pub captures: Vec<CaptureSummaryJson>,
}

/// One capture request and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaptureSummaryJson {
    /// Request id.
    pub request_id: String,
    /// Service name.
    pub service: String,
    /// Profile kinds asked for.
    pub kinds: Vec<String>,
    /// `operator`, `control` or `alert`.
    pub purpose: String,
    /// The agents it is for: `k=v[,k=v]`; `""` for all.
    pub selector: String,
    /// The one instance it is for, if any.
    pub instance: Option<String>,
    /// When it was asked, RFC 3339.
    pub asked_at: String,
    /// Same, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Who asked.
    pub by: String,
    /// Instances asked.
    pub asked: u64,
    /// Of those, instances that captured something.
    pub captured: u64,
    /// Of those, instances that refused everything.
    pub refused: u64,
    /// Of those, instances that have not answered (yet).
    pub pending: u64,
}

/// One capture request with every instance's answer and the profiles it brought
/// (`GET /api/v1/captures/{request_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaptureDetailJson {
    /// The request.
    pub request: CaptureSummaryJson,
    /// Every instance asked or answering, by instance id.
    pub instances: Vec<CaptureInstanceJson>,
    /// The profiles captured for it, by capture start.
    pub profiles: Vec<ProfileJson>,
}

/// What one instance was asked and answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaptureInstanceJson {
    /// Instance id.
    pub instance: String,
    /// The node that asked it (`null`: its answer arrived, but no node recorded asking).
    pub node: Option<String>,
    /// When its answer arrived, RFC 3339; `null` while it has not answered.
    pub answered_at: Option<String>,
    /// The trigger event its profiles come under, if it captured anything.
    pub event_id: Option<String>,
    /// Kinds captured.
    pub captured: Vec<String>,
    /// Kinds refused, with why.
    pub refused: Vec<CaptureRefusalJson>,
}

/// A kind an agent did not capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaptureRefusalJson {
    /// The kind.
    pub kind: String,
    /// `busy`, `cpu_max`, `rate_limited`, `paused`, `unsupported`, `failed` or `other`.
    pub reason: String,
    /// Details for people.
    pub detail: String,
}

/// A pushed rule an agent refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleRefusalJson {
    /// The metric.
    pub metric: String,
    /// Why, naming the field.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_hex_digits_or_an_alerts() {
        validate_request_id("0123456789abcdef0123456789abcdef").unwrap();
        validate_request_id("alert-0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(
            validate_request_id("alert-xyz").unwrap_err(),
            "request id \"alert-xyz\" is not 32 lowercase hex digits (nor alert- and 32 of them, an alert's)"
        );
        assert!(validate_request_id("0123456789ABCDEF0123456789ABCDEF").is_err());
        assert!(validate_request_id("../rules").is_err());
    }
}
