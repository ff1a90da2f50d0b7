//! What an `alertmanager` hook posts to Alertmanager's `POST /api/v2/alerts`: the
//! incident as alerts, so Alertmanager's routing, grouping, silences and inhibition
//! apply to Holmes incidents.
//!
//! Labels (an alert's identity): `alertname="HolmesIncident"`, `service`, `metric`,
//! `severity` (`instance` or `fleet`) and `fingerprint` (the incident id). Annotations:
//! `summary`, `description`, `incident_id`, `incident_url`, and `top_suspect` (the
//! function with its evidence: `checkout::render (61% of CPU vs 2% on healthy
//! instances)`) once the incident's suspects are computed (at open a CPU capture is
//! often still running; the alert sent when they name a culprit carries it, and every
//! later one). `startsAt` is the incident's
//! first event, `generatorURL` its page. A firing alert carries `endsAt` = now +
//! [`FIRING_FOR`], so one whose resolve never comes (a collector gone for good) still
//! ends; the resolve sets `endsAt` to the moment the incident resolved. When an incident
//! escalates, its `severity` label changes, which is a new alert to Alertmanager: the
//! escalation resolves the `instance` one and fires the `fleet` one.

use std::time::Duration;

use holmes_storage::{IncidentRecord, Severity};
use serde_json::{json, Value};

use super::AlertKind;
use crate::clock::{rfc3339, unix_nanos_now};

/// How long a firing alert lasts in Alertmanager unless sent again or resolved.
pub const FIRING_FOR: Duration = Duration::from_secs(24 * 3600);

/// The `alertname` of every Holmes alert (Holmes ignores it when it comes back to
/// `/api/v1/alertmanager`).
pub const ALERTNAME: &str = crate::ingest::alertmanager::HOLMES_ALERTNAME;

fn alert(
    incident: &IncidentRecord,
    severity: Severity,
    ends_at: u64,
    summary: &str,
    url: &str,
    top: Option<&str>,
) -> Value {
    let mut alert = json!({
        "labels": {
            "alertname": ALERTNAME,
            "service": incident.service,
            "metric": incident.metric.as_str(),
            "severity": severity.as_str(),
            "fingerprint": incident.incident_id,
        },
        "annotations": {
            "summary": summary,
            "description": format!(
                "Holmes {} incident on {} of {}: instances {}",
                severity.as_str(),
                incident.metric.as_str(),
                incident.service,
                incident.instances.join(", ")
            ),
            "incident_id": incident.incident_id,
            "incident_url": url,
        },
        "startsAt": rfc3339(incident.first_event_unix_nanos),
        "endsAt": rfc3339(ends_at),
        "generatorURL": url,
    });
    if let Some(top) = top {
        alert["annotations"]["top_suspect"] = Value::String(top.to_owned());
    }
    alert
}

/// The alerts (a JSON array) for this change of `incident`.
pub(crate) fn body(
    kind: AlertKind,
    incident: &IncidentRecord,
    url: &str,
    top: Option<&str>,
) -> Value {
    let now = unix_nanos_now();
    let firing_until = now.saturating_add(u64::try_from(FIRING_FOR.as_nanos()).unwrap_or(u64::MAX));
    let summary = format!("Holmes: {}", super::payload::summary(kind, incident));
    match kind {
        AlertKind::Opened | AlertKind::Suspects => json!([alert(
            incident,
            incident.severity,
            firing_until,
            &summary,
            url,
            top
        )]),
        AlertKind::Escalated => json!([
            alert(incident, Severity::Instance, now, &summary, url, top),
            alert(incident, Severity::Fleet, firing_until, &summary, url, top),
        ]),
        AlertKind::Resolved => {
            let at = incident.resolved_unix_nanos.unwrap_or(now);
            json!([alert(incident, incident.severity, at, &summary, url, top)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holmes_proto::Metric;
    use holmes_storage::IncidentStatus;

    #[test]
    fn escalation_ends_the_instance_alert_and_fires_the_fleet_one() {
        let mut i = IncidentRecord {
            incident_id: "0123456789abcdef0123456789abcdef".to_owned(),
            service: "checkout".to_owned(),
            metric: Metric::CpuPercent,
            severity: Severity::Fleet,
            status: IncidentStatus::Open,
            first_event_unix_nanos: 1_700_000_000_000_000_000,
            last_event_unix_nanos: 1_700_000_030_000_000_000,
            resolved_unix_nanos: None,
            instances: vec!["a".to_owned(), "b".to_owned()],
            event_ids: vec![],
            related: vec![],
            skipped_captures: 0,
            version: 2,
        };
        let b = body(AlertKind::Escalated, &i, "http://h/ui/incidents/x", None);
        assert_eq!(b[0]["labels"]["severity"], "instance");
        assert_eq!(b[1]["labels"]["severity"], "fleet");
        assert_eq!(b[1]["labels"]["fingerprint"], i.incident_id.as_str());
        assert_eq!(b[1]["startsAt"], "2023-11-14T22:13:20.000Z");
        assert!(b[0]["endsAt"].as_str() < b[1]["endsAt"].as_str());
        i.status = IncidentStatus::Resolved;
        i.resolved_unix_nanos = Some(1_700_000_400_000_000_000);
        let top = "checkout::render (80% of CPU vs 10% on healthy instances)";
        let r = body(AlertKind::Resolved, &i, "u", Some(top));
        assert_eq!(r[0]["annotations"]["top_suspect"], top);
        assert_eq!(r[0]["endsAt"], "2023-11-14T22:20:00.000Z");
        assert_eq!(r.as_array().unwrap().len(), 1);
    }
}
