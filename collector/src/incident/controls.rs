//! Healthy controls for a new incident: up to `[incidents] controls_per_incident` live
//! instances of its service that are not in it are asked, through the capture-request
//! machinery ([`Control::request_capture`], which reaches agents on every node, Kafka
//! topology included), for the profile kind that explains the incident, with purpose
//! control and the incident's id. For CPU, each sends its flight recorder's samples of
//! the sick instance's pre-trigger window, so sick and healthy are compared over the same
//! seconds. Their profiles are the comparison side of the suspects ([`super::evidence`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use holmes_proto::{CapturePurpose, ProfileKind, TimeWindow};
use holmes_storage::{IncidentRecord, MetricQuery, Store, TriggerQuery};

use super::evidence::kind_for;
use crate::clock::unix_nanos_now;
use crate::control::capture::CaptureAsk;
use crate::control::Control;

/// Default `[incidents] controls_per_incident`.
pub const DEFAULT_CONTROLS_PER_INCIDENT: usize = 3;
/// `[incidents] controls_per_incident` at most.
pub const MAX_CONTROLS_PER_INCIDENT: usize = 20;
/// The sick instances' pre-trigger window a CPU control covers: the flight recorder's
/// seconds before the incident's first trigger (the agent's default pre-trigger window).
pub const PRE_TRIGGER: Duration = Duration::from_secs(10);
/// An instance is live if the collector heard from it this recently.
pub const LIVE_WITHIN: Duration = Duration::from_secs(120);

/// The id of the control request of `incident_id` to `instance`: 32 lowercase hex digits,
/// the same every time (asking again after a restart asks the same request).
pub fn request_id(incident_id: &str, instance: &str) -> String {
    let hash = |seed: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in b"control"
            .iter()
            .chain([0xff].iter())
            .chain(incident_id.as_bytes())
            .chain([0xff].iter())
            .chain(instance.as_bytes())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    format!("{:016x}{:016x}", hash(0), hash(0x9e37_79b9_7f4a_7c15))
}

/// The flight-recorder window a CPU control covers: [`PRE_TRIGGER`] up to the
/// incident's first trigger.
pub fn window_of(incident: &IncidentRecord) -> TimeWindow {
    let pre = u64::try_from(PRE_TRIGGER.as_nanos()).unwrap_or(u64::MAX);
    TimeWindow {
        start_unix_nanos: incident.first_event_unix_nanos.saturating_sub(pre),
        end_unix_nanos: incident.first_event_unix_nanos,
    }
}

/// The instances to ask: live ones of the service, not in the incident, that look
/// healthy at its moment — their metric over the window up to now stays below half-way
/// from the sick instances' level before the spike (the lowest of their points since
/// the window began) to their highest (their points and their triggers' values): an
/// instance about to fire as well is not a control. For a metric that idles near zero
/// (CPU) that is about half the sick level; for one every instance holds high (memory,
/// heap) it is half of the growth above that level. Without points of the sick
/// instances, half their triggers' values. At most `n`, the calmest first (then by
/// instance id).
pub async fn pick(
    store: &dyn Store,
    incident: &IncidentRecord,
    n: usize,
) -> Result<Vec<String>, holmes_storage::StoreError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let now = unix_nanos_now();
    let live_since = now.saturating_sub(u64::try_from(LIVE_WITHIN.as_nanos()).unwrap_or(u64::MAX));
    let live: Vec<String> = store
        .list_instances(&incident.service)
        .await?
        .into_iter()
        .filter(|i| {
            i.last_seen_unix_nanos >= live_since && !incident.instances.contains(&i.instance_id)
        })
        .map(|i| i.instance_id)
        .collect();
    if live.is_empty() {
        return Ok(live);
    }
    let points = store
        .query_metrics(&MetricQuery {
            service: incident.service.clone(),
            metric: incident.metric,
            since_unix_nanos: window_of(incident).start_unix_nanos,
            until_unix_nanos: now.saturating_add(1),
            limit: 100_000,
        })
        .await?;
    let mut highest: HashMap<&str, f64> = HashMap::new();
    let mut lowest: HashMap<&str, f64> = HashMap::new();
    for p in &points {
        let h = highest.entry(p.instance_id.as_str()).or_insert(f64::MIN);
        *h = h.max(p.value);
        let l = lowest.entry(p.instance_id.as_str()).or_insert(f64::MAX);
        *l = l.min(p.value);
    }
    // The sick level: their points, and what their triggers saw (a trigger is often in
    // before the metric points that led to it).
    let triggered = store
        .query_triggers(&TriggerQuery {
            service: incident.service.clone(),
            metric: Some(incident.metric),
            since_unix_nanos: incident.first_event_unix_nanos,
            until_unix_nanos: incident.last_event_unix_nanos.saturating_add(1),
            limit: 1_000,
        })
        .await?
        .into_iter()
        .filter(|t| incident.event_ids.contains(&t.event_id))
        .map(|t| t.current)
        .fold(f64::NAN, f64::max);
    let sick = incident
        .instances
        .iter()
        .filter_map(|i| highest.get(i.as_str()).copied())
        .fold(triggered, f64::max);
    let before = incident
        .instances
        .iter()
        .filter_map(|i| lowest.get(i.as_str()).copied())
        .fold(f64::NAN, f64::min);
    let line = if before.is_finite() && before < sick {
        (before + sick) / 2.0
    } else {
        sick / 2.0
    };
    let mut calm: Vec<(f64, String)> = live
        .into_iter()
        .map(|i| (highest.get(i.as_str()).copied().unwrap_or(0.0), i))
        .filter(|(v, _)| sick.is_nan() || *v < line)
        .collect();
    calm.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    Ok(calm.into_iter().take(n).map(|(_, i)| i).collect())
}

/// Asks `instances` for their profiles as controls of `incident`; `registered` is told
/// each request id before its request goes out (so that the answer, however fast,
/// leads to the incident).
pub async fn ask(
    control: &Arc<Control>,
    incident: &IncidentRecord,
    instances: &[String],
    registered: impl Fn(&str),
) {
    let kind = kind_for(incident.metric);
    for instance in instances {
        let request_id = request_id(&incident.incident_id, instance);
        registered(&request_id);
        let ask = CaptureAsk {
            service: incident.service.clone(),
            selector: String::new(),
            instance_id: Some(instance.clone()),
            kinds: vec![kind],
            purpose: CapturePurpose::Control,
            cpu_duration: None,
            window: (kind == ProfileKind::Cpu).then(|| window_of(incident)),
            incident_id: Some(incident.incident_id.clone()),
            author: "holmes".to_owned(),
            note: format!(
                "healthy control for incident {} ({} {})",
                incident.incident_id,
                incident.service,
                incident.metric.as_str()
            ),
            request_id: Some(request_id.clone()),
        };
        match control.request_capture(ask).await {
            Ok(asked) => tracing::info!(
                incident = %incident.incident_id,
                instance = %instance,
                request_id = %request_id,
                kind = kind.as_str(),
                asked = asked.instances.len(),
                "healthy control asked"
            ),
            Err(err) => tracing::warn!(
                incident = %incident.incident_id,
                instance = %instance,
                error = %err,
                "cannot ask a healthy control"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_request_ids_are_stable_hex_and_differ_per_instance() {
        let a = request_id("0123456789abcdef0123456789abcdef", "checkout-1");
        assert_eq!(
            a,
            request_id("0123456789abcdef0123456789abcdef", "checkout-1")
        );
        assert_ne!(
            a,
            request_id("0123456789abcdef0123456789abcdef", "checkout-2")
        );
        assert!(holmes_api::control::validate_request_id(&a).is_ok(), "{a}");
    }
}
