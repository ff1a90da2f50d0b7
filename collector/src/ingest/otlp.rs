//! OTLP profiles ingest (the OpenTelemetry profiles signal, `v1development`, as the
//! `opentelemetry-proto` crate generates it from proto release v1.10.0):
//!
//! - gRPC `opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export`
//!   on the collector's gRPC address (beside the agents' service), [`OtlpService`];
//! - HTTP `POST /v1development/profiles` (`application/x-protobuf`, optionally gzip) on
//!   its HTTP address, [`http_export`] — the OTel Collector's `otlphttp` exporter path.
//!
//! Each profile ([`to_pprof`]) becomes a pprof profile of the resource's `service.name`,
//! its instance from `service.instance.id` / `k8s.pod.name` / `host.name`, its labels
//! the resource's and profile's attributes, and goes through [`ForeignIngest`] as a
//! baseline. Profiles that cannot be used (no `service.name`, a dangling index, a kind
//! Holmes does not store) are counted in the answer's partial success; a missing token
//! or an unavailable store fails the whole request (the client retries it; ids are
//! content hashes, so a retry stores nothing twice).

pub mod to_pprof;

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_server::ProfilesService;
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use prost::Message;

use super::foreign::{
    gunzip_within, http_token, instance_of, ForeignError, ForeignIngest, ForeignProfile,
};
use crate::metrics::{metrics, Source};
use to_pprof::{ConvertError, KIND_ATTRIBUTE};

/// The OTLP/HTTP path of the profiles signal.
pub const HTTP_PATH: &str = "/v1development/profiles";

/// Takes one export request; the answer's partial success counts the profiles refused.
pub async fn export(
    foreign: &ForeignIngest,
    request: &ExportProfilesServiceRequest,
    token: Option<&str>,
    peer: Option<IpAddr>,
    client: &str,
) -> Result<ExportProfilesServiceResponse, ForeignError> {
    let mut rejected = 0i64;
    let mut first_error = None;
    let mut refuse = |why: String, reason: &'static str| {
        metrics().profile_refused(Source::Otlp, reason);
        rejected += 1;
        first_error.get_or_insert(why);
    };
    for converted in to_pprof::convert(request) {
        let c = match converted {
            Ok(c) => c,
            Err(err) => {
                let reason = match err {
                    ConvertError::UnsupportedKind(_) => "unsupported_kind",
                    ConvertError::Dangling { .. } => "malformed",
                };
                refuse(err.to_string(), reason);
                continue;
            }
        };
        let mut labels = c.attributes;
        let Some(service) = labels.remove("service.name") else {
            refuse(
                "a profile without the resource attribute service.name".to_owned(),
                "malformed",
            );
            continue;
        };
        foreign.authorize(&service, token)?;
        labels.remove(KIND_ATTRIBUTE);
        let instance = instance_of(&labels, peer);
        let identity = if c.profile_id.iter().any(|b| *b != 0) {
            c.profile_id.clone()
        } else {
            blake3::hash(&c.pprof).as_bytes().to_vec()
        };
        let result = foreign
            .accept(ForeignProfile {
                source: Source::Otlp,
                service,
                instance,
                client: client.to_owned(),
                kind: c.kind,
                labels,
                started_unix_nanos: c.started_unix_nanos,
                duration: std::time::Duration::from_nanos(c.duration_nanos),
                pprof: c.pprof,
                identity,
            })
            .await;
        match result {
            Ok(_) => {}
            Err(err @ (ForeignError::BadRequest(_) | ForeignError::TooLarge(_))) => {
                refuse(err.to_string(), err.reason());
            }
            Err(err) => {
                metrics().profile_refused(Source::Otlp, err.reason());
                return Err(err);
            }
        }
    }
    Ok(ExportProfilesServiceResponse {
        partial_success: (rejected > 0).then(|| ExportProfilesPartialSuccess {
            rejected_profiles: rejected,
            error_message: first_error.unwrap_or_default(),
        }),
    })
}

/// The gRPC `ProfilesService`.
#[derive(Debug, Clone)]
pub struct OtlpService {
    foreign: ForeignIngest,
}

impl OtlpService {
    /// Hands what OTLP exporters send to `foreign`.
    pub fn new(foreign: ForeignIngest) -> Self {
        OtlpService { foreign }
    }
}

#[tonic::async_trait]
impl ProfilesService for OtlpService {
    async fn export(
        &self,
        request: tonic::Request<ExportProfilesServiceRequest>,
    ) -> Result<tonic::Response<ExportProfilesServiceResponse>, tonic::Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer)
            .map(str::to_owned);
        let client = request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("otlp")
            .to_owned();
        let peer = request.remote_addr().map(|a| a.ip());
        let request = request.into_inner();
        metrics().bytes_in(Source::Otlp, request.encoded_len());
        export(&self.foreign, &request, token.as_deref(), peer, &client)
            .await
            .map(tonic::Response::new)
            .map_err(|err| {
                tracing::warn!(error = %err, "OTLP export refused");
                err.grpc_status()
            })
    }
}

/// OTLP/HTTP profiles.
///
/// The OpenTelemetry profiles signal (OTLP proto v1.10.0,
/// `opentelemetry.proto.collector.profiles.v1development`) over HTTP: a resource's
/// `service.name` is the service. With ingest tokens configured:
/// `Authorization: Bearer <token>`.
#[utoipa::path(
    post,
    path = "/v1development/profiles",
    operation_id = "otlp_http_export",
    tag = "ingest",
    request_body(content = Vec<u8>, description = "An OTLP `ExportProfilesServiceRequest` (gzip or not)", content_type = "application/x-protobuf"),
    responses(
        (status = 200, description = "An `ExportProfilesServiceResponse`, with what was left out in its `partial_success`", content_type = "application/x-protobuf", body = Vec<u8>),
        (status = 400, description = "Not an export request", body = Object),
        (status = 401, description = "Ingest token required", body = Object),
        (status = 413, description = "Larger than `max_profile_bytes`", body = Object),
        (status = 415, description = "Not `application/x-protobuf`", body = Object),
        (status = 503, description = "Store or pipeline unavailable", body = Object),
    )
)]
pub(crate) async fn http_export(
    State(foreign): State<ForeignIngest>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match http_request(&foreign, &extensions, &headers, &body).await {
        Ok(answer) => (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/x-protobuf")],
            answer.encode_to_vec(),
        )
            .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "OTLP export refused");
            (err.http_status(), err.to_string()).into_response()
        }
    }
}

async fn http_request(
    foreign: &ForeignIngest,
    extensions: &Extensions,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<ExportProfilesServiceResponse, ForeignError> {
    metrics().bytes_in(Source::Otlp, body.len());
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.split(';').next().map(str::trim) != Some("application/x-protobuf") {
        let err = ForeignError::UnsupportedMedia(format!(
            "content-type {content_type:?}: OTLP/HTTP profiles are read as application/x-protobuf"
        ));
        metrics().profile_refused(Source::Otlp, err.reason());
        return Err(err);
    }
    let raw = match headers
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        Some(e) if e.trim().eq_ignore_ascii_case("gzip") => {
            gunzip_within(body, foreign.max_decoded_bytes())?
        }
        _ => body.to_vec(),
    };
    let request = ExportProfilesServiceRequest::decode(raw.as_slice()).map_err(|e| {
        metrics().profile_refused(Source::Otlp, "malformed");
        ForeignError::BadRequest(format!("not an ExportProfilesServiceRequest: {e}"))
    })?;
    let token = http_token(headers);
    let client = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("otlp-http")
        .to_owned();
    export(
        foreign,
        &request,
        token.as_deref(),
        super::pyroscope::peer(extensions),
        &client,
    )
    .await
}
