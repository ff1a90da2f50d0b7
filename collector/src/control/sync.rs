//! The loop of a node that takes agent streams: it keeps the node's [`ControlState`] in
//! step with the store, asks its agents for the capture requests made anywhere, and says
//! it is alive.
//!
//! Every `[control] poll`, or at once when poked: the store's control version is read
//! and, when it moved, the rules and pauses are reloaded and published to the node's
//! agent streams; capture requests made since the node started (and in the last
//! [`MAX_REQUEST_AGE`]) that it has not handled are sent to its matching agents, and whom
//! it asked is recorded; the capture budget's skip notices stored by processors of the
//! Kafka pipeline in that time are handed to the agents they are for; every [`HEARTBEAT`], and whenever its number of agents changed,
//! the node records itself with that number, so that a capture request waits for the
//! nodes that have agents.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holmes_proto::CaptureRequest;
use holmes_storage::{
    CaptureDispatch, CaptureRequestQuery, CaptureRequestRecord, ControlNode, SkipNotice,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::state::ControlState;
use super::Control;
use crate::clock::unix_nanos_now;

/// How often a node records that it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A node not seen for this long is taken for gone.
pub const NODE_TTL: Duration = Duration::from_secs(15);
/// Capture requests older than this are not sent to agents any more.
pub const MAX_REQUEST_AGE: Duration = Duration::from_secs(30);
/// Clocks of nodes may differ by this much: a request stamped this long before a node
/// started is still for it.
const CLOCK_SLACK: Duration = Duration::from_secs(2);
/// Capture request ids a node remembers having handled.
const REMEMBERED_REQUESTS: usize = 4096;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The node's last sighting it recorded.
#[derive(Debug, Default)]
struct Heartbeat {
    at: Option<Instant>,
    agents: u64,
}

/// Ids seen recently, bounded (the oldest are forgotten first).
#[derive(Debug, Default)]
pub struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    /// Remembers `id`; `false` if it was remembered already.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= REMEMBERED_REQUESTS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

impl Control {
    /// Reads the state once (so the first agents get the right update), then, on a node
    /// that takes agents, runs the loop until `closing`; on one that does not, stores
    /// the capture budget's skip notices until then ([`super::skips`]).
    pub async fn start(self: &Arc<Self>, closing: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        match ControlState::load(&self.store).await {
            Ok(state) => {
                self.state.send_replace(Arc::new(state));
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the central rules yet; retrying every poll")
            }
        }
        let control = Arc::clone(self);
        if !self.takes_agents {
            // A processor stores the capture budget's notices for the agents' nodes.
            let queued = self
                .skip_queued
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()?;
            return Some(tokio::spawn(control.store_skips(queued, closing)));
        }
        Some(tokio::spawn(control.run(closing)))
    }

    async fn run(self: Arc<Self>, mut closing: watch::Receiver<bool>) {
        let mut failing = false;
        let mut heartbeat = Heartbeat::default();
        loop {
            let result = self.step(&mut heartbeat).await;
            match (&result, failing) {
                (Err(err), false) => {
                    tracing::warn!(node = %self.node_id, error = %err, "control loop cannot read the store; agents keep what they have")
                }
                (Ok(()), true) => {
                    tracing::info!(node = %self.node_id, "control loop reads the store again")
                }
                _ => {}
            }
            failing = result.is_err();
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll) => {}
                _ = self.poke.notified() => {}
                _ = closing.wait_for(|c| *c) => break,
            }
        }
        // Gone: no capture request should wait for this node.
        let _ = self
            .store
            .record_control_node(&ControlNode {
                node_id: self.node_id.clone(),
                agents: 0,
                seen_unix_nanos: unix_nanos_now(),
            })
            .await;
    }

    /// One round: the state, the capture requests, the heartbeat.
    async fn step(&self, heartbeat: &mut Heartbeat) -> Result<(), holmes_storage::StoreError> {
        let version = self.store.control_version().await?;
        if version != self.state.borrow().version {
            let state = ControlState::load(&self.store).await?;
            tracing::info!(node = %self.node_id, version = state.version, "central rules changed; pushing to the agents connected here");
            self.state.send_replace(Arc::new(state));
        }
        let now = unix_nanos_now();
        let since = now
            .saturating_sub(nanos(MAX_REQUEST_AGE))
            .max(self.started_unix_nanos.saturating_sub(nanos(CLOCK_SLACK)));
        let mut requests = self
            .store
            .capture_requests(&CaptureRequestQuery {
                service: None,
                since_unix_nanos: since,
                until_unix_nanos: u64::MAX / 2,
                limit: REMEMBERED_REQUESTS as u64,
            })
            .await?;
        requests.reverse();
        for request in &requests {
            self.dispatch(request).await?;
        }
        for notice in self
            .store
            .skip_notices(since, REMEMBERED_REQUESTS as u64)
            .await?
        {
            self.hand_on(&notice);
        }
        let agents = self.live.count();
        if heartbeat.at.is_none_or(|t| t.elapsed() >= HEARTBEAT) || heartbeat.agents != agents {
            self.store
                .record_control_node(&ControlNode {
                    node_id: self.node_id.clone(),
                    agents,
                    seen_unix_nanos: now,
                })
                .await?;
            *heartbeat = Heartbeat {
                at: Some(Instant::now()),
                agents,
            };
        }
        Ok(())
    }

    /// Tells the agent of a capture budget's skip notice not to send those profiles, once
    /// per notice, if it is connected here.
    fn hand_on(&self, notice: &SkipNotice) {
        let first = self
            .skips_told
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(&notice.event_id);
        if first
            && self.tell_skip(
                &notice.service,
                &notice.instance_id,
                &notice.event_id,
                &notice.kinds,
            )
        {
            tracing::info!(node = %self.node_id, event_id = %notice.event_id, instance = %notice.instance_id, kinds = ?notice.kinds, "capture budget's skip handed to the agent connected here");
        }
    }

    /// Asks the agents connected here that `request` is for, once per request, and
    /// records whom.
    pub(super) async fn dispatch(
        &self,
        request: &CaptureRequestRecord,
    ) -> Result<(), holmes_storage::StoreError> {
        if !self.takes_agents {
            return Ok(());
        }
        let first = self
            .dispatched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(&request.request_id);
        if !first {
            return Ok(());
        }
        let asked = CaptureRequest {
            request_id: request.request_id.clone(),
            kinds: request.kinds.clone(),
            cpu_duration: request.cpu_duration,
            purpose: request.purpose,
            window: request.window,
            incident_id: request.incident_id.clone(),
        };
        let instances = self.live.capture(
            &request.service,
            &request.selector,
            request.instance_id.as_deref(),
            &asked,
        );
        tracing::info!(node = %self.node_id, request_id = %request.request_id, service = %request.service, ?instances, "capture request sent to the agents connected here");
        self.store
            .record_capture_dispatch(&CaptureDispatch {
                request_id: request.request_id.clone(),
                node_id: self.node_id.clone(),
                instances,
                unix_nanos: unix_nanos_now(),
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_are_bounded_and_remember_each_once() {
        let mut ids = RecentIds::default();
        assert!(ids.insert("a"));
        assert!(!ids.insert("a"));
        for i in 0..REMEMBERED_REQUESTS {
            ids.insert(&i.to_string());
        }
        assert_eq!(ids.order.len(), REMEMBERED_REQUESTS);
        assert!(ids.insert("a"), "the oldest was forgotten");
    }
}
