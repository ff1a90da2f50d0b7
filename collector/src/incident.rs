//! Incidents: trigger events of the fleet grouped into incidents, and their suspects.
//!
//! [`correlate`] holds the rules (plain state, no clock or I/O); [`Incidents`] runs them:
//! every stored trigger event goes through the [`Correlator`]; what it changes is written
//! to the store and handed to the alert hooks; a ticker resolves quiet incidents. At
//! start the state is rebuilt from the store, so a restart in the middle of an incident
//! neither opens it again nor pages twice. [`suspects`] names the functions behind an
//! incident from its profiles ([`evidence`] reads them from the store), for the API and
//! for the alerts that carry the top suspect.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holmes_storage::{IncidentQuery, IncidentRecord, Store, StoreError, TriggerRecord};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alert::{AlertKind, Alerter};
use crate::clock::unix_nanos_now;

pub mod correlate;
pub mod evidence;
pub mod suspects;

use correlate::{Change, CorrelateConfig, Correlator};

/// How often quiet incidents are looked for (and failed writes retried).
pub const TICK_INTERVAL: Duration = Duration::from_secs(5);

/// Incidents kept from before a restart: open ones, and resolved ones this recent.
pub const RESTORE_RESOLVED_FOR: Duration = Duration::from_secs(3600);

/// Correlation, the store and the alert hooks, together.
pub struct Incidents {
    correlator: Mutex<Correlator>,
    store: Arc<dyn Store>,
    alerter: Alerter,
    /// Changes not yet written (the store failed), by incident id: the newest version.
    unsaved: Mutex<BTreeMap<String, IncidentRecord>>,
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
        let mut correlator = Correlator::new(config);
        correlator.restore(all);
        let incidents = Arc::new(Incidents {
            correlator: Mutex::new(correlator),
            store,
            alerter,
            unsaved: Mutex::new(BTreeMap::new()),
        });
        let ticker = tokio::spawn(Arc::clone(&incidents).tick_until(closing));
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

    /// Correlates one stored trigger event.
    pub async fn observe(&self, event: &TriggerRecord) {
        let changes = {
            let mut correlator = self.correlator.lock().unwrap_or_else(|p| p.into_inner());
            let changes = correlator.observe(event);
            crate::metrics::metrics()
                .incidents_open
                .set(i64::try_from(correlator.open_count()).unwrap_or(i64::MAX));
            changes
        };
        self.apply(changes).await;
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
        let changes = {
            let mut correlator = self.correlator.lock().unwrap_or_else(|p| p.into_inner());
            let changes = correlator.tick(now_unix_nanos);
            crate::metrics::metrics()
                .incidents_open
                .set(i64::try_from(correlator.open_count()).unwrap_or(i64::MAX));
            changes
        };
        self.apply(changes).await;
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
    async fn apply(&self, changes: Vec<Change>) {
        for change in changes {
            let record = change.incident();
            let kind = match &change {
                Change::Opened(_) => AlertKind::Opened,
                Change::Escalated(_) => AlertKind::Escalated,
                Change::Resolved(_) => AlertKind::Resolved,
                Change::Updated(_) => {
                    self.save(record).await;
                    continue;
                }
            };
            tracing::info!(
                incident = %record.incident_id,
                service = %record.service,
                metric = record.metric.as_str(),
                severity = record.severity.as_str(),
                instances = record.instances.len(),
                change = ?kind,
                "incident"
            );
            // Only Alertmanager hooks carry it; at open a capture is often still running.
            let top = if self.alerter.wants_suspect(record) {
                evidence::top_suspect(self.store.as_ref(), record)
                    .await
                    .unwrap_or_else(|err| {
                        tracing::warn!(incident = %record.incident_id, error = %err, "cannot read the incident's suspects for its alert");
                        None
                    })
            } else {
                None
            };
            if let Err(err) = self
                .alerter
                .notify_with_suspect(kind, record, top.as_ref())
                .await
            {
                tracing::error!(incident = %record.incident_id, error = %err, "cannot queue the alert");
            }
            self.save(record).await;
        }
    }

    async fn save(&self, record: &IncidentRecord) {
        if let Err(err) = self.store.upsert_incident(record).await {
            tracing::warn!(incident = %record.incident_id, error = %err, "cannot store the incident; retrying at the next tick");
            let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
            let keep = unsaved
                .get(&record.incident_id)
                .is_none_or(|u| u.version < record.version);
            if keep {
                unsaved.insert(record.incident_id.clone(), record.clone());
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
