//! A small client for the collector's HTTP API, used by the `holmes` CLI, the tests,
//! the benchmarks and the load generator.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;

pub mod control;

use holmes_api::{
    DebugInfoUploadJson, IncidentDetailJson, IncidentsJson, InstanceJson, MetricsJson,
    ProfilesJson, ServiceJson, TopJson, TriggersJson,
};

/// Where the CLI looks for the API when neither `--api` nor `HOLMES_API` is set.
pub const DEFAULT_API: &str = "http://127.0.0.1:7071";
/// Longest wait for one API answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A request's body and its content type.
struct Body {
    content_type: &'static str,
    bytes: Bytes,
}

/// Told how far a download is: the bytes received so far, and the total when the
/// collector said it (`content-length`).
pub type OnProgress<'a> = &'a mut (dyn FnMut(u64, Option<u64>) + Send);

/// A failed API call, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    /// A value given to the client breaks the naming rules, before anything is sent.
    #[error("{0}")]
    InvalidArgument(String),
    /// The API token cannot be sent in a header.
    #[error("invalid API token: {0}")]
    InvalidToken(String),
    /// The CA file cannot be used to check the API's certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The API address is not an `http://host:port` URL.
    #[error("invalid API address {url:?}: {reason}")]
    InvalidUrl {
        /// The address.
        url: String,
        /// Why.
        reason: String,
    },
    /// Nothing answered at the address.
    #[error("cannot reach the Holmes API at {url}: {reason} (is the collector running? set --api or HOLMES_API)")]
    Unreachable {
        /// The address.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("the Holmes API at {url} did not answer within {timeout:?}")]
    Timeout {
        /// The address.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// The API answered with an error.
    #[error("{message} (HTTP {status})")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// The answer was not what this client expects.
    #[error("unexpected answer from {url}: {reason}")]
    Decode {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
}

/// How to reach the API beyond its address.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer <token>` with every request.
    pub token: Option<String>,
    /// PEM CA certificate(s) that sign the API's certificate, for `https://`; without
    /// it the system's trust store is used.
    pub ca_file: Option<PathBuf>,
}

/// A client for one collector's API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    authorization: Option<HeaderValue>,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("token", &self.authorization.is_some())
            .finish()
    }
}

/// The TLS client configuration: the CA file's certificates, or the system's roots.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ApiClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiClientError::CaFile {
            path: ca_file.map_or_else(|| PathBuf::from("<system trust store>"), Path::to_owned),
            reason: e.to_string(),
        })?;
    let Some(path) = ca_file else {
        use hyper_rustls::ConfigBuilderExt;
        return builder
            .with_native_roots()
            .map(|b| b.with_no_client_auth())
            .map_err(|e| ApiClientError::CaFile {
                path: PathBuf::from("<system trust store>"),
                reason: e.to_string(),
            });
    };
    let bad = |reason: String| ApiClientError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE block found".to_owned()));
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ApiClient {
    /// A client for the API at `base`, e.g. `http://127.0.0.1:7071`, with no token.
    pub fn new(base: &str) -> Result<Self, ApiClientError> {
        ApiClient::with_options(base, &ClientOptions::default())
    }

    /// A client for the API at `base` (`http://host:port` or `https://host:port`).
    pub fn with_options(base: &str, options: &ClientOptions) -> Result<Self, ApiClientError> {
        let trimmed = base.trim_end_matches('/');
        let invalid = |reason: &str| ApiClientError::InvalidUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = trimmed
            .strip_prefix("http://")
            .or_else(|| trimmed.strip_prefix("https://"))
            .ok_or_else(|| invalid("expected http://host:port or https://host:port"))?;
        if rest.is_empty() || rest.contains('/') {
            return Err(invalid("expected http(s)://host:port with no path"));
        }
        trimmed
            .parse::<hyper::Uri>()
            .map_err(|e| invalid(&e.to_string()))?;
        let authorization = match options.token.as_deref().map(str::trim) {
            Some(token) => {
                if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ApiClientError::InvalidToken(
                        "tokens are visible ASCII without spaces".to_owned(),
                    ));
                }
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        ApiClientError::InvalidToken(
                            "tokens are visible ASCII without spaces".to_owned(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        // The CA file is read even for http://, so that a wrong path is reported at once.
        let tls = tls_config(options.ca_file.as_deref())?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Ok(ApiClient {
            base: trimmed.to_owned(),
            authorization,
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// GETs `path` (with its query) and decodes the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiClientError> {
        let body = self.get_raw(path).await?;
        serde_json::from_slice(&body).map_err(|e| ApiClientError::Decode {
            url: format!("{}{}", self.base, path),
            reason: e.to_string(),
        })
    }

    /// GETs `path` (with its query) and returns the answer's bytes as they are; an
    /// answer that is not a success is an [`ApiClientError::Api`] with the API's message.
    pub async fn get_raw(&self, path: &str) -> Result<Bytes, ApiClientError> {
        self.send(hyper::Method::GET, path, None, &mut |_, _| {})
            .await
    }

    /// [`ApiClient::get_raw`], telling `progress` as the answer arrives.
    pub async fn get_raw_with_progress(
        &self,
        path: &str,
        progress: OnProgress<'_>,
    ) -> Result<Bytes, ApiClientError> {
        self.send(hyper::Method::GET, path, None, progress).await
    }

    /// POSTs to `path` (parameters in its query, no body) and decodes the JSON answer.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiClientError> {
        self.call(hyper::Method::POST, path, None).await
    }

    /// Sends `method` to `path` with an optional JSON body and decodes the JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: hyper::Method,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<T, ApiClientError> {
        let body = json.map(|j| Body {
            content_type: "application/json",
            bytes: Bytes::from(j.to_string()),
        });
        let answer = self.send(method, path, body, &mut |_, _| {}).await?;
        serde_json::from_slice(&answer).map_err(|e| ApiClientError::Decode {
            url: format!("{}{}", self.base, path),
            reason: e.to_string(),
        })
    }

    async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Body>,
        progress: OnProgress<'_>,
    ) -> Result<Bytes, ApiClientError> {
        let url = format!("{}{}", self.base, path);
        let uri: hyper::Uri =
            url.parse().map_err(
                |e: hyper::http::uri::InvalidUri| ApiClientError::InvalidUrl {
                    url: url.clone(),
                    reason: e.to_string(),
                },
            )?;
        let call = async {
            let mut request = hyper::Request::builder().method(method).uri(uri);
            if let Some(auth) = &self.authorization {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            if let Some(body) = &body {
                request = request.header(hyper::header::CONTENT_TYPE, body.content_type);
            }
            let request = request
                .body(Full::new(body.map(|b| b.bytes).unwrap_or_default()))
                .map_err(|e| ApiClientError::InvalidUrl {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
            let response =
                self.http
                    .request(request)
                    .await
                    .map_err(|e| ApiClientError::Unreachable {
                        url: self.base.clone(),
                        reason: root_cause(&e),
                    })?;
            let status = response.status();
            let total = response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let mut body = response.into_body();
            let mut received = Vec::new();
            progress(0, total);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ApiClientError::Unreachable {
                    url: self.base.clone(),
                    reason: e.to_string(),
                })?;
                if let Ok(data) = frame.into_data() {
                    received.extend_from_slice(&data);
                    progress(received.len() as u64, total);
                }
            }
            Ok::<_, ApiClientError>((status, Bytes::from(received)))
        };
        let (status, body) =
            tokio::time::timeout(REQUEST_TIMEOUT, call)
                .await
                .map_err(|_| ApiClientError::Timeout {
                    url: self.base.clone(),
                    timeout: REQUEST_TIMEOUT,
                })??;
        if !status.is_success() {
            let message = serde_json::from_slice::<holmes_api::ErrorJson>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_owned());
            return Err(ApiClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        Ok(body)
    }

    /// `PUT /api/v1/debuginfo/{build_id}`: stores a module's debug info (an upload blob
    /// of `holmes-symbolize`) on the collector.
    pub async fn upload_debuginfo(
        &self,
        build_id: &str,
        blob: Vec<u8>,
    ) -> Result<DebugInfoUploadJson, ApiClientError> {
        let path = format!("/api/v1/debuginfo/{}", encode(build_id));
        let body = Body {
            content_type: "application/octet-stream",
            bytes: Bytes::from(blob),
        };
        let body = self
            .send(hyper::Method::PUT, &path, Some(body), &mut |_, _| {})
            .await?;
        serde_json::from_slice(&body).map_err(|e| ApiClientError::Decode {
            url: format!("{}{}", self.base, path),
            reason: e.to_string(),
        })
    }

    /// `GET /api/v1/services`.
    pub async fn services(&self) -> Result<Vec<ServiceJson>, ApiClientError> {
        self.get("/api/v1/services").await
    }

    /// `GET /api/v1/services/{service}/instances`.
    pub async fn instances(&self, service: &str) -> Result<Vec<InstanceJson>, ApiClientError> {
        check_service(service)?;
        self.get(&format!("/api/v1/services/{}/instances", encode(service)))
            .await
    }

    /// `GET /api/v1/services/{service}/metrics?metric=..&since=..`.
    pub async fn metrics(
        &self,
        service: &str,
        metric: &str,
        since: &str,
    ) -> Result<MetricsJson, ApiClientError> {
        check_service(service)?;
        self.get(&format!(
            "/api/v1/services/{}/metrics?metric={}&since={}",
            encode(service),
            encode(metric),
            encode(since)
        ))
        .await
    }

    /// `GET /api/v1/services/{service}/triggers?since=..`.
    pub async fn triggers(
        &self,
        service: &str,
        since: &str,
    ) -> Result<TriggersJson, ApiClientError> {
        check_service(service)?;
        self.get(&format!(
            "/api/v1/services/{}/triggers?since={}",
            encode(service),
            encode(since)
        ))
        .await
    }

    /// `GET /api/v1/services/{service}/profiles?since=..`.
    pub async fn profiles(
        &self,
        service: &str,
        since: &str,
    ) -> Result<ProfilesJson, ApiClientError> {
        check_service(service)?;
        self.get(&format!(
            "/api/v1/services/{}/profiles?since={}",
            encode(service),
            encode(since)
        ))
        .await
    }

    /// `GET /api/v1/services/{service}/profiles/{profile_id}`: the profile as
    /// gzip-compressed pprof.
    pub async fn download_profile(
        &self,
        service: &str,
        profile_id: &str,
    ) -> Result<Vec<u8>, ApiClientError> {
        self.download_profile_with_progress(service, profile_id, &mut |_, _| {})
            .await
    }

    /// [`ApiClient::download_profile`], telling `progress` as the bytes arrive.
    pub async fn download_profile_with_progress(
        &self,
        service: &str,
        profile_id: &str,
        progress: OnProgress<'_>,
    ) -> Result<Vec<u8>, ApiClientError> {
        check_service(service)?;
        holmes_api::validate_profile_id(profile_id).map_err(ApiClientError::InvalidArgument)?;
        let body = self
            .get_raw_with_progress(
                &holmes_api::download_path(&encode(service), &encode(profile_id)),
                progress,
            )
            .await?;
        Ok(Vec::from(body))
    }

    /// `GET /api/v1/services/{service}/incidents?since=..[&status=..]`, or the whole
    /// fleet's (`GET /api/v1/incidents`) when `service` is `None`.
    pub async fn incidents(
        &self,
        service: Option<&str>,
        since: &str,
        status: Option<&str>,
    ) -> Result<IncidentsJson, ApiClientError> {
        let mut path = match service {
            Some(s) => format!(
                "/api/v1/services/{}/incidents?since={}",
                encode(s),
                encode(since)
            ),
            None => format!("/api/v1/incidents?since={}", encode(since)),
        };
        if let Some(st) = status {
            path.push_str(&format!("&status={}", encode(st)));
        }
        self.get(&path).await
    }

    /// `GET /api/v1/incidents/{incident_id}`: one incident with its triggers, profiles,
    /// suspects and related incidents.
    pub async fn incident(&self, incident_id: &str) -> Result<IncidentDetailJson, ApiClientError> {
        self.get(&format!("/api/v1/incidents/{}", encode(incident_id)))
            .await
    }

    /// A flame graph (SVG) of an incident's merged profiles; with `diff`, colored by
    /// growth against `controls` (its healthy controls) or `baseline`.
    pub async fn flamegraph(
        &self,
        id: &str,
        diff: Option<&str>,
    ) -> Result<Vec<u8>, ApiClientError> {
        self.flamegraph_with_progress(id, diff, &mut |_, _| {})
            .await
    }

    /// [`ApiClient::flamegraph`], telling `progress` as the SVG arrives.
    pub async fn flamegraph_with_progress(
        &self,
        id: &str,
        diff: Option<&str>,
        progress: OnProgress<'_>,
    ) -> Result<Vec<u8>, ApiClientError> {
        let query = diff.map_or(String::new(), |d| format!("?diff={}", encode(d)));
        self.get_raw_with_progress(
            &format!("/api/v1/incidents/{}/flamegraph.svg{query}", encode(id)),
            progress,
        )
        .await
        .map(Vec::from)
    }

    /// `GET /api/v1/services/{service}/profiles/{profile_id}/flamegraph.svg`.
    pub async fn profile_flamegraph(
        &self,
        service: &str,
        profile_id: &str,
    ) -> Result<Vec<u8>, ApiClientError> {
        self.profile_flamegraph_with_progress(service, profile_id, &mut |_, _| {})
            .await
    }

    /// [`ApiClient::profile_flamegraph`], telling `progress` as the SVG arrives.
    pub async fn profile_flamegraph_with_progress(
        &self,
        service: &str,
        profile_id: &str,
        progress: OnProgress<'_>,
    ) -> Result<Vec<u8>, ApiClientError> {
        check_service(service)?;
        self.get_raw_with_progress(
            &holmes_api::flamegraph_path(&encode(service), &encode(profile_id)),
            progress,
        )
        .await
        .map(Vec::from)
    }

    /// `GET /api/v1/services/{service}/flamegraph.svg?kind=..&since=..`: a service's
    /// profiles of one kind over a time range, merged.
    pub async fn service_flamegraph(
        &self,
        service: &str,
        kind: &str,
        since: &str,
    ) -> Result<Vec<u8>, ApiClientError> {
        self.service_flamegraph_with_progress(service, kind, since, &mut |_, _| {})
            .await
    }

    /// [`ApiClient::service_flamegraph`], telling `progress` as the SVG arrives.
    pub async fn service_flamegraph_with_progress(
        &self,
        service: &str,
        kind: &str,
        since: &str,
        progress: OnProgress<'_>,
    ) -> Result<Vec<u8>, ApiClientError> {
        check_service(service)?;
        self.get_raw_with_progress(
            &format!(
                "/api/v1/services/{}/flamegraph.svg?kind={}&since={}",
                encode(service),
                encode(kind),
                encode(since)
            ),
            progress,
        )
        .await
        .map(Vec::from)
    }

    /// `GET /api/v1/services/{service}/profiles/{profile_id}/top`: the costliest
    /// functions by `sample_type` (the profile's default one when `None`), at most
    /// `limit`.
    pub async fn top(
        &self,
        service: &str,
        profile_id: &str,
        sample_type: Option<&str>,
        limit: u64,
    ) -> Result<TopJson, ApiClientError> {
        check_service(service)?;
        let mut path = format!(
            "{}?limit={limit}",
            holmes_api::top_path(&encode(service), &encode(profile_id))
        );
        if let Some(t) = sample_type {
            path.push_str(&format!("&sample_type={}", encode(t)));
        }
        self.get(&path).await
    }
}

/// Refuses a service name the collector would refuse, before asking it.
fn check_service(service: &str) -> Result<(), ApiClientError> {
    holmes_proto::names::validate_name("service", service)
        .map_err(|e| ApiClientError::InvalidArgument(e.to_string()))
}

/// The innermost cause ("Connection refused (os error 111)").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unusable_addresses() {
        for bad in [
            "127.0.0.1:7071",
            "ftp://x",
            "http://",
            "https://",
            "http://h:1/api",
        ] {
            assert!(
                matches!(ApiClient::new(bad), Err(ApiClientError::InvalidUrl { .. })),
                "{bad}"
            );
        }
        assert!(ApiClient::new("http://127.0.0.1:7071/").is_ok());
        assert!(ApiClient::new("https://127.0.0.1:7071").is_ok());
        let token = ClientOptions {
            token: Some("two words".to_owned()),
            ca_file: None,
        };
        assert!(matches!(
            ApiClient::with_options("http://h:1", &token),
            Err(ApiClientError::InvalidToken(_))
        ));
        let missing_ca = ClientOptions {
            token: None,
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
        };
        let err = ApiClient::with_options("https://h:1", &missing_ca).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("10m"), "10m");
        assert_eq!(
            encode("2026-11-26T03:12:00+01:00"),
            "2026-11-26T03%3A12%3A00%2B01%3A00"
        );
    }
}
