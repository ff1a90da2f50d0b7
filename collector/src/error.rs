//! How internal errors surface: one place that maps each to a gRPC status and an HTTP
//! status, so agents and API users see the same meaning.

use axum::http::StatusCode;
use holmes_storage::StoreError;

/// The gRPC status an agent gets when the store fails: UNAVAILABLE, so it keeps its
/// data and resends after reconnecting.
pub fn store_status(err: &StoreError) -> tonic::Status {
    tracing::error!(error = %err, "store operation failed");
    tonic::Status::unavailable(format!("store unavailable, data not acknowledged: {err}"))
}

/// An API error: a status and a one-line message, rendered as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404: the thing asked for does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "store query failed");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("store unavailable: {err}"),
        }
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        (
            self.status,
            axum::Json(holmes_api::ErrorJson {
                error: self.message,
            }),
        )
            .into_response()
    }
}
