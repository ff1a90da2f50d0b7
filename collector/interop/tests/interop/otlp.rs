//! OTLP profiles built with OpenTelemetry's own generated classes (PyPI
//! `opentelemetry-proto` 1.45.2, proto v1.10.0) go in over OTLP/HTTP, come out as pprof
//! that `go tool pprof` reads, and come out again as OTLP that the same classes read;
//! that export goes back in over gRPC with the `opentelemetry-proto` crate's client.

use std::time::Duration;

use holmes_cli::api_client::ApiClient;
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;

use crate::support::{self, collector, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_profiles_from_python_in_and_out() {
    let Some(python) = support::python("HOLMES_TEST_PYTHON") else {
        return;
    };
    let (server, _data) = collector(|_| {}).await;
    let url = format!("http://{}", server.http_addr());
    let said = support::run(
        &python,
        &[
            support::script("otlp_export.py").to_str().unwrap(),
            &format!("{url}/v1development/profiles"),
            "otelapp",
            "otel-1",
        ],
        Duration::from_secs(60),
    )
    .await;
    assert!(said.starts_with("rejected 0"), "{said}");
    let api = ApiClient::new(&url).unwrap();
    let listed = eventually(Duration::from_secs(30), "the OTLP profile", || async {
        let l = api.profiles("otelapp", "1h").await.ok()?;
        (!l.profiles.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(listed.profiles.len(), 1, "{listed:?}");
    let profile = &listed.profiles[0];
    assert_eq!(profile.instance, "otel-1");
    assert_eq!(profile.kind, "cpu");
    assert_eq!(profile.labels["source"], "otlp");
    assert_eq!(profile.labels["k8s.namespace.name"], "shop");

    // pprof, read by go.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("otel.pb.gz");
    std::fs::write(
        &file,
        api.download_profile("otelapp", &profile.profile_id)
            .await
            .unwrap(),
    )
    .unwrap();
    if let Some(top) = support::pprof_top(&file).await {
        let hot = top
            .lines()
            .find(|l| l.contains("interop::interop_hot_loop"))
            .unwrap_or_else(|| panic!("go tool pprof -top:\n{top}"));
        assert!(hot.contains("90.00%"), "{hot}");
    }

    // OTLP again, read by the Python classes.
    let (status, exported) = support::http(
        "GET",
        &format!(
            "{url}/api/v1/services/otelapp/profiles/{}/otlp",
            profile.profile_id
        ),
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let export_file = dir.path().join("otel.otlp.pb");
    std::fs::write(&export_file, &exported).unwrap();
    let read = support::run(
        &python,
        &[
            support::script("otlp_read.py").to_str().unwrap(),
            export_file.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    )
    .await;
    assert!(
        read.lines().any(|l| l
            == "otelapp samples/count interop::interop_hot_loop;interop::serve;interop::main 90"),
        "{read}"
    );

    // The export back in over gRPC, as another service: the same profile.
    let mut request = ExportProfilesServiceRequest::decode(exported.as_ref()).unwrap();
    for rp in &mut request.resource_profiles {
        for kv in rp.resource.iter_mut().flat_map(|r| r.attributes.iter_mut()) {
            if kv.key == "service.name" {
                kv.value.as_mut().unwrap().value =
                    Some(any_value::Value::StringValue("otelgrpc".to_owned()));
            }
        }
    }
    let mut client = ProfilesServiceClient::connect(format!("http://{}", server.grpc_addr()))
        .await
        .unwrap();
    let answer = client.export(request).await.unwrap().into_inner();
    assert!(answer.partial_success.is_none(), "{answer:?}");
    let again = eventually(
        Duration::from_secs(30),
        "the profile sent over gRPC",
        || async {
            let l = api.profiles("otelgrpc", "1h").await.ok()?;
            l.profiles.into_iter().next()
        },
    )
    .await;
    let before = api
        .top("otelapp", &profile.profile_id, None, 10)
        .await
        .unwrap();
    let after = api
        .top("otelgrpc", &again.profile_id, None, 10)
        .await
        .unwrap();
    assert_eq!(before.functions, after.functions);
    assert_eq!(
        (before.total, before.sample_type),
        (after.total, after.sample_type)
    );

    // A profile OTLP cannot say what it is: refused in the partial success, not stored.
    let mut odd = ExportProfilesServiceRequest::decode(exported.as_ref()).unwrap();
    if let Some(d) = odd.dictionary.as_mut() {
        for s in d.string_table.iter_mut() {
            if s == "samples" || s == "cpu" {
                *s = "wall".to_owned();
            }
            if s == "holmes.profile.kind" {
                *s = "holmes.other".to_owned();
            }
        }
    }
    let answer = client.export(odd).await.unwrap().into_inner();
    assert_eq!(answer.partial_success.unwrap().rejected_profiles, 1);
    server.shutdown().await;
}
