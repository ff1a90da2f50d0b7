//! The control side of one agent stream: the updates its agent should get, and what it
//! reports back, recorded in the store so every node's API can show it.
//!
//! The stream sends an update when the agent connects (if its service or the fleet has
//! central rules or a pause) and whenever the node's state changes what this agent
//! should have — compared with what was sent last, so an unrelated service's change
//! sends nothing. The agent's version in force (hello, heartbeats), what it applied and
//! refused (`ConfigApplied`) and whether it is connected are recorded as its
//! [`AgentReport`]; what it did with a capture request (`CaptureOutcome`) as a
//! [`CaptureOutcomeRecord`]. A failed write is logged: the agent's stream goes on.

use std::collections::BTreeMap;
use std::sync::Arc;

use holmes_proto::{CaptureOutcome, ConfigApplied, ConfigUpdate, Hello};
use holmes_storage::{AgentReport, CaptureOutcomeRecord};
use tokio::sync::watch;

use super::state::ControlState;
use super::Control;
use crate::clock::unix_nanos_now;

/// One agent stream's view of the control plane.
pub struct AgentControl {
    control: Arc<Control>,
    state: watch::Receiver<Arc<ControlState>>,
    service: String,
    instance: String,
    labels: BTreeMap<String, String>,
    last_sent: Option<ConfigUpdate>,
    report: AgentReport,
}

impl std::fmt::Debug for AgentControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentControl")
            .field("service", &self.service)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl AgentControl {
    /// The control side of the stream of the agent that said `hello`.
    pub fn new(control: &Arc<Control>, hello: &Hello) -> AgentControl {
        AgentControl {
            control: Arc::clone(control),
            state: control.subscribe(),
            service: hello.service.clone(),
            instance: hello.instance_id.clone(),
            labels: hello.labels.clone(),
            last_sent: None,
            report: AgentReport {
                service: hello.service.clone(),
                instance_id: hello.instance_id.clone(),
                node_id: control.node_id().to_owned(),
                connected: true,
                rules_version: hello.rules_version,
                refused: Vec::new(),
                unix_nanos: 0,
            },
        }
    }

    /// The update to send now, if the agent should have one it was not sent yet.
    pub fn next_update(&mut self) -> Option<ConfigUpdate> {
        let state = Arc::clone(&self.state.borrow_and_update());
        let update = state.update_for(&self.service, &self.labels, unix_nanos_now())?;
        if self.last_sent.as_ref() == Some(&update) {
            return None;
        }
        self.last_sent = Some(update.clone());
        Some(update)
    }

    /// Resolves when the node's state changed (never, once the node is shutting down).
    pub async fn changed(&mut self) {
        if self.state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    async fn record(&mut self) {
        self.report.unix_nanos = unix_nanos_now();
        if let Err(err) = self.control.store().record_agent_report(&self.report).await {
            tracing::warn!(service = %self.service, instance = %self.instance, error = %err, "agent's rules report not recorded");
        }
    }

    /// The agent connected, with `rules_version` in force.
    pub async fn connected(&mut self) {
        self.record().await;
    }

    /// The agent answered an update.
    pub async fn applied(&mut self, applied: ConfigApplied) {
        if !applied.refused.is_empty() {
            tracing::warn!(service = %self.service, instance = %self.instance, version = applied.version, refused = ?applied.refused, "agent refused pushed rules");
        }
        self.report.rules_version = applied.version;
        self.report.refused = applied.refused;
        self.record().await;
    }

    /// A heartbeat with the version in force: recorded when it differs from the last.
    pub async fn heartbeat(&mut self, rules_version: u64) {
        if rules_version != self.report.rules_version {
            self.report.rules_version = rules_version;
            self.report.refused.clear();
            self.record().await;
        }
    }

    /// The agent answered a capture request.
    pub async fn outcome(&self, outcome: CaptureOutcome) {
        let record = CaptureOutcomeRecord {
            request_id: outcome.request_id,
            service: self.service.clone(),
            instance_id: self.instance.clone(),
            event_id: outcome.event_id,
            captured: outcome.captured,
            refused: outcome.refused,
            unix_nanos: unix_nanos_now(),
        };
        if let Err(err) = self.control.store().record_capture_outcome(&record).await {
            tracing::warn!(service = %self.service, instance = %self.instance, request_id = %record.request_id, error = %err, "capture outcome not recorded");
        }
    }

    /// The stream ended.
    pub async fn closed(&mut self) {
        self.report.connected = false;
        self.record().await;
    }
}
