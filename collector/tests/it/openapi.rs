//! The HTTP API described once: the OpenAPI document a real collector serves at
//! `/api/v1/openapi.json` is valid OpenAPI (checked by a real validator, PyPI's
//! `openapi-spec-validator`), every operation it lists is served — behind the API token
//! exactly where it says so — and a path it does not list gets the router's "no route"
//! answer. Foreign protocols' routes (Pyroscope's, OTLP/HTTP's) are listed as well, their
//! bodies named by protocol, behind the ingest tokens; only the gRPC services (the
//! agents' `holmes.v1` and OTLP's `ProfilesService`, on the gRPC address) are outside it. (That the router serves nothing the document leaves out is checked on the
//! router itself, in `query::routes`'s unit test.)
//!
//! The validator is `HOLMES_OPENAPI_VALIDATOR` or `openapi-spec-validator` on the PATH;
//! `deploy/dev/test.sh` installs it. Without it the validation is skipped (the test says
//! so), unless under CI or with `HOLMES_TEST_REQUIRE_OPENAPI_VALIDATOR=1`, where that is
//! a failure.

use std::path::PathBuf;

use holmes_cli::api_client::{ApiClient, ApiClientError, ClientOptions};
use holmes_collector::auth::Secret;
use holmes_collector::Server;

use crate::support::Backend;

const TOKEN: &str = "api-token";

/// The routes foreign clients send profiles by (Pyroscope, OTLP/HTTP): in the document,
/// their bodies in those protocols.
const FOREIGN: [&str; 3] = [
    "/ingest",
    "/push.v1.PusherService/Push",
    "/v1development/profiles",
];

/// The validator to run, or `None` (after saying so) when it may be missing.
fn validator() -> Option<PathBuf> {
    let found = std::env::var_os("HOLMES_OPENAPI_VALIDATOR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|p| p.join("openapi-spec-validator"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        let required = std::env::var_os("CI").is_some()
            || std::env::var("HOLMES_TEST_REQUIRE_OPENAPI_VALIDATOR").as_deref() == Ok("1");
        assert!(
            !required,
            "openapi-spec-validator is required (CI or HOLMES_TEST_REQUIRE_OPENAPI_VALIDATOR=1) \
             but neither HOLMES_OPENAPI_VALIDATOR nor the PATH has it: run deploy/dev/test.sh"
        );
        eprintln!(
            "skipped: the document's validation by openapi-spec-validator (not installed; \
             deploy/dev/test.sh installs it)"
        );
    }
    found
}

/// `path` with each `{parameter}` replaced by a value of the right shape.
fn example_path(path: &str) -> String {
    path.replace("{service}", "checkout")
        .replace("{profile_id}", "0123456789abcdef0123456789abcdef")
        .replace("{incident_id}", "0123456789abcdef0123456789abcdef")
        .replace("{request_id}", "0123456789abcdef0123456789abcdef")
        .replace("{build_id}", "4f5c1e0b")
}

/// Sends `method path` and returns the status (200 for any success) and the error
/// message, if any.
async fn ask(api: &ApiClient, method: &str, path: &str) -> (u16, String) {
    let answer = match method {
        "get" => api.get_raw(path).await.map(drop),
        "post" => api.post::<serde_json::Value>(path).await.map(drop),
        // An empty body: the handler says what is missing.
        "put" => api
            .call::<serde_json::Value>(hyper::Method::PUT, path, Some(&serde_json::json!({})))
            .await
            .map(drop),
        "delete" => api
            .call::<serde_json::Value>(hyper::Method::DELETE, path, None)
            .await
            .map(drop),
        other => panic!("the document lists a {other} operation this test cannot send"),
    };
    match answer {
        Ok(()) => (200, String::new()),
        Err(ApiClientError::Api { status, message }) => (status, message),
        Err(ApiClientError::Decode { .. }) => (200, String::new()),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_route_served_and_is_valid_openapi() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.auth.api_token = Some(Secret::new(TOKEN));
    let server = Server::start(&config).await.unwrap();
    let url = format!("http://{}", server.http_addr());
    let with_token = ApiClient::with_options(
        &url,
        &ClientOptions {
            token: Some(TOKEN.to_owned()),
            ca_file: None,
        },
    )
    .unwrap();
    let without_token = ApiClient::new(&url).unwrap();

    // The document, behind the token like the rest of /api/.
    let (status, _) = ask(&without_token, "get", "/api/v1/openapi.json").await;
    assert_eq!(status, 401);
    let bytes = with_token.get_raw("/api/v1/openapi.json").await.unwrap();
    let document: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{document}"
    );
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/api/v1/openapi.json"), "{paths:?}");
    assert!(paths.contains_key("/healthz"), "{paths:?}");
    // The ecosystem's routes are described too.
    for path in FOREIGN.iter().chain(&[
        "/metrics",
        "/api/v1/alertmanager",
        "/api/v1/services/{service}/profiles/{profile_id}/otlp",
        "/api/v1/incidents/{incident_id}/otlp",
        // The storage model's service-scoped profile routes.
        "/api/v1/services/{service}/profiles/{profile_id}",
        "/api/v1/services/{service}/profiles/{profile_id}/top",
        "/api/v1/services/{service}/profiles/{profile_id}/flamegraph.svg",
        "/api/v1/services/{service}/flamegraph.svg",
        // CI's debug info uploads (`holmes debuginfo upload`).
        "/api/v1/debuginfo/{build_id}",
    ]) {
        assert!(paths.contains_key(*path), "{path} in {paths:?}");
    }
    // The same document as `holmes-collector openapi` prints.
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_holmes-collector"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&printed.stdout).unwrap(),
        document
    );

    // A real OpenAPI validator accepts it.
    if let Some(validator) = validator() {
        let file = dir.path().join("openapi.json");
        std::fs::write(&file, &bytes).unwrap();
        let out = std::process::Command::new(&validator)
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("{} runs: {e}", validator.display()));
        assert!(
            out.status.success(),
            "openapi-spec-validator refuses the document: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Every operation it lists is served: answered by its handler (which may well say
    // 400 or 404 about the example values), never by the router's "no route" or 405;
    // and the token is required exactly where the document says so.
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("a path item") {
            operations += 1;
            let example = example_path(path);
            let (status, message) = ask(&with_token, method, &example).await;
            assert!(
                status != 405 && !message.starts_with("no route "),
                "{method} {path} is listed but not served: {status} {message}"
            );
            let needs_token = operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("api_token").is_some()));
            // The API token guards /api/ and /metrics; the foreign clients' ingest routes
            // take the ingest tokens (none configured here: open).
            assert_eq!(
                needs_token,
                path.starts_with("/api/") || path == "/metrics",
                "{method} {path}"
            );
            let needs_ingest_token = operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("ingest_token").is_some()));
            assert_eq!(
                needs_ingest_token,
                FOREIGN.contains(&path.as_str()),
                "{method} {path}"
            );
            let (status, message) = ask(&without_token, method, &example).await;
            assert_eq!(
                status == 401,
                needs_token,
                "{method} {path} without a token: {status} {message}"
            );
        }
    }
    assert!(operations >= paths.len(), "{operations}");

    // A path it does not list.
    let (status, message) = ask(&with_token, "get", "/api/v1/nothing-here").await;
    assert_eq!(
        (status, message.as_str()),
        (
            404,
            "no route GET /api/v1/nothing-here; every route is listed at /api/v1/openapi.json"
        )
    );
    server.shutdown().await;
}
