//! Bearer tokens: per-service tokens on gRPC ingest, one token on the HTTP API.
//!
//! An agent sends `authorization: Bearer <token>` with its stream; the collector checks
//! it against the token configured for the service its `Hello` names (or the `"*"`
//! token, for services without their own). A token that is none of the configured ones
//! is UNAUTHENTICATED; a token of another service is PERMISSION_DENIED, so one service's
//! credentials cannot write as another. Without any configured token ingest is open.
//! Tokens are compared in constant time.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

pub mod browser;
pub mod config;

/// The key of the token that any service without its own may use.
pub const WILDCARD_SERVICE: &str = "*";

/// A secret read from the configuration; its `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Whether `a` and `b` are equal, in a time that depends only on `expected`'s length
/// (the configured secret), never on where a guess first differs.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!*e);
        diff |= g ^ e;
    }
    std::hint::black_box(diff) == 0
}

/// The token in an `authorization: Bearer <token>` value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Checks agent streams against the configured per-service tokens.
#[derive(Clone, Default)]
pub struct IngestAuth {
    /// Token by service name; [`WILDCARD_SERVICE`] for the rest.
    tokens: Arc<BTreeMap<String, Secret>>,
}

impl std::fmt::Debug for IngestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestAuth")
            .field("services", &self.tokens.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl IngestAuth {
    /// Checks with `tokens` (service name or `"*"` → token); empty means open.
    pub fn new(tokens: BTreeMap<String, Secret>) -> Self {
        IngestAuth {
            tokens: Arc::new(tokens),
        }
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The token of the request, or UNAUTHENTICATED when tokens are required and there
    /// is none; `Ok(None)` when ingest is open.
    pub fn token_of(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<String>, tonic::Status> {
        if !self.enabled() {
            return Ok(None);
        }
        let Some(value) = metadata.get("authorization") else {
            return Err(tonic::Status::unauthenticated(
                "this collector requires a token: set HOLMES_TOKEN (or .token()) on the agent",
            ));
        };
        let token = value.to_str().ok().and_then(bearer).ok_or_else(|| {
            tonic::Status::unauthenticated(
                "malformed authorization metadata; expected \"Bearer <token>\"",
            )
        })?;
        Ok(Some(token.to_owned()))
    }

    /// Whether `service` has a token of its own (a stream of it is then trusted to
    /// name its instances; others are bounded by `[limits]`).
    pub fn has_own_token(&self, service: &str) -> bool {
        service != WILDCARD_SERVICE && self.tokens.contains_key(service)
    }

    /// Whether `token` may write as `service`: PERMISSION_DENIED for a token of other
    /// services only, UNAUTHENTICATED for one that is not configured at all.
    pub fn authorize(&self, service: &str, token: Option<&str>) -> Result<(), tonic::Status> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(token) = token else {
            return Err(tonic::Status::unauthenticated(
                "this collector requires a token: set HOLMES_TOKEN (or .token()) on the agent",
            ));
        };
        let allowed = self
            .tokens
            .get(service)
            .or_else(|| self.tokens.get(WILDCARD_SERVICE));
        // Every configured token is compared, so timing tells nothing about which matched.
        let mut matches_allowed = false;
        let mut matches_any = false;
        for secret in self.tokens.values() {
            let equal = constant_time_eq(token.as_bytes(), secret.expose().as_bytes());
            matches_any |= equal;
            matches_allowed |= equal && allowed.is_some_and(|a| std::ptr::eq(a, secret));
        }
        if matches_allowed {
            Ok(())
        } else if matches_any {
            Err(tonic::Status::permission_denied(format!(
                "this token is not valid for service {service:?}"
            )))
        } else {
            Err(tonic::Status::unauthenticated("invalid token"))
        }
    }
}

/// The HTTP API's token, checked by [`require_api_token`].
#[derive(Clone, Debug)]
pub struct ApiAuth {
    token: Secret,
}

impl ApiAuth {
    /// Requires `token` on the API.
    pub fn new(token: Secret) -> Self {
        ApiAuth { token }
    }
}

/// Middleware: 401 with a JSON error unless the request carries the API token.
pub async fn require_api_token(
    State(auth): State<ApiAuth>,
    request: Request,
    next: Next,
) -> Response {
    // The page's session cookie counts like the header (see `browser`): SameSite=Strict
    // and the Origin check keep other sites from using it.
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .or_else(|| browser::cookie_token(request.headers()));
    let message = match given {
        Some(t) if constant_time_eq(t.as_bytes(), auth.token.expose().as_bytes()) => {
            return next.run(request).await;
        }
        Some(_) => "invalid API token",
        None => "this API requires a token: pass --token or set HOLMES_API_TOKEN (header \"Authorization: Bearer <token>\")",
    };
    tracing::warn!(path = %request.uri().path(), "API request refused: {message}");
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.to_owned(),
    }
    .into_response();
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(pairs: &[(&str, &str)]) -> IngestAuth {
        IngestAuth::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Secret::new(*v)))
                .collect(),
        )
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn tokens_are_per_service_with_a_wildcard() {
        let a = auth(&[("checkout", "t-checkout"), ("*", "t-any")]);
        assert!(a.authorize("checkout", Some("t-checkout")).is_ok());
        assert!(a.authorize("cart", Some("t-any")).is_ok());
        let denied = a.authorize("checkout", Some("t-any")).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let denied = a.authorize("cart", Some("t-checkout")).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("\"cart\""), "{denied:?}");
        let unknown = a.authorize("cart", Some("nope")).unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        let missing = a.authorize("cart", None).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);

        let only = auth(&[("checkout", "t-checkout")]);
        let denied = only.authorize("cart", Some("t-checkout")).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(auth(&[]).authorize("cart", None).is_ok());
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = format!("{:?}", Secret::new("hunter2"));
        assert!(!s.contains("hunter2"), "{s}");
        let a = format!("{:?}", auth(&[("checkout", "hunter2")]));
        assert!(!a.contains("hunter2") && a.contains("checkout"), "{a}");
    }
}
