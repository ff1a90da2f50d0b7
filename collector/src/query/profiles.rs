//! Profiles: a service's list (without their bytes), one profile's bytes exactly as the
//! agent sent them, its top functions and its flame graph.

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
use holmes_storage::{ProfileMeta, ProfileQuery};

use super::{check_service, known_service, limit, time_range, Api};
use crate::clock::rfc3339;
use crate::error::ApiError;

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
                None => Some(download_path(&p.profile_id)),
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

/// One profile's bytes.
///
/// The gzip-compressed pprof file exactly as the agent sent it (for `go tool pprof`),
/// named `<kind>.<event_id>.<profile_id>.pb.gz` in its `content-disposition`.
#[utoipa::path(
    get,
    path = "/api/v1/profiles/{profile_id}",
    operation_id = "download_profile",
    tag = "profiles",
    params(("profile_id" = String, Path, description = "Profile id: 32 lowercase hex digits")),
    responses(
        (status = 200, description = "The gzip pprof file", content_type = "application/octet-stream"),
        (status = 400, description = "Not a profile id", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "Unknown profile, or a failed capture (no bytes)", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn download(
    State(api): State<Api>,
    Path(profile_id): Path<String>,
) -> Result<Response, ApiError> {
    validate_profile_id(&profile_id).map_err(ApiError::bad_request)?;
    let Some(profile) = api.store.get_profile(&profile_id).await? else {
        return Err(ApiError::not_found(format!(
            "unknown profile {profile_id:?}"
        )));
    };
    if let Some(error) = &profile.error {
        return Err(ApiError::not_found(format!(
            "profile {profile_id} has no data: its capture failed: {error}"
        )));
    }
    let disposition = format!(
        "attachment; filename=\"{}\"",
        file_name(profile.kind, &profile.event_id, &profile.profile_id)
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        profile.data,
    )
        .into_response())
}

/// A profile's costliest functions.
///
/// By flat value, as `go tool pprof -top` ranks them (`cum` counts a recursive function
/// once per sample).
#[utoipa::path(
    get,
    path = "/api/v1/profiles/{profile_id}/top",
    operation_id = "profile_top",
    tag = "profiles",
    params(
        ("profile_id" = String, Path, description = "Profile id: 32 lowercase hex digits"),
        ("sample_type" = Option<String>, Query, description = "The value to rank by (`cpu`, `samples`, `alloc_space`, ...); the profile's last sample type by default"),
        ("limit" = Option<u64>, Query, description = "At most this many functions (20 by default)"),
    ),
    responses(
        (status = 200, description = "The functions", body = TopJson),
        (status = 400, description = "Bad parameter, or a sample type the profile does not have", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "Unknown profile, or one without decoded stacks", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn top(
    State(api): State<Api>,
    Path(profile_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<TopJson>, ApiError> {
    validate_profile_id(&profile_id).map_err(ApiError::bad_request)?;
    let limit = limit(&params, DEFAULT_TOP_LIMIT)?;
    let Some(contents) = api.store.get_profile_contents(&profile_id).await? else {
        let why = match api.store.get_profile(&profile_id).await? {
            None => format!("unknown profile {profile_id:?}"),
            Some(p) => match p.error {
                Some(error) => format!("profile {profile_id} has no data: {error}"),
                None => format!("profile {profile_id} was stored without decoded stacks"),
            },
        };
        return Err(ApiError::not_found(why));
    };
    let index = super::top::value_index(&contents, params.get("sample_type").map(String::as_str))
        .map_err(ApiError::bad_request)?;
    let (total, mut functions) = super::top::top_functions(&contents, index);
    functions.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let (sample_type, unit) = contents.sample_types[index].clone();
    Ok(Json(TopJson {
        profile_id,
        sample_type,
        unit,
        total,
        samples: contents.samples.len() as u64,
        stacks: contents.stacks.len() as u64,
        functions,
    }))
}

/// A profile's flame graph.
#[utoipa::path(
    get,
    path = "/api/v1/profiles/{profile_id}/flamegraph.svg",
    operation_id = "profile_flamegraph",
    tag = "profiles",
    params(("profile_id" = String, Path, description = "Profile id: 32 lowercase hex digits")),
    responses(
        (status = 200, description = "The flame graph", content_type = "image/svg+xml", body = String),
        (status = 400, description = "Not a profile id", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "Unknown profile, or one without decoded stacks", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn flamegraph(
    State(api): State<Api>,
    Path(profile_id): Path<String>,
) -> Result<Response, ApiError> {
    validate_profile_id(&profile_id).map_err(ApiError::bad_request)?;
    let Some(contents) = api.store.get_profile_contents(&profile_id).await? else {
        return Err(ApiError::not_found(format!(
            "profile {profile_id:?} is unknown or has no decoded stacks"
        )));
    };
    let title = format!("{} profile {profile_id}", contents.service);
    Ok(super::svg_response(super::flamegraph::render(
        &title,
        &[contents],
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
        };
        let ok = profile_json(meta.clone());
        assert_eq!(
            ok.download.as_deref(),
            Some(format!("/api/v1/profiles/{}", "ab".repeat(16)).as_str())
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
