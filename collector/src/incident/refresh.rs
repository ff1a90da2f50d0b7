//! When an incident's suspects are computed: the incidents marked because they opened,
//! grew or got a profile, each at most once per [`MIN_INTERVAL`] and not before
//! [`SETTLE`] has passed since it was marked (the profiles of one capture arrive
//! together), so a burst of triggers and profiles makes one computation, not one each.
//! Plain state with the time passed in; the task that computes lives in
//! [`super::Incidents`], off the ingest path.
//!
//! Also which events and capture requests belong to which incident beyond the
//! correlator's own events: the controls asked for an incident, whose profiles come
//! under events of their own.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use holmes_storage::IncidentRecord;

/// How long a marked incident waits for more of its profiles before its suspects are
/// computed.
pub const SETTLE: Duration = Duration::from_secs(1);
/// An incident's suspects are computed at most this often.
pub const MIN_INTERVAL: Duration = Duration::from_secs(3);
/// Incidents waiting, at most: more are dropped (and computed again at their next
/// change).
pub const MAX_PENDING: usize = 10_000;
/// Control requests and events remembered, at most (the oldest go first).
pub const MAX_CONTROLS: usize = 10_000;
/// How long an incident whose healthy controls were asked waits for their profiles
/// before its suspects page without them (against baselines, or nothing).
pub const CONTROLS_WAIT: Duration = Duration::from_secs(30);
/// How long an incident's last computation is remembered for [`MIN_INTERVAL`].
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The debounce state.
#[derive(Debug, Default)]
pub struct Refresh {
    /// Incidents waiting, by id: their newest record and when they are due.
    pending: HashMap<String, (IncidentRecord, Instant)>,
    /// When each incident's suspects were last computed.
    last: HashMap<String, Instant>,
    /// Control capture requests by id: the incident they are for.
    control_requests: HashMap<String, String>,
    /// Events of those requests (the controls' answers): the incident.
    control_events: HashMap<String, String>,
    /// Insertion order of both maps, for the bound.
    control_order: VecDeque<(bool, String)>,
    /// Incidents whose controls were asked, until when their page waits for them.
    awaiting_controls: HashMap<String, Instant>,
    /// The top suspect each incident last paged with.
    paged: HashMap<String, String>,
}

impl Refresh {
    /// Marks `incident` (its newest record) as changed at `now`.
    pub fn mark(&mut self, incident: &IncidentRecord, now: Instant) {
        self.mark_due(incident, now, now + SETTLE);
    }

    /// Marks `incident` to be computed at `at` (or when [`MIN_INTERVAL`] allows), unless
    /// it is due sooner already.
    pub fn mark_due(&mut self, incident: &IncidentRecord, now: Instant, at: Instant) {
        let earliest = self
            .last
            .get(&incident.incident_id)
            .map_or(now, |last| *last + MIN_INTERVAL);
        let due = at.max(earliest);
        let full = self.pending.len() >= MAX_PENDING;
        match self.pending.get_mut(&incident.incident_id) {
            Some((record, at)) => {
                if incident.version >= record.version {
                    *record = incident.clone();
                }
                // A change brings a later computation (one waiting for controls) nearer.
                *at = (*at).min(due);
            }
            None if full => {
                tracing::warn!(incident = %incident.incident_id, max = MAX_PENDING, "too many incidents wait for their suspects; this change is not computed");
            }
            None => {
                self.pending
                    .insert(incident.incident_id.clone(), (incident.clone(), due));
            }
        }
    }

    /// The incidents due at `now` (at most `max`, the earliest first), marked as
    /// computed at `now`.
    pub fn take_due(&mut self, now: Instant, max: usize) -> Vec<IncidentRecord> {
        let mut due: Vec<(Instant, String)> = self
            .pending
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, (_, at))| (*at, id.clone()))
            .collect();
        due.sort();
        due.truncate(max);
        let taken: Vec<IncidentRecord> = due
            .into_iter()
            .filter_map(|(_, id)| self.pending.remove(&id))
            .map(|(record, _)| record)
            .collect();
        for r in &taken {
            self.last.insert(r.incident_id.clone(), now);
        }
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) < FORGET_AFTER);
        taken
    }

    /// When the next incident is due, if any waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|(_, at)| *at).min()
    }

    /// Remembers that `incident_id` asked its healthy controls at `now`: its page waits
    /// for their profiles until [`CONTROLS_WAIT`] has passed.
    pub fn await_controls(&mut self, incident_id: &str, now: Instant) {
        self.awaiting_controls
            .insert(incident_id.to_owned(), now + CONTROLS_WAIT);
        if self.awaiting_controls.len() > MAX_CONTROLS {
            // Long over: forgotten (a page held for them went out long ago).
            self.awaiting_controls
                .retain(|_, until| now.saturating_duration_since(*until) < FORGET_AFTER);
            if self.awaiting_controls.len() > MAX_CONTROLS {
                self.awaiting_controls.clear();
            }
        }
    }

    /// Until when the incident's page waits for its controls, if it still does at `now`.
    pub fn controls_awaited(&self, incident_id: &str, now: Instant) -> Option<Instant> {
        self.awaiting_controls
            .get(incident_id)
            .copied()
            .filter(|until| *until > now)
    }

    /// Whether this process asked the incident's controls (and held its page for them).
    pub fn controls_asked_for(&self, incident_id: &str) -> bool {
        self.awaiting_controls.contains_key(incident_id)
    }

    /// The top suspect the incident last paged with, in this process.
    pub fn paged_top(&self, incident_id: &str) -> Option<&str> {
        self.paged.get(incident_id).map(String::as_str)
    }

    /// Remembers that the incident paged with `top`.
    pub fn paged(&mut self, incident_id: &str, top: &str) {
        if self.paged.len() >= MAX_PENDING {
            self.paged.clear();
        }
        self.paged.insert(incident_id.to_owned(), top.to_owned());
    }

    /// Remembers that the capture request `request_id` asks a control for `incident_id`.
    pub fn control_asked(&mut self, request_id: &str, incident_id: &str) {
        self.control_requests
            .insert(request_id.to_owned(), incident_id.to_owned());
        self.remember(true, request_id);
    }

    /// The incident a control's answer (a requested trigger event of `request_id`)
    /// belongs to; its event is remembered for its profiles.
    pub fn control_answered(&mut self, request_id: &str, event_id: &str) -> Option<String> {
        let incident = self.control_requests.get(request_id)?.clone();
        self.control_events
            .insert(event_id.to_owned(), incident.clone());
        self.remember(false, event_id);
        Some(incident)
    }

    /// The incident a control's event belongs to, if it is one.
    pub fn control_event(&self, event_id: &str) -> Option<&str> {
        self.control_events.get(event_id).map(String::as_str)
    }

    fn remember(&mut self, request: bool, id: &str) {
        self.control_order.push_back((request, id.to_owned()));
        while self.control_order.len() > 2 * MAX_CONTROLS {
            if let Some((request, old)) = self.control_order.pop_front() {
                if request {
                    self.control_requests.remove(&old);
                } else {
                    self.control_events.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use holmes_proto::Metric;
    use holmes_storage::{IncidentStatus, Severity};

    use super::*;

    fn incident(id: &str, version: u64) -> IncidentRecord {
        IncidentRecord {
            incident_id: id.to_owned(),
            service: "checkout".to_owned(),
            metric: Metric::CpuPercent,
            severity: Severity::Instance,
            status: IncidentStatus::Open,
            first_event_unix_nanos: 1,
            last_event_unix_nanos: 1,
            resolved_unix_nanos: None,
            instances: vec!["a".to_owned()],
            event_ids: vec!["e1".to_owned()],
            related: Vec::new(),
            skipped_captures: 0,
            version,
        }
    }

    #[test]
    fn a_burst_of_changes_is_computed_once_and_then_not_more_often_than_the_interval() {
        let t0 = Instant::now();
        let mut r = Refresh::default();
        for v in 1..=20 {
            r.mark(&incident("i1", v), t0 + Duration::from_millis(10 * v));
        }
        assert!(r.take_due(t0 + SETTLE, 10).is_empty(), "it settles first");
        // Due a settling time after it was first marked.
        let t1 = t0 + Duration::from_millis(10) + SETTLE;
        let due = r.take_due(t1, 10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].version, 20, "the newest record");
        assert!(r.next_due().is_none());
        // Changed again right after: not before the interval is over.
        r.mark(&incident("i1", 21), t1 + Duration::from_millis(10));
        assert!(r.take_due(t1 + SETTLE + SETTLE, 10).is_empty());
        assert_eq!(r.next_due(), Some(t1 + MIN_INTERVAL));
        assert_eq!(r.take_due(t1 + MIN_INTERVAL, 10).len(), 1);
        // An older record arriving late does not replace a newer one.
        r.mark(&incident("i2", 5), t0);
        r.mark(&incident("i2", 4), t0);
        assert_eq!(r.take_due(t0 + SETTLE, 10)[0].version, 5);
    }

    #[test]
    fn a_page_waits_for_the_controls_for_a_while_only() {
        let t0 = Instant::now();
        let mut r = Refresh::default();
        assert_eq!(r.controls_awaited("i1", t0), None);
        r.await_controls("i1", t0);
        assert_eq!(
            r.controls_awaited("i1", t0 + SETTLE),
            Some(t0 + CONTROLS_WAIT)
        );
        assert_eq!(r.controls_awaited("i1", t0 + CONTROLS_WAIT), None);
        // Computed once meanwhile, then due again when the wait is over.
        r.mark(&incident("i1", 1), t0);
        assert_eq!(r.take_due(t0 + SETTLE, 10).len(), 1);
        r.mark_due(&incident("i1", 1), t0 + SETTLE, t0 + CONTROLS_WAIT);
        assert_eq!(r.next_due(), Some(t0 + CONTROLS_WAIT));
        // A control's profile arriving brings it nearer.
        r.mark(&incident("i1", 1), t0 + SETTLE * 2);
        assert_eq!(r.next_due(), Some(t0 + SETTLE + MIN_INTERVAL));
    }

    #[test]
    fn controls_answers_lead_to_their_incident() {
        let mut r = Refresh::default();
        r.control_asked("req-1", "i1");
        assert_eq!(r.control_answered("req-1", "ev-9"), Some("i1".to_owned()));
        assert_eq!(r.control_event("ev-9"), Some("i1"));
        assert_eq!(r.control_answered("req-2", "ev-10"), None);
        assert_eq!(r.control_event("ev-10"), None);
        for n in 0..(2 * MAX_CONTROLS) {
            r.control_asked(&format!("more-{n}"), "i2");
        }
        assert_eq!(r.control_event("ev-9"), None, "the oldest are forgotten");
    }
}
