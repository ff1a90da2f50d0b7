//! The capture budget's word to agents connected to other nodes. A node without agent
//! streams (a Kafka processor) decides what an incident skips while it correlates; it
//! must not wait on the store for every skipped event (a 200-instance spike skips 190 of
//! them within a second, and ClickHouse takes tens of milliseconds an insert). So the
//! decision goes into a bounded queue and one task stores the queue's notices together;
//! the nodes' control loops ([`super::sync`]) hand them on to the agents.

use std::sync::Arc;

use holmes_storage::SkipNotice;
use tokio::sync::{mpsc, watch};

use super::Control;

/// Notices waiting to be stored, at most; beyond it the agent is not told (what it sends
/// anyway is acknowledged and dropped, as before the notice).
pub const QUEUE: usize = 4096;
/// Notices stored in one insert, at most.
pub const BATCH: usize = 1024;

impl Control {
    /// Stores queued skip notices, a batch at a time, until `closing` (then what is
    /// queued).
    pub(super) async fn store_skips(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<SkipNotice>,
        mut closing: watch::Receiver<bool>,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let closed = tokio::select! {
                n = queue.recv_many(&mut batch, BATCH) => n == 0,
                _ = closing.wait_for(|c| *c) => {
                    queue.close();
                    while batch.len() < BATCH {
                        match queue.try_recv() {
                            Ok(notice) => batch.push(notice),
                            Err(_) => break,
                        }
                    }
                    true
                }
            };
            if !batch.is_empty() {
                match self.store.insert_skip_notices(&batch).await {
                    Ok(()) => {
                        tracing::debug!(
                            notices = batch.len(),
                            "capture budget's skip notices stored for the agents' nodes"
                        )
                    }
                    Err(err) => {
                        tracing::warn!(notices = batch.len(), error = %err, "cannot store the capture budget's skip notices; those agents send the profiles and they are dropped on arrival")
                    }
                }
                batch.clear();
            }
            if closed {
                break;
            }
        }
    }
}
