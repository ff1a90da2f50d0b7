//! The debuginfod fallback (`[symbolize] debuginfod_urls`): a build whose native
//! locations arrive while the store lacks its debug info — a shared library, a binary
//! shipped stripped whose debug file CI did not upload — is looked up on the configured
//! servers, `GET {url}/buildid/{build_id}/debuginfo`, in order, and what one of them
//! has is stored like a CI upload.
//!
//! Bounded: each build at most once per `debuginfod_interval` whatever the answer (a
//! server that lacks libc's debug info is not asked again on every profile), one request
//! at a time, each under `debuginfod_timeout` and `debuginfod_max_bytes`, no retries
//! within the interval. An agent uploading the build (it holds the store's upload
//! claim) is left to it: the fetch takes the same claim first, and skips the build if
//! someone holds it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::USER_AGENT;
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio_rustls::rustls;

use super::config::SymbolizeConfig;

/// Builds waiting to be looked up, at most.
const QUEUE: usize = 256;
/// How the collector names itself to the servers (their logs show it).
const USER_AGENT_VALUE: &str = concat!("holmes-collector/", env!("CARGO_PKG_VERSION"));

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Found {
    /// A server's debug file of the build.
    Debuginfo {
        /// The server's URL.
        url: String,
        /// The file.
        bytes: Vec<u8>,
    },
    /// No server had it (or none answered usefully).
    Nothing,
}

/// The configured servers and the builds asked for.
pub(crate) struct Debuginfod {
    urls: Vec<String>,
    timeout: Duration,
    max_bytes: u64,
    interval: Duration,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// When each build was last queued.
    asked: Mutex<HashMap<String, Instant>>,
    queue: mpsc::Sender<String>,
    queue_rx: Mutex<Option<mpsc::Receiver<String>>>,
}

impl std::fmt::Debug for Debuginfod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debuginfod")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl Debuginfod {
    /// The servers of `config`; `None` when none is configured.
    pub(crate) fn new(config: &SymbolizeConfig) -> Option<Debuginfod> {
        if config.debuginfod_urls.is_empty() {
            return None;
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let (queue, queue_rx) = mpsc::channel(QUEUE);
        Some(Debuginfod {
            urls: config
                .debuginfod_urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            timeout: config.debuginfod_timeout,
            max_bytes: config.debuginfod_max_bytes,
            interval: config.debuginfod_interval,
            client: Client::builder(TokioExecutor::new()).build(connector),
            asked: Mutex::default(),
            queue,
            queue_rx: Mutex::new(Some(queue_rx)),
        })
    }

    /// The builds to look up, for the one task that does (`None` after the first call).
    pub(crate) fn take_queue(&self) -> Option<mpsc::Receiver<String>> {
        self.queue_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The store lacks `build_id`'s debug info: queues it, unless it was queued within
    /// the interval.
    pub(crate) fn wanted(&self, build_id: &str) {
        let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if asked
            .get(build_id)
            .is_some_and(|at| now.duration_since(*at) < self.interval)
        {
            return;
        }
        if self.queue.try_send(build_id.to_owned()).is_ok() {
            asked.retain(|_, at| now.duration_since(*at) < self.interval);
            asked.insert(build_id.to_owned(), now);
        }
    }

    /// How long the store's upload claim is held while a build is fetched.
    pub(crate) fn claim_lease(&self) -> Duration {
        self.timeout * u32::try_from(self.urls.len()).unwrap_or(u32::MAX) + Duration::from_secs(60)
    }

    /// Asks each server in turn for `build_id`'s debug file.
    pub(crate) async fn fetch(&self, build_id: &str) -> Found {
        for url in &self.urls {
            let started = Instant::now();
            match self.fetch_from(url, build_id).await {
                Ok(Some(bytes)) => {
                    tracing::info!(build_id, url, bytes = bytes.len(), took = ?started.elapsed(), "debug info fetched from debuginfod");
                    return Found::Debuginfo {
                        url: url.clone(),
                        bytes,
                    };
                }
                Ok(None) => {
                    tracing::debug!(build_id, url, "debuginfod server lacks the build");
                }
                Err(reason) => {
                    tracing::warn!(build_id, url, reason, "debuginfod request failed");
                }
            }
        }
        Found::Nothing
    }

    /// One server's answer: the file, `None` for 404, or why it failed.
    async fn fetch_from(&self, url: &str, build_id: &str) -> Result<Option<Vec<u8>>, String> {
        let uri: Uri = format!("{url}/buildid/{build_id}/debuginfo")
            .parse()
            .map_err(|e| format!("bad url: {e}"))?;
        let request = Request::get(uri)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .body(Empty::new())
            .map_err(|e| format!("bad request: {e}"))?;
        let max = self.max_bytes;
        let request = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            match response.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => return Ok(None),
                status => return Err(format!("HTTP {status}")),
            }
            let announced = response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if announced.is_some_and(|n| n > max) {
                return Err(format!(
                    "the debug file is {} bytes, over debuginfod_max_bytes = {max}",
                    announced.unwrap_or_default()
                ));
            }
            let limit = usize::try_from(max).unwrap_or(usize::MAX);
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e} (debuginfod_max_bytes = {max})"))?;
            Ok(Some(body.to_bytes().to_vec()))
        };
        tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| format!("no whole answer within {:?}", self.timeout))?
    }
}

/// TLS for `https://` servers, with the system's trust store (an empty one where the
/// system has none: `http://` servers work anyway); `None` if rustls refuses ring's
/// defaults.
fn tls_config() -> Option<rustls::ClientConfig> {
    use hyper_rustls::ConfigBuilderExt;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(err) => {
            tracing::error!(error = %err, "no TLS for debuginfod servers; the fallback is off");
            return None;
        }
    };
    Some(match builder.clone().with_native_roots() {
        Ok(b) => b.with_no_client_auth(),
        Err(err) => {
            tracing::warn!(error = %err, "no system trust store: https:// debuginfod servers will fail");
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    })
}
