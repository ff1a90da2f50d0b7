//! The agents connected to this node right now, by service: how a capture request
//! reaches them ([`crate::control::sync`] asks those a request is for). Each stream
//! registers its outbound channel and its agent's labels on connect and is removed when
//! it ends.

use std::collections::BTreeMap;
use std::sync::Mutex;

use holmes_proto::{pb, CaptureRequest, CollectorMessage};
use tokio::sync::mpsc;
use tonic::Status;

type Outbound = mpsc::Sender<Result<pb::CollectorMessage, Status>>;

/// One connected stream.
struct Live {
    stream: u64,
    instance: String,
    labels: BTreeMap<String, String>,
    tx: Outbound,
}

/// The connected agents by service.
#[derive(Default)]
pub struct LiveAgents {
    next: Mutex<u64>,
    by_service: Mutex<BTreeMap<String, Vec<Live>>>,
}

impl std::fmt::Debug for LiveAgents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveAgents").finish_non_exhaustive()
    }
}

impl LiveAgents {
    /// Registers a stream; returns its handle for [`LiveAgents::remove`].
    pub(crate) fn add(
        &self,
        service: &str,
        instance: &str,
        labels: &BTreeMap<String, String>,
        tx: Outbound,
    ) -> u64 {
        let stream = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        self.by_service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(service.to_owned())
            .or_default()
            .push(Live {
                stream,
                instance: instance.to_owned(),
                labels: labels.clone(),
                tx,
            });
        crate::metrics::metrics().agents_connected.inc();
        stream
    }

    /// Forgets a stream that ended.
    pub(crate) fn remove(&self, service: &str, stream: u64) {
        let mut map = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get_mut(service) {
            let before = list.len();
            list.retain(|l| l.stream != stream);
            if list.len() < before {
                crate::metrics::metrics().agents_connected.dec();
            }
            if list.is_empty() {
                map.remove(service);
            }
        }
    }

    /// Agents connected to this node.
    pub fn count(&self) -> u64 {
        let map = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|l| l.len() as u64).sum()
    }

    /// Sends `message` to the connected agent `instance` of `service` (each of its
    /// streams, should it have two); whether one took it (an agent whose outbound queue
    /// is full is not told).
    pub fn tell(&self, service: &str, instance: &str, message: &CollectorMessage) -> bool {
        let message = pb::CollectorMessage::from(message);
        let map = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        let mut told = false;
        for live in map.get(service).into_iter().flatten() {
            if live.instance == instance {
                told |= live.tx.try_send(Ok(message.clone())).is_ok();
            }
        }
        told
    }

    /// Sends `request` to the connected agents of `service` whose labels match
    /// `selector` (`k=v[,k=v]`; empty: all) and, if given, whose instance id is
    /// `instance`; returns the instances it reached (an agent whose outbound queue is
    /// full is skipped, and not listed).
    pub fn capture(
        &self,
        service: &str,
        selector: &str,
        instance: Option<&str>,
        request: &CaptureRequest,
    ) -> Vec<String> {
        let message =
            pb::CollectorMessage::from(&CollectorMessage::CaptureRequest(request.clone()));
        let map = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        let m = crate::metrics::metrics();
        let mut reached: Vec<String> = map
            .get(service)
            .into_iter()
            .flatten()
            .filter(|l| instance.is_none_or(|i| i == l.instance))
            .filter(|l| crate::control::rules::matches(selector, &l.labels))
            .filter(|l| {
                let sent = l.tx.try_send(Ok(message.clone())).is_ok();
                if !sent {
                    m.capture_skipped("queue_full");
                }
                sent
            })
            .map(|l| l.instance.clone())
            .collect();
        m.captures_requested
            .get_or_create(&crate::metrics::PurposeLabels {
                purpose: request.purpose.as_str(),
            })
            .inc_by(reached.len() as u64);
        reached.sort();
        reached.dedup();
        reached
    }
}
