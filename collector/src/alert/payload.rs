//! What each kind of hook is sent: the generic JSON document, a Slack message, a
//! PagerDuty Events v2 event. Built once, when the alert is queued; PagerDuty's routing
//! key is added at delivery so that it never lands in the outbox file. Each carries the
//! incident's suspects as last computed: the webhook and PagerDuty's custom details the
//! top ones with their evidence, Slack's line the top one
//! (`top suspect: crate::module::function (61% of CPU vs 2% on healthy instances)`).

use holmes_proto::ProfileKind;
use holmes_storage::{Comparison, IncidentRecord, IncidentSuspects, Severity};
use serde_json::{json, Value};

use super::config::HookKind;
use super::AlertKind;
use crate::clock::rfc3339;

/// PagerDuty caps `payload.summary` at this many characters.
const PAGERDUTY_SUMMARY_MAX: usize = 1024;
/// Suspects an alert carries, at most.
pub(crate) const ALERT_SUSPECTS: usize = 3;

/// What a share is of, for people: `CPU`, `in-use memory`, `threads`, `tasks`.
fn share_of(kind: ProfileKind) -> &'static str {
    match kind {
        ProfileKind::Cpu => "CPU",
        ProfileKind::Heap => "in-use memory",
        ProfileKind::Threads => "threads",
        ProfileKind::Tasks => "tasks",
    }
}

/// The top suspect with its evidence, in words:
/// `crate::module::function (61% of CPU vs 2% on healthy instances)`.
pub(crate) fn top_suspect(suspects: &IncidentSuspects) -> Option<String> {
    let top = suspects.suspects.first()?;
    let sick = 100.0 * top.sick_share;
    let other = 100.0 * top.comparison_share;
    let of = share_of(suspects.kind);
    Some(match suspects.comparison {
        Comparison::Controls => format!(
            "{} ({sick:.0}% of {of} vs {other:.0}% on healthy instances)",
            top.function
        ),
        Comparison::Baselines => format!(
            "{} ({sick:.0}% of {of} vs {other:.0}% before the incident)",
            top.function
        ),
        Comparison::None => format!(
            "{} ({sick:.0}% of {of}; nothing to compare with)",
            top.function
        ),
    })
}

/// The suspects as the webhook (and PagerDuty's custom details) spell them.
fn suspects_json(suspects: &IncidentSuspects) -> Value {
    json!({
        "kind": suspects.kind.as_str(),
        "comparison": suspects.comparison.as_str(),
        "sick_profiles": suspects.sick_profiles,
        "comparison_profiles": suspects.comparison_profiles,
        "computed_at": rfc3339(suspects.computed_unix_nanos),
        "top": suspects.suspects.iter().take(ALERT_SUSPECTS).map(|s| json!({
            "function": s.function,
            "sick_share": s.sick_share,
            "comparison_share": s.comparison_share,
            "growth": s.sick_share - s.comparison_share,
        })).collect::<Vec<_>>(),
    })
}

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
    let what = match kind {
        AlertKind::Suspects => "named its top suspect",
        other => other.as_str(),
    };
    let instances = match incident.instances.len() {
        1 => format!("instance {}", incident.instances[0]),
        n => format!("{n} instances"),
    };
    format!(
        "{}: {} incident on {} {} ({instances})",
        incident.service,
        incident.severity.as_str(),
        incident.metric.as_str(),
        what,
    )
}

/// [`summary`], then the top suspect if there is one.
fn summary_with_suspect(
    kind: AlertKind,
    incident: &IncidentRecord,
    suspects: Option<&IncidentSuspects>,
) -> String {
    let mut line = summary(kind, incident);
    if let Some(top) = suspects.and_then(top_suspect) {
        line.push_str(" — top suspect: ");
        line.push_str(&top);
    }
    line
}

/// The body for a hook of `hook` kind, without secrets.
pub(crate) fn body(
    hook: HookKind,
    kind: AlertKind,
    alert_id: &str,
    incident: &IncidentRecord,
    url: &str,
    suspects: Option<&IncidentSuspects>,
) -> Value {
    match hook {
        HookKind::Webhook => json!({
            "event": kind.as_str(),
            "alert_id": alert_id,
            "incident": incident_json(incident),
            "suspects": suspects.map(suspects_json),
            "top_suspect": suspects.and_then(top_suspect),
            "url": url,
        }),
        HookKind::Slack => {
            let icon = match kind {
                AlertKind::Opened => ":rotating_light:",
                AlertKind::Escalated => ":fire:",
                AlertKind::Resolved => ":white_check_mark:",
                AlertKind::Suspects => ":mag:",
            };
            let suspect = suspects
                .and_then(top_suspect)
                .map(|top| format!(" — top suspect: {top}"))
                .unwrap_or_default();
            json!({
                "text": format!("{icon} Holmes: {} <{url}|incident {}>{suspect}", summary(kind, incident), incident.incident_id),
            })
        }
        HookKind::Pagerduty => pagerduty(kind, incident, url, suspects),
        HookKind::Alertmanager => super::alertmanager::body(
            kind,
            incident,
            url,
            suspects.and_then(top_suspect).as_deref(),
        ),
    }
}

fn pagerduty(
    kind: AlertKind,
    incident: &IncidentRecord,
    url: &str,
    suspects: Option<&IncidentSuspects>,
) -> Value {
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
    let mut summary = format!("Holmes: {}", summary_with_suspect(kind, incident, suspects));
    if summary.chars().count() > PAGERDUTY_SUMMARY_MAX {
        summary = summary.chars().take(PAGERDUTY_SUMMARY_MAX).collect();
    }
    let mut details = incident_json(incident);
    details["suspects"] = suspects.map_or(Value::Null, suspects_json);
    details["top_suspect"] = suspects
        .and_then(top_suspect)
        .map_or(Value::Null, Value::String);
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
            "custom_details": details,
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
            skipped_captures: 0,
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
