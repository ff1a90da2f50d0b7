//! A small client for the collector's HTTP API, used by the `holmes` CLI and by tests.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::query::{InstanceJson, MetricsJson, ProfilesJson, ServiceJson, TriggersJson};

/// Where the CLI looks for the API when neither `--api` nor `HOLMES_API` is set.
pub const DEFAULT_API: &str = "http://127.0.0.1:7071";
/// Longest wait for one API answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed API call, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
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

/// A client for one collector's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: Client<HttpConnector, Empty<Bytes>>,
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
    /// A client for the API at `base`, e.g. `http://127.0.0.1:7071`.
    pub fn new(base: &str) -> Result<Self, ApiClientError> {
        let trimmed = base.trim_end_matches('/');
        let invalid = |reason: &str| ApiClientError::InvalidUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = trimmed
            .strip_prefix("http://")
            .ok_or_else(|| invalid("expected http://host:port"))?;
        if rest.is_empty() || rest.contains('/') {
            return Err(invalid("expected http://host:port with no path"));
        }
        trimmed
            .parse::<hyper::Uri>()
            .map_err(|e| invalid(&e.to_string()))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Ok(ApiClient {
            base: trimmed.to_owned(),
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
        let url = format!("{}{}", self.base, path);
        let uri: hyper::Uri =
            url.parse().map_err(
                |e: hyper::http::uri::InvalidUri| ApiClientError::InvalidUrl {
                    url: url.clone(),
                    reason: e.to_string(),
                },
            )?;
        let call = async {
            let response = self
                .http
                .get(uri)
                .await
                .map_err(|e| ApiClientError::Unreachable {
                    url: self.base.clone(),
                    reason: root_cause(&e),
                })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ApiClientError::Unreachable {
                    url: self.base.clone(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, ApiClientError>((status, body))
        };
        let (status, body) =
            tokio::time::timeout(REQUEST_TIMEOUT, call)
                .await
                .map_err(|_| ApiClientError::Timeout {
                    url: self.base.clone(),
                    timeout: REQUEST_TIMEOUT,
                })??;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
            return Err(ApiClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        Ok(body)
    }

    /// `GET /api/v1/services`.
    pub async fn services(&self) -> Result<Vec<ServiceJson>, ApiClientError> {
        self.get("/api/v1/services").await
    }

    /// `GET /api/v1/services/{service}/instances`.
    pub async fn instances(&self, service: &str) -> Result<Vec<InstanceJson>, ApiClientError> {
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
        self.get(&format!(
            "/api/v1/services/{}/profiles?since={}",
            encode(service),
            encode(since)
        ))
        .await
    }

    /// `GET /api/v1/profiles/{profile_id}`: the profile's gzip-compressed pprof bytes,
    /// exactly as stored.
    pub async fn download_profile(&self, profile_id: &str) -> Result<Vec<u8>, ApiClientError> {
        let body = self
            .get_raw(&format!("/api/v1/profiles/{}", encode(profile_id)))
            .await?;
        Ok(Vec::from(body))
    }
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
        for bad in ["127.0.0.1:7071", "https://x", "http://", "http://h:1/api"] {
            assert!(
                matches!(ApiClient::new(bad), Err(ApiClientError::InvalidUrl { .. })),
                "{bad}"
            );
        }
        assert!(ApiClient::new("http://127.0.0.1:7071/").is_ok());
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
