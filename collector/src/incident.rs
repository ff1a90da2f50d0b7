//! Incidents: trigger events of the fleet grouped into incidents, and their suspects.
//!
//! [`correlate`] holds the rules (plain state, no clock or I/O); [`Incidents`] runs them:
//! every stored trigger event goes through the [`Correlator`]; what it changes is written
//! to the store and handed to the alert hooks; a ticker resolves quiet incidents. At
//! start the state is rebuilt from the store, so a restart in the middle of an incident
//! neither opens it again nor pages twice. [`suspects`] names the functions behind an
//! incident from its profiles ([`evidence`] reads them from the store): computed by a
//! task of their own when the incident opens, grows or gets a profile ([`refresh`]
//! debounces), and stored with it, for the API and the alerts; the first time its
//! suspects name a culprit (or name another one) an open incident pages again with it.
//! [`budget`] caps the captures an incident keeps of each kind; the agents of events
//! beyond it are told not to send their profiles.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holmes_proto::ProfileKind;
use holmes_storage::{
    Comparison, IncidentQuery, IncidentRecord, IncidentStatus, Store, StoreError, TriggerRecord,
};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::alert::{AlertKind, Alerter};
use crate::clock::unix_nanos_now;

pub mod budget;
pub mod controls;
pub mod correlate;
pub mod evidence;
pub mod refresh;
pub mod suspects;

use budget::Budget;
use refresh::Refresh;

use correlate::{Change, CorrelateConfig, Correlator};

/// How often quiet incidents are looked for (and failed writes retried).
pub const TICK_INTERVAL: Duration = Duration::from_secs(5);

/// Incidents kept from before a restart: open ones, and resolved ones this recent.
pub const RESTORE_RESOLVED_FOR: Duration = Duration::from_secs(3600);

/// Correlation, the store and the alert hooks, together.
pub struct Incidents {
    correlator: Mutex<Correlator>,
    /// Held from correlating until the changes' alerts are queued, so that alerts are
    /// queued in the order of the incidents' versions (reading an incident's suspects
    /// for its alert waits on the store, and another trigger's change could pass it).
    alert_order: tokio::sync::Mutex<()>,
    /// Captures kept per incident and kind; skipped events.
    budget: Mutex<Budget>,
    store: Arc<dyn Store>,
    alerter: Alerter,
    /// Changes not yet written (the store failed), by incident id: the newest version.
    unsaved: Mutex<BTreeMap<String, IncidentRecord>>,
    /// Incidents whose suspects are due to be computed.
    refresh: Arc<Mutex<Refresh>>,
    /// Asks healthy controls when an incident opens (set once the control plane runs).
    control: std::sync::OnceLock<Arc<crate::control::Control>>,
    /// Wakes the suspects task when an incident is marked.
    refresh_wake: Notify,
}

impl std::fmt::Debug for Incidents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incidents").finish_non_exhaustive()
    }
}

impl Incidents {
    /// Rebuilds the correlation state from `store` and starts the ticker, which ends when
    /// `closing` turns true.
    pub async fn start(
        store: Arc<dyn Store>,
        config: CorrelateConfig,
        alerter: Alerter,
        closing: watch::Receiver<bool>,
    ) -> Result<(Arc<Incidents>, JoinHandle<()>), StoreError> {
        let all = load(store.as_ref()).await?;
        tracing::info!(incidents = all.len(), "correlation state restored");
        let budget = Budget::new(config.max_profiles_per_incident);
        let mut correlator = Correlator::new(config);
        correlator.restore(all);
        let incidents = Arc::new(Incidents {
            correlator: Mutex::new(correlator),
            alert_order: tokio::sync::Mutex::new(()),
            budget: Mutex::new(budget),
            store,
            alerter,
            unsaved: Mutex::new(BTreeMap::new()),
            refresh: Arc::new(Mutex::new(Refresh::default())),
            control: std::sync::OnceLock::new(),
            refresh_wake: Notify::new(),
        });
        let (ticking, computing) = (Arc::clone(&incidents), Arc::clone(&incidents));
        let closing_too = closing.clone();
        let ticker = tokio::spawn(async move {
            tokio::join!(
                ticking.tick_until(closing),
                computing.compute_suspects_until(closing_too)
            );
        });
        Ok((incidents, ticker))
    }

    /// Rebuilds the correlation state from the store, keeping only the services `owns`
    /// accepts (a processor of the Kafka pipeline after a rebalance: the services of its
    /// partitions). Changes not yet written are kept over their stored versions.
    pub async fn restore_owned(
        &self,
        owns: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<usize, StoreError> {
        let mut all = load(self.store.as_ref()).await?;
        all.retain(|i| owns(&i.service));
        {
            let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
            // Another processor owns those now; an old version must not overwrite its.
            unsaved.retain(|_, u| owns(&u.service));
            for record in all.iter_mut() {
                if let Some(newer) = unsaved
                    .get(&record.incident_id)
                    .filter(|u| u.version > record.version)
                {
                    *record = newer.clone();
                }
            }
        }
        let count = all.len();
        let mut correlator = self.correlator.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = Correlator::new(correlator.config().clone());
        fresh.restore(all);
        *correlator = fresh;
        Ok(count)
    }

    /// Correlates one stored trigger event, for which its agent captures the profile
    /// kinds `planned`, and spends its incident's capture budget on them: the kinds
    /// beyond it are counted in the incident, and its agent is told not to send them.
    pub async fn observe(&self, event: &TriggerRecord, planned: &[ProfileKind]) {
        let order = self.alert_order.lock().await;
        let changes = self.correlate(event, planned);
        self.apply(changes, order).await;
    }

    /// [`Incidents::observe`] for stored trigger events in their order (a Kafka
    /// processor's batch), storing what changed once at the end: each incident's latest
    /// version, all at once. One at a time, a 200-instance spike waited for 200 incident
    /// writes in a row (each waits for its ClickHouse batch).
    pub async fn observe_all<'a>(
        &self,
        events: impl IntoIterator<Item = (&'a TriggerRecord, &'a [ProfileKind])>,
    ) {
        let order = self.alert_order.lock().await;
        let mut changes = Vec::new();
        for (event, planned) in events {
            changes.extend(self.correlate(event, planned));
        }
        self.apply(changes, order).await;
    }

    /// Correlates one event and spends its incident's budget; the incidents' changes.
    fn correlate(&self, event: &TriggerRecord, planned: &[ProfileKind]) -> Vec<Change> {
        if let Some(request_id) = event.request_id.as_deref() {
            let control = self.refresh().control_answered(request_id, &event.event_id);
            if let Some(incident_id) = control {
                self.mark_by_id(&incident_id);
            }
        }
        let (changes, skipped, new) = {
            let mut correlator = self.correlator.lock().unwrap_or_else(|p| p.into_inner());
            let mut changes = correlator.observe(event);
            // A resent event changes nothing and spends nothing; it is told again what
            // was skipped (its agent may have reconnected).
            let new = !changes.is_empty();
            let spent = new
                .then(|| correlator.incident_of_event(&event.event_id))
                .flatten()
                .map(|incident| {
                    let skipped = self.budget().spend(incident, &event.event_id, planned);
                    (incident.incident_id.clone(), skipped)
                });
            let skipped = match spent {
                Some((incident_id, skipped)) => {
                    if !skipped.is_empty() {
                        changes.extend(correlator.add_skipped(&incident_id, skipped.len() as u64));
                    }
                    skipped
                }
                None => self.budget().skipped_of(&event.event_id),
            };
            crate::metrics::metrics()
                .incidents_open
                .set(i64::try_from(correlator.open_count()).unwrap_or(i64::MAX));
            (changes, skipped, new)
        };
        if !skipped.is_empty() {
            self.skip(event, &skipped, new);
        }
        changes
    }

    /// Tells the agent of `event` not to send its profiles of the kinds `skipped` (at
    /// once when it is connected to this node, else through a notice stored for its
    /// node), and counts them when the decision is `new`.
    fn skip(&self, event: &TriggerRecord, skipped: &[ProfileKind], new: bool) {
        let delivery = self.control.get().map(|control| {
            control.skip_profiles(
                &event.service,
                &event.instance_id,
                &event.event_id,
                skipped,
                new,
            )
        });
        if new {
            let m = crate::metrics::metrics();
            for _ in skipped {
                m.capture_skipped("budget");
            }
        }
        tracing::info!(
            service = %event.service,
            instance = %event.instance_id,
            event_id = %event.event_id,
            kinds = ?skipped,
            agent = delivery.map_or("no control plane", |d| d.as_str()),
            "captures skipped by the incident's capture budget"
        );
    }

    /// Whether profiles of `kind` of the event `event_id` are skipped by its incident's
    /// capture budget: they are acknowledged and not stored.
    pub fn skips(&self, event_id: &str, kind: ProfileKind) -> bool {
        self.budget().skips(event_id, kind)
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A profile of the event `event_id` was stored: the incident that holds the event
    /// (as one of its own, or as a control's answer) gets its suspects computed again.
    pub fn profile_stored(&self, event_id: &str) {
        let control = self.refresh().control_event(event_id).map(str::to_owned);
        let record = {
            let correlator = self.correlator.lock().unwrap_or_else(|p| p.into_inner());
            match &control {
                Some(id) => correlator.incident(id).cloned(),
                None => correlator.incident_of_event(event_id).cloned(),
            }
        };
        if let Some(record) = record {
            self.mark(&record);
        }
    }

    /// From now on, each new incident asks `[incidents] controls_per_incident` healthy
    /// instances for their profiles through `control` ([`controls`]).
    pub fn ask_controls_with(&self, control: Arc<crate::control::Control>) {
        if self.control.set(control).is_err() {
            tracing::warn!("the control plane for healthy controls was set already");
        }
    }

    /// Asks the new incident's healthy controls, in a task of its own (a request waits
    /// for the nodes to dispatch it).
    fn ask_controls(&self, record: &IncidentRecord) {
        let n = self
            .correlator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .config()
            .controls_per_incident;
        let Some(control) = self.control.get().cloned() else {
            return;
        };
        if n == 0 {
            return;
        }
        let (store, refresh, record) = (
            Arc::clone(&self.store),
            Arc::clone(&self.refresh),
            record.clone(),
        );
        tokio::spawn(async move {
            let instances = match controls::pick(store.as_ref(), &record, n).await {
                Ok(instances) => instances,
                Err(err) => {
                    tracing::warn!(incident = %record.incident_id, error = %err, "cannot list the instances to ask as healthy controls");
                    return;
                }
            };
            if instances.is_empty() {
                tracing::info!(incident = %record.incident_id, service = %record.service, "no live instance outside the incident to ask as a healthy control");
                return;
            }
            refresh
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .await_controls(&record.incident_id, Instant::now());
            controls::ask(&control, &record, &instances, |request_id| {
                refresh
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .control_asked(request_id, &record.incident_id);
            })
            .await;
        });
    }

    fn refresh(&self) -> std::sync::MutexGuard<'_, Refresh> {
        self.refresh.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the incident for its suspects to be computed.
    fn mark(&self, record: &IncidentRecord) {
        self.refresh().mark(record, Instant::now());
        self.refresh_wake.notify_one();
    }

    fn mark_by_id(&self, incident_id: &str) {
        let record = self
            .correlator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .incident(incident_id)
            .cloned();
        if let Some(record) = record {
            self.mark(&record);
        }
    }

    /// The incident as the correlator holds it now, when its instances differ from
    /// `record`'s (one joined since `record` was read).
    fn with_other_instances(&self, record: &IncidentRecord) -> Option<IncidentRecord> {
        self.correlator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .incident(&record.incident_id)
            .filter(|current| current.instances != record.instances)
            .cloned()
    }

    /// Computes the suspects of the incidents marked, as they come due, until `closing`
    /// turns true: a few at a time, each from at most [`evidence::MAX_MERGED_PROFILES`]
    /// profiles a side.
    async fn compute_suspects_until(self: Arc<Self>, mut closing: watch::Receiver<bool>) {
        const PER_ROUND: usize = 8;
        loop {
            let next = self.refresh().next_due();
            let sleep = match next {
                Some(at) => at.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.refresh_wake.notified() => continue,
                _ = closing.wait_for(|c| *c) => return,
            }
            let due = self.refresh().take_due(Instant::now(), PER_ROUND);
            for record in due {
                let record = self.with_other_instances(&record).unwrap_or(record);
                self.compute_suspects(&record).await;
            }
        }
    }

    /// Computes the incident's suspects and stores them. An open incident whose top
    /// suspect is new (none before, or another function) pages with it first, so that a
    /// crash between the two loses no page (the next computation finds the old top
    /// still stored and pages again; the outbox drops the copy).
    pub async fn compute_suspects(&self, record: &IncidentRecord) {
        let started = Instant::now();
        let computed = match evidence::compute(self.store.as_ref(), record, unix_nanos_now()).await
        {
            Ok(Some(computed)) => computed,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(incident = %record.incident_id, error = %err, "cannot compute the incident's suspects; again at its next change");
                return;
            }
        };
        // An instance joined while they were computed: these suspects compared against
        // what may now be a sick instance (a control it answered before it fired).
        // Neither stored nor paged; computed again for the incident as it is.
        if let Some(current) = self.with_other_instances(record) {
            tracing::debug!(incident = %record.incident_id, "incident changed while its suspects were computed; computing them again");
            self.mark(&current);
            return;
        }
        let before = self
            .store
            .get_incident_suspects(&record.service, &record.incident_id)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(incident = %record.incident_id, error = %err, "cannot read the incident's stored suspects");
                None
            });
        let top = computed.suspects.first().map(|s| s.function.as_str());
        // The top suspect last paged: remembered since this process paged it, else (a
        // restart) the one stored, unless this process held its page back for the
        // controls (then the stored one was never paged).
        let (paged, held) = {
            let refresh = self.refresh();
            (
                refresh.paged_top(&record.incident_id).map(str::to_owned),
                refresh.controls_asked_for(&record.incident_id),
            )
        };
        let stored_top = before
            .as_ref()
            .and_then(|b| b.suspects.first())
            .map(|s| s.function.clone());
        let top_before = paged.or(if held { None } else { stored_top });
        let top_before = top_before.as_deref();
        tracing::info!(
            incident = %record.incident_id,
            service = %record.service,
            top = top.unwrap_or(""),
            comparison = computed.comparison.as_str(),
            sick_profiles = computed.sick_profiles,
            comparison_profiles = computed.comparison_profiles,
            took_ms = started.elapsed().as_millis() as u64,
            "incident suspects computed"
        );
        // While its healthy controls may still answer, a page without them waits: a
        // function busy everywhere would lead without the contrast. It is computed
        // again when they answer, or when the wait is over.
        let awaited = if computed.comparison == Comparison::Controls {
            None
        } else {
            self.refresh()
                .controls_awaited(&record.incident_id, Instant::now())
        };
        if let Some(until) = awaited {
            self.refresh().mark_due(record, Instant::now(), until);
            self.refresh_wake.notify_one();
        } else if top.is_some() && top != top_before && record.status == IncidentStatus::Open {
            match self
                .alerter
                .notify(AlertKind::Suspects, record, Some(&computed))
                .await
            {
                Ok(()) => {
                    if let Some(top) = top {
                        self.refresh().paged(&record.incident_id, top);
                    }
                }
                Err(err) => {
                    tracing::error!(incident = %record.incident_id, error = %err, "cannot queue the alert naming the suspects");
                }
            }
        }
        if let Err(err) = self.store.put_incident_suspects(&computed).await {
            tracing::warn!(incident = %record.incident_id, error = %err, "cannot store the incident's suspects; again at its next change");
        }
    }

    async fn tick_until(self: Arc<Self>, mut closing: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK_INTERVAL) => {}
                _ = closing.wait_for(|c| *c) => return,
            }
            self.tick(unix_nanos_now()).await;
        }
    }

    /// Resolves what went quiet by `now` and retries unsaved changes.
    pub async fn tick(&self, now_unix_nanos: u64) {
        let order = self.alert_order.lock().await;
        let changes = {
            let mut correlator = self.correlator.lock().unwrap_or_else(|p| p.into_inner());
            let changes = correlator.tick(now_unix_nanos);
            crate::metrics::metrics()
                .incidents_open
                .set(i64::try_from(correlator.open_count()).unwrap_or(i64::MAX));
            changes
        };
        self.apply(changes, order).await;
        let unsaved: Vec<IncidentRecord> =
            std::mem::take(&mut *self.unsaved.lock().unwrap_or_else(|p| p.into_inner()))
                .into_values()
                .collect();
        for record in unsaved {
            self.save(&record).await;
        }
    }

    /// Queues each change's alert, then writes the change (a failed write is retried at
    /// the next tick). In this order a crash between the two loses no alert: the trigger
    /// is processed again (its Kafka offset or the agent's ack was not given yet), makes
    /// the same change again, and the outbox drops the alert it already holds (same
    /// incident, kind and version). The other order would lose the alert, since the
    /// stored incident already holds the event.
    /// Acts on the changes in their order (suspects marked, controls asked, alerts
    /// queued), then stores each changed incident's latest version, concurrently.
    /// Marks, alerts and stores `changes`; `order` (the alert-order lock) is let go once
    /// their alerts are queued, before the store writes.
    async fn apply(&self, changes: Vec<Change>, order: tokio::sync::MutexGuard<'_, ()>) {
        let mut latest: HashMap<String, IncidentRecord> = HashMap::new();
        for change in changes {
            let record = change.incident();
            self.mark(record);
            if matches!(change, Change::Opened(_)) {
                self.ask_controls(record);
            }
            let kind = match &change {
                Change::Opened(_) => Some(AlertKind::Opened),
                Change::Escalated(_) => Some(AlertKind::Escalated),
                Change::Resolved(_) => Some(AlertKind::Resolved),
                Change::Updated(_) => None,
            };
            if let Some(kind) = kind {
                self.alert(kind, record).await;
            }
            let newer = latest
                .get(&record.incident_id)
                .is_none_or(|l| l.version <= record.version);
            if newer {
                latest.insert(record.incident_id.clone(), record.clone());
            }
        }
        drop(order);
        self.save_all(latest.into_values()).await;
    }

    /// Queues the alert of a change.
    async fn alert(&self, kind: AlertKind, record: &IncidentRecord) {
        tracing::info!(
            incident = %record.incident_id,
            service = %record.service,
            metric = record.metric.as_str(),
            severity = record.severity.as_str(),
            instances = record.instances.len(),
            change = ?kind,
            "incident"
        );
        // What was computed so far (at open, a capture is often still running); read
        // only when a hook will carry it.
        let suspects = if self.alerter.enabled() {
            self.store
                .get_incident_suspects(&record.service, &record.incident_id)
                .await
                .unwrap_or_else(|err| {
                    tracing::warn!(incident = %record.incident_id, error = %err, "cannot read the incident's suspects for its alert");
                    None
                })
        } else {
            None
        };
        if let Err(err) = self.alerter.notify(kind, record, suspects.as_ref()).await {
            tracing::error!(incident = %record.incident_id, error = %err, "cannot queue the alert");
        }
    }

    async fn save(&self, record: &IncidentRecord) {
        self.save_all([record.clone()]).await;
    }

    /// Stores the incidents concurrently; those the store refuses are kept for the next
    /// tick (the newest version of each).
    async fn save_all(&self, records: impl IntoIterator<Item = IncidentRecord>) {
        let mut saves = tokio::task::JoinSet::new();
        for record in records {
            let store = Arc::clone(&self.store);
            saves.spawn(async move {
                let result = store.upsert_incident(&record).await;
                (record, result)
            });
        }
        while let Some(done) = saves.join_next().await {
            let (record, err) = match done {
                Ok((_, Ok(()))) => continue,
                Ok((record, Err(err))) => (record, err.to_string()),
                Err(err) => {
                    tracing::error!(error = %err, "storing an incident failed");
                    continue;
                }
            };
            tracing::warn!(incident = %record.incident_id, error = %err, "cannot store the incident; retrying at the next tick");
            let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
            let keep = unsaved
                .get(&record.incident_id)
                .is_none_or(|u| u.version < record.version);
            if keep {
                unsaved.insert(record.incident_id.clone(), record);
            }
        }
    }
}

/// The incidents to correlate against after a (re)start: the open ones and the ones
/// resolved within [`RESTORE_RESOLVED_FOR`].
async fn load(store: &dyn Store) -> Result<Vec<IncidentRecord>, StoreError> {
    let now = unix_nanos_now();
    let keep = u64::try_from(RESTORE_RESOLVED_FOR.as_nanos()).unwrap_or(u64::MAX);
    let stored = store
        .query_incidents(&IncidentQuery {
            service: None,
            status: None,
            since_unix_nanos: now.saturating_sub(keep),
            until_unix_nanos: u64::MAX / 2,
            limit: correlate::MAX_RECENT as u64,
        })
        .await?;
    let mut open = store
        .query_incidents(&IncidentQuery {
            service: None,
            status: Some(holmes_storage::IncidentStatus::Open),
            since_unix_nanos: 0,
            until_unix_nanos: u64::MAX / 2,
            limit: 100_000,
        })
        .await?;
    let mut all = stored;
    open.retain(|o| !all.iter().any(|i| i.incident_id == o.incident_id));
    all.extend(open);
    Ok(all)
}
