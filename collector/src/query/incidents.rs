//! Incidents: lists by service (or the whole fleet) and time, and one incident in
//! detail — its triggers, its profiles, its suspect functions and related incidents.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use holmes_api::{
    validate_profile_id, EarlierIncident, ErrorJson, IncidentDetailJson, IncidentJson,
    IncidentsJson, Suspect, TriggerJson, DEFAULT_INCIDENT_LIMIT, DEFAULT_INCIDENT_SINCE,
};
use holmes_proto::ProfileKind;
use holmes_storage::{
    IncidentQuery, IncidentRecord, IncidentStatus, ProfileContents, TriggerQuery,
};

use super::profiles::profile_json;
use super::triggers::trigger_json;
use super::{check_service, limit, time_range, Api};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::incident::evidence;

/// An incident as the API lists it.
fn incident_json(i: IncidentRecord) -> IncidentJson {
    {
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
            skipped_captures: i.skipped_captures,
        }
    }
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
    let labels = super::labels::filters(params)?;
    let found = api
        .store
        .query_incidents(&IncidentQuery {
            service: service.clone(),
            status,
            since_unix_nanos: since,
            until_unix_nanos: until,
            // Filtered by label below: look further, then cut.
            limit: if labels.is_empty() {
                limit
            } else {
                limit.saturating_mul(10).min(100_000)
            },
        })
        .await?;
    let found = super::labels::matching(api, found, &labels, limit).await?;
    Ok(IncidentsJson {
        service,
        since: rfc3339(since),
        until: rfc3339(until),
        incidents: found.into_iter().map(incident_json).collect(),
    })
}

/// A service's incidents in a time range, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/incidents",
    operation_id = "list_service_incidents",
    tag = "incidents",
    params(
        ("service" = String, Path, description = "Service name"),
        ("since" = Option<String>, Query, description = "Start: a duration before now (`24h`, the default) or an RFC 3339 time"),
        ("until" = Option<String>, Query, description = "End (exclusive): a duration before now or an RFC 3339 time; now by default"),
        ("status" = Option<String>, Query, description = "Only `open` or only `resolved` ones"),
        ("limit" = Option<u64>, Query, description = "At most this many incidents (200 by default)"),
        ("label" = Option<String>, Query, description = "Only incidents with an instance carrying every label given: `key=value`, several separated by `,` (`k8s.namespace.name=shop,service.version=1.4`)"),
    ),
    responses(
        (status = 200, description = "The incidents", body = IncidentsJson),
        (status = 400, description = "Bad parameter", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn by_service(
    State(api): State<Api>,
    Path(service): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<IncidentsJson>, ApiError> {
    check_service(&service)?;
    Ok(Json(list(&api, Some(service), &params).await?))
}

/// Every service's incidents in a time range, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/incidents",
    operation_id = "list_incidents",
    tag = "incidents",
    params(
        ("since" = Option<String>, Query, description = "Start: a duration before now (`24h`, the default) or an RFC 3339 time"),
        ("until" = Option<String>, Query, description = "End (exclusive): a duration before now or an RFC 3339 time; now by default"),
        ("status" = Option<String>, Query, description = "Only `open` or only `resolved` ones"),
        ("limit" = Option<u64>, Query, description = "At most this many incidents (200 by default)"),
        ("label" = Option<String>, Query, description = "Only incidents with an instance carrying every label given: `key=value`, several separated by `,` (`k8s.namespace.name=shop,service.version=1.4`)"),
    ),
    responses(
        (status = 200, description = "The incidents", body = IncidentsJson),
        (status = 400, description = "Bad parameter", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn all(
    State(api): State<Api>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<IncidentsJson>, ApiError> {
    Ok(Json(list(&api, None, &params).await?))
}

use crate::incident::evidence::kind_for;

/// One incident in detail.
///
/// Its trigger events, the profiles captured for them, its suspect functions as stored
/// when it last changed (what grew most in its sick instances against its healthy
/// controls, else the baselines, from the profiles of the kind that explains its
/// metric; empty until computed), the related incidents of other services, and its
/// fingerprint with the earlier incidents that had it (and the versions they ran).
#[utoipa::path(
    get,
    path = "/api/v1/incidents/{incident_id}",
    operation_id = "get_incident",
    tag = "incidents",
    params(("incident_id" = String, Path, description = "Incident id: 32 lowercase hex digits")),
    responses(
        (status = 200, description = "The incident", body = IncidentDetailJson),
        (status = 400, description = "Not an incident id", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "Unknown incident", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
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
        .map(trigger_json)
        .collect();
    let ours = profiles_of(&api, &incident).await?;
    let stored = api
        .store
        .get_incident_suspects(&incident.service, &incident.incident_id)
        .await?;
    let mut related = Vec::new();
    for id in &incident.related {
        if let Some(r) = api.store.get_incident(id).await? {
            related.push(incident_json(r));
        }
    }
    let fingerprint = stored.as_ref().and_then(|s| s.fingerprint());
    let versions_of = versions_by_instance(&api, &incident.service).await?;
    let versions = versions(&versions_of, &incident);
    let earlier = match &fingerprint {
        Some(f) => earlier(&api, &incident, f, &versions_of).await?,
        None => Vec::new(),
    };
    Ok(Json(IncidentDetailJson {
        fingerprint,
        versions,
        earlier,
        suspect_kind: stored.as_ref().map(|s| s.kind.as_str().to_owned()),
        comparison: stored.as_ref().map(|s| s.comparison.as_str().to_owned()),
        suspects_computed: stored.as_ref().map(|s| rfc3339(s.computed_unix_nanos)),
        sick_profiles: stored.as_ref().map_or(0, |s| u64::from(s.sick_profiles)),
        comparison_profiles: stored
            .as_ref()
            .map_or(0, |s| u64::from(s.comparison_profiles)),
        suspects: stored
            .map(|s| s.suspects)
            .unwrap_or_default()
            .into_iter()
            .map(|s| Suspect {
                growth: s.sick_share - s.comparison_share,
                function: s.function,
                sick_share: s.sick_share,
                comparison_share: s.comparison_share,
            })
            .collect(),
        triggers,
        profiles: ours.into_iter().map(profile_json).collect(),
        related,
        incident: incident_json(incident),
    }))
}

/// Earlier incidents listed with an incident, at most.
const MAX_EARLIER: usize = 20;

/// The `version` label of each instance of `service`.
async fn versions_by_instance(
    api: &Api,
    service: &str,
) -> Result<HashMap<String, String>, ApiError> {
    Ok(api
        .store
        .list_instances(service)
        .await?
        .into_iter()
        .filter_map(|i| {
            let version = i.labels.get("version")?.clone();
            Some((i.instance_id, version))
        })
        .collect())
}

/// The `version` label values of an incident's instances, sorted and distinct.
fn versions(by_instance: &HashMap<String, String>, incident: &IncidentRecord) -> Vec<String> {
    let set: BTreeSet<&String> = incident
        .instances
        .iter()
        .filter_map(|i| by_instance.get(i))
        .collect();
    set.into_iter().cloned().collect()
}

/// The service's incidents with the same fingerprint that began before `incident`,
/// newest first, at most [`MAX_EARLIER`] (of the twice as many last computed, read
/// concurrently).
async fn earlier(
    api: &Api,
    incident: &IncidentRecord,
    fingerprint: &str,
    versions_of: &HashMap<String, String>,
) -> Result<Vec<EarlierIncident>, ApiError> {
    let ids = api
        .store
        .incidents_with_fingerprint(&incident.service, fingerprint, 2 * MAX_EARLIER as u64)
        .await?;
    let mut reads = tokio::task::JoinSet::new();
    for id in ids.into_iter().filter(|id| *id != incident.incident_id) {
        let store = Arc::clone(&api.store);
        reads.spawn(async move { store.get_incident(&id).await });
    }
    let mut found = Vec::new();
    while let Some(read) = reads.join_next().await {
        let read = match read {
            Ok(read) => read,
            Err(err) => {
                tracing::warn!(error = %err, "reading an earlier incident failed");
                continue;
            }
        };
        if let Some(other) = read? {
            if other.first_event_unix_nanos < incident.first_event_unix_nanos {
                found.push(other);
            }
        }
    }
    found.sort_by_key(|i| std::cmp::Reverse(i.first_event_unix_nanos));
    found.truncate(MAX_EARLIER);
    Ok(found
        .into_iter()
        .map(|other| EarlierIncident {
            versions: versions(versions_of, &other),
            first_event: rfc3339(other.first_event_unix_nanos),
            last_event: rfc3339(other.last_event_unix_nanos),
            incident_id: other.incident_id,
        })
        .collect())
}

/// The service's profiles of `kind` from before the incident ([`evidence::baseline`]).
async fn baseline(
    api: &Api,
    incident: &IncidentRecord,
    kind: ProfileKind,
) -> Result<Vec<ProfileContents>, ApiError> {
    Ok(evidence::baseline(api.store.as_ref(), incident, kind).await?)
}

/// The decoded contents of the profiles of `kind` among `profiles`
/// ([`evidence::contents_of`]).
async fn contents_of(
    api: &Api,
    profiles: &[holmes_storage::ProfileMeta],
    kind: ProfileKind,
) -> Result<Vec<ProfileContents>, ApiError> {
    Ok(evidence::contents_of(api.store.as_ref(), profiles, kind).await?)
}

/// The profiles captured for the incident's trigger events ([`evidence::profiles_of`]).
pub(super) async fn profiles_of(
    api: &Api,
    incident: &IncidentRecord,
) -> Result<Vec<holmes_storage::ProfileMeta>, ApiError> {
    Ok(evidence::profiles_of(api.store.as_ref(), incident).await?)
}

pub(super) async fn incident_of(api: &Api, incident_id: &str) -> Result<IncidentRecord, ApiError> {
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

/// An incident's flame graph.
///
/// Its profiles merged (of the kind that explains it); with `diff=controls` (or
/// `diff=baseline`), colored by growth against its healthy controls' profiles (or the
/// service's profiles from before it): red grew, blue shrank.
#[utoipa::path(
    get,
    path = "/api/v1/incidents/{incident_id}/flamegraph.svg",
    operation_id = "incident_flamegraph",
    tag = "incidents",
    params(
        ("incident_id" = String, Path, description = "Incident id: 32 lowercase hex digits"),
        ("diff" = Option<String>, Query, description = "`controls`: color by growth against the incident's healthy controls (the same moment on instances not in it); `baseline`: against the service's profiles from before it"),
    ),
    responses(
        (status = 200, description = "The flame graph", content_type = "image/svg+xml", body = String),
        (status = 400, description = "Not an incident id, or another `diff`", body = ErrorJson),
        (status = 404, description = "Unknown incident, one without profiles of its kind, or `diff=controls` without controls' profiles", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn flamegraph(
    State(api): State<Api>,
    Path(incident_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    #[derive(PartialEq)]
    enum Diff {
        None,
        Controls,
        Baseline,
    }
    let diff = match params.get("diff").map(String::as_str) {
        None => Diff::None,
        Some("controls") => Diff::Controls,
        Some("baseline") => Diff::Baseline,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "diff={other:?}: the comparisons are diff=controls and diff=baseline"
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
    let against = match diff {
        Diff::None => None,
        Diff::Baseline => Some(baseline(&api, &incident, kind).await?),
        Diff::Controls => {
            let controls = evidence::controls(api.store.as_ref(), &incident, kind).await?;
            if controls.is_empty() {
                return Err(ApiError::not_found(format!(
                    "incident {incident_id} has no {} profiles of healthy controls",
                    kind.as_str()
                )));
            }
            Some(controls)
        }
    };
    let title = format!(
        "{} {} incident {}: {} {} profiles{}",
        incident.service,
        incident.metric.as_str(),
        incident.incident_id,
        merged.len(),
        kind.as_str(),
        match (&diff, &against) {
            (Diff::Controls, Some(c)) => format!(", against {} of healthy controls", c.len()),
            (Diff::Baseline, _) => ", against the baseline".to_owned(),
            _ => String::new(),
        }
    );
    let svg = super::flamegraph::render(&title, &merged, against.as_deref());
    Ok(super::svg_response(svg))
}
