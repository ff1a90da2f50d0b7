//! Incidents: lists by service (or the whole fleet) and time, and one incident in
//! detail — its triggers, its profiles, its suspect functions and related incidents.

use std::collections::{BTreeSet, HashMap};

use axum::extract::{Path, Query, State};
use axum::Json;
use holmes_proto::{Metric, ProfileKind};
use holmes_storage::{
    IncidentQuery, IncidentRecord, IncidentStatus, ProfileContents, ProfileQuery, TriggerQuery,
};
use serde::{Deserialize, Serialize};

use super::{check_service, limit, time_range, Api, ProfileJson, TriggerJson};
use crate::aggregate::{suspects, Suspect};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::ingest::profiles::validate_profile_id;

/// Incidents listed unless `limit` says otherwise.
pub const DEFAULT_INCIDENT_LIMIT: u64 = 200;
/// How far back incident lists look unless `since` says otherwise.
pub const DEFAULT_INCIDENT_SINCE: &str = "24h";
/// Suspects in an incident's detail.
pub(super) const SUSPECTS: usize = 10;
/// Profiles merged per side (incident, baseline) for the suspects, at most.
pub(super) const MAX_MERGED_PROFILES: usize = 50;
/// How long before an incident its baseline profiles are looked for.
pub(super) const BASELINE_SPAN_SECS: u64 = 6 * 3600;

/// One incident, as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

impl From<IncidentRecord> for IncidentJson {
    fn from(i: IncidentRecord) -> Self {
        IncidentJson {
            metric: i.metric.as_str().to_owned(),
            severity: i.severity.as_str().to_owned(),
            status: i.status.as_str().to_owned(),
            first_event: rfc3339(i.first_event_unix_nanos),
            first_event_unix_ms: i.first_event_unix_nanos / 1_000_000,
            last_event: rfc3339(i.last_event_unix_nanos),
            resolved: i.resolved_unix_nanos.map(rfc3339),
            incident_id: i.incident_id,
            service: i.service,
            instances: i.instances,
            event_ids: i.event_ids,
            related: i.related,
        }
    }
}

/// A list of incidents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// One incident in detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentDetailJson {
    /// The incident.
    pub incident: IncidentJson,
    /// Its trigger events, oldest first.
    pub triggers: Vec<TriggerJson>,
    /// The profiles captured for them, oldest first.
    pub profiles: Vec<ProfileJson>,
    /// The profile kind the suspects come from (`cpu` for CPU incidents, ...); `null`
    /// when none was captured.
    pub suspect_kind: Option<String>,
    /// Functions that grew most against the baseline, most suspect first.
    pub suspects: Vec<Suspect>,
    /// Profiles merged for the suspects: the incident's and the baseline's.
    pub merged_profiles: u64,
    /// Baseline profiles (same service and kind, before the incident).
    pub baseline_profiles: u64,
    /// Related incidents of other services.
    pub related: Vec<IncidentJson>,
}

fn parse_status(params: &HashMap<String, String>) -> Result<Option<IncidentStatus>, ApiError> {
    params
        .get("status")
        .map(|s| {
            IncidentStatus::from_name(s).ok_or_else(|| {
                ApiError::bad_request(format!("unknown status {s:?}; known: open, resolved"))
            })
        })
        .transpose()
}

async fn list(
    api: &Api,
    service: Option<String>,
    params: &HashMap<String, String>,
) -> Result<IncidentsJson, ApiError> {
    let status = parse_status(params)?;
    let (since, until) = time_range(params, DEFAULT_INCIDENT_SINCE)?;
    let limit = limit(params, DEFAULT_INCIDENT_LIMIT)?;
    let found = api
        .store
        .query_incidents(&IncidentQuery {
            service: service.clone(),
            status,
            since_unix_nanos: since,
            until_unix_nanos: until,
            limit,
        })
        .await?;
    Ok(IncidentsJson {
        service,
        since: rfc3339(since),
        until: rfc3339(until),
        incidents: found.into_iter().map(IncidentJson::from).collect(),
    })
}

/// `GET /api/v1/services/{service}/incidents`.
pub(super) async fn by_service(
    State(api): State<Api>,
    Path(service): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<IncidentsJson>, ApiError> {
    check_service(&service)?;
    Ok(Json(list(&api, Some(service), &params).await?))
}

/// `GET /api/v1/incidents`: the whole fleet's.
pub(super) async fn all(
    State(api): State<Api>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<IncidentsJson>, ApiError> {
    Ok(Json(list(&api, None, &params).await?))
}

/// The profile kind that explains an incident of `metric`.
fn kind_for(metric: Metric) -> ProfileKind {
    match metric {
        Metric::CpuPercent | Metric::CpuThrottledPercent => ProfileKind::Cpu,
        Metric::Threads => ProfileKind::Threads,
        Metric::Tasks => ProfileKind::Tasks,
        _ => ProfileKind::Heap,
    }
}

const SEC: u64 = 1_000_000_000;

/// `GET /api/v1/incidents/{incident_id}`.
pub(super) async fn detail(
    State(api): State<Api>,
    Path(incident_id): Path<String>,
) -> Result<Json<IncidentDetailJson>, ApiError> {
    let incident = incident_of(&api, &incident_id).await?;
    let events: BTreeSet<&str> = incident.event_ids.iter().map(String::as_str).collect();
    let triggers: Vec<TriggerJson> = api
        .store
        .query_triggers(&TriggerQuery {
            service: incident.service.clone(),
            metric: Some(incident.metric),
            since_unix_nanos: incident.first_event_unix_nanos,
            until_unix_nanos: incident.last_event_unix_nanos.saturating_add(1),
            limit: 100_000,
        })
        .await?
        .into_iter()
        .filter(|t| events.contains(t.event_id.as_str()))
        .map(TriggerJson::from)
        .collect();
    let ours = profiles_of(&api, &incident).await?;
    let kind = kind_for(incident.metric);
    let merged = contents_of(&api, &ours, kind).await?;
    let baseline = baseline(&api, &incident, kind).await?;
    let suspects = suspects(&merged, &baseline, SUSPECTS);
    let mut related = Vec::new();
    for id in &incident.related {
        if let Some(r) = api.store.get_incident(id).await? {
            related.push(IncidentJson::from(r));
        }
    }
    Ok(Json(IncidentDetailJson {
        suspect_kind: (!merged.is_empty()).then(|| kind.as_str().to_owned()),
        merged_profiles: merged.len() as u64,
        baseline_profiles: baseline.len() as u64,
        suspects,
        triggers,
        profiles: ours.into_iter().map(ProfileJson::from).collect(),
        related,
        incident: IncidentJson::from(incident),
    }))
}

/// Profiles of the same service and kind from the hours before the incident (not of
/// any incident's first minutes): what normal looked like.
async fn baseline(
    api: &Api,
    incident: &IncidentRecord,
    kind: ProfileKind,
) -> Result<Vec<ProfileContents>, ApiError> {
    let before = incident.first_event_unix_nanos.saturating_sub(120 * SEC);
    let listed = api
        .store
        .query_profiles(&ProfileQuery {
            service: incident.service.clone(),
            event_id: None,
            kind: Some(kind),
            since_unix_nanos: before.saturating_sub(BASELINE_SPAN_SECS * SEC),
            until_unix_nanos: before,
            limit: 10_000,
        })
        .await?;
    let mut out = Vec::new();
    for p in listed
        .iter()
        .rev()
        .filter(|p| p.error.is_none())
        .take(MAX_MERGED_PROFILES)
    {
        if let Some(c) = api.store.get_profile_contents(&p.profile_id).await? {
            out.push(c);
        }
    }
    Ok(out)
}

/// The decoded contents of the profiles of `kind` among `profiles` (failed captures
/// left out), at most [`MAX_MERGED_PROFILES`].
async fn contents_of(
    api: &Api,
    profiles: &[holmes_storage::ProfileMeta],
    kind: ProfileKind,
) -> Result<Vec<ProfileContents>, ApiError> {
    let mut out = Vec::new();
    for p in profiles
        .iter()
        .filter(|p| p.kind == kind && p.error.is_none())
        .take(MAX_MERGED_PROFILES)
    {
        if let Some(c) = api.store.get_profile_contents(&p.profile_id).await? {
            out.push(c);
        }
    }
    Ok(out)
}

/// The profiles captured for the incident's trigger events.
async fn profiles_of(
    api: &Api,
    incident: &IncidentRecord,
) -> Result<Vec<holmes_storage::ProfileMeta>, ApiError> {
    let events: BTreeSet<&str> = incident.event_ids.iter().map(String::as_str).collect();
    // Captures start up to the flight recorder's window before their trigger and may
    // run a while after it.
    let listed = api
        .store
        .query_profiles(&ProfileQuery {
            service: incident.service.clone(),
            event_id: None,
            kind: None,
            since_unix_nanos: incident.first_event_unix_nanos.saturating_sub(120 * SEC),
            until_unix_nanos: incident.last_event_unix_nanos.saturating_add(600 * SEC),
            limit: 10_000,
        })
        .await?;
    Ok(listed
        .into_iter()
        .filter(|p| events.contains(p.event_id.as_str()))
        .collect())
}

async fn incident_of(api: &Api, incident_id: &str) -> Result<IncidentRecord, ApiError> {
    validate_profile_id(incident_id).map_err(|_| {
        ApiError::bad_request(format!(
            "{incident_id:?} is not an incident id (32 lowercase hex digits)"
        ))
    })?;
    api.store
        .get_incident(incident_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown incident {incident_id:?}")))
}

/// `GET /api/v1/incidents/{incident_id}/flamegraph.svg[?diff=baseline]`: the merged
/// profiles of the kind that explains the incident; with `diff=baseline`, colored by
/// growth against the profiles from before it.
pub(super) async fn flamegraph(
    State(api): State<Api>,
    Path(incident_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    let diff = match params.get("diff").map(String::as_str) {
        None => false,
        Some("baseline") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "diff={other:?}: the only comparison is diff=baseline"
            )))
        }
    };
    let incident = incident_of(&api, &incident_id).await?;
    let kind = kind_for(incident.metric);
    let merged = contents_of(&api, &profiles_of(&api, &incident).await?, kind).await?;
    if merged.is_empty() {
        return Err(ApiError::not_found(format!(
            "incident {incident_id} has no {} profiles",
            kind.as_str()
        )));
    }
    let title = format!(
        "{} {} incident {}: {} {} profiles{}",
        incident.service,
        incident.metric.as_str(),
        incident.incident_id,
        merged.len(),
        kind.as_str(),
        if diff { ", against the baseline" } else { "" }
    );
    let svg = if diff {
        let baseline = baseline(&api, &incident, kind).await?;
        crate::flamegraph::render(&title, &merged, Some(&baseline))
    } else {
        crate::flamegraph::render(&title, &merged, None)
    };
    Ok(super::svg_response(svg))
}
