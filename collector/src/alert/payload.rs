//! What each kind of hook is sent: the generic JSON document, a Slack message, a
//! PagerDuty Events v2 event. Built once, when the alert is queued; PagerDuty's routing
//! key is added at delivery so that it never lands in the outbox file.

use holmes_storage::{IncidentRecord, Severity};
use serde_json::{json, Value};

use super::config::HookKind;
use super::AlertKind;
use crate::clock::rfc3339;

/// PagerDuty caps `payload.summary` at this many characters.
const PAGERDUTY_SUMMARY_MAX: usize = 1024;

/// The incident page of `id` under `base_url`.
pub(crate) fn incident_url(base_url: &str, id: &str) -> String {
    format!("{}/ui/incidents/{id}", base_url.trim_end_matches('/'))
}

/// The incident as the webhook (and PagerDuty's custom details) spell it.
fn incident_json(incident: &IncidentRecord) -> Value {
    json!({
        "id": incident.incident_id,
        "service": incident.service,
        "metric": incident.metric.as_str(),
        "severity": incident.severity.as_str(),
        "status": incident.status.as_str(),
        "first_event": rfc3339(incident.first_event_unix_nanos),
        "last_event": rfc3339(incident.last_event_unix_nanos),
        "resolved_at": incident.resolved_unix_nanos.map(rfc3339),
        "instances": incident.instances,
        "event_ids": incident.event_ids,
        "related": incident.related,
        "version": incident.version,
    })
}

/// One line saying what happened: `checkout: fleet incident on cpu opened (3 instances)`.
pub(crate) fn summary(kind: AlertKind, incident: &IncidentRecord) -> String {
    let instances = match incident.instances.len() {
        1 => format!("instance {}", incident.instances[0]),
        n => format!("{n} instances"),
    };
    format!(
        "{}: {} incident on {} {} ({instances})",
        incident.service,
        incident.severity.as_str(),
        incident.metric.as_str(),
        kind.as_str(),
    )
}

/// The body for a hook of `hook` kind, without secrets.
pub(crate) fn body(
    hook: HookKind,
    kind: AlertKind,
    alert_id: &str,
    incident: &IncidentRecord,
    url: &str,
    top_suspect: Option<&holmes_api::Suspect>,
) -> Value {
    match hook {
        HookKind::Webhook => json!({
            "event": kind.as_str(),
            "alert_id": alert_id,
            "incident": incident_json(incident),
            "url": url,
        }),
        HookKind::Slack => {
            let icon = match kind {
                AlertKind::Opened => ":rotating_light:",
                AlertKind::Escalated => ":fire:",
                AlertKind::Resolved => ":white_check_mark:",
            };
            json!({
                "text": format!("{icon} Holmes: {} <{url}|incident {}>", summary(kind, incident), incident.incident_id),
            })
        }
        HookKind::Pagerduty => pagerduty(kind, incident, url),
        HookKind::Alertmanager => super::alertmanager::body(kind, incident, url, top_suspect),
    }
}

fn pagerduty(kind: AlertKind, incident: &IncidentRecord, url: &str) -> Value {
    if kind == AlertKind::Resolved {
        // PagerDuty needs only the dedup key to resolve.
        return json!({
            "event_action": "resolve",
            "dedup_key": incident.incident_id,
        });
    }
    let severity = match incident.severity {
        Severity::Instance => "warning",
        Severity::Fleet => "critical",
    };
    let mut summary = format!("Holmes: {}", summary(kind, incident));
    if summary.chars().count() > PAGERDUTY_SUMMARY_MAX {
        summary = summary.chars().take(PAGERDUTY_SUMMARY_MAX).collect();
    }
    json!({
        "event_action": "trigger",
        "dedup_key": incident.incident_id,
        "payload": {
            "summary": summary,
            "source": incident.service,
            "severity": severity,
            "timestamp": rfc3339(incident.last_event_unix_nanos),
            "component": incident.metric.as_str(),
            "class": incident.severity.as_str(),
            "custom_details": incident_json(incident),
        },
        "client": "Holmes",
        "client_url": url,
        "links": [{"href": url, "text": "Incident in Holmes"}],
    })
}

/// Adds what is only known at delivery (PagerDuty's routing key).
pub(crate) fn with_routing_key(mut body: Value, routing_key: Option<&str>) -> Value {
    if let (Some(key), Some(map)) = (routing_key, body.as_object_mut()) {
        map.insert("routing_key".to_owned(), Value::String(key.to_owned()));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use holmes_proto::model::Metric;
    use holmes_storage::IncidentStatus;

    fn incident() -> IncidentRecord {
        IncidentRecord {
            incident_id: "0123456789abcdef0123456789abcdef".to_owned(),
            service: "checkout".to_owned(),
            metric: Metric::CpuPercent,
            severity: Severity::Fleet,
            status: IncidentStatus::Open,
            first_event_unix_nanos: 1_700_000_000_000_000_000,
            last_event_unix_nanos: 1_700_000_030_000_000_000,
            resolved_unix_nanos: None,
            instances: vec!["a".to_owned(), "b".to_owned()],
            event_ids: vec!["e1".to_owned(), "e2".to_owned()],
            related: vec![],
            version: 3,
        }
    }

    #[test]
    fn each_hook_gets_its_own_shape() {
        let i = incident();
        let url = incident_url("http://h:7071/", &i.incident_id);
        assert_eq!(url, format!("http://h:7071/ui/incidents/{}", i.incident_id));
        let hook = body(HookKind::Webhook, AlertKind::Escalated, "x", &i, &url, None);
        assert_eq!(hook["event"], "escalated");
        assert_eq!(hook["incident"]["first_event"], "2023-11-14T22:13:20.000Z");
        assert_eq!(hook["incident"]["instances"], json!(["a", "b"]));
        let slack = body(HookKind::Slack, AlertKind::Opened, "x", &i, &url, None);
        let text = slack["text"].as_str().unwrap();
        assert!(
            text.contains("checkout: fleet incident on cpu opened (2 instances)")
                && !text.contains('\n'),
            "{text}"
        );
        let pd = with_routing_key(
            body(HookKind::Pagerduty, AlertKind::Opened, "x", &i, &url, None),
            Some("key"),
        );
        assert_eq!(pd["routing_key"], "key");
        assert_eq!(pd["event_action"], "trigger");
        assert_eq!(pd["dedup_key"], i.incident_id.as_str());
        assert_eq!(pd["payload"]["severity"], "critical");
        assert_eq!(pd["links"][0]["href"], url.as_str());
        let resolve = body(
            HookKind::Pagerduty,
            AlertKind::Resolved,
            "x",
            &i,
            &url,
            None,
        );
        assert_eq!(resolve["event_action"], "resolve");
    }
}
