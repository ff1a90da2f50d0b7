//! `PUT /api/v1/debuginfo/{build_id}`: a module's debug info from CI (`holmes debuginfo
//! upload`), whole, as `holmes-symbolize`'s upload blob (or a plain ELF debug file).
//! Behind the API token like every other route. The blob must be readable and of the
//! build its path names; a build whose debug info is complete already is left as it
//! is. Stored in chunks (source `upload`), then the build's native locations are named.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::put;
use axum::{Json, Router};
use holmes_api::DebugInfoUploadJson;
use holmes_storage::{DebugInfoChunkRecord, DebugInfoSource, Store};

use super::Symbolizer;
use crate::error::ApiError;

/// Largest upload taken (the body of one request).
pub const MAX_UPLOAD_BYTES: usize = 1 << 30;
/// Bytes per stored chunk.
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Clone)]
struct Uploads {
    store: Arc<dyn Store>,
    symbolizer: Option<Arc<Symbolizer>>,
}

/// The route, over `store`; `symbolizer` (on nodes that process) names the build's
/// locations once stored.
pub fn router(store: Arc<dyn Store>, symbolizer: Option<Arc<Symbolizer>>) -> Router {
    Router::new()
        .route("/api/v1/debuginfo/{build_id}", put(upload))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .with_state(Uploads { store, symbolizer })
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
    // Read it as the symbolizer will: a blob that does not load is refused now.
    let check = body.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        holmes_symbolize::DebugInfo::from_upload_or_elf(&check).map(|info| {
            (
                info.build_id().map(str::to_owned),
                info.has_symbols() || info.has_dwarf(),
            )
        })
    })
    .await
    .map_err(|e| ApiError::bad_request(format!("the upload could not be read: {e}")))?;
    let (found, useful) = loaded.map_err(|e| {
        ApiError::bad_request(format!("the upload is not debug info holmes can read: {e}"))
    })?;
    if found.as_deref() != Some(build_id.as_str()) {
        return Err(ApiError::bad_request(format!(
            "the upload is debug info of build {}, not {build_id}",
            found.as_deref().unwrap_or("(none)")
        )));
    }
    if !useful {
        return Err(ApiError::bad_request(format!(
            "the upload of build {build_id} has neither a symbol table nor DWARF"
        )));
    }
    let chunks: Vec<DebugInfoChunkRecord> = body
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, data)| DebugInfoChunkRecord {
            build_id: build_id.clone(),
            source: DebugInfoSource::Upload,
            offset: (i * CHUNK_BYTES) as u64,
            total_bytes: bytes,
            data: data.to_vec(),
        })
        .collect();
    state.store.insert_debuginfo(&chunks).await?;
    tracing::info!(build_id, bytes, "debug info uploaded");
    if let Some(symbolizer) = &state.symbolizer {
        symbolizer.completed(&build_id);
    }
    Ok(Json(DebugInfoUploadJson {
        build_id,
        bytes,
        stored: true,
    }))
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
