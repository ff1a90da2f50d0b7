//! The exactly-once checks: what the honest agents sent against what the collector's
//! API lists (triggers, profiles, incidents) and what the alert receiver got.

use std::collections::{BTreeMap, BTreeSet};

use holmes_api::{IncidentsJson, ProfilesJson, TriggersJson};
use holmes_cli::api_client::ApiClient;

use super::honest::Ledger;
use super::receiver::Alert;

/// Counts of what arrived, and what is wrong.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Honest triggers listed exactly once.
    pub triggers_once: usize,
    /// Honest profiles listed exactly once, decoded (no error) and of the size sent.
    pub profiles_once: usize,
    /// Honest triggers in exactly one incident.
    pub triggers_in_one_incident: usize,
    /// Incidents of the honest services.
    pub incidents: usize,
    /// Of them resolved.
    pub resolved: usize,
    /// Alerts received about them.
    pub alerts: usize,
    /// Alerts received in all (hostile services' included).
    pub alerts_all: usize,
    /// Every item lost, duplicated or wrong, one line each (the first 50).
    pub problems: Vec<String>,
    /// How many problems in all.
    pub problem_count: usize,
}

impl Verdict {
    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < 50 {
            self.problems.push(p);
        }
    }
}

/// Checks what `ledger` says was sent against the API and the `alerts` received.
pub async fn check(
    api: &ApiClient,
    services: &[String],
    since: &str,
    ledger: &Ledger,
    alerts: &[Alert],
) -> anyhow::Result<Verdict> {
    let mut v = Verdict {
        alerts_all: alerts.len(),
        ..Verdict::default()
    };
    let mut listed_triggers: BTreeMap<String, usize> = BTreeMap::new();
    let mut listed_profiles: BTreeMap<String, Vec<(Option<String>, u64)>> = BTreeMap::new();
    let mut in_incidents: BTreeMap<String, usize> = BTreeMap::new();
    let mut incidents: BTreeMap<String, String> = BTreeMap::new();
    for service in services {
        let q = format!("since={since}&limit=100000");
        let t: TriggersJson = api
            .get(&format!("/api/v1/services/{service}/triggers?{q}"))
            .await?;
        for trigger in t.triggers {
            *listed_triggers.entry(trigger.event_id).or_default() += 1;
        }
        let p: ProfilesJson = api
            .get(&format!("/api/v1/services/{service}/profiles?{q}"))
            .await?;
        for profile in p.profiles {
            listed_profiles
                .entry(profile.profile_id)
                .or_default()
                .push((profile.error, profile.size_bytes));
        }
        let i: IncidentsJson = api
            .get(&format!("/api/v1/services/{service}/incidents?{q}"))
            .await?;
        for incident in i.incidents {
            for id in &incident.event_ids {
                *in_incidents.entry(id.clone()).or_default() += 1;
            }
            if incident.resolved.is_some() {
                v.resolved += 1;
            }
            incidents.insert(incident.incident_id, incident.status);
        }
    }
    v.incidents = incidents.len();
    for (id, service) in &ledger.triggers {
        match listed_triggers.get(id).copied().unwrap_or(0) {
            1 => v.triggers_once += 1,
            n => v.problem(format!("trigger {id} of {service} listed {n} times")),
        }
        match in_incidents.get(id).copied().unwrap_or(0) {
            1 => v.triggers_in_one_incident += 1,
            n => v.problem(format!("trigger {id} of {service} in {n} incidents")),
        }
    }
    for id in listed_triggers
        .keys()
        .filter(|id| !ledger.triggers.contains_key(*id))
    {
        v.problem(format!("trigger {id} listed but never sent"));
    }
    for (id, (service, bytes)) in &ledger.profiles {
        match listed_profiles
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            [(None, size)] if size == bytes => v.profiles_once += 1,
            [(Some(error), _)] => v.problem(format!("profile {id} of {service} refused: {error}")),
            [(None, size)] => v.problem(format!(
                "profile {id} of {service}: {size} bytes listed, {bytes} sent"
            )),
            listed => v.problem(format!(
                "profile {id} of {service} listed {} times",
                listed.len()
            )),
        }
    }
    for id in listed_profiles
        .keys()
        .filter(|id| !ledger.profiles.contains_key(*id))
    {
        v.problem(format!("profile {id} listed but never sent"));
    }
    // Alerts: no alert twice; each honest incident opened once, and resolved once if
    // it is resolved.
    let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
    for a in alerts {
        *by_id.entry(a.alert_id.as_str()).or_default() += 1;
    }
    for (id, n) in by_id.iter().filter(|(_, n)| **n > 1) {
        v.problem(format!("alert {id} received {n} times"));
    }
    let mut by_incident: BTreeMap<&str, Vec<&Alert>> = BTreeMap::new();
    for a in alerts.iter().filter(|a| services.contains(&a.service)) {
        by_incident.entry(a.incident.as_str()).or_default().push(a);
        v.alerts += 1;
    }
    for (incident, status) in &incidents {
        let got = by_incident.remove(incident.as_str()).unwrap_or_default();
        let count = |event: &str| got.iter().filter(|a| a.event == event).count();
        if count("opened") != 1 {
            v.problem(format!(
                "incident {incident}: {} opened alerts",
                count("opened")
            ));
        }
        let resolved_alerts = count("resolved");
        let want = usize::from(status == "resolved");
        if resolved_alerts != want {
            v.problem(format!(
                "incident {incident} ({status}): {resolved_alerts} resolved alerts"
            ));
        }
    }
    let unknown: BTreeSet<&str> = by_incident.keys().copied().collect();
    for incident in unknown {
        v.problem(format!(
            "alerts about incident {incident}, which the API does not list"
        ));
    }
    Ok(v)
}
