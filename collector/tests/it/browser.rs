//! What the HTTP listener does for browsers (issue 12.13, 12.14): the page's token
//! becomes an HttpOnly session cookie that the page's requests and links carry,
//! security headers on every answer, cross-origin and DNS-rebinding requests refused —
//! over raw HTTP on loopback, and the page in a real headless browser.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::Backend;
use holmes_collector::Server;

/// An HTTP/1.1 answer: status, headers (names lowercase), body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request as written (so Host and Origin are exactly what a browser, or an
/// attacker's page, would send) and reads the answer to the end.
pub(crate) async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: 0\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn the_page_session_headers_and_origin_checks_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.auth.api_token = Some(holmes_collector::auth::Secret::new("s3cret-api"));
    let server = Server::start(&config).await.unwrap();
    let addr = server.http_addr();

    // The token opened once in the page becomes a cookie, and the address loses it.
    let opened = send(addr, "GET", "/ui/services/checkout?token=s3cret-api", &[]).await;
    assert_eq!(opened.status, 303, "{}", opened.body);
    assert_eq!(opened.header("location"), Some("/ui/services/checkout"));
    let cookie = opened.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.starts_with("holmes_api_token=s3cret-api;"),
        "{cookie}"
    );
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let wrong = send(addr, "GET", "/ui?token=guess", &[]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());

    // The cookie opens the API the way the page's download and flame-graph links use it.
    let session = "holmes_api_token=s3cret-api";
    let with_cookie = send(addr, "GET", "/api/v1/services", &[("cookie", session)]).await;
    assert_eq!(with_cookie.status, 200, "{}", with_cookie.body);
    let without = send(addr, "GET", "/api/v1/services", &[]).await;
    assert_eq!(without.status, 401);
    let forged = send(
        addr,
        "GET",
        "/api/v1/services",
        &[("cookie", "holmes_api_token=guess")],
    )
    .await;
    assert_eq!(forged.status, 401);

    // Security headers on every answer: the page, its script, the API, errors.
    for (path, status) in [
        ("/ui", 200),
        ("/ui.js", 200),
        ("/api/v1/services", 401),
        ("/healthz", 200),
    ] {
        let a = send(addr, "GET", path, &[]).await;
        assert_eq!(a.status, status, "{path}");
        let csp = a.header("content-security-policy").unwrap_or("");
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
            "{path}: {csp}"
        );
        assert_eq!(
            a.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(a.header("referrer-policy"), Some("no-referrer"), "{path}");
    }
    let page = send(addr, "GET", "/ui", &[]).await;
    assert!(
        page.body.contains("<script src=\"/ui.js\"></script>"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("localStorage.setItem"), "{}", page.body);

    // A state-changing request from another site's page is refused, even with the
    // cookie a browser would attach; from the collector's own origin it goes through
    // (to "no agent connected" here).
    let capture = "/api/v1/services/checkout/capture?kind=cpu";
    let cross = send(
        addr,
        "POST",
        capture,
        &[("cookie", session), ("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(cross.status, 403, "{}", cross.body);
    assert!(
        cross.body.contains("cross-origin request refused"),
        "{}",
        cross.body
    );
    let own_origin = format!("http://{addr}");
    let same = send(
        addr,
        "POST",
        capture,
        &[("cookie", session), ("origin", &own_origin)],
    )
    .await;
    assert_eq!(same.status, 404, "{}", same.body);

    // DNS rebinding: a name that now points at 127.0.0.1 is not this collector's.
    let rebound_host = format!("evil.example:{}", addr.port());
    let rebound = send(
        addr,
        "GET",
        "/api/v1/services",
        &[("host", &rebound_host), ("cookie", session)],
    )
    .await;
    assert_eq!(rebound.status, 403, "{}", rebound.body);
    assert!(
        rebound.body.contains("is not this collector's"),
        "{}",
        rebound.body
    );
    let localhost = format!("localhost:{}", addr.port());
    let named = send(
        addr,
        "GET",
        "/api/v1/services",
        &[("host", &localhost), ("cookie", session)],
    )
    .await;
    assert_eq!(named.status, 200, "{}", named.body);

    // In a real browser: opened with the token once, the page reads the API through the
    // cookie (the empty service list, not a 401).
    if let Some(chromium) = crate::support::chromium() {
        let dom = crate::support::chromium_run(
            &chromium,
            &format!("http://{addr}/ui?token=s3cret-api"),
            &["--dump-dom"],
        )
        .await;
        assert!(dom.contains("No services yet"), "{dom}");
        assert!(!dom.contains("401"), "{dom}");
    }
    server.shutdown().await;
}
