//! Profiles from foreign clients (Pyroscope, OTLP) handed to processing exactly as the
//! agent's are: a [`PipelineEvent`] to the [`Sink`], the profile as gzip pprof
//! ([`ProfileFormat::PprofGzip`]), acknowledged to the client once durable.
//!
//! Foreign clients profile continuously, so their profiles are **baselines**: each goes
//! under a trigger event with reason `baseline` and no metric (as the agent's periodic
//! baselines do; correlation ignores such events), one event per instance and
//! [`BASELINE_BUCKET`] of time, and carries the labels `phase=baseline` and
//! `source=pyroscope|otlp`. The incidents find them by service, kind and time like any
//! profile, and know them as baselines by their event's reason.
//!
//! Ids are content hashes (BLAKE3, 128 bits): the same profile sent twice (a client's
//! retry) is stored once. Each foreign instance is recorded (with its labels, e.g. the
//! Kubernetes ones) so that it shows among the service's instances.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use holmes_proto::names::{validate_labels, validate_name};
use holmes_proto::{
    PipelineBody, PipelineEvent, PipelineProfile, ProfileFormat, ProfileKind, TriggerEvent,
    TriggerReason,
};
use holmes_storage::{InstanceInfo, Store};

use crate::auth::IngestAuth;
use crate::clock::unix_nanos_now;
use crate::metrics::{metrics, Source};
use crate::process::{Sink, SinkError};

/// Foreign profiles of one instance within this span share one baseline trigger event.
pub const BASELINE_BUCKET: Duration = Duration::from_secs(600);

/// Why a foreign profile was not taken, with the HTTP status and gRPC code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum ForeignError {
    /// The request is malformed (bad names, undecodable body, unknown format).
    #[error("{0}")]
    BadRequest(String),
    /// No token, or one that is not configured.
    #[error("{0}")]
    Unauthenticated(String),
    /// A token of another service.
    #[error("{0}")]
    PermissionDenied(String),
    /// The body or profile is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The content type is not one this endpoint reads.
    #[error("{0}")]
    UnsupportedMedia(String),
    /// This collector does not take profiles (a `process` node), or the store or broker
    /// did not take it: try again later.
    #[error("{0}")]
    Unavailable(String),
}

impl ForeignError {
    /// The HTTP status of this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            ForeignError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ForeignError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ForeignError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ForeignError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ForeignError::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ForeignError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status of this error.
    pub fn grpc_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            ForeignError::BadRequest(_) | ForeignError::UnsupportedMedia(_) => {
                tonic::Status::invalid_argument(message)
            }
            ForeignError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            ForeignError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            ForeignError::TooLarge(_) => tonic::Status::resource_exhausted(message),
            ForeignError::Unavailable(_) => tonic::Status::unavailable(message),
        }
    }

    /// A short label for `holmes_profiles_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ForeignError::BadRequest(_) => "malformed",
            ForeignError::Unauthenticated(_) | ForeignError::PermissionDenied(_) => "unauthorized",
            ForeignError::TooLarge(_) => "too_large",
            ForeignError::UnsupportedMedia(_) => "unsupported_media",
            ForeignError::Unavailable(_) => "unavailable",
        }
    }
}

/// One profile from a foreign client, as pprof.
#[derive(Debug, Clone)]
pub struct ForeignProfile {
    /// Which protocol it came by.
    pub source: Source,
    /// Service name (Pyroscope's application name, OTLP's `service.name`).
    pub service: String,
    /// Instance id (see [`instance_of`]).
    pub instance: String,
    /// The client's name and version, shown as the instance's agent version.
    pub client: String,
    /// What it measures.
    pub kind: ProfileKind,
    /// Labels of the series (kept on the profile and the instance).
    pub labels: BTreeMap<String, String>,
    /// Start, nanoseconds since the Unix epoch (0: now).
    pub started_unix_nanos: u64,
    /// Length.
    pub duration: Duration,
    /// The pprof `profile.proto` bytes, gzipped or not.
    pub pprof: Vec<u8>,
    /// What makes this profile itself: the client's id of it, else its bytes.
    pub identity: Vec<u8>,
}

/// The instance a foreign series comes from: the first of its labels that names one,
/// else the client's address.
pub fn instance_of(labels: &BTreeMap<String, String>, peer: Option<std::net::IpAddr>) -> String {
    const INSTANCE_LABELS: [&str; 7] = [
        "service.instance.id",
        "instance",
        "k8s.pod.name",
        "pod",
        "host.name",
        "hostname",
        "host",
    ];
    INSTANCE_LABELS
        .iter()
        .filter_map(|k| labels.get(*k))
        .find(|v| validate_name("instance id", v).is_ok())
        .cloned()
        .unwrap_or_else(|| match peer {
            Some(ip) => ip.to_string().replace(':', "-"),
            None => "unknown".to_owned(),
        })
}

/// The address of an HTTP client, recorded for every connection (foreign instances
/// without a name of their own are named after it).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The token of an HTTP request: `authorization: Bearer <token>`, or the password of
/// `Basic` credentials (what Pyroscope clients send as `basic_auth`).
pub fn http_token(headers: &axum::http::HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    if let Some(token) = crate::auth::bearer(value) {
        return Some(token.to_owned());
    }
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// Inflates `data` if it is gzip, refusing more than `limit` bytes.
pub fn gunzip_within(data: &[u8], limit: u64) -> Result<Vec<u8>, ForeignError> {
    if !data.starts_with(&[0x1f, 0x8b]) {
        return Ok(data.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| ForeignError::BadRequest(format!("cannot decompress the body: {e}")))?;
    if out.len() as u64 > limit {
        return Err(ForeignError::TooLarge(format!(
            "the body decompresses to more than {limit} bytes"
        )));
    }
    Ok(out)
}

/// `data` gzipped (fast: the store keeps the normalized form, not this).
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// The start and length a pprof message says it has (`time_nanos`, `duration_nanos`),
/// read from its top-level fields without decoding the rest.
pub fn pprof_times(raw: &[u8]) -> (u64, u64) {
    let mut time = 0;
    let mut duration = 0;
    let mut rest = raw;
    while let Some((key, after)) = varint(rest) {
        let (field, wire) = (key >> 3, key & 7);
        rest = after;
        match wire {
            0 => {
                let Some((value, after)) = varint(rest) else {
                    break;
                };
                match field {
                    9 => time = value,
                    10 => duration = value,
                    _ => {}
                }
                rest = after;
            }
            1 => rest = rest.get(8..).unwrap_or_default(),
            2 => {
                let Some((len, after)) = varint(rest) else {
                    break;
                };
                let Some(skip) = usize::try_from(len).ok().and_then(|l| after.get(l..)) else {
                    break;
                };
                rest = skip;
            }
            5 => rest = rest.get(4..).unwrap_or_default(),
            _ => break,
        }
    }
    (time, duration)
}

fn varint(data: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in data.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &data[i + 1..]));
        }
    }
    None
}

/// A 128-bit content id in 32 lowercase hex digits.
fn content_id(parts: &[&[u8]]) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let hash = hasher.finalize();
    hash.as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Takes foreign profiles: checks them, records their instances and hands them to the
/// pipeline. Cheap to clone.
#[derive(Clone)]
pub struct ForeignIngest {
    store: Arc<dyn Store>,
    sink: Option<Arc<dyn Sink>>,
    auth: IngestAuth,
    max_profile_bytes: u64,
    max_decoded_bytes: u64,
}

impl std::fmt::Debug for ForeignIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForeignIngest")
            .field("ingests", &self.sink.is_some())
            .finish_non_exhaustive()
    }
}

impl ForeignIngest {
    /// Hands profiles to `sink` (`None` on a `process` node, which refuses them), checks
    /// tokens with `auth`, and refuses bodies over `max_profile_bytes` and profiles that
    /// inflate beyond `max_decoded_bytes`.
    pub fn new(
        store: Arc<dyn Store>,
        sink: Option<Arc<dyn Sink>>,
        auth: IngestAuth,
        max_profile_bytes: u64,
        max_decoded_bytes: u64,
    ) -> Self {
        ForeignIngest {
            store,
            sink,
            auth,
            max_profile_bytes,
            max_decoded_bytes,
        }
    }

    /// Largest request body accepted.
    pub fn max_body_bytes(&self) -> u64 {
        self.max_profile_bytes
    }

    /// Largest body or profile after decompression.
    pub fn max_decoded_bytes(&self) -> u64 {
        self.max_decoded_bytes
    }

    /// Refuses a request without a valid token for `service` (when tokens are
    /// configured).
    pub fn authorize(&self, service: &str, token: Option<&str>) -> Result<(), ForeignError> {
        self.auth.authorize(service, token).map_err(|status| {
            let message = status.message().replace(
                "set HOLMES_TOKEN (or .token()) on the agent",
                "send \"Authorization: Bearer <token>\" (or basic auth with the token as password)",
            );
            match status.code() {
                tonic::Code::PermissionDenied => ForeignError::PermissionDenied(message),
                _ => ForeignError::Unauthenticated(message),
            }
        })
    }

    /// Whether tokens are required (refuse early, before reading a body).
    pub fn requires_token(&self) -> bool {
        self.auth.enabled()
    }

    /// Checks, records and hands on one profile; returns its profile id once durable.
    /// The caller has authorized `p.service` with [`ForeignIngest::authorize`], and
    /// counts a refusal.
    pub async fn accept(&self, p: ForeignProfile) -> Result<String, ForeignError> {
        let Some(sink) = &self.sink else {
            return Err(ForeignError::Unavailable(
                "this collector does not ingest (role = \"process\"); send profiles to an ingest node".to_owned(),
            ));
        };
        validate_name("service", &p.service)
            .and_then(|()| validate_name("instance id", &p.instance))
            .map_err(|e| ForeignError::BadRequest(e.to_string()))?;
        let mut labels: BTreeMap<String, String> = p
            .labels
            .into_iter()
            .filter(|(k, v)| {
                let one = BTreeMap::from([(k.clone(), v.clone())]);
                validate_labels(&one).is_ok()
            })
            .collect();
        labels.insert("phase".to_owned(), "baseline".to_owned());
        labels.insert("source".to_owned(), p.source.as_str().to_owned());
        // Keep the ones that fit, dropping the series' own first.
        while validate_labels(&labels).is_err() && labels.len() > 2 {
            let drop = labels
                .keys()
                .find(|k| !matches!(k.as_str(), "phase" | "source"))
                .cloned();
            match drop {
                Some(k) => labels.remove(&k),
                None => break,
            };
        }
        if p.pprof.len() as u64 > self.max_profile_bytes {
            return Err(ForeignError::TooLarge(format!(
                "the profile has {} bytes, more than the {} allowed (max_profile_bytes)",
                p.pprof.len(),
                self.max_profile_bytes
            )));
        }
        let now = unix_nanos_now();
        let (data, started, duration) = if p.pprof.starts_with(&[0x1f, 0x8b]) {
            let raw = gunzip_within(&p.pprof, self.max_decoded_bytes)?;
            let (time, length) = pprof_times(&raw);
            (p.pprof, time, length)
        } else {
            let (time, length) = pprof_times(&p.pprof);
            (gzip(&p.pprof), time, length)
        };
        let started = [p.started_unix_nanos, started, now]
            .into_iter()
            .find(|t| *t != 0)
            .unwrap_or(now);
        let duration = if p.duration.is_zero() {
            Duration::from_nanos(duration)
        } else {
            p.duration
        };
        let bucket = started / u64::try_from(BASELINE_BUCKET.as_nanos()).unwrap_or(u64::MAX);
        let event_id = content_id(&[
            b"baseline",
            p.source.as_str().as_bytes(),
            p.service.as_bytes(),
            p.instance.as_bytes(),
            &bucket.to_le_bytes(),
        ]);
        let profile_id = content_id(&[
            b"profile",
            p.service.as_bytes(),
            p.instance.as_bytes(),
            p.kind.as_str().as_bytes(),
            &p.identity,
        ]);
        let instance = InstanceInfo {
            service: p.service.clone(),
            instance_id: p.instance.clone(),
            host: labels
                .get("host.name")
                .or_else(|| labels.get("hostname"))
                .cloned()
                .unwrap_or_default(),
            pid: 0,
            labels: labels
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "phase" | "__name__"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            agent_version: p.client.clone(),
            started_at_unix_nanos: 0,
            last_seen_unix_nanos: now,
        };
        self.store
            .upsert_instance(&instance)
            .await
            .map_err(|e| ForeignError::Unavailable(format!("store unavailable: {e}")))?;
        let event = |body| PipelineEvent {
            service: p.service.clone(),
            instance_id: p.instance.clone(),
            body,
        };
        let trigger = TriggerEvent {
            event_id: event_id.clone(),
            metric: None,
            reason: TriggerReason::Baseline,
            current: 0.0,
            window: Vec::new(),
            rule: None,
            unix_nanos: bucket * u64::try_from(BASELINE_BUCKET.as_nanos()).unwrap_or(0),
            planned: vec![p.kind],
            request_id: None,
        };
        let kind = p.kind;
        let profile = PipelineProfile {
            profile_id: profile_id.clone(),
            event_id,
            kind,
            started_unix_nanos: started,
            duration,
            labels,
            error: None,
            data,
            format: ProfileFormat::PprofGzip,
        };
        for body in [
            PipelineBody::Trigger(trigger),
            PipelineBody::Profile(profile),
        ] {
            sink.deliver(event(body)).await.map_err(|err| match err {
                SinkError::Store(e) => ForeignError::Unavailable(format!("store unavailable: {e}")),
                SinkError::Broker(e) => ForeignError::Unavailable(format!(
                    "the collector's pipeline did not take the profile: {e}"
                )),
            })?;
        }
        metrics().profile_ingested(p.source, kind);
        tracing::debug!(service = %p.service, instance = %p.instance, source = p.source.as_str(), kind = kind.as_str(), %profile_id, "foreign profile ingested");
        Ok(profile_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_from_the_top_level_fields() {
        use holmes_proto::pprof::Profile;
        use prost::Message;
        let p = Profile {
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 10_000_000_000,
            string_table: vec![String::new(), "cpu".into()],
            ..Profile::default()
        };
        assert_eq!(
            pprof_times(&p.encode_to_vec()),
            (1_700_000_000_000_000_000, 10_000_000_000)
        );
        assert_eq!(pprof_times(b"\xff"), (0, 0));
    }

    #[test]
    fn instances_come_from_the_labels_else_the_address() {
        let labels = BTreeMap::from([("hostname".to_owned(), "web-1".to_owned())]);
        assert_eq!(instance_of(&labels, None), "web-1");
        let ip: std::net::IpAddr = "::1".parse().unwrap();
        assert_eq!(instance_of(&BTreeMap::new(), Some(ip)), "--1");
    }

    #[test]
    fn basic_auth_passwords_are_tokens() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("authorization", "Basic dXNlcjpzM2NyZXQ=".parse().unwrap());
        assert_eq!(http_token(&headers).as_deref(), Some("s3cret"));
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(http_token(&headers).as_deref(), Some("abc"));
    }
}
