//! The delivery task: takes due alerts from the outbox, POSTs them, and records the
//! answer — delivered on 2xx, retried with exponential backoff and jitter on 408, 429,
//! 5xx and network errors (until given up), failed for good on any other status.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::config::HookKind;
use super::outbox::{DueAlert, Outbox, KEEP_FINISHED_MS};
use super::payload::with_routing_key;
use super::AlertError;
use crate::auth::Secret;

/// The HTTP(S) client alerts go out with.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The outbox, shared by `notify` and the delivery task.
pub(crate) type SharedOutbox = Arc<Mutex<Outbox>>;

/// Alerts sent at once, at most.
const BATCH: usize = 32;
/// Longest sleep without looking at the outbox.
const IDLE: Duration = Duration::from_secs(60);
/// How often finished rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);
/// How much of a hook's answer is read, for the log.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    i64::try_from(crate::clock::unix_nanos_now() / 1_000_000).unwrap_or(i64::MAX)
}

/// Runs `f` on the outbox on a blocking thread (SQLite waits for the disk).
pub(crate) async fn with_outbox<T, F>(outbox: &SharedOutbox, f: F) -> Result<T, AlertError>
where
    T: Send + 'static,
    F: FnOnce(&mut Outbox) -> Result<T, AlertError> + Send + 'static,
{
    let outbox = Arc::clone(outbox);
    tokio::task::spawn_blocking(move || {
        let mut guard = outbox.lock().map_err(|_| AlertError::Poisoned)?;
        f(&mut guard)
    })
    .await
    .map_err(|e| AlertError::Task(e.to_string()))?
}

/// A configured hook, ready to send to.
pub(crate) struct Target {
    pub(crate) kind: HookKind,
    pub(crate) uri: Uri,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) routing_key: Option<Secret>,
}

/// Retry timing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub(crate) initial_ms: u64,
    pub(crate) max_ms: u64,
    pub(crate) give_up_ms: u64,
    pub(crate) timeout: Duration,
}

impl RetryPolicy {
    /// Delay before attempt `attempts + 1`: doubling from `initial_ms` up to `max_ms`,
    /// the upper half jittered so that many alerts failing together spread out.
    fn delay_ms(&self, attempts: u32) -> u64 {
        let doublings = attempts.saturating_sub(1).min(40);
        let full = self
            .initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms);
        let half = full / 2;
        let jitter = std::collections::hash_map::RandomState::new()
            .hash_one((attempts, crate::clock::unix_nanos_now()))
            % (full - half + 1);
        half + jitter
    }
}

/// How one attempt went.
#[derive(Debug)]
enum Outcome {
    Delivered(StatusCode),
    /// Worth another try, after at least the hook's `Retry-After` if it gave one.
    Retry(String, Option<u64>),
    Permanent(String),
}

/// The task's state.
pub(crate) struct Delivery {
    pub(crate) outbox: SharedOutbox,
    pub(crate) targets: HashMap<String, Arc<Target>>,
    pub(crate) client: HttpClient,
    pub(crate) retry: RetryPolicy,
    pub(crate) keep_finished_rows: u64,
    pub(crate) wake: Arc<Notify>,
    /// Told when an alert leaves the pending state (delivered or failed for good), so
    /// an incident change waiting for room in a full outbox tries again.
    pub(crate) room: Arc<Notify>,
    pub(crate) closing: watch::Receiver<bool>,
}

impl Delivery {
    /// Delivers until `closing` turns true. Alerts in flight then are left pending and
    /// sent again by the next start.
    pub(crate) async fn run(mut self) {
        let mut last_prune: Option<Instant> = None;
        loop {
            if *self.closing.borrow() {
                break;
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                let keep = self.keep_finished_rows;
                match with_outbox(&self.outbox, move |o| {
                    o.prune(now_ms(), KEEP_FINISHED_MS, keep)
                })
                .await
                {
                    Ok(0) => {}
                    Ok(removed) => tracing::debug!(removed, "alert outbox pruned"),
                    Err(err) => tracing::warn!(error = %err, "cannot prune the alert outbox"),
                }
            }
            if let Ok(stats) = with_outbox(&self.outbox, |o| o.stats()).await {
                crate::metrics::metrics()
                    .alert_outbox_pending
                    .set(i64::try_from(stats.pending).unwrap_or(i64::MAX));
            }
            let now = now_ms();
            let due = match with_outbox(&self.outbox, move |o| o.due(now, BATCH)).await {
                Ok(due) => due,
                Err(err) => {
                    tracing::error!(error = %err, "cannot read the alert outbox");
                    if self.pause(Duration::from_secs(1)).await {
                        break;
                    }
                    continue;
                }
            };
            if due.is_empty() {
                let wait = match with_outbox(&self.outbox, |o| o.next_due()).await {
                    Ok(Some(at)) => {
                        Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(IDLE)
                    }
                    Ok(None) => IDLE,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot read the alert outbox");
                        Duration::from_secs(1)
                    }
                };
                if self.pause(wait).await {
                    break;
                }
                continue;
            }
            if !self.deliver(due).await {
                break;
            }
        }
        tracing::debug!("alert delivery stopped");
    }

    /// Sleeps up to `wait`, less if woken; true when closing.
    async fn pause(&mut self, wait: Duration) -> bool {
        tokio::select! {
            () = closed(&mut self.closing) => true,
            () = self.wake.notified() => false,
            () = tokio::time::sleep(wait) => false,
        }
    }

    /// Sends one batch (at most one alert per hook and incident, so order holds) at
    /// once and records each answer; false when closing cut it short.
    async fn deliver(&mut self, due: Vec<DueAlert>) -> bool {
        let mut sends = JoinSet::new();
        for alert in due {
            match self.targets.get(&alert.hook) {
                Some(target) => {
                    let (client, target) = (self.client.clone(), Arc::clone(target));
                    let timeout = self.retry.timeout;
                    sends.spawn(async move {
                        let outcome = send(&client, &target, &alert, timeout).await;
                        (alert, outcome)
                    });
                }
                None => {
                    let reason = format!("hook {:?} is no longer configured", alert.hook);
                    self.record(alert, Outcome::Permanent(reason)).await;
                }
            }
        }
        let mut closing = self.closing.clone();
        loop {
            tokio::select! {
                biased;
                () = closed(&mut closing) => return false,
                next = sends.join_next() => match next {
                    None => return true,
                    Some(Ok((alert, outcome))) => self.record(alert, outcome).await,
                    Some(Err(err)) => tracing::error!(error = %err, "alert send task failed"),
                },
            }
        }
    }

    /// Writes the outcome of an attempt to the outbox, and says so in the log.
    async fn record(&self, alert: DueAlert, outcome: Outcome) {
        let attempts = alert.attempts.saturating_add(1);
        let now = now_ms();
        let seq = alert.seq;
        let (hook, incident, event, alert_id) = (
            alert.hook.as_str(),
            alert.incident_id.as_str(),
            alert.kind.as_str(),
            alert.alert_id.as_str(),
        );
        let result = match outcome {
            Outcome::Delivered(status) => {
                tracing::info!(
                    hook,
                    incident,
                    event,
                    alert_id,
                    attempts,
                    status = status.as_u16(),
                    "alert delivered"
                );
                crate::metrics::metrics().alert_delivery(hook, "delivered");
                with_outbox(&self.outbox, move |o| o.delivered(seq, attempts, now)).await
            }
            Outcome::Permanent(error) => {
                tracing::error!(hook, incident, event, alert_id, attempts, %error, "alert refused by its hook; not retried");
                crate::metrics::metrics().alert_delivery(hook, "failed");
                with_outbox(&self.outbox, move |o| o.failed(seq, attempts, now, &error)).await
            }
            Outcome::Retry(error, retry_after_ms) => {
                let delay = self
                    .retry
                    .delay_ms(attempts)
                    .max(retry_after_ms.unwrap_or(0).min(self.retry.max_ms));
                let next = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
                let deadline = alert
                    .created_at_ms
                    .saturating_add(i64::try_from(self.retry.give_up_ms).unwrap_or(i64::MAX));
                if next > deadline {
                    let error = format!("given up after {attempts} attempts: {error}");
                    tracing::error!(hook, incident, event, alert_id, attempts, %error, "alert not delivered");
                    crate::metrics::metrics().alert_delivery(hook, "failed");
                    with_outbox(&self.outbox, move |o| o.failed(seq, attempts, now, &error)).await
                } else {
                    tracing::warn!(hook, incident, event, alert_id, attempts, retry_in_ms = delay, %error, "alert delivery failed; will retry");
                    crate::metrics::metrics().alert_delivery(hook, "retry");
                    with_outbox(&self.outbox, move |o| o.retry(seq, attempts, next, &error)).await
                }
            }
        };
        if let Err(err) = result {
            tracing::error!(hook, alert_id, error = %err, "cannot record an alert delivery; it may be sent again");
        }
        self.room.notify_waiters();
    }
}

/// Returns once `closing` is true (or its sender is gone).
pub(crate) async fn closed(closing: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; it must not outlive this function.
    let _ = closing.wait_for(|c| *c).await.map(|_| ());
}

/// The innermost cause of an error, which names what actually went wrong.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// One POST of `alert` to `target`.
async fn send(
    client: &HttpClient,
    target: &Target,
    alert: &DueAlert,
    timeout: Duration,
) -> Outcome {
    let body = match target.kind {
        HookKind::Pagerduty => {
            let stored = match serde_json::from_str(&alert.body) {
                Ok(value) => value,
                Err(e) => return Outcome::Permanent(format!("stored alert is not JSON: {e}")),
            };
            let key = target.routing_key.as_ref().map(Secret::expose);
            match serde_json::to_vec(&with_routing_key(stored, key)) {
                Ok(bytes) => Bytes::from(bytes),
                Err(e) => return Outcome::Permanent(format!("cannot encode the alert: {e}")),
            }
        }
        HookKind::Webhook | HookKind::Slack | HookKind::Alertmanager => {
            Bytes::from(alert.body.clone())
        }
    };
    let mut request = Request::post(target.uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("holmes-collector/", env!("CARGO_PKG_VERSION")),
        );
    if target.kind == HookKind::Webhook {
        // Lets a receiver drop the rare resend after a crash between send and record.
        request = request.header("x-holmes-alert-id", alert.alert_id.as_str());
    }
    for (name, value) in &target.headers {
        request = request.header(name, value);
    }
    let request = match request.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return Outcome::Permanent(format!("cannot build the request: {e}")),
    };
    let call = async {
        let response = client.request(request).await.map_err(|e| root_cause(&e))?;
        let status = response.status();
        let retry_after_ms = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| s.saturating_mul(1000));
        // The answer only matters for the log; a body that breaks off does not.
        let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|b| {
                String::from_utf8_lossy(&b.to_bytes())
                    .chars()
                    .take(200)
                    .collect::<String>()
            })
            .unwrap_or_default();
        Ok::<_, String>((status, retry_after_ms, answer))
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Outcome::Retry(format!("no answer within {timeout:?}"), None),
        Ok(Err(reason)) => Outcome::Retry(reason, None),
        Ok(Ok((status, retry_after, answer))) => {
            let error = || format!("HTTP {}: {}", status.as_u16(), answer.trim());
            if status.is_success() {
                Outcome::Delivered(status)
            } else if status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT
                || status.is_server_error()
            {
                Outcome::Retry(error(), retry_after)
            } else {
                Outcome::Permanent(error())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let policy = RetryPolicy {
            initial_ms: 1_000,
            max_ms: 300_000,
            give_up_ms: 0,
            timeout: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let first = policy.delay_ms(1);
            assert!((500..=1_000).contains(&first), "{first}");
            let third = policy.delay_ms(3);
            assert!((2_000..=4_000).contains(&third), "{third}");
            let late = policy.delay_ms(30);
            assert!((150_000..=300_000).contains(&late), "{late}");
            assert!(policy.delay_ms(u32::MAX) <= 300_000);
        }
    }
}
