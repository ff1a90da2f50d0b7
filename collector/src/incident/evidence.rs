//! An incident's evidence read from the store: its profiles, those of the kind that
//! explains it, and the service's baseline profiles from before it — what its suspects
//! are computed from, for the API's detail and for the alerts that carry the top suspect.

use std::collections::BTreeSet;

use holmes_api::Suspect;
use holmes_proto::{Metric, ProfileKind};
use holmes_storage::{
    IncidentRecord, ProfileContents, ProfileMeta, ProfileQuery, Store, StoreError,
};

/// Profiles merged per side (incident, baseline) for the suspects, at most.
pub const MAX_MERGED_PROFILES: usize = 50;
/// How long before an incident its baseline profiles are looked for.
pub const BASELINE_SPAN_SECS: u64 = 6 * 3600;

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

/// The incident's top suspect now, if its profiles are in.
pub async fn top_suspect(
    store: &dyn Store,
    incident: &IncidentRecord,
) -> Result<Option<Suspect>, StoreError> {
    let kind = kind_for(incident.metric);
    let merged = contents_of(store, &profiles_of(store, incident).await?, kind).await?;
    if merged.is_empty() {
        return Ok(None);
    }
    let baseline = baseline(store, incident, kind).await?;
    Ok(super::suspects::suspects(&merged, &baseline, 1)
        .into_iter()
        .next())
}
