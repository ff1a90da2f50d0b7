//! What the HTTP listener does for browsers, whose requests another site can cause:
//!
//! - security headers on every answer (a content security policy that allows the page's
//!   own script only and no framing, `nosniff`, no referrer);
//! - on a loopback listener, only loopback `Host` names are served, so a site that
//!   rebinds its DNS name to 127.0.0.1 cannot read or drive the API through the browser;
//! - a request that changes something (any method but GET, HEAD and OPTIONS) from a
//!   browser must come from the collector's own origin (`Origin` equal to `Host`);
//! - the page's session: `/ui?token=...` opened once sets an HttpOnly, SameSite=Strict
//!   cookie holding the API token and redirects to the address without it, so the token
//!   stays out of the address bar, the history and the page's storage, and the page's
//!   download and flame-graph links carry it like any other request.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::header::{
    CONTENT_SECURITY_POLICY, COOKIE, HOST, LOCATION, ORIGIN, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::{constant_time_eq, ApiAuth};
use crate::error::ApiError;

/// The cookie that carries the API token for the page.
pub const SESSION_COOKIE: &str = "holmes_api_token";

/// The content security policy of every answer: the page's script and styles from the
/// collector itself, inline style attributes (the page's bars and colours), nothing
/// framed, no plugins, no forms elsewhere.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

#[derive(Clone)]
struct Guard {
    /// The listener is on a loopback address: only loopback `Host` names are served.
    loopback: bool,
    /// The API token, when one is configured: `/ui?token=` turns it into the cookie.
    auth: Option<ApiAuth>,
    /// The listener speaks TLS: the cookie is `Secure`.
    tls: bool,
}

/// Wraps the whole HTTP app (API, page, foreign protocols, metrics) in the checks above.
pub fn guard(app: Router, http_addr: SocketAddr, auth: Option<ApiAuth>, tls: bool) -> Router {
    let guard = Guard {
        loopback: http_addr.ip().is_loopback(),
        auth,
        tls,
    };
    app.layer(axum::middleware::from_fn_with_state(guard, check))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn refuse(status: StatusCode, message: String) -> Response {
    ApiError { status, message }.into_response()
}

async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    if guard.loopback {
        match host.as_deref() {
            Some(h) if is_loopback_host(h) => {}
            other => {
                tracing::warn!(host = ?other, path = %request.uri().path(), "request refused: Host is not a loopback name");
                return refuse(
                    StatusCode::FORBIDDEN,
                    format!(
                        "Host {:?} is not this collector's: it listens on loopback and serves only localhost, 127.0.0.1 or [::1]",
                        other.unwrap_or("")
                    ),
                );
            }
        }
    }
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes_state {
        if let Some(origin) = request.headers().get(ORIGIN) {
            let same = origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://").map(|(_, rest)| rest))
                .zip(host.as_deref())
                .is_some_and(|(origin_host, host)| origin_host.eq_ignore_ascii_case(host));
            if !same {
                tracing::warn!(origin = ?origin, host = ?host, path = %request.uri().path(), "cross-origin request refused");
                return refuse(
                    StatusCode::FORBIDDEN,
                    format!(
                        "cross-origin request refused: Origin {origin:?} is not this collector"
                    ),
                );
            }
        }
    }
    if let Some(auth) = &guard.auth {
        if request.method() == Method::GET && request.uri().path().starts_with("/ui") {
            if let Some(given) = query_token(request.uri().query()) {
                return start_session(auth, &given, request.uri().path(), guard.tls);
            }
        }
    }
    next.run(request).await
}

/// `/ui...?token=T`: with the right token, the cookie and a redirect to the address
/// without the token; else 401.
fn start_session(auth: &ApiAuth, given: &str, path: &str, tls: bool) -> Response {
    if !constant_time_eq(given.as_bytes(), auth.token.expose().as_bytes()) {
        tracing::warn!(path, "page session refused: invalid API token");
        return refuse(StatusCode::UNAUTHORIZED, "invalid API token".to_owned());
    }
    let secure = if tls { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
        auth.token.expose()
    );
    let (Ok(cookie), Ok(location)) = (HeaderValue::from_str(&cookie), HeaderValue::from_str(path))
    else {
        return refuse(StatusCode::BAD_REQUEST, "unusable page address".to_owned());
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(SET_COOKIE, cookie);
    response.headers_mut().insert(LOCATION, location);
    response
}

/// The `token` parameter of a query string, percent-decoded.
fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        percent_decode(value)
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = char::from(bytes.next()?).to_digit(16)?;
                let lo = char::from(bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// The API token in the request's session cookie, if it has one.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE && !value.is_empty()).then_some(value)
        })
}

/// Whether a `Host` value (with or without its port) names this machine's loopback.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for yes in [
            "localhost",
            "LOCALHOST:7071",
            "127.0.0.1:7071",
            "127.8.0.1",
            "[::1]:7071",
            "[::1]",
        ] {
            assert!(is_loopback_host(yes), "{yes}");
        }
        for no in [
            "evil.example",
            "evil.example:7071",
            "10.0.0.1:7071",
            "localhost.evil.example",
            "[::2]:1",
            "",
        ] {
            assert!(!is_loopback_host(no), "{no}");
        }
    }

    #[test]
    fn tokens_from_query_and_cookie() {
        assert_eq!(
            query_token(Some("a=1&token=t%2Bk+n")).as_deref(),
            Some("t+k n")
        );
        assert_eq!(query_token(Some("tokens=x")), None);
        assert_eq!(query_token(None), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=b; holmes_api_token=s3cret"),
        );
        assert_eq!(cookie_token(&headers), Some("s3cret"));
        headers.insert(COOKIE, HeaderValue::from_static("holmes_api_token="));
        assert_eq!(cookie_token(&headers), None);
    }
}
