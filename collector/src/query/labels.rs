//! Incidents filtered by their instances' labels: `?label=key=value` (repeatable; all
//! must match), e.g. the Kubernetes labels agents fill from the Downward API
//! (`k8s.namespace.name`, `k8s.pod.name`, `k8s.node.name`, `k8s.deployment.name`,
//! `service.version`). An incident matches when one of its instances carries every
//! label asked for.

use std::collections::{BTreeSet, HashMap};

use holmes_storage::IncidentRecord;

use super::Api;
use crate::error::ApiError;

/// The `label=key=value` parameters of a query string.
pub(super) fn filters(params: &HashMap<String, String>) -> Result<Vec<(String, String)>, ApiError> {
    // `Query<HashMap>` keeps one value per key; labels arrive one per parameter, so a
    // repeated `label` is split on `,` as well.
    let Some(raw) = params.get("label") else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "label {pair:?}: expected key=value, e.g. label=k8s.namespace.name=shop"
                    ))
                })
        })
        .collect()
}

/// The first `limit` of `incidents` with an instance carrying all `labels`.
pub(super) async fn matching(
    api: &Api,
    incidents: Vec<IncidentRecord>,
    labels: &[(String, String)],
    limit: u64,
) -> Result<Vec<IncidentRecord>, ApiError> {
    if labels.is_empty() {
        return Ok(incidents);
    }
    let mut by_service: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut out = Vec::new();
    for incident in incidents {
        if !by_service.contains_key(&incident.service) {
            let matching = api
                .store
                .list_instances(&incident.service)
                .await?
                .into_iter()
                .filter(|i| labels.iter().all(|(k, v)| i.labels.get(k) == Some(v)))
                .map(|i| i.instance_id)
                .collect();
            by_service.insert(incident.service.clone(), matching);
        }
        let matching = &by_service[&incident.service];
        if incident.instances.iter().any(|i| matching.contains(i)) {
            out.push(incident);
            if out.len() as u64 >= limit {
                break;
            }
        }
    }
    Ok(out)
}
