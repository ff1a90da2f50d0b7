//! What the load generator learns from the query API: when each trigger is listed in an
//! incident, and when each incident's suspects are stored.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holmes_cli::api_client::{ApiClient, ClientOptions};

use super::{Cli, Tally};

/// What [`watch_incidents`] saw.
#[derive(Default)]
pub(crate) struct Watched {
    /// Trigger sent → listed in an incident.
    pub(crate) to_incident: Vec<Duration>,
    /// Trigger sent → listed in an incident, for triggers sent during the warm-up.
    pub(crate) warmup_to_incident: Vec<Duration>,
    /// Triggers never listed.
    pub(crate) missing: usize,
    /// An incident's first trigger sent → its suspects stored.
    pub(crate) to_suspects: Vec<Duration>,
    /// Incidents whose suspects were never stored.
    pub(crate) without_suspects: usize,
    /// Incidents seen.
    pub(crate) incidents: usize,
    /// Captures skipped by the budget, summed over the incidents.
    pub(crate) skipped_captures: u64,
}

/// Polls the query API until every trigger sent is listed in an incident and every
/// incident has its suspects (or the run and its grace period end).
pub(crate) async fn watch_incidents(
    cli: Arc<Cli>,
    services: Vec<String>,
    tally: Arc<Mutex<Tally>>,
    since: String,
    sending_until: Instant,
    warm_from: Instant,
) -> anyhow::Result<Watched> {
    let client = ApiClient::with_options(
        &cli.query,
        &ClientOptions {
            token: cli.api_token.clone(),
            ..ClientOptions::default()
        },
    )?;
    let mut seen: HashSet<String> = HashSet::new();
    let (mut latencies, mut warming) = (Vec::new(), Vec::new());
    // Incident id → when its first trigger was sent, until its suspects are stored.
    let mut awaiting: HashMap<String, Instant> = HashMap::new();
    let mut ready: HashSet<String> = HashSet::new();
    let mut to_suspects = Vec::new();
    let mut skipped: HashMap<String, u64> = HashMap::new();
    let give_up = sending_until + cli.grace;
    loop {
        for service in &services {
            let list = match client.incidents(Some(service), &since, None).await {
                Ok(list) => list,
                Err(err) => {
                    tracing::warn!(service, error = %err, "cannot list incidents");
                    continue;
                }
            };
            let now = Instant::now();
            let t = tally.lock().unwrap_or_else(|p| p.into_inner());
            for incident in &list.incidents {
                skipped.insert(incident.incident_id.clone(), incident.skipped_captures);
                for id in &incident.event_ids {
                    let Some((_, at)) = t.sent.get(id) else {
                        continue;
                    };
                    if !seen.contains(id) {
                        let latency = now.saturating_duration_since(*at);
                        if *at < warm_from {
                            warming.push(latency);
                        } else {
                            latencies.push(latency);
                        }
                        seen.insert(id.clone());
                    }
                    if !ready.contains(&incident.incident_id) {
                        let first = awaiting.entry(incident.incident_id.clone()).or_insert(*at);
                        *first = (*first).min(*at);
                    }
                }
            }
        }
        let pending: Vec<(String, Instant)> =
            awaiting.iter().map(|(id, at)| (id.clone(), *at)).collect();
        for (id, first) in pending {
            match client.incident(&id).await {
                Ok(detail) if detail.suspects_computed.is_some() => {
                    to_suspects.push(first.elapsed());
                    awaiting.remove(&id);
                    ready.insert(id);
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(incident = %id, error = %err, "cannot read the incident")
                }
            }
        }
        let missing = {
            let t = tally.lock().unwrap_or_else(|p| p.into_inner());
            t.sent.keys().filter(|id| !seen.contains(*id)).count()
        };
        let done = missing == 0 && awaiting.is_empty();
        if Instant::now() >= give_up || (Instant::now() >= sending_until && done) {
            return Ok(Watched {
                to_incident: latencies,
                warmup_to_incident: warming,
                missing,
                to_suspects,
                without_suspects: awaiting.len(),
                incidents: skipped.len(),
                skipped_captures: skipped.values().sum(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
