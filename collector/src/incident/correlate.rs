//! Correlation: trigger events of the fleet turned into incidents.
//!
//! The rules, for the trigger events of one service and metric (requested captures are
//! not incidents):
//! - An event joins the service's open incident for that metric when it falls in the
//!   incident's span widened by the quiet period after it (the incident has not gone
//!   quiet) and by the window before it (a late event of its start). Otherwise it opens
//!   a new incident — or, arriving late, joins a recently resolved incident it belonged
//!   to (it happened before that incident's quiet period ran out), which stays resolved.
//! - An incident is an **instance** incident while one instance fired; it becomes a
//!   **fleet** incident (escalates) once two instances fired within `window` of each
//!   other; every further instance joining escalates it again.
//! - An open incident whose latest event is older than `quiet` (collector clock) resolves.
//! - Incidents of different services whose spans (widened by `window`) overlap are
//!   linked as related, both ways.
//! - An event id seen before changes nothing (agents resend after lost acks).
//! - A requested capture that answers an external alert's request
//!   ([`ALERT_REQUEST_PREFIX`]) joins the alert's incident as an event (its profiles
//!   then belong to the incident), without changing its instances or severity.
//!
//! [`Correlator`] is plain state with no clock or I/O of its own: it is fed events and
//! ticks and returns the changes, so it is deterministic and tested with scripted
//! streams. After a restart, [`Correlator::restore`] rebuilds it from the stored
//! incidents; ids are derived from the first event, so nothing opens twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use holmes_api::control::ALERT_REQUEST_PREFIX;
use holmes_proto::Metric;
use holmes_storage::{IncidentRecord, IncidentStatus, Severity, TriggerRecord};

/// Default window within which triggers of several instances make a fleet incident.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(120);
/// Default quiet period after which an incident resolves.
pub const DEFAULT_QUIET: Duration = Duration::from_secs(300);
/// Resolved incidents remembered for late events, at most.
pub const MAX_RECENT: usize = 10_000;
/// Event times remembered per instance of an incident (for the fleet test), at most.
const MAX_TIMES_PER_INSTANCE: usize = 64;

/// The correlation settings: the `[incidents]` section of the config file, durations as
/// text (`window = "2m"`, `quiet = "5m"`, `[incidents.service_windows] checkout = "5m"`),
/// how many healthy controls a new incident asks for (`controls_per_incident = 3`) and
/// how many captures of each kind it keeps from its sick instances
/// (`max_profiles_per_incident = 10`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrelateConfig {
    /// Fleet window for services without their own: triggers of several instances
    /// within it make a fleet incident.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Quiet period before an incident resolves.
    #[serde(with = "humantime_serde")]
    pub quiet: Duration,
    /// Fleet windows by service.
    #[serde(deserialize_with = "durations_by_name")]
    pub service_windows: BTreeMap<String, Duration>,
    /// Live instances of the service, not in the incident, asked for their profiles as
    /// healthy controls when an incident opens (0: none).
    pub controls_per_incident: usize,
    /// Captures of each profile kind an incident keeps from its sick instances; those
    /// beyond are skipped and counted (0: no budget). See [`super::budget`].
    pub max_profiles_per_incident: usize,
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        CorrelateConfig {
            window: DEFAULT_WINDOW,
            quiet: DEFAULT_QUIET,
            service_windows: BTreeMap::new(),
            controls_per_incident: super::controls::DEFAULT_CONTROLS_PER_INCIDENT,
            max_profiles_per_incident: super::budget::DEFAULT_MAX_PROFILES_PER_INCIDENT,
        }
    }
}

/// `name = "5m"` pairs.
fn durations_by_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Duration>, D::Error> {
    let text: BTreeMap<String, humantime_serde::Serde<Duration>> =
        serde::Deserialize::deserialize(d)?;
    Ok(text.into_iter().map(|(k, v)| (k, v.into_inner())).collect())
}

/// Why the `[incidents]` section cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncidentsConfigError {
    /// A window or quiet period of zero.
    #[error("incidents: {key} = \"0s\" is too short; at least 1s")]
    Zero {
        /// The key.
        key: String,
    },
    /// A service name the agents could not have.
    #[error("incidents.service_windows: {0}")]
    Service(#[from] holmes_proto::names::NameError),
    /// More controls than an incident may ask for.
    #[error("incidents: controls_per_incident = {0} is too many; at most {max}", max = super::controls::MAX_CONTROLS_PER_INCIDENT)]
    TooManyControls(usize),
}

impl CorrelateConfig {
    /// Checks that every duration is positive, every service name valid and the
    /// controls few enough.
    pub fn validate(&self) -> Result<(), IncidentsConfigError> {
        let positive = |key: &str, d: Duration| {
            if d.is_zero() {
                Err(IncidentsConfigError::Zero {
                    key: key.to_owned(),
                })
            } else {
                Ok(())
            }
        };
        positive("window", self.window)?;
        positive("quiet", self.quiet)?;
        if self.controls_per_incident > super::controls::MAX_CONTROLS_PER_INCIDENT {
            return Err(IncidentsConfigError::TooManyControls(
                self.controls_per_incident,
            ));
        }
        for (service, window) in &self.service_windows {
            holmes_proto::names::validate_name("service", service)?;
            positive(&format!("service_windows.{service}"), *window)?;
        }
        Ok(())
    }
}

impl CorrelateConfig {
    fn window_of(&self, service: &str) -> u64 {
        nanos(*self.service_windows.get(service).unwrap_or(&self.window))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What changed, for the store and the alert hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new incident.
    Opened(IncidentRecord),
    /// More instances: it became (or grew as) a fleet incident.
    Escalated(IncidentRecord),
    /// New events or links, same instances and severity: store it, nobody to page.
    Updated(IncidentRecord),
    /// Quiet for the quiet period.
    Resolved(IncidentRecord),
}

impl Change {
    /// The incident as it now is.
    pub fn incident(&self) -> &IncidentRecord {
        match self {
            Change::Opened(i) | Change::Escalated(i) | Change::Updated(i) | Change::Resolved(i) => {
                i
            }
        }
    }
}

/// An incident with what correlation needs beyond the record.
#[derive(Debug, Clone)]
struct Tracked {
    record: IncidentRecord,
    /// Event times by instance (the latest few), for the fleet test.
    times: BTreeMap<String, VecDeque<u64>>,
}

impl Tracked {
    fn key(&self) -> (String, Metric) {
        (self.record.service.clone(), self.record.metric)
    }

    /// Whether two instances fired within `window` of each other.
    fn is_fleet(&self, window: u64) -> bool {
        let mut all: Vec<(u64, &str)> = self
            .times
            .iter()
            .flat_map(|(i, ts)| ts.iter().map(move |t| (*t, i.as_str())))
            .collect();
        all.sort_unstable();
        all.windows(2)
            .any(|w| w[0].1 != w[1].1 && w[1].0 - w[0].0 <= window)
    }
}

/// The incident id for the first event of an incident: 32 hex digits from a stable
/// hash of service, metric and event id.
pub fn incident_id(service: &str, metric: Metric, first_event_id: &str) -> String {
    let hash = |seed: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in service
            .bytes()
            .chain([0xff])
            .chain(metric.as_str().bytes())
            .chain([0xff])
            .chain(first_event_id.bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    format!("{:016x}{:016x}", hash(0), hash(0x9e37_79b9_7f4a_7c15))
}

/// Incidents being correlated: the open ones and the recently resolved ones.
#[derive(Debug)]
pub struct Correlator {
    config: CorrelateConfig,
    /// Open incidents by service and metric.
    open: HashMap<(String, Metric), Tracked>,
    /// Recently resolved incidents, oldest first, for late events and links.
    recent: VecDeque<Tracked>,
    /// Event ids of tracked incidents, to drop resends.
    seen: HashMap<String, String>,
}

impl Correlator {
    /// An empty correlator.
    pub fn new(config: CorrelateConfig) -> Self {
        Correlator {
            config,
            open: HashMap::new(),
            recent: VecDeque::new(),
            seen: HashMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &CorrelateConfig {
        &self.config
    }

    /// Rebuilds the state from stored incidents (open ones and recently resolved ones),
    /// as after a restart. Event times per instance are not stored; each instance is
    /// remembered at the incident's last event, which keeps the fleet test conservative.
    pub fn restore(&mut self, incidents: Vec<IncidentRecord>) {
        let mut incidents = incidents;
        incidents.sort_by_key(|i| (i.last_event_unix_nanos, i.incident_id.clone()));
        for record in incidents {
            let times = record
                .instances
                .iter()
                .map(|i| (i.clone(), VecDeque::from([record.last_event_unix_nanos])))
                .collect();
            for e in &record.event_ids {
                self.seen.insert(e.clone(), record.incident_id.clone());
            }
            let t = Tracked { record, times };
            match t.record.status {
                IncidentStatus::Open => {
                    // Two open incidents of one key cannot both be current: keep the
                    // later, and treat the earlier as resolved for late events.
                    if let Some(old) = self.open.insert(t.key(), t) {
                        self.push_recent(old);
                    }
                }
                IncidentStatus::Resolved => self.push_recent(t),
            }
        }
    }

    /// The tracked incident `incident_id` (open or recently resolved), as it now is.
    pub fn incident(&self, incident_id: &str) -> Option<&IncidentRecord> {
        self.open
            .values()
            .chain(self.recent.iter().rev())
            .map(|t| &t.record)
            .find(|r| r.incident_id == incident_id)
    }

    /// The tracked incident that holds the event `event_id`, as it now is.
    pub fn incident_of_event(&self, event_id: &str) -> Option<&IncidentRecord> {
        self.incident(self.seen.get(event_id)?)
    }

    /// Counts `captures` more skipped by the capture budget in the tracked incident
    /// `incident_id`; returns the change to store.
    pub fn add_skipped(&mut self, incident_id: &str, captures: u64) -> Option<Change> {
        let r = &mut self.tracked_mut(incident_id)?.record;
        r.skipped_captures = r.skipped_captures.saturating_add(captures);
        r.version += 1;
        Some(Change::Updated(r.clone()))
    }

    /// The tracked incident `incident_id` (open or recently resolved), to change.
    fn tracked_mut(&mut self, incident_id: &str) -> Option<&mut Tracked> {
        self.open
            .values_mut()
            .chain(self.recent.iter_mut())
            .find(|t| t.record.incident_id == incident_id)
    }

    /// Incidents open now.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// A requested capture asked for by an external alert (its request id is
    /// [`ALERT_REQUEST_PREFIX`] + the alert's event id) joins that alert's incident: its
    /// event id is added, so the incident finds its profiles. Instances and severity
    /// stay: the agents captured because of the alert, they did not fire.
    fn attach_alert_capture(&mut self, event: &TriggerRecord) -> Option<Change> {
        let alert_event = event
            .request_id
            .as_deref()?
            .strip_prefix(ALERT_REQUEST_PREFIX)?;
        if self.seen.contains_key(&event.event_id) {
            return None;
        }
        let incident_id = self.seen.get(alert_event)?.clone();
        let r = &mut self.tracked_mut(&incident_id)?.record;
        r.event_ids.push(event.event_id.clone());
        r.event_ids.sort();
        r.version += 1;
        let record = r.clone();
        self.seen.insert(event.event_id.clone(), incident_id);
        Some(Change::Updated(record))
    }

    fn push_recent(&mut self, t: Tracked) {
        self.recent.push_back(t);
        while self.recent.len() > MAX_RECENT {
            if let Some(old) = self.recent.pop_front() {
                for e in &old.record.event_ids {
                    self.seen.remove(e);
                }
            }
        }
    }

    /// Takes one stored trigger event; returns the incidents it changed.
    pub fn observe(&mut self, event: &TriggerRecord) -> Vec<Change> {
        let Some(metric) = event.metric else {
            return self.attach_alert_capture(event).into_iter().collect();
        };
        if self.seen.contains_key(&event.event_id) {
            return Vec::new();
        }
        let window = self.config.window_of(&event.service);
        let quiet = nanos(self.config.quiet);
        let ts = event.unix_nanos;
        let key = (event.service.clone(), metric);
        let in_span = |r: &IncidentRecord, after: u64| {
            ts.saturating_add(window) >= r.first_event_unix_nanos
                && ts <= r.last_event_unix_nanos.saturating_add(after)
        };

        let mut changes = Vec::new();
        if let Some(t) = self
            .open
            .get_mut(&key)
            .filter(|t| in_span(&t.record, quiet))
        {
            let change = join(t, event, window, IncidentStatus::Open);
            let record = t.record.clone();
            self.seen
                .insert(event.event_id.clone(), record.incident_id.clone());
            changes.push(change);
            changes.extend(self.link(&record, window));
            return changes;
        }
        // A late event of a resolved incident: one that happened while it was still
        // open (before its quiet period ran out), arriving only now.
        if let Some(pos) = self
            .recent
            .iter()
            .rposition(|t| t.key() == key && in_span(&t.record, quiet))
        {
            if let Some(t) = self.recent.get_mut(pos) {
                let change = join(t, event, window, IncidentStatus::Resolved);
                let record = t.record.clone();
                self.seen
                    .insert(event.event_id.clone(), record.incident_id.clone());
                // A resolved incident pages no one again: the change is stored only.
                changes.push(Change::Updated(change.incident().clone()));
                changes.extend(self.link(&record, window));
                return changes;
            }
        }
        // A new incident; an open one of the same key that the event is beyond is
        // superseded (it would resolve at the next tick anyway).
        if let Some(mut old) = self.open.remove(&key) {
            resolve(&mut old.record, ts);
            changes.push(Change::Resolved(old.record.clone()));
            self.push_recent(old);
        }
        let record = IncidentRecord {
            incident_id: incident_id(&event.service, metric, &event.event_id),
            service: event.service.clone(),
            metric,
            severity: Severity::Instance,
            status: IncidentStatus::Open,
            first_event_unix_nanos: ts,
            last_event_unix_nanos: ts,
            resolved_unix_nanos: None,
            instances: vec![event.instance_id.clone()],
            event_ids: vec![event.event_id.clone()],
            related: Vec::new(),
            skipped_captures: 0,
            version: 1,
        };
        self.seen
            .insert(event.event_id.clone(), record.incident_id.clone());
        let t = Tracked {
            times: [(event.instance_id.clone(), VecDeque::from([ts]))].into(),
            record: record.clone(),
        };
        self.open.insert(key, t);
        changes.push(Change::Opened(record.clone()));
        changes.extend(self.link(&record, window));
        changes
    }

    /// Resolves the open incidents quiet since `now - quiet`; returns them.
    pub fn tick(&mut self, now_unix_nanos: u64) -> Vec<Change> {
        let quiet = nanos(self.config.quiet);
        let mut due: Vec<(String, Metric)> = self
            .open
            .iter()
            .filter(|(_, t)| t.record.last_event_unix_nanos.saturating_add(quiet) < now_unix_nanos)
            .map(|(k, _)| k.clone())
            .collect();
        due.sort();
        let mut changes = Vec::new();
        for key in due {
            if let Some(mut t) = self.open.remove(&key) {
                resolve(&mut t.record, now_unix_nanos);
                changes.push(Change::Resolved(t.record.clone()));
                self.push_recent(t);
            }
        }
        changes
    }

    /// Links `record` with the tracked incidents of other services whose spans overlap
    /// its own (each widened by `window`); returns the other incidents that gained the
    /// link (the caller's own change already carries its record, relinked here).
    fn link(&mut self, record: &IncidentRecord, window: u64) -> Vec<Change> {
        let overlaps = |o: &IncidentRecord| {
            o.service != record.service
                && o.first_event_unix_nanos <= record.last_event_unix_nanos.saturating_add(window)
                && record.first_event_unix_nanos <= o.last_event_unix_nanos.saturating_add(window)
        };
        let mut found = BTreeSet::new();
        let mut changes = Vec::new();
        for t in self.open.values_mut().chain(self.recent.iter_mut()) {
            if overlaps(&t.record) {
                found.insert(t.record.incident_id.clone());
                if !t.record.related.contains(&record.incident_id) {
                    t.record.related.push(record.incident_id.clone());
                    t.record.related.sort();
                    t.record.version += 1;
                    changes.push(Change::Updated(t.record.clone()));
                }
            }
        }
        if found.is_empty() {
            return changes;
        }
        // Add the links to the record itself, in whichever collection holds it.
        let own = self
            .open
            .values_mut()
            .chain(self.recent.iter_mut())
            .find(|t| t.record.incident_id == record.incident_id);
        if let Some(t) = own {
            let before = t.record.related.len();
            let merged: BTreeSet<String> = t.record.related.drain(..).chain(found).collect();
            t.record.related = merged.into_iter().collect();
            if t.record.related.len() != before {
                t.record.version += 1;
                changes.push(Change::Updated(t.record.clone()));
            }
        }
        changes
    }
}

/// Adds `event` to `t`; the change it makes (escalated if a new instance joined and the
/// incident is, or became, a fleet incident).
fn join(t: &mut Tracked, event: &TriggerRecord, window: u64, status: IncidentStatus) -> Change {
    let r = &mut t.record;
    let new_instance = !r.instances.contains(&event.instance_id);
    if new_instance {
        r.instances.push(event.instance_id.clone());
        r.instances.sort();
    }
    r.event_ids.push(event.event_id.clone());
    r.event_ids.sort();
    r.first_event_unix_nanos = r.first_event_unix_nanos.min(event.unix_nanos);
    r.last_event_unix_nanos = r.last_event_unix_nanos.max(event.unix_nanos);
    r.version += 1;
    let times = t.times.entry(event.instance_id.clone()).or_default();
    times.push_back(event.unix_nanos);
    if times.len() > MAX_TIMES_PER_INSTANCE {
        times.pop_front();
    }
    let fleet = t.is_fleet(window);
    let r = &mut t.record;
    if fleet && new_instance && status == IncidentStatus::Open {
        r.severity = Severity::Fleet;
        Change::Escalated(r.clone())
    } else {
        if fleet {
            r.severity = Severity::Fleet;
        }
        Change::Updated(r.clone())
    }
}

fn resolve(r: &mut IncidentRecord, at: u64) {
    r.status = IncidentStatus::Resolved;
    r.resolved_unix_nanos = Some(at);
    r.version += 1;
}

#[cfg(test)]
mod tests {
    use holmes_proto::TriggerReason;

    use super::*;

    const SEC: u64 = 1_000_000_000;
    const T0: u64 = 1_795_651_200 * SEC;

    fn ev(service: &str, instance: &str, id: &str, at_sec: u64) -> TriggerRecord {
        TriggerRecord {
            service: service.to_owned(),
            instance_id: instance.to_owned(),
            event_id: id.to_owned(),
            metric: Some(Metric::CpuPercent),
            reason: TriggerReason::Abs,
            current: 90.0,
            window: Vec::new(),
            rule: None,
            unix_nanos: T0 + at_sec * SEC,
            request_id: None,
        }
    }

    /// `(kind, incident id, severity, status, instances)` of each change.
    fn summary(
        changes: &[Change],
    ) -> Vec<(&'static str, String, &'static str, &'static str, usize)> {
        changes
            .iter()
            .map(|c| {
                let kind = match c {
                    Change::Opened(_) => "opened",
                    Change::Escalated(_) => "escalated",
                    Change::Updated(_) => "updated",
                    Change::Resolved(_) => "resolved",
                };
                let i = c.incident();
                (
                    kind,
                    i.incident_id.clone(),
                    i.severity.as_str(),
                    i.status.as_str(),
                    i.instances.len(),
                )
            })
            .collect()
    }

    #[test]
    fn three_instances_in_the_window_make_one_fleet_incident_that_resolves_when_quiet() {
        let mut c = Correlator::new(CorrelateConfig::default());
        let id = incident_id("checkout", Metric::CpuPercent, "e1");
        assert_eq!(
            summary(&c.observe(&ev("checkout", "a", "e1", 0))),
            vec![("opened", id.clone(), "instance", "open", 1)]
        );
        assert_eq!(
            summary(&c.observe(&ev("checkout", "b", "e2", 30))),
            vec![("escalated", id.clone(), "fleet", "open", 2)]
        );
        assert_eq!(
            summary(&c.observe(&ev("checkout", "c", "e3", 60))),
            vec![("escalated", id.clone(), "fleet", "open", 3)]
        );
        // The same instance again, and a resend: no page.
        assert_eq!(
            summary(&c.observe(&ev("checkout", "a", "e4", 90))),
            vec![("updated", id.clone(), "fleet", "open", 3)]
        );
        assert!(c.observe(&ev("checkout", "a", "e4", 90)).is_empty());
        assert!(
            c.tick(T0 + 90 * SEC + 300 * SEC).is_empty(),
            "quiet is not over yet"
        );
        let resolved = c.tick(T0 + 391 * SEC);
        assert_eq!(
            summary(&resolved),
            vec![("resolved", id.clone(), "fleet", "resolved", 3)]
        );
        let r = resolved[0].incident();
        assert_eq!(r.event_ids, vec!["e1", "e2", "e3", "e4"]);
        assert_eq!(r.resolved_unix_nanos, Some(T0 + 391 * SEC));
        assert_eq!(
            (r.first_event_unix_nanos, r.last_event_unix_nanos),
            (T0, T0 + 90 * SEC)
        );
        assert_eq!(r.version, 5, "one version per change");
    }

    #[test]
    fn a_lone_instance_is_an_instance_incident_and_instances_far_apart_are_not_a_fleet() {
        let mut c = Correlator::new(CorrelateConfig::default());
        c.observe(&ev("checkout", "a", "e1", 0));
        // Another instance 4 minutes later: still the open incident (not quiet yet), but
        // not within the 2-minute window of the first: no fleet.
        let changes = c.observe(&ev("checkout", "b", "e2", 240));
        assert_eq!(summary(&changes)[0].0, "updated");
        assert_eq!(changes[0].incident().severity, Severity::Instance);
        // A per-service window of 5 minutes makes it one.
        let mut config = CorrelateConfig::default();
        config
            .service_windows
            .insert("checkout".to_owned(), Duration::from_secs(300));
        let mut c = Correlator::new(config);
        c.observe(&ev("checkout", "a", "e1", 0));
        assert_eq!(
            summary(&c.observe(&ev("checkout", "b", "e2", 240)))[0].0,
            "escalated"
        );
    }

    #[test]
    fn late_and_out_of_order_events_join_their_incident() {
        let mut c = Correlator::new(CorrelateConfig::default());
        let id = incident_id("checkout", Metric::CpuPercent, "e2");
        c.observe(&ev("checkout", "a", "e2", 100));
        // Earlier than the first event, within the window: joins, moves the start.
        let changes = c.observe(&ev("checkout", "b", "e1", 40));
        assert_eq!(
            summary(&changes),
            vec![("escalated", id.clone(), "fleet", "open", 2)]
        );
        assert_eq!(changes[0].incident().first_event_unix_nanos, T0 + 40 * SEC);
        c.tick(T0 + 500 * SEC);
        // After it resolved, a straggler of its span joins it, stays resolved, no page.
        let changes = c.observe(&ev("checkout", "c", "e3", 110));
        assert_eq!(
            summary(&changes),
            vec![("updated", id.clone(), "fleet", "resolved", 3)]
        );
        // One that happened after the quiet period ran out is a new spike, not a late
        // event, even within the window of the old one.
        let mut quick = Correlator::new(CorrelateConfig {
            quiet: Duration::from_secs(8),
            ..CorrelateConfig::default()
        });
        quick.observe(&ev("checkout", "a", "q1", 0));
        quick.tick(T0 + 10 * SEC);
        assert_eq!(
            summary(&quick.observe(&ev("checkout", "b", "q2", 15)))[0].0,
            "opened"
        );
        // One far later opens a new incident.
        let changes = c.observe(&ev("checkout", "c", "e9", 2_000));
        assert_eq!(summary(&changes)[0].0, "opened");
        assert_ne!(changes[0].incident().incident_id, id);
    }

    #[test]
    fn overlapping_incidents_of_other_services_are_related_both_ways() {
        let mut c = Correlator::new(CorrelateConfig::default());
        let checkout = c.observe(&ev("checkout", "a", "e1", 0))[0]
            .incident()
            .clone();
        let changes = c.observe(&ev("payments", "p", "p1", 60));
        let payments = changes[0].incident().incident_id.clone();
        let by_id = |id: &str| {
            changes
                .iter()
                .rev()
                .find(|ch| ch.incident().incident_id == id)
                .map(|ch| ch.incident().related.clone())
        };
        assert_eq!(by_id(&checkout.incident_id), Some(vec![payments.clone()]));
        assert_eq!(by_id(&payments), Some(vec![checkout.incident_id.clone()]));
        // Far apart in time: no link.
        let later = c.observe(&ev("search", "s", "s1", 5_000));
        assert_eq!(later.len(), 1);
        assert!(later[0].incident().related.is_empty());
        // Requested captures are not incidents.
        let mut requested = ev("checkout", "a", "r1", 10);
        requested.metric = None;
        assert!(c.observe(&requested).is_empty());
    }

    #[test]
    fn a_restart_in_the_middle_rebuilds_the_state_and_opens_nothing_twice() {
        let script = [
            ev("checkout", "a", "e1", 0),
            ev("checkout", "b", "e2", 20),
            ev("checkout", "c", "e3", 40),
        ];
        // Uninterrupted.
        let mut whole = Correlator::new(CorrelateConfig::default());
        let mut stored: BTreeMap<String, IncidentRecord> = BTreeMap::new();
        for e in &script {
            for ch in whole.observe(e) {
                stored.insert(ch.incident().incident_id.clone(), ch.incident().clone());
            }
        }
        // Interrupted after two events: a new correlator restored from the store, then
        // the agents resend the second event (its ack was lost) and send the third.
        let mut first = Correlator::new(CorrelateConfig::default());
        let mut store: BTreeMap<String, IncidentRecord> = BTreeMap::new();
        for e in &script[..2] {
            for ch in first.observe(e) {
                store.insert(ch.incident().incident_id.clone(), ch.incident().clone());
            }
        }
        drop(first);
        let mut second = Correlator::new(CorrelateConfig::default());
        second.restore(store.values().cloned().collect());
        let mut kinds = Vec::new();
        for e in &script[1..] {
            for ch in second.observe(e) {
                kinds.push(summary(std::slice::from_ref(&ch))[0].0);
                store.insert(ch.incident().incident_id.clone(), ch.incident().clone());
            }
        }
        assert_eq!(
            kinds,
            vec!["escalated"],
            "the resend changes nothing, no second open"
        );
        assert_eq!(store.len(), 1);
        let (a, b) = (
            store.values().next().unwrap(),
            stored.values().next().unwrap(),
        );
        assert_eq!(a.incident_id, b.incident_id);
        assert_eq!(a.instances, b.instances);
        assert_eq!(a.event_ids, b.event_ids);
        assert_eq!(a.severity, Severity::Fleet);
        // And it still resolves.
        assert_eq!(summary(&second.tick(T0 + 400 * SEC))[0].0, "resolved");
    }
}
