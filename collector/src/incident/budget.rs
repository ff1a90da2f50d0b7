//! The fleet's capture budget: a spike on 200 instances of a service must not store 200
//! times every profile kind. An incident keeps at most `[incidents]
//! max_profiles_per_incident` captures of each kind from its sick instances, first come
//! first kept (a capture is one trigger event's profiles of one kind: for CPU, the
//! pre-trigger window and the profile after it). The kinds an event planned beyond that
//! are skipped: its agent is told not to send them (`SkipProfiles`, on the node it is
//! connected to), what arrives anyway is acknowledged and not stored, and the incident
//! counts them (`skipped_captures`). Healthy controls are the collector's own requests,
//! not trigger events of the incident, and are not counted against it.
//!
//! Plain state, like the correlator: [`Budget::spend`] is given the incident as the
//! correlator left it after the event joined, and decides.

use std::collections::{HashMap, VecDeque};

use holmes_proto::ProfileKind;
use holmes_storage::IncidentRecord;

/// Default `[incidents] max_profiles_per_incident`.
pub const DEFAULT_MAX_PROFILES_PER_INCIDENT: usize = 10;
/// Incidents whose spending is remembered, at most (the oldest is forgotten first; the
/// correlator remembers as many resolved ones for late events).
const MAX_INCIDENTS: usize = super::correlate::MAX_RECENT;
/// Skipped events remembered (so that their profiles are not stored), at most.
const MAX_SKIPPED_EVENTS: usize = 100_000;

/// What one incident has kept so far.
#[derive(Debug, Default)]
struct Spent {
    /// Captures kept, by kind.
    kept: HashMap<ProfileKind, usize>,
    /// Its events with kinds skipped.
    skipped_events: Vec<String>,
}

/// Captures kept per incident and kind, and the events whose profiles are skipped.
#[derive(Debug)]
pub struct Budget {
    /// Captures of one kind an incident keeps; 0: no budget.
    max: usize,
    by_incident: HashMap<String, Spent>,
    /// Incident ids in the order they were first seen, to forget the oldest.
    order: VecDeque<String>,
    /// Kinds skipped, by event id.
    skipped: HashMap<String, Vec<ProfileKind>>,
}

impl Budget {
    /// A budget of `max` captures per incident and kind (0: unlimited).
    pub fn new(max: usize) -> Self {
        Budget {
            max,
            by_incident: HashMap::new(),
            order: VecDeque::new(),
            skipped: HashMap::new(),
        }
    }

    /// Spends `incident`'s budget on the kinds the event `event_id` (one of its events,
    /// new to it) planned; returns the kinds skipped, in the order planned. An event
    /// decided before gets the same answer (an agent resending after a lost ack).
    ///
    /// An incident this budget has not seen (opened by this event, or restored from the
    /// store after a restart) starts from its earlier events: each kept every kind,
    /// except as many as its `skipped_captures` account for.
    pub fn spend(
        &mut self,
        incident: &IncidentRecord,
        event_id: &str,
        planned: &[ProfileKind],
    ) -> Vec<ProfileKind> {
        if let Some(kinds) = self.skipped.get(event_id) {
            return kinds.clone();
        }
        if self.max == 0 || planned.is_empty() {
            return Vec::new();
        }
        if !self.by_incident.contains_key(&incident.incident_id) {
            self.track(incident, planned);
        }
        let Some(spent) = self.by_incident.get_mut(&incident.incident_id) else {
            return Vec::new();
        };
        let mut skipped = Vec::new();
        for kind in planned {
            let kept = spent.kept.entry(*kind).or_default();
            if *kept < self.max {
                *kept += 1;
            } else if !skipped.contains(kind) {
                skipped.push(*kind);
            }
        }
        if !skipped.is_empty() && self.skipped.len() < MAX_SKIPPED_EVENTS {
            spent.skipped_events.push(event_id.to_owned());
            self.skipped.insert(event_id.to_owned(), skipped.clone());
        }
        skipped
    }

    /// The kinds skipped of the event `event_id` (none if it was not, or is unknown).
    pub fn skipped_of(&self, event_id: &str) -> Vec<ProfileKind> {
        self.skipped.get(event_id).cloned().unwrap_or_default()
    }

    /// Whether profiles of `kind` of the event `event_id` are skipped.
    pub fn skips(&self, event_id: &str, kind: ProfileKind) -> bool {
        self.skipped
            .get(event_id)
            .is_some_and(|kinds| kinds.contains(&kind))
    }

    /// Starts remembering `incident`, forgetting the oldest beyond [`MAX_INCIDENTS`].
    fn track(&mut self, incident: &IncidentRecord, planned: &[ProfileKind]) {
        let earlier = incident.event_ids.len().saturating_sub(1);
        let skipped_events = usize::try_from(incident.skipped_captures)
            .unwrap_or(usize::MAX)
            .div_ceil(planned.len().max(1));
        let kept_each = earlier.saturating_sub(skipped_events).min(self.max);
        let spent = Spent {
            kept: planned.iter().map(|k| (*k, kept_each)).collect(),
            skipped_events: Vec::new(),
        };
        self.by_incident.insert(incident.incident_id.clone(), spent);
        self.order.push_back(incident.incident_id.clone());
        while self.order.len() > MAX_INCIDENTS {
            if let Some(old) = self.order.pop_front() {
                self.forget(&old);
            }
        }
    }

    /// Forgets an incident and its skipped events.
    fn forget(&mut self, incident_id: &str) {
        if let Some(spent) = self.by_incident.remove(incident_id) {
            for event in spent.skipped_events {
                self.skipped.remove(&event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holmes_proto::Metric;
    use holmes_storage::{IncidentStatus, Severity};

    const CPU: ProfileKind = ProfileKind::Cpu;
    const THREADS: ProfileKind = ProfileKind::Threads;

    fn incident(events: usize, skipped_captures: u64) -> IncidentRecord {
        IncidentRecord {
            incident_id: "i1".to_owned(),
            service: "shop".to_owned(),
            metric: Metric::CpuPercent,
            severity: Severity::Fleet,
            status: IncidentStatus::Open,
            first_event_unix_nanos: 1,
            last_event_unix_nanos: 2,
            resolved_unix_nanos: None,
            instances: Vec::new(),
            event_ids: (0..events).map(|n| format!("ev-{n}")).collect(),
            related: Vec::new(),
            skipped_captures,
            version: 1,
        }
    }

    #[test]
    fn each_kind_keeps_its_first_captures_and_skips_the_rest() {
        let mut b = Budget::new(2);
        let mut skipped = Vec::new();
        for n in 0..5 {
            let event = format!("ev-{n}");
            // The third event plans threads only: it spends that kind's budget.
            let planned: &[ProfileKind] = if n == 2 { &[THREADS] } else { &[CPU, THREADS] };
            skipped.push(b.spend(&incident(n + 1, 0), &event, planned));
        }
        let none: Vec<ProfileKind> = Vec::new();
        assert_eq!(
            skipped,
            [
                none.clone(),
                none.clone(),
                vec![THREADS],
                vec![CPU, THREADS],
                vec![CPU, THREADS]
            ]
        );
        assert!(b.skips("ev-3", CPU) && b.skips("ev-2", THREADS));
        assert!(!b.skips("ev-1", CPU) && !b.skips("ev-2", CPU));
        // A resent event gets the same answer, and spends nothing more.
        assert_eq!(
            b.spend(&incident(5, 0), "ev-4", &[CPU, THREADS]),
            [CPU, THREADS]
        );
    }

    #[test]
    fn no_budget_keeps_everything() {
        let mut b = Budget::new(0);
        for n in 0..50 {
            assert!(b
                .spend(&incident(n + 1, 0), &format!("ev-{n}"), &[CPU])
                .is_empty());
        }
    }

    #[test]
    fn a_restored_incident_counts_its_earlier_events_less_the_skipped_ones() {
        // Six events before a restart, two of them skipped with both kinds (4 captures):
        // four kept each kind; a budget of 5 has room for one more.
        let mut b = Budget::new(5);
        assert!(b.spend(&incident(7, 4), "ev-6", &[CPU, THREADS]).is_empty());
        assert_eq!(
            b.spend(&incident(8, 4), "ev-7", &[CPU, THREADS]),
            [CPU, THREADS]
        );
    }

    #[test]
    fn forgetting_the_oldest_incident_forgets_its_skipped_events() {
        let mut b = Budget::new(1);
        b.spend(&incident(1, 0), "ev-0", &[CPU]);
        assert_eq!(b.spend(&incident(2, 0), "ev-1", &[CPU]), [CPU]);
        b.forget("i1");
        assert!(!b.skips("ev-1", CPU));
    }
}
