//! `PUT /api/v1/debuginfo/{build_id}`: a module's debug info from CI (`holmes debuginfo
//! upload`), whole, as `holmes-symbolize`'s upload blob (or a plain ELF debug file).
//! Behind the API token like every other route. The blob must be readable and of the
//! build its path names; a build whose debug info is complete already is left as it
//! is. Stored in chunks (source `upload`), then the build's native locations are named;
//! debug info fetched from debuginfod ([`super::debuginfod`]) is stored the same way.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::Json;
use holmes_api::{DebugInfoUploadJson, ErrorJson};
use holmes_storage::{DebugInfoChunkRecord, DebugInfoSource, Store, StoreError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Symbolizer;
use crate::error::ApiError;

/// Largest upload taken (the body of one request).
pub const MAX_UPLOAD_BYTES: usize = 1 << 30;
/// Bytes per stored chunk.
const CHUNK_BYTES: usize = 1 << 20;

/// What the route needs: the store, and the symbolizer (on nodes that process) that
/// names the build's locations once stored.
#[derive(Clone)]
pub struct Uploads {
    /// Where the chunks go.
    pub store: Arc<dyn Store>,
    /// Told when a build's debug info is complete.
    pub symbolizer: Option<Arc<Symbolizer>>,
}

/// The route (the API's router puts it behind the API token), taking bodies up to
/// [`MAX_UPLOAD_BYTES`].
pub fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Uploads: FromRef<S>,
{
    OpenApiRouter::default()
        .routes(routes!(upload))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
}

/// `Ok` for a GNU build id as agents send them: 2 to 128 lowercase hex digits.
pub fn check_build_id(build_id: &str) -> Result<(), String> {
    let hex = build_id
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex && (2..=128).contains(&build_id.len()) && build_id.len() % 2 == 0 {
        return Ok(());
    }
    let shown: String = build_id.chars().take(130).collect();
    Err(format!(
        "build id {shown:?} is not 2 to 128 lowercase hex digits"
    ))
}

/// Stores a module's debug info from CI.
///
/// The body is `holmes-symbolize`'s upload blob (or a plain ELF debug file), as
/// `holmes debuginfo upload` sends it; once stored, the build's native locations are named.
#[utoipa::path(
    put,
    path = "/api/v1/debuginfo/{build_id}",
    operation_id = "upload_debuginfo",
    tag = "debuginfo",
    params(("build_id" = String, Path, description = "The module's GNU build id, lowercase hex")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The debug info: holmes-symbolize's upload blob or an ELF debug file, at most 1 GiB"),
    responses(
        (status = 200, description = "Stored (`stored` false when the build's debug info was complete already)", body = DebugInfoUploadJson),
        (status = 400, description = "Bad build id, or a body that is not readable debug info of that build", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 413, description = "Body over 1 GiB"),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
async fn upload(
    State(state): State<Uploads>,
    Path(build_id): Path<String>,
    body: Bytes,
) -> Result<Json<DebugInfoUploadJson>, ApiError> {
    check_build_id(&build_id).map_err(ApiError::bad_request)?;
    let bytes = body.len() as u64;
    if let Some(status) = state.store.debuginfo_status(&build_id).await? {
        if status.complete() {
            return Ok(Json(DebugInfoUploadJson {
                build_id,
                bytes: status.total_bytes,
                stored: false,
            }));
        }
    }
    let checked = body.clone();
    let build = build_id.clone();
    tokio::task::spawn_blocking(move || check_debuginfo(&build, &checked))
        .await
        .map_err(|e| ApiError::bad_request(format!("the upload could not be read: {e}")))?
        .map_err(ApiError::bad_request)?;
    store_whole(state.store.as_ref(), &build_id, &body).await?;
    tracing::info!(build_id, bytes, "debug info uploaded");
    if let Some(symbolizer) = &state.symbolizer {
        symbolizer.completed(&build_id, super::Completed::JustNow);
    }
    Ok(Json(DebugInfoUploadJson {
        build_id,
        bytes,
        stored: true,
    }))
}

/// Reads `bytes` as the symbolizer will: `Ok` for debug info of `build_id` with a symbol
/// table or DWARF, else why not (blocking: it parses the file).
pub(crate) fn check_debuginfo(build_id: &str, bytes: &[u8]) -> Result<(), String> {
    let info = holmes_symbolize::DebugInfo::from_upload_or_elf(bytes)
        .map_err(|e| format!("the upload is not debug info holmes can read: {e}"))?;
    if info.build_id() != Some(build_id) {
        return Err(format!(
            "the upload is debug info of build {}, not {build_id}",
            info.build_id().unwrap_or("(none)")
        ));
    }
    if !(info.has_symbols() || info.has_dwarf()) {
        return Err(format!(
            "the upload of build {build_id} has neither a symbol table nor DWARF"
        ));
    }
    Ok(())
}

/// Stores a build's whole debug info in chunks (source `upload`).
pub(crate) async fn store_whole(
    store: &dyn Store,
    build_id: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let total = bytes.len() as u64;
    let chunks: Vec<DebugInfoChunkRecord> = bytes
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, data)| DebugInfoChunkRecord {
            build_id: build_id.to_owned(),
            source: DebugInfoSource::Upload,
            offset: (i * CHUNK_BYTES) as u64,
            total_bytes: total,
            data: data.to_vec(),
        })
        .collect();
    store.insert_debuginfo(&chunks).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_are_lowercase_hex() {
        assert!(check_build_id("4f5c1e0b").is_ok());
        assert!(check_build_id(&"ab".repeat(64)).is_ok());
        for bad in ["", "a", "4F5C", "xyz0", "../etc", &"ab".repeat(65)] {
            assert!(check_build_id(bad).is_err(), "{bad}");
        }
    }
}
