//! After the run, on-call looks at what the hostile clients left: every incident of a
//! hostile service with its suspects and its flame graph, and the flame graph and top
//! functions of every profile the collector stored for them — what the page shows.
//! Whatever they stored must not cost the collector more than the memory bound to show.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use holmes_api::{IncidentsJson, ProfilesJson};
use holmes_cli::api_client::ApiClient;

/// What the looking cost.
#[derive(Debug, Default, Clone)]
pub struct Looked {
    /// Requests made, by what was asked.
    pub asked: BTreeMap<String, u64>,
    /// Answers that were neither a success nor a 404 (or never came within a minute),
    /// one line each.
    pub failed: Vec<String>,
    /// The slowest answer.
    pub slowest: Duration,
}

async fn ask(api: &ApiClient, what: &str, path: &str, looked: &mut Looked) {
    *looked.asked.entry(what.to_owned()).or_default() += 1;
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(60), api.get_raw(path)).await {
        Ok(Ok(_)) => {}
        // Nothing to show (an incident without profiles of its kind) is an answer.
        Ok(Err(holmes_cli::api_client::ApiClientError::Api { status: 404, .. })) => {
            *looked
                .asked
                .entry(format!("{what}: nothing to show (404)"))
                .or_default() += 1;
        }
        Ok(Err(err)) => looked.failed.push(format!("{path}: {err}")),
        Err(_) => looked.failed.push(format!("{path}: no answer within 60 s")),
    }
    looked.slowest = looked.slowest.max(started.elapsed());
}

/// Opens every incident and stored profile of `services` since `since`.
pub async fn look(api: &ApiClient, services: &[String], since: &str) -> anyhow::Result<Looked> {
    let mut looked = Looked::default();
    for service in services {
        let q = format!("since={since}&limit=100000");
        let incidents: IncidentsJson = api
            .get(&format!("/api/v1/services/{service}/incidents?{q}"))
            .await?;
        for incident in &incidents.incidents {
            let id = &incident.incident_id;
            ask(
                api,
                "incident with suspects",
                &format!("/api/v1/incidents/{id}"),
                &mut looked,
            )
            .await;
            ask(
                api,
                "incident flame graph",
                &format!("/api/v1/incidents/{id}/flamegraph.svg"),
                &mut looked,
            )
            .await;
        }
        let profiles: ProfilesJson = api
            .get(&format!("/api/v1/services/{service}/profiles?{q}"))
            .await?;
        for profile in profiles.profiles.iter().filter(|p| p.error.is_none()) {
            let base = format!("/api/v1/services/{service}/profiles/{}", profile.profile_id);
            ask(
                api,
                "profile flame graph",
                &format!("{base}/flamegraph.svg"),
                &mut looked,
            )
            .await;
            ask(
                api,
                "profile top functions",
                &format!("{base}/top"),
                &mut looked,
            )
            .await;
        }
    }
    Ok(looked)
}
