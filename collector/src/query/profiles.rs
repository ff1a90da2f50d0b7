//! Profiles: `GET /api/v1/services/{service}/profiles` lists a service's profiles
//! (without their contents), oldest first; `GET /api/v1/services/{service}/profiles/{id}`
//! downloads one as gzip-compressed pprof — re-encoded from the stored contents, or the
//! bytes exactly as sent when the collector keeps originals — and `…/top` and
//! `…/flamegraph.svg` show its costliest functions and its flame graph.
//! `GET /api/v1/services/{service}/flamegraph.svg` merges a service's profiles of one
//! kind over a time range. Profile ids are scoped to their service.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use holmes_api::{
    download_path, validate_profile_id, ErrorJson, ProfileJson, ProfilesJson, TopJson,
    DEFAULT_PROFILE_LIMIT, DEFAULT_PROFILE_SINCE, DEFAULT_TOP_LIMIT,
};
use holmes_proto::ProfileKind;
use holmes_storage::{MergeQuery, ProfileMeta, ProfileQuery, ProfileRecord};

use super::{check_service, known_service, limit, time_range, Api};
use crate::clock::rfc3339;
use crate::error::ApiError;

/// Profiles merged into a service's flame graph, at most (the newest).
pub const MAX_SERVICE_FLAMEGRAPH_PROFILES: u64 = 20_000;

/// Every profile kind, in wire order.
pub const PROFILE_KINDS: [ProfileKind; 4] = [
    ProfileKind::Cpu,
    ProfileKind::Heap,
    ProfileKind::Threads,
    ProfileKind::Tasks,
];

/// The kind a name (`cpu`, `heap`, `threads`, `tasks`) stands for.
pub fn parse_kind(name: &str) -> Result<ProfileKind, String> {
    PROFILE_KINDS
        .into_iter()
        .find(|k| k.as_str() == name)
        .ok_or_else(|| {
            format!("unknown profile kind {name:?}; known kinds: cpu, heap, threads, tasks")
        })
}

/// A profile as the API lists it.
pub(super) fn profile_json(p: ProfileMeta) -> ProfileJson {
    {
        ProfileJson {
            download: match p.error {
                Some(_) => None,
                None => Some(download_path(&p.service, &p.profile_id)),
            },
            kind: p.kind.as_str().to_owned(),
            started: rfc3339(p.started_unix_nanos),
            unix_ms: p.started_unix_nanos / 1_000_000,
            duration_ms: u64::try_from(p.duration.as_millis()).unwrap_or(u64::MAX),
            labels: p.labels,
            error: p.error,
            size_bytes: p.size_bytes,
            event_id: p.event_id,
            instance: p.instance_id,
            profile_id: p.profile_id,
        }
    }
}

/// `<kind>.<event_id>.<profile_id>.pb.gz`, with anything outside `[A-Za-z0-9._-]`
/// replaced by `_` so that it is safe in a header and as a file name.
pub fn file_name(kind: ProfileKind, event_id: &str, profile_id: &str) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "{}.{}.{}.pb.gz",
        kind.as_str(),
        safe(event_id),
        safe(profile_id)
    )
}

/// A service's profiles in a time range, without their bytes, oldest first.
///
/// A failed capture is listed with its `error`, `size_bytes` 0 and `download` `null`; a
/// profile the collector could not decode with `error` `"refused by the collector: ..."`.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/profiles",
    operation_id = "list_profiles",
    tag = "profiles",
    params(
        ("service" = String, Path, description = "Service name"),
        ("since" = Option<String>, Query, description = "Start: a duration before now (`1h`, the default) or an RFC 3339 time"),
        ("until" = Option<String>, Query, description = "End (exclusive): a duration before now or an RFC 3339 time; now by default"),
        ("event" = Option<String>, Query, description = "Only the profiles of this trigger event"),
        ("kind" = Option<String>, Query, description = "Only this kind: `cpu`, `heap`, `threads` or `tasks`"),
        ("limit" = Option<u64>, Query, description = "At most this many profiles (1000 by default)"),
    ),
    responses(
        (status = 200, description = "The profiles", body = ProfilesJson),
        (status = 400, description = "Bad parameter", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "Unknown service", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn profiles(
    State(api): State<Api>,
    Path(service): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ProfilesJson>, ApiError> {
    check_service(&service)?;
    let kind = params
        .get("kind")
        .map(|k| parse_kind(k))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let event_id = params.get("event").cloned();
    let (since, until) = time_range(&params, DEFAULT_PROFILE_SINCE)?;
    let limit = limit(&params, DEFAULT_PROFILE_LIMIT)?;
    known_service(&api, &service).await?;
    let found = api
        .store
        .query_profiles(&ProfileQuery {
            service: service.clone(),
            event_id,
            kind,
            since_unix_nanos: since,
            until_unix_nanos: until,
            limit,
        })
        .await?;
    Ok(Json(ProfilesJson {
        service,
        since: rfc3339(since),
        until: rfc3339(until),
        profiles: found.into_iter().map(profile_json).collect(),
    }))
}

/// The profile `profile_id` of `service`, or a 400/404 naming what is wrong.
async fn stored(api: &Api, service: &str, profile_id: &str) -> Result<ProfileRecord, ApiError> {
    check_service(service)?;
    validate_profile_id(profile_id).map_err(ApiError::bad_request)?;
    api.store
        .get_profile(service, profile_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("service {service:?} has no profile {profile_id:?}"))
        })
}

/// Its contents, or a 404 saying why it has none.
fn contents_of(p: ProfileRecord) -> Result<(String, holmes_storage::ProfileContents), ApiError> {
    let id = p.profile_id;
    match (p.contents, p.error) {
        (Some(c), _) => Ok((id, c)),
        (None, Some(error)) => Err(ApiError::not_found(format!(
            "profile {id} has no data: its capture failed: {error}"
        ))),
        (None, None) => Err(ApiError::not_found(format!(
            "profile {id} was stored without decoded contents"
        ))),
    }
}

/// One profile as a gzip pprof file.
///
/// Re-encoded from the stored contents (`x-holmes-download: re-encoded`): the same
/// sample types, period, duration, labels and values per stack as sent; or the bytes
/// exactly as the agent sent them when the collector keeps originals (`original`). Named
/// `<kind>.<event_id>.<profile_id>.pb.gz` in its `content-disposition`.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/profiles/{profile_id}",
    operation_id = "download_profile",
    tag = "profiles",
    params(
        ("service" = String, Path, description = "Service the profile belongs to (profile ids are scoped to their service)"),
        ("profile_id" = String, Path, description = "Profile id: 32 lowercase hex digits"),
    ),
    responses(
        (status = 200, description = "The gzip pprof file", content_type = "application/octet-stream"),
        (status = 400, description = "Not a service name or profile id", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "The service has no such profile, or its capture failed (no data)", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn download(
    State(api): State<Api>,
    Path((service, profile_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let mut profile = stored(&api, &service, &profile_id).await?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        file_name(profile.kind, &profile.event_id, &profile.profile_id)
    );
    let (how, bytes) = match profile.original.take() {
        Some(original) => ("original", original),
        None => {
            let (_, contents) = contents_of(profile)?;
            ("re-encoded", super::pprof::gzip(&contents))
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::HeaderName::from_static("x-holmes-download"),
                how.to_owned(),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// A profile's costliest functions.
///
/// By flat value, as `go tool pprof -top` ranks them (`cum` counts a recursive function
/// once per sample).
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/profiles/{profile_id}/top",
    operation_id = "profile_top",
    tag = "profiles",
    params(
        ("service" = String, Path, description = "Service the profile belongs to (profile ids are scoped to their service)"),
        ("profile_id" = String, Path, description = "Profile id: 32 lowercase hex digits"),
        ("sample_type" = Option<String>, Query, description = "The value to rank by (`cpu`, `samples`, `alloc_space`, ...); the profile's default (else last) sample type by default"),
        ("limit" = Option<u64>, Query, description = "At most this many functions (20 by default)"),
    ),
    responses(
        (status = 200, description = "The functions", body = TopJson),
        (status = 400, description = "Bad parameter, or a sample type the profile does not have", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "The service has no such profile, or it has no decoded contents", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn top(
    State(api): State<Api>,
    Path((service, profile_id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<TopJson>, ApiError> {
    let limit = limit(&params, DEFAULT_TOP_LIMIT)?;
    let (profile_id, contents) = contents_of(stored(&api, &service, &profile_id).await?)?;
    let index = super::top::value_index(&contents, params.get("sample_type").map(String::as_str))
        .map_err(ApiError::bad_request)?;
    let (total, mut functions) = super::top::top_functions(&contents, index);
    functions.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let t = contents.header.sample_types[index].clone();
    Ok(Json(TopJson {
        profile_id,
        sample_type: t.name,
        unit: t.unit,
        total,
        samples: contents.samples.len() as u64,
        stacks: contents.stacks.len() as u64,
        functions,
    }))
}

/// A profile's flame graph.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/profiles/{profile_id}/flamegraph.svg",
    operation_id = "profile_flamegraph",
    tag = "profiles",
    params(
        ("service" = String, Path, description = "Service the profile belongs to (profile ids are scoped to their service)"),
        ("profile_id" = String, Path, description = "Profile id: 32 lowercase hex digits"),
    ),
    responses(
        (status = 200, description = "The flame graph", content_type = "image/svg+xml", body = String),
        (status = 400, description = "Not a service name or profile id", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "The service has no such profile, or it has no decoded contents", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn flamegraph(
    State(api): State<Api>,
    Path((service, profile_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (profile_id, contents) = contents_of(stored(&api, &service, &profile_id).await?)?;
    let title = format!("{service} profile {profile_id}");
    Ok(super::svg_response(super::flamegraph::render(
        &title,
        &[contents],
        None,
    )))
}

/// A service's flame graph over a time range.
///
/// The service's profiles of one kind over the range, every instance merged (at most
/// the latest 20,000 profiles).
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/flamegraph.svg",
    operation_id = "service_flamegraph",
    tag = "profiles",
    params(
        ("service" = String, Path, description = "Service name"),
        ("since" = Option<String>, Query, description = "Start: a duration before now (`24h`, the default) or an RFC 3339 time"),
        ("until" = Option<String>, Query, description = "End (exclusive): a duration before now or an RFC 3339 time; now by default"),
        ("kind" = Option<String>, Query, description = "Which profiles: cpu (default), heap, threads, tasks"),
    ),
    responses(
        (status = 200, description = "The flame graph", content_type = "image/svg+xml", body = String),
        (status = 400, description = "Bad parameter", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "The service has no profiles of that kind in the range", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn service_flamegraph(
    State(api): State<Api>,
    Path(service): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_service(&service)?;
    let kind = match params.get("kind") {
        Some(k) => parse_kind(k).map_err(ApiError::bad_request)?,
        None => ProfileKind::Cpu,
    };
    let (since, until) = time_range(&params, "24h")?;
    let merged = api
        .store
        .merge_profiles(&MergeQuery {
            service: service.clone(),
            kind,
            since_unix_nanos: since,
            until_unix_nanos: until,
            limit: MAX_SERVICE_FLAMEGRAPH_PROFILES,
        })
        .await?;
    if merged.profiles == 0 {
        return Err(ApiError::not_found(format!(
            "service {service:?} has no {} profiles from {} to {}",
            kind.as_str(),
            rfc3339(since),
            rfc3339(until)
        )));
    }
    let title = format!(
        "{service}: {} {} profiles, {} to {}",
        merged.profiles,
        kind.as_str(),
        rfc3339(since),
        rfc3339(until)
    );
    Ok(super::svg_response(super::flamegraph::render(
        &title,
        &[merged.contents],
        None,
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    #[test]
    fn kinds_parse_back_and_unknown_ones_are_named() {
        for k in PROFILE_KINDS {
            assert_eq!(parse_kind(k.as_str()), Ok(k));
        }
        assert_eq!(
            parse_kind("CPU").unwrap_err(),
            "unknown profile kind \"CPU\"; known kinds: cpu, heap, threads, tasks"
        );
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(
            file_name(ProfileKind::Heap, "ev-1", "0123abcd"),
            "heap.ev-1.0123abcd.pb.gz"
        );
        assert_eq!(
            file_name(ProfileKind::Cpu, "a\"b/c\r\n", "x"),
            "cpu.a_b_c__.x.pb.gz"
        );
    }

    #[test]
    fn failed_captures_have_no_download() {
        let meta = ProfileMeta {
            profile_id: "ab".repeat(16),
            event_id: "ev-1".to_owned(),
            service: "checkout".to_owned(),
            instance_id: "checkout-0".to_owned(),
            kind: ProfileKind::Threads,
            started_unix_nanos: 1_500_000_000,
            duration: Duration::from_micros(2_500),
            labels: BTreeMap::new(),
            error: None,
            size_bytes: 10,
            format: holmes_proto::ProfileFormat::Native,
        };
        let ok = profile_json(meta.clone());
        assert_eq!(
            ok.download.as_deref(),
            Some(format!("/api/v1/services/checkout/profiles/{}", "ab".repeat(16)).as_str())
        );
        assert_eq!(ok.duration_ms, 2);
        assert_eq!(ok.started, "1970-01-01T00:00:01.500Z");
        let failed = profile_json(ProfileMeta {
            error: Some("denied".to_owned()),
            size_bytes: 0,
            ..meta
        });
        assert_eq!(failed.download, None);
        assert_eq!(failed.error.as_deref(), Some("denied"));
    }
}
