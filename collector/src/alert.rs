//! Alert hooks: incidents opened, escalated and resolved are sent to on-call through a
//! generic JSON webhook, Slack incoming webhooks, PagerDuty Events API v2 and
//! Alertmanager's `/api/v2/alerts` ([`alertmanager`]).
//!
//! [`Alerter::notify`] writes one row per matching hook to a SQLite outbox in the data
//! directory ([`outbox::OUTBOX_FILE`]) and returns; a background task delivers them,
//! retrying with backoff. An alert's id is derived from the incident id, the change
//! and the incident version, so the same change notified again (a correlator replaying
//! after a restart) is stored once and sent once; a restart loses nothing that
//! `notify` accepted. Delivery is at least once: an alert whose answer arrives as the
//! collector stops is sent again by the next start, which PagerDuty folds by its dedup
//! key (the incident id) and webhooks can drop by `alert_id`.

pub mod alertmanager;
pub mod config;
mod deliver;
pub mod outbox;
mod payload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holmes_storage::{IncidentRecord, IncidentSuspects};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

use config::AlertsConfigError;
pub use config::{AlertsConfig, HookConfig, HookKind, MinSeverity};
use deliver::{now_ms, with_outbox, Delivery, RetryPolicy, SharedOutbox, Target};
use outbox::{NewAlert, Outbox};
pub use outbox::{OutboxStats, OUTBOX_FILE};

/// What happened to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A new incident.
    Opened,
    /// An instance incident became a fleet incident.
    Escalated,
    /// The incident went quiet.
    Resolved,
    /// The incident's suspects name a culprit: the first time, or another one.
    Suspects,
}

impl AlertKind {
    /// `opened`, `escalated`, `resolved` or `suspects`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Opened => "opened",
            AlertKind::Escalated => "escalated",
            AlertKind::Resolved => "resolved",
            AlertKind::Suspects => "suspects",
        }
    }
}

/// Why alerts cannot be queued or the alerter cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The `[alerts]` configuration cannot be used.
    #[error(transparent)]
    Config(#[from] AlertsConfigError),
    /// The data directory cannot be created.
    #[error("cannot create the data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The outbox file cannot be opened.
    #[error("cannot open the alert outbox {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// Reading or writing the outbox failed.
    #[error("alert outbox: {0}")]
    Outbox(#[from] rusqlite::Error),
    /// Too many alerts are waiting for delivery.
    #[error("alert outbox full: {pending} alerts pending (alerts.max_pending = {max}); are the hooks reachable?")]
    OutboxFull {
        /// Alerts waiting.
        pending: u64,
        /// The configured cap.
        max: u64,
    },
    /// No TLS trust store for `https://` hooks.
    #[error("cannot load the system's trusted certificates for https:// alert hooks: {0}")]
    Tls(String),
    /// A previous outbox operation panicked.
    #[error("alert outbox unusable after an earlier failure")]
    Poisoned,
    /// A blocking outbox operation could not run.
    #[error("alert outbox task failed: {0}")]
    Task(String),
}

/// Sends incident changes to the configured hooks. Cheap to clone.
#[derive(Clone)]
pub struct Alerter {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    hooks: Vec<HookConfig>,
    base_url: String,
    max_pending: u64,
    outbox: SharedOutbox,
    wake: Arc<Notify>,
    /// Signalled by the delivery task when an alert stops being pending.
    room: Arc<Notify>,
    closing: watch::Receiver<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("Alerter(disabled)"),
            Some(inner) => f
                .debug_struct("Alerter")
                .field(
                    "hooks",
                    &inner.hooks.iter().map(|h| &h.name).collect::<Vec<_>>(),
                )
                .field("base_url", &inner.base_url)
                .finish(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The TLS client configuration for `https://` hooks: the system's trust store.
fn tls_config(needed: bool) -> Result<rustls::ClientConfig, AlertError> {
    use hyper_rustls::ConfigBuilderExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AlertError::Tls(e.to_string()))?;
    match builder.clone().with_native_roots() {
        Ok(b) => Ok(b.with_no_client_auth()),
        // Plain http:// hooks need no trust store.
        Err(_) if !needed => Ok(builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()),
        Err(e) => Err(AlertError::Tls(e.to_string())),
    }
}

impl Alerter {
    /// Opens the persisted outbox in `data_dir` and starts the delivery task (needs a
    /// tokio runtime); it stops when `closing` turns true. Links point to
    /// `[alerts] base_url`, else to `base_url` (the collector's own HTTP address, e.g.
    /// `http://127.0.0.1:7071`). Without hooks this is [`Alerter::disabled`] and no file
    /// is created.
    pub fn start(
        config: &AlertsConfig,
        data_dir: &Path,
        base_url: Option<String>,
        closing: watch::Receiver<bool>,
    ) -> Result<Alerter, AlertError> {
        config.validate()?;
        if config.hooks.is_empty() {
            return Ok(Alerter::disabled());
        }
        let base_url = config
            .base_url
            .clone()
            .or(base_url)
            .unwrap_or_else(|| format!("http://{}", crate::config::DEFAULT_HTTP_ADDR))
            .trim_end_matches('/')
            .to_owned();
        if config.base_url.is_none() {
            let host = base_url
                .parse::<hyper::Uri>()
                .ok()
                .and_then(|u| u.host().map(str::to_owned))
                .unwrap_or_default();
            if matches!(
                host.as_str(),
                "" | "0.0.0.0" | "[::]" | "127.0.0.1" | "[::1]" | "localhost"
            ) {
                tracing::warn!(
                    %base_url,
                    "links in alerts point to an address on-call cannot open; set [alerts] base_url"
                );
            }
        }
        let mut targets = HashMap::new();
        for hook in &config.hooks {
            let uri = config::check_url(&format!("alerts.hooks {:?}: url", hook.name), hook.url())?;
            let target = Target {
                kind: hook.kind,
                uri,
                headers: hook.header_values()?,
                routing_key: hook.routing_key()?,
            };
            targets.insert(hook.name.clone(), Arc::new(target));
        }
        let needs_tls = targets
            .values()
            .any(|t| t.uri.scheme_str() == Some("https"));
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(needs_tls)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new()).build(connector);

        let outbox = Outbox::open(data_dir)?;
        let names: Vec<String> = config.hooks.iter().map(|h| h.name.clone()).collect();
        for (hook, alerts) in outbox.fail_unknown_hooks(&names, now_ms())? {
            tracing::warn!(
                hook,
                alerts,
                "pending alerts of a hook no longer configured are marked failed"
            );
        }
        let pending = outbox.stats()?.pending;
        let outbox: SharedOutbox = Arc::new(Mutex::new(outbox));
        let wake = Arc::new(Notify::new());
        let room = Arc::new(Notify::new());
        let delivery = Delivery {
            outbox: Arc::clone(&outbox),
            targets,
            client,
            retry: RetryPolicy {
                initial_ms: millis(config.retry_initial),
                max_ms: millis(config.retry_max),
                give_up_ms: millis(config.give_up_after),
                timeout: config.request_timeout,
            },
            keep_finished_rows: config.max_pending,
            wake: Arc::clone(&wake),
            room: Arc::clone(&room),
            closing: closing.clone(),
        };
        let task = tokio::spawn(delivery.run());
        tracing::info!(
            hooks = ?names,
            pending,
            outbox = %data_dir.join(OUTBOX_FILE).display(),
            "alert hooks ready"
        );
        Ok(Alerter {
            inner: Some(Arc::new(Inner {
                hooks: config.hooks.clone(),
                base_url,
                max_pending: config.max_pending,
                outbox,
                wake,
                room,
                closing,
                task: Mutex::new(Some(task)),
            })),
        })
    }

    /// An alerter with no hooks: `notify` does nothing.
    pub fn disabled() -> Alerter {
        Alerter { inner: None }
    }

    /// Whether any hook is configured.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The id of the alert for this change: the same incident, kind and version always
    /// give the same id; for [`AlertKind::Suspects`], the same incident and top suspect.
    pub fn alert_id(
        kind: AlertKind,
        incident: &IncidentRecord,
        suspects: Option<&IncidentSuspects>,
    ) -> String {
        match (kind, suspects.and_then(|s| s.suspects.first())) {
            (AlertKind::Suspects, Some(top)) => {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in top.function.bytes() {
                    h ^= u64::from(b);
                    h = h.wrapping_mul(0x0000_0100_0000_01b3);
                }
                format!("{}-suspects-{h:016x}", incident.incident_id)
            }
            _ => format!(
                "{}-{}-v{}",
                incident.incident_id,
                kind.as_str(),
                incident.version
            ),
        }
    }

    /// Queues one alert per matching hook for this incident change, with the incident's
    /// suspects as last computed (if any), durably (it is on disk when this returns). A
    /// change already queued (same [`Alerter::alert_id`]) is not queued again. It does
    /// not wait for delivery, but it does wait for room: while `alerts.max_pending`
    /// alerts are pending (hooks unreachable), the change waits until deliveries succeed
    /// or are given up, so the trigger that made it is not acknowledged and no alert is
    /// dropped. Only a collector that is closing gives up waiting, with
    /// [`AlertError::OutboxFull`].
    pub async fn notify(
        &self,
        kind: AlertKind,
        incident: &IncidentRecord,
        suspects: Option<&IncidentSuspects>,
    ) -> Result<(), AlertError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let alert_id = Alerter::alert_id(kind, incident, suspects);
        let url = payload::incident_url(&inner.base_url, &incident.incident_id);
        let alerts: Vec<NewAlert> = inner
            .hooks
            .iter()
            .filter(|h| h.wants(&incident.service, incident.severity))
            .map(|h| NewAlert {
                alert_id: alert_id.clone(),
                hook: h.name.clone(),
                incident_id: incident.incident_id.clone(),
                kind: kind.as_str(),
                body: payload::body(h.kind, kind, &alert_id, incident, &url, suspects).to_string(),
            })
            .collect();
        if alerts.is_empty() {
            return Ok(());
        }
        let hooks = alerts.len();
        let max = inner.max_pending;
        let alerts = Arc::new(alerts);
        let mut closing = inner.closing.clone();
        let mut waited = false;
        let queued = loop {
            // Registered before the attempt, so room freed in between is not missed.
            let room = inner.room.notified();
            let batch = Arc::clone(&alerts);
            match with_outbox(&inner.outbox, move |o| o.enqueue(&batch, now_ms(), max)).await {
                Ok(queued) => break queued,
                Err(AlertError::OutboxFull { pending, max }) => {
                    if !waited {
                        waited = true;
                        crate::metrics::metrics().alert_outbox_waits.inc();
                        tracing::warn!(
                            incident = %incident.incident_id,
                            event = kind.as_str(),
                            pending,
                            max_pending = max,
                            "alert outbox full; the incident change waits for room (are the hooks reachable?)"
                        );
                    }
                    tokio::select! {
                        () = room => {}
                        // A lost wake-up costs a second, not the alert.
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = deliver::closed(&mut closing) => {
                            return Err(AlertError::OutboxFull { pending, max });
                        }
                    }
                }
                Err(err) => return Err(err),
            }
        };
        if waited {
            tracing::info!(incident = %incident.incident_id, event = kind.as_str(), "alert queued after waiting for room");
        }
        tracing::debug!(
            incident = %incident.incident_id,
            event = kind.as_str(),
            alert_id,
            hooks,
            queued,
            "alert queued"
        );
        if queued > 0 {
            inner.wake.notify_one();
        }
        Ok(())
    }

    /// Rows of the outbox by state (all zero when disabled).
    pub async fn stats(&self) -> Result<OutboxStats, AlertError> {
        match &self.inner {
            None => Ok(OutboxStats::default()),
            Some(inner) => with_outbox(&inner.outbox, |o| o.stats()).await,
        }
    }

    /// Waits for the delivery task to end, once `closing` has turned true.
    pub async fn stopped(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        let task = inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "alert delivery task failed");
            }
        }
    }
}
