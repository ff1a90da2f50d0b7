//! TLS on both listeners and bearer tokens, with real handshakes on loopback: a
//! certificate made by the test, the real agent, the real CLI binary.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::raw_agent::{hello, ConnectOptions, RawAgent};
use crate::support::{eventually, Backend};
use holmes_agent::Holmes;
use holmes_cli::api_client::{ApiClient, ApiClientError, ClientOptions};
use holmes_collector::auth::Secret;
use holmes_collector::Server;
use holmes_proto::{AgentBody, CollectorMessage, Metric, MetricSeries, MetricWindow, Sample};

fn tokens(pairs: &[(&str, &str)]) -> BTreeMap<String, Secret> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Secret::new(*v)))
        .collect()
}

fn window(unix_nanos: u64) -> MetricWindow {
    MetricWindow {
        series: vec![MetricSeries {
            metric: Metric::CpuPercent,
            samples: vec![Sample {
                unix_nanos,
                value: 12.5,
            }],
        }],
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_api_serve_tls_to_the_real_agent_and_cli() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::support::tls::test_pki(dir.path(), "good");
    let other = crate::support::tls::test_pki(dir.path(), "other");
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.tls.cert_file = Some(pki.cert_file.clone());
    config.tls.key_file = Some(pki.key_file.clone());
    config.auth.ingest_tokens = tokens(&[("checkout", "agent-token")]);
    config.auth.api_token = Some(Secret::new("api-token"));
    let server = Server::start(&config).await.unwrap();

    // The real agent over TLS, trusting the test CA, with its token.
    let agent = Holmes::builder()
        .service("checkout")
        .instance("checkout-tls")
        .collector(format!("https://127.0.0.1:{}", server.grpc_addr().port()))
        .tls_ca_file(&pki.ca_file)
        .token("agent-token")
        .collect_interval(Duration::from_millis(100))
        .send_interval(Duration::from_millis(200))
        .start()
        .unwrap();

    let api_url = format!("https://127.0.0.1:{}", server.http_addr().port());
    let api = ApiClient::with_options(
        &api_url,
        &ClientOptions {
            token: Some("api-token".to_owned()),
            ca_file: Some(pki.ca_file.clone()),
        },
    )
    .unwrap();
    eventually(Duration::from_secs(15), "cpu points over TLS", || async {
        let m = api.metrics("checkout", "cpu", "5m").await.ok()?;
        (!m.series.first()?.points.is_empty()).then_some(())
    })
    .await;
    agent.stop();

    // The CLI binary over https with the CA file and the token from the environment.
    let out = crate::support::holmes_cli_with(
        &[
            "--api",
            &api_url,
            "--ca-file",
            pki.ca_file.to_str().unwrap(),
            "services",
        ],
        &[("HOLMES_API_TOKEN", "api-token")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("checkout"),
        "{out:?}"
    );

    // A client trusting another CA is refused by its own TLS check.
    let stranger = ApiClient::with_options(
        &api_url,
        &ClientOptions {
            token: Some("api-token".to_owned()),
            ca_file: Some(other.ca_file.clone()),
        },
    )
    .unwrap();
    let err = stranger.services().await.unwrap_err();
    assert!(matches!(err, ApiClientError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    assert!(plain.services().await.is_err());

    // Raw gRPC: a stream trusting the test CA is accepted; one trusting another CA and a
    // plain one never reach the service.
    let good_ca = std::fs::read(&pki.ca_file).unwrap();
    let options = ConnectOptions {
        token: Some("agent-token".to_owned()),
        ca_pem: Some(good_ca),
        compression: None,
    };
    let mut raw = RawAgent::try_connect(
        server.grpc_addr(),
        hello("checkout", "raw-tls", vec![]),
        &options,
    )
    .await
    .unwrap();
    raw.send(1, AgentBody::MetricWindow(window(now_nanos())))
        .await;
    assert_eq!(raw.next().await, CollectorMessage::Ack { seq: 1 });
    let wrong_ca = ConnectOptions {
        ca_pem: Some(std::fs::read(&other.ca_file).unwrap()),
        ..options.clone()
    };
    let refused = RawAgent::try_connect(
        server.grpc_addr(),
        hello("checkout", "raw-x", vec![]),
        &wrong_ca,
    )
    .await
    .err()
    .expect("a certificate from an unknown CA is refused");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let plain = ConnectOptions {
        ca_pem: None,
        ..options.clone()
    };
    let refused = RawAgent::try_connect(
        server.grpc_addr(),
        hello("checkout", "raw-y", vec![]),
        &plain,
    )
    .await
    .err()
    .expect("plain HTTP/2 to the TLS port fails");
    assert_ne!(refused.code(), tonic::Code::Ok);
    let instances = server.store().list_instances("checkout").await.unwrap();
    let ids: Vec<&str> = instances.iter().map(|i| i.instance_id.as_str()).collect();
    assert_eq!(ids, ["checkout-tls", "raw-tls"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_tokens_are_checked_against_the_service_of_the_hello() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.auth.ingest_tokens = tokens(&[("checkout", "t-checkout"), ("*", "t-fleet")]);
    let server = Server::start(&config).await.unwrap();
    let addr = server.grpc_addr();
    let with = |token: Option<&str>| ConnectOptions {
        token: token.map(str::to_owned),
        ..ConnectOptions::default()
    };

    for (service, token, code, text) in [
        (
            "checkout",
            None,
            tonic::Code::Unauthenticated,
            "requires a token",
        ),
        (
            "checkout",
            Some("nope"),
            tonic::Code::Unauthenticated,
            "invalid token",
        ),
        // The fleet token is not for a service that has its own.
        (
            "checkout",
            Some("t-fleet"),
            tonic::Code::PermissionDenied,
            "\"checkout\"",
        ),
        // checkout's token cannot write as another service.
        (
            "cart",
            Some("t-checkout"),
            tonic::Code::PermissionDenied,
            "\"cart\"",
        ),
    ] {
        let status = RawAgent::try_connect(addr, hello(service, "i-0", vec![]), &with(token))
            .await
            .err()
            .unwrap_or_else(|| panic!("{service} with {token:?} is refused"));
        assert_eq!(status.code(), code, "{service} {token:?}: {status:?}");
        assert!(status.message().contains(text), "{status:?}");
    }
    // Nothing of a refused stream is stored.
    assert!(server.store().list_services(0).await.unwrap().is_empty());

    for (service, token) in [("checkout", "t-checkout"), ("cart", "t-fleet")] {
        let mut agent =
            RawAgent::try_connect(addr, hello(service, "i-1", vec![]), &with(Some(token)))
                .await
                .unwrap_or_else(|s| panic!("{service} with its token is accepted: {s:?}"));
        agent
            .send(1, AgentBody::MetricWindow(window(now_nanos())))
            .await;
        assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 1 });
    }
    let services: Vec<String> = server
        .store()
        .list_services(0)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.service)
        .collect();
    assert_eq!(services, ["cart", "checkout"]);

    // The real agent with a wrong token keeps retrying and stores nothing.
    let agent = Holmes::builder()
        .service("search")
        .collector(format!("http://{addr}"))
        .token("t-checkout")
        .send_interval(Duration::from_millis(100))
        .max_backoff(Duration::from_millis(200))
        .start()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    agent.stop();
    assert!(server
        .store()
        .list_instances("search")
        .await
        .unwrap()
        .is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_token_is_required_and_the_cli_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, "s3cret-api\n").unwrap();
    config.auth.api_token_file = Some(token_file);
    let server = Server::start(&config).await.unwrap();
    let api = format!("http://{}", server.http_addr());

    // No token, a wrong one: 401 with the JSON error, one line from the CLI.
    let out = crate::support::holmes_cli_with(&["--api", &api, "services"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 401") && err.contains("requires a token"),
        "{err}"
    );
    let out =
        crate::support::holmes_cli_with(&["--api", &api, "--token", "guess", "services"], &[])
            .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid API token") && err.contains("HTTP 401"),
        "{err}"
    );
    let client = ApiClient::new(&api).unwrap();
    match client.services().await {
        Err(ApiClientError::Api { status, message }) => {
            assert_eq!(status, 401);
            assert!(message.contains("requires a token"), "{message}");
        }
        other => panic!("expected a 401, got {other:?}"),
    }

    // The right token, from the flag and from the environment.
    let out =
        crate::support::holmes_cli_with(&["--api", &api, "--token", "s3cret-api", "services"], &[])
            .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no services yet"),
        "{out:?}"
    );
    let out = crate::support::holmes_cli_with(
        &["--api", &api, "--json", "services"],
        &[("HOLMES_API_TOKEN", "s3cret-api")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");

    // A service name the collector would refuse is refused before asking.
    let out = crate::support::holmes_cli_with(
        &[
            "--api",
            &api,
            "--token",
            "s3cret-api",
            "triggers",
            "--service",
            "a b",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("service"),
        "{out:?}"
    );

    // Health checks need no token.
    assert_eq!(&client.get_raw("/healthz").await.unwrap()[..], b"ok");
    server.shutdown().await;
}
