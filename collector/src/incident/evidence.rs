//! An incident's evidence read from the store: its profiles, those of the kind that
//! explains it, the profiles of the healthy controls captured for it and the service's
//! baseline profiles from before it — what its suspects are computed from ([`compute`])
//! when it changes, to be stored with it.

use std::collections::BTreeSet;

use holmes_proto::{CapturePurpose, Metric, ProfileKind};
use holmes_storage::{
    CaptureRequestQuery, Comparison, IncidentRecord, IncidentSuspects, ProfileContents,
    ProfileMeta, ProfileQuery, Store, StoreError, TriggerQuery,
};

/// Profiles merged per side (incident, baseline) for the suspects, at most.
pub const MAX_MERGED_PROFILES: usize = 50;
/// How long before an incident its baseline profiles are looked for.
pub const BASELINE_SPAN_SECS: u64 = 6 * 3600;
/// Suspects stored per incident, at most.
pub const STORED_SUSPECTS: usize = 10;

const SEC: u64 = 1_000_000_000;

/// The profile kind that explains an incident of `metric`.
pub fn kind_for(metric: Metric) -> ProfileKind {
    match metric {
        Metric::CpuPercent | Metric::CpuThrottledPercent => ProfileKind::Cpu,
        Metric::Threads => ProfileKind::Threads,
        Metric::Tasks => ProfileKind::Tasks,
        _ => ProfileKind::Heap,
    }
}

/// The profiles captured for the incident's trigger events.
pub async fn profiles_of(
    store: &dyn Store,
    incident: &IncidentRecord,
) -> Result<Vec<ProfileMeta>, StoreError> {
    let events: BTreeSet<&str> = incident.event_ids.iter().map(String::as_str).collect();
    // Captures start up to the flight recorder's window before their trigger and may
    // run a while after it.
    let listed = store
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

/// The decoded contents of the profiles of `kind` among `profiles` (failed captures
/// left out), at most [`MAX_MERGED_PROFILES`].
pub async fn contents_of(
    store: &dyn Store,
    profiles: &[ProfileMeta],
    kind: ProfileKind,
) -> Result<Vec<ProfileContents>, StoreError> {
    let Some(service) = profiles.first().map(|p| p.service.clone()) else {
        return Ok(Vec::new());
    };
    let ids: Vec<String> = profiles
        .iter()
        .filter(|p| p.kind == kind && p.error.is_none())
        .take(MAX_MERGED_PROFILES)
        .map(|p| p.profile_id.clone())
        .collect();
    read_contents(store, &service, &ids).await
}

/// Profiles of the same service and kind from the hours before the incident (not of
/// any incident's first minutes): what normal looked like — the agents' periodic
/// baselines, continuous profiles from Pyroscope and OTLP clients, earlier captures.
pub async fn baseline(
    store: &dyn Store,
    incident: &IncidentRecord,
    kind: ProfileKind,
) -> Result<Vec<ProfileContents>, StoreError> {
    let before = incident.first_event_unix_nanos.saturating_sub(120 * SEC);
    let listed = store
        .query_profiles(&ProfileQuery {
            service: incident.service.clone(),
            event_id: None,
            kind: Some(kind),
            since_unix_nanos: before.saturating_sub(BASELINE_SPAN_SECS * SEC),
            until_unix_nanos: before,
            limit: 10_000,
        })
        .await?;
    let ids: Vec<String> = listed
        .iter()
        .rev()
        .filter(|p| p.error.is_none())
        .take(MAX_MERGED_PROFILES)
        .map(|p| p.profile_id.clone())
        .collect();
    read_contents(store, &incident.service, &ids).await
}

/// The contents of the profiles `ids` of `service`, read together (their stacks and
/// locations fetched once).
async fn read_contents(
    store: &dyn Store,
    service: &str,
    ids: &[String],
) -> Result<Vec<ProfileContents>, StoreError> {
    Ok(store
        .get_profiles(service, ids)
        .await?
        .into_iter()
        .filter_map(|p| p.contents)
        .collect())
}

/// The profiles captured for the incident's healthy controls (capture requests of
/// purpose control for it, answered by instances that are not among its sick ones), of
/// `kind`, at most [`MAX_MERGED_PROFILES`].
pub async fn controls(
    store: &dyn Store,
    incident: &IncidentRecord,
    kind: ProfileKind,
) -> Result<Vec<ProfileContents>, StoreError> {
    let since = incident.first_event_unix_nanos.saturating_sub(120 * SEC);
    let until = incident.last_event_unix_nanos.saturating_add(600 * SEC);
    let requests: BTreeSet<String> = store
        .capture_requests(&CaptureRequestQuery {
            service: Some(incident.service.clone()),
            since_unix_nanos: since,
            until_unix_nanos: until,
            limit: 10_000,
        })
        .await?
        .into_iter()
        .filter(|r| {
            r.purpose == CapturePurpose::Control
                && r.incident_id.as_deref() == Some(incident.incident_id.as_str())
        })
        .map(|r| r.request_id)
        .collect();
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let events: BTreeSet<String> = store
        .query_triggers(&TriggerQuery {
            service: incident.service.clone(),
            metric: None,
            since_unix_nanos: since,
            until_unix_nanos: until,
            limit: 100_000,
        })
        .await?
        .into_iter()
        .filter(|t| {
            t.request_id.as_ref().is_some_and(|r| requests.contains(r))
                && !incident.instances.contains(&t.instance_id)
        })
        .map(|t| t.event_id)
        .collect();
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = store
        .query_profiles(&ProfileQuery {
            service: incident.service.clone(),
            event_id: None,
            kind: Some(kind),
            since_unix_nanos: since,
            until_unix_nanos: until,
            limit: 10_000,
        })
        .await?
        .into_iter()
        .filter(|p| p.error.is_none() && events.contains(&p.event_id))
        .take(MAX_MERGED_PROFILES)
        .map(|p| p.profile_id)
        .collect();
    read_contents(store, &incident.service, &ids).await
}

/// The incident's suspects from what the store holds now, computed at `now` (collector
/// time): the sick instances' profiles of the kind that explains it against its
/// controls, else the baselines, else nothing. `None` while no sick profile of that
/// kind is stored.
pub async fn compute(
    store: &dyn Store,
    incident: &IncidentRecord,
    now_unix_nanos: u64,
) -> Result<Option<IncidentSuspects>, StoreError> {
    let kind = kind_for(incident.metric);
    let sick = contents_of(store, &profiles_of(store, incident).await?, kind).await?;
    if sick.is_empty() {
        return Ok(None);
    }
    let controls = controls(store, incident, kind).await?;
    let (comparison, against) = if controls.is_empty() {
        let baseline = baseline(store, incident, kind).await?;
        if baseline.is_empty() {
            (Comparison::None, baseline)
        } else {
            (Comparison::Baselines, baseline)
        }
    } else {
        (Comparison::Controls, controls)
    };
    let suspects = super::suspects::suspects(&sick, &against, STORED_SUSPECTS);
    Ok(Some(IncidentSuspects {
        incident_id: incident.incident_id.clone(),
        service: incident.service.clone(),
        kind,
        comparison,
        sick_profiles: u32::try_from(sick.len()).unwrap_or(u32::MAX),
        comparison_profiles: u32::try_from(against.len()).unwrap_or(u32::MAX),
        computed_unix_nanos: now_unix_nanos,
        suspects,
    }))
}
