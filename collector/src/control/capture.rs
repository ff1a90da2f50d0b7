//! "Capture now" for the fleet: one request, stored, that every node with agents sends
//! to those of its agents it is for (the whole service, the agents matching a label
//! selector, or one instance). [`Control::request_capture`] is the one entry point — the
//! API's `POST …/capture`, the CLI's `holmes capture` and Alertmanager's alerts
//! ([`crate::ingest::alertmanager`]) all go through it.
//!
//! The request is stored, this node asks its own agents at once, and the call waits (at
//! most `[control] dispatch_wait`) until every live node with agents has recorded whom
//! it asked, so the answer says how many were asked. What each agent then did arrives
//! later, as its `CaptureOutcome`, recorded by its node.

use std::time::{Duration, Instant};

use holmes_proto::{CapturePurpose, ProfileKind, TimeWindow};
use holmes_storage::{
    canonical_selector, CaptureRequestQuery, CaptureRequestRecord, ChangedBy, StoreError,
};

use super::sync::NODE_TTL;
use super::Control;
use crate::clock::unix_nanos_now;

/// What to capture, from whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureAsk {
    /// The service.
    pub service: String,
    /// Only agents whose labels match (`k=v[,k=v]`); empty: all of the service.
    pub selector: String,
    /// Only this instance.
    pub instance_id: Option<String>,
    /// Profiles to capture.
    pub kinds: Vec<ProfileKind>,
    /// Why.
    pub purpose: CapturePurpose,
    /// Length of a CPU profile; `None`: the agents' default.
    pub cpu_duration: Option<Duration>,
    /// For CPU: the flight recorder's samples of this interval instead of a new profile.
    pub window: Option<TimeWindow>,
    /// The incident it is for.
    pub incident_id: Option<String>,
    /// Who asks (an operator, `alertmanager`, ...), and why.
    pub author: String,
    /// Free text stored with the request.
    pub note: String,
    /// The request id when the caller names it (an alert's `alert-<event id>`, which
    /// the correlator ties to the alert's incident); a new one when `None`.
    pub request_id: Option<String>,
}

/// The request as stored, and whom the nodes asked so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureAsked {
    /// The stored request (its id, and the time it was made).
    pub request: CaptureRequestRecord,
    /// The instances asked, sorted.
    pub instances: Vec<String>,
    /// Nodes that asked their agents.
    pub nodes: Vec<String>,
    /// Live nodes with agents that had not asked theirs when the wait ended.
    pub pending_nodes: Vec<String>,
}

/// A capture request that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Something in the request is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The service had a capture request less than `[control] capture_min_interval` ago.
    #[error("service {service:?} had a capture request {ago} ago; ask again in {wait} (at most one every {min}: [control] capture_min_interval)", ago = humantime::format_duration(*.ago), wait = humantime::format_duration(*.wait), min = humantime::format_duration(*.min))]
    TooSoon {
        /// The service.
        service: String,
        /// Since its last request (rounded to milliseconds).
        ago: Duration,
        /// Until the next may be made (rounded up to milliseconds).
        wait: Duration,
        /// `[control] capture_min_interval`.
        min: Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new request id: 32 lowercase hex digits from the time, this node and a counter.
fn request_id(node_id: &str) -> String {
    use std::hash::{Hash, Hasher};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node_id.hash(&mut h);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .hash(&mut h);
    format!("{:016x}{:016x}", unix_nanos_now(), h.finish())
}

impl Control {
    /// Refuses an operator's request for `service` sooner than `[control]
    /// capture_min_interval` after the last one: made through any node (the store's), or
    /// being made through this one now (else accepted, and remembered).
    async fn check_interval(&self, service: &str) -> Result<(), CaptureError> {
        let min = self.config.capture_min_interval;
        if min.is_zero() {
            return Ok(());
        }
        let min_nanos = u64::try_from(min.as_nanos()).unwrap_or(u64::MAX);
        let now = unix_nanos_now();
        let recent = self
            .store
            .capture_requests(&CaptureRequestQuery {
                service: Some(service.to_owned()),
                since_unix_nanos: now.saturating_sub(min_nanos),
                until_unix_nanos: now.saturating_add(min_nanos),
                limit: 1000,
            })
            .await?;
        let stored = recent
            .iter()
            .filter(|r| r.purpose == CapturePurpose::Operator)
            .map(|r| r.by.unix_nanos)
            .max();
        let mut asked = self.capture_asked.lock().unwrap_or_else(|p| p.into_inner());
        asked.retain(|_, at| now.saturating_sub(*at) < min_nanos);
        let last = stored.into_iter().chain(asked.get(service).copied()).max();
        if let Some(last) = last {
            let ago = now.saturating_sub(last);
            if ago < min_nanos {
                let ms = |nanos: u64| Duration::from_millis(nanos.div_ceil(1_000_000));
                return Err(CaptureError::TooSoon {
                    service: service.to_owned(),
                    ago: Duration::from_millis(ago / 1_000_000),
                    wait: ms(min_nanos - ago),
                    min,
                });
            }
        }
        asked.insert(service.to_owned(), now);
        Ok(())
    }

    /// Stores the request, asks this node's matching agents, and waits for every other
    /// live node with agents to ask theirs (at most `[control] dispatch_wait`).
    pub async fn request_capture(&self, ask: CaptureAsk) -> Result<CaptureAsked, CaptureError> {
        holmes_proto::names::validate_name("service", &ask.service)
            .map_err(|e| CaptureError::Invalid(e.to_string()))?;
        if let Some(instance) = &ask.instance_id {
            holmes_proto::names::validate_name("instance id", instance)
                .map_err(|e| CaptureError::Invalid(e.to_string()))?;
        }
        let selector = canonical_selector(&ask.selector).map_err(CaptureError::Invalid)?;
        if ask.kinds.is_empty() {
            return Err(CaptureError::Invalid(
                "say what to capture: kind=cpu, heap, threads or tasks (repeatable)".to_owned(),
            ));
        }
        let request = CaptureRequestRecord {
            request_id: ask.request_id.unwrap_or_else(|| request_id(&self.node_id)),
            service: ask.service,
            selector,
            instance_id: ask.instance_id,
            kinds: ask.kinds,
            purpose: ask.purpose,
            cpu_duration: ask.cpu_duration,
            window: ask.window,
            incident_id: ask.incident_id,
            by: ChangedBy {
                author: ask.author,
                note: ask.note,
                unix_nanos: unix_nanos_now(),
            },
        };
        if request.purpose == CapturePurpose::Operator {
            self.check_interval(&request.service).await?;
        }
        self.store.insert_capture_request(&request).await?;
        self.dispatch(&request).await?;
        let deadline = Instant::now() + self.config.dispatch_wait;
        let ids = [request.request_id.clone()];
        loop {
            let seen_since = unix_nanos_now()
                .saturating_sub(u64::try_from(NODE_TTL.as_nanos()).unwrap_or(u64::MAX));
            let (nodes, dispatches) = tokio::try_join!(
                self.store.control_nodes(seen_since),
                self.store.capture_dispatches(&ids)
            )?;
            let pending_nodes: Vec<String> = nodes
                .into_iter()
                .filter(|n| n.agents > 0 && !dispatches.iter().any(|d| d.node_id == n.node_id))
                .map(|n| n.node_id)
                .collect();
            if pending_nodes.is_empty() || Instant::now() >= deadline {
                let mut instances: Vec<String> = dispatches
                    .iter()
                    .flat_map(|d| d.instances.iter().cloned())
                    .collect();
                instances.sort();
                instances.dedup();
                let nodes = dispatches.into_iter().map(|d| d.node_id).collect();
                tracing::info!(request_id = %request.request_id, service = %request.service, asked = instances.len(), ?pending_nodes, "capture requested");
                return Ok(CaptureAsked {
                    request,
                    instances,
                    nodes,
                    pending_nodes,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let a = request_id("n1");
        let b = request_id("n1");
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
