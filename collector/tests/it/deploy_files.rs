//! Every file of the deploy kit (`deploy/`) is parsed and checked against the code it
//! configures, so that none of it rots: collector configs load through the collector's
//! own loader and, with the flags each manifest passes, through the real binary's
//! `check-config`; YAML parses; the compose file, Dockerfile and systemd unit name
//! binaries, flags, files, stages and ports that exist; shell scripts pass `bash -n`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use holmes_collector::config::Config;
use serde_norway::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

/// Every file under `dir` whose name ends with one of `suffixes`, sorted.
fn files(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if suffixes
                .iter()
                .any(|s| path.file_name().unwrap().to_string_lossy().ends_with(s))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The binaries the collector's crates declare (`collector/Cargo.toml` and the crates
/// under it), each with its package.
fn collector_bins() -> BTreeMap<String, String> {
    let mut bins = BTreeMap::new();
    for manifest in ["collector", "collector/cli", "collector/devtools"] {
        let manifest: toml::Table = read(&root().join(manifest).join("Cargo.toml"))
            .parse()
            .unwrap();
        let package = manifest["package"]["name"].as_str().unwrap();
        for bin in manifest["bin"].as_array().unwrap() {
            let name = bin["name"].as_str().unwrap().to_owned();
            bins.insert(name, package.to_owned());
        }
    }
    bins
}

/// Whether this build's config knows the Kafka pipeline's keys (`role`, `[kafka]`).
fn kafka_keys_known() -> bool {
    Config::from_toml("role = \"ingest\"", Path::new("probe")).is_ok()
}

/// A config text as this build can load it: when the Kafka keys are not known (yet),
/// `role` and the `[kafka]` table are left out, and the caller is told so.
fn loadable(text: &str) -> (String, bool) {
    if kafka_keys_known() {
        return (text.to_owned(), false);
    }
    let mut out = String::new();
    let mut in_kafka = false;
    let mut stripped = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_kafka = t == "[kafka]";
        }
        if in_kafka || t.starts_with("role =") || t.starts_with("role=") {
            stripped |= !t.is_empty() && !t.starts_with('#');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, stripped)
}

/// Loads a collector config through the collector's own loader and checks it.
fn load_config(text: &str, what: &str) -> Config {
    let (text, stripped) = loadable(text);
    if stripped {
        eprintln!("{what}: role/[kafka] not known to this build's config; checked without them");
    }
    let config = Config::from_toml(&text, Path::new(what))
        .unwrap_or_else(|e| panic!("{what} does not load: {e}"));
    config
        .validate()
        .unwrap_or_else(|e| panic!("{what} is not valid: {e}"));
    config
}

/// Runs `holmes-collector` with `args` as a manifest passes them, `serve` replaced by
/// `check-config` and in-container paths by the repository files they stand for; the
/// real CLI must accept every flag and the file must load. Returns what it printed.
fn check_config_run(
    args: &[String],
    files: &BTreeMap<&str, PathBuf>,
    env: &[(&str, &str)],
    what: &str,
) -> String {
    assert_eq!(
        args.first().map(String::as_str),
        Some("serve"),
        "{what}: {args:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut mapped = vec!["check-config".to_owned()];
    for a in &args[1..] {
        match files.get(a.as_str()) {
            Some(file) => {
                let (text, _) = loadable(&read(file));
                let copy = tmp.path().join(file.file_name().unwrap());
                std::fs::write(&copy, text).unwrap();
                mapped.push(copy.display().to_string());
            }
            None => mapped.push(a.clone()),
        }
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_holmes-collector"));
    cmd.args(&mapped);
    for (k, _) in std::env::vars() {
        if k.starts_with("HOLMES_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: holmes-collector {mapped:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_collector_config_loads() {
    let tomls = files(&deploy(), &[".toml"]);
    assert!(tomls.len() >= 5, "{tomls:?}");
    for path in &tomls {
        let config = load_config(&read(path), &rel(path));
        assert_ne!(
            config.grpc_addr.ip().to_string(),
            "127.0.0.1",
            "{}: agents on other machines could not reach it",
            rel(path)
        );
        // Each goes through the real binary too.
        let files = BTreeMap::from([("F", path.clone())]);
        check_config_run(
            &["serve".into(), "--config".into(), "F".into()],
            &files,
            &[],
            &rel(path),
        );
    }
}

#[test]
fn the_cluster_example_selects_the_cluster_schema() {
    let config = load_config(
        &read(&deploy().join("clickhouse/collector-cluster.toml")),
        "collector-cluster.toml",
    );
    let cluster = config.clickhouse.cluster_config().expect("a cluster");
    assert_eq!(cluster.name, "holmes");
    assert!(cluster.replicated && cluster.on_cluster);
    assert_eq!(
        cluster.zookeeper_path,
        holmes_storage::clickhouse::DEFAULT_ZOOKEEPER_PATH
    );
    assert_eq!(
        cluster.replica_name,
        holmes_storage::clickhouse::DEFAULT_REPLICA_NAME
    );
    // The server snippet defines that cluster and the macros the paths use.
    let xml = read(&deploy().join("clickhouse/cluster.xml"));
    for needle in [
        "<remote_servers>",
        "<holmes>",
        "<macros>",
        "<shard>",
        "<replica>",
        "<zookeeper>",
        "<distributed_ddl>",
    ] {
        assert!(xml.contains(needle), "cluster.xml lacks {needle}");
    }
    // Without comments: one root element, opened and closed.
    let mut body = String::new();
    let mut rest = xml.as_str();
    while let Some((before, after)) = rest.split_once("<!--") {
        body.push_str(before);
        rest = after.split_once("-->").expect("a closed comment").1;
    }
    body.push_str(rest);
    assert_eq!(body.matches("<yandex>").count(), 1);
    assert_eq!(body.matches("</yandex>").count(), 1);
}

/// Every document of a YAML file.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{} does not parse: {e}", rel(path)))
        })
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize as _;

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string in {v:?}"))
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(*key)
            .unwrap_or_else(|| panic!("no {key} (of {path:?}) in {v:?}"));
    }
    cur
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_yaml_file_parses() {
    let yamls = files(&deploy(), &[".yaml", ".yml"]);
    assert!(yamls.len() >= 4, "{yamls:?}");
    for path in yamls {
        let docs = yaml_documents(&path);
        assert!(!docs.is_empty(), "{} is empty", rel(&path));
        if path.parent().unwrap().ends_with("k8s") {
            for doc in &docs {
                s(doc, &["apiVersion"]);
                let kind = s(doc, &["kind"]);
                if kind != "Kustomization" {
                    s(doc, &["metadata", "name"]);
                }
            }
        }
    }
}

/// The k8s documents by kind and name.
fn k8s() -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for path in files(&deploy().join("k8s"), &[".yaml"]) {
        for doc in yaml_documents(&path) {
            let kind = s(&doc, &["kind"]).to_owned();
            let name = doc
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            out.insert((kind, name), doc);
        }
    }
    out
}

#[test]
fn kubernetes_manifests_fit_together() {
    let docs = k8s();
    let doc = |kind: &str, name: &str| {
        docs.get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
    };
    // The kustomization lists every file.
    let kustomization = doc("Kustomization", "");
    for file in strings(get(kustomization, &["resources"])) {
        assert!(
            deploy().join("k8s").join(&file).is_file(),
            "kustomization: {file}"
        );
    }
    doc("Namespace", "holmes");
    // kubectl's own rendering of the kustomization, where kubectl is installed.
    if Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok()
    {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(deploy().join("k8s"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize deploy/k8s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8_lossy(&out.stdout);
        // The documents of the files the kustomization lists (demo.yaml is applied apart).
        let listed: usize = strings(get(kustomization, &["resources"]))
            .iter()
            .map(|file| yaml_documents(&deploy().join("k8s").join(file)).len())
            .sum();
        assert_eq!(
            rendered.matches("\nkind: ").count() + usize::from(rendered.starts_with("kind: ")),
            listed
        );
    } else {
        eprintln!("kubectl is not installed: the kustomization is not rendered");
    }
    // The demo service gives the agent its Kubernetes metadata through the Downward API
    // (the variables agent/README.md reads) and reaches the collector's Service.
    let demo = doc("Deployment", "checkout");
    let demo_container = &get(demo, &["spec", "template", "spec", "containers"])[0];
    let env: BTreeMap<String, &Value> = demo_container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (s(e, &["name"]).to_owned(), e))
        .collect();
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("NODE_NAME", "spec.nodeName"),
    ] {
        assert_eq!(
            s(env[var], &["valueFrom", "fieldRef", "fieldPath"]),
            field,
            "demo.yaml {var}"
        );
    }
    let otel = s(env["OTEL_RESOURCE_ATTRIBUTES"], &["value"]);
    assert!(
        otel.contains("k8s.deployment.name=") && otel.contains("service.version="),
        "{otel}"
    );
    assert!(strings(&demo_container["args"])
        .iter()
        .any(|a| a == "http://holmes-collector.holmes.svc:7070"));
    doc("StatefulSet", "clickhouse");
    doc("Service", "clickhouse");
    doc("Secret", "holmes-clickhouse");
    doc("PersistentVolumeClaim", "holmes-collector-data");

    let deployment = doc("Deployment", "holmes-collector");
    let pod = get(deployment, &["spec", "template", "spec"]);
    let container = &pod["containers"][0];
    let ports: BTreeMap<String, u64> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                s(p, &["name"]).to_owned(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports.get("grpc"), Some(&7070));
    assert_eq!(ports.get("http"), Some(&7071));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(s(container, &[probe, "httpGet", "path"]), "/healthz");
        assert_eq!(s(container, &[probe, "httpGet", "port"]), "http");
    }
    for kind in ["requests", "limits"] {
        s(container, &["resources", kind, "memory"]);
    }
    let labels = get(deployment, &["spec", "template", "metadata", "labels"]);
    for (k, v) in get(deployment, &["spec", "selector", "matchLabels"])
        .as_mapping()
        .unwrap()
    {
        assert_eq!(labels.get(k), Some(v), "deployment selector {k:?}");
    }

    // The Service reaches the container's named ports with the pod's labels.
    let service = doc("Service", "holmes-collector");
    for (k, v) in get(service, &["spec", "selector"]).as_mapping().unwrap() {
        assert_eq!(labels.get(k), Some(v), "service selector {k:?}");
    }
    for p in get(service, &["spec", "ports"]).as_sequence().unwrap() {
        assert!(
            ports.contains_key(s(p, &["targetPort"])),
            "service port {p:?}"
        );
    }

    // The ConfigMap's file loads, and the container's args run with it through the real CLI.
    let configmap = doc("ConfigMap", "holmes-collector");
    let text = s(configmap, &["data", "collector.toml"]);
    let config = load_config(text, "k8s ConfigMap collector.toml");
    assert_eq!(config.http_addr.port(), 7071);
    assert_eq!(config.grpc_addr.port(), 7070);
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .expect("the config mount");
    let in_container = s(mount, &["mountPath"]);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("collector.toml");
    std::fs::write(&file, text).unwrap();
    let env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            let value = e
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or("from-secret");
            (s(e, &["name"]).to_owned(), value.to_owned())
        })
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = check_config_run(
        &strings(&container["args"]),
        &BTreeMap::from([(in_container, file)]),
        &env,
        "k8s Deployment",
    );
    assert!(out.contains("Clickhouse"), "{out}");
    // The data folder is the mounted volume.
    assert!(container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|m| Path::new(s(m, &["mountPath"])) == config.data_dir));

    let clickhouse = doc("StatefulSet", "clickhouse");
    let ch = &get(clickhouse, &["spec", "template", "spec", "containers"])[0];
    assert_eq!(s(ch, &["readinessProbe", "httpGet", "path"]), "/ping");
    s(ch, &["resources", "limits", "memory"]);
    assert_eq!(
        config.clickhouse.url.as_deref(),
        Some("http://clickhouse:8123"),
        "the collector's URL names the clickhouse Service"
    );
}

/// One instruction of the Dockerfile, continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read(&deploy().join("docker/Dockerfile"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (op, rest) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((op.to_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    out
}

fn json_args(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not an exec-form list: {text}: {e}"))
}

#[test]
fn the_dockerfile_builds_what_exists() {
    let bins = collector_bins();
    let instructions = dockerfile();
    let mut stages = Vec::new();
    let mut stage_entry: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stage_cmd: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut healthcheck = None;
    for (op, rest) in &instructions {
        let words: Vec<&str> = rest.split_whitespace().collect();
        match op.as_str() {
            "FROM" => {
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                    _ => panic!("every stage is named: FROM {rest}"),
                };
                stages.push(name);
            }
            "COPY" => {
                let args: Vec<&str> = words
                    .iter()
                    .copied()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let (sources, _dest) = args.split_at(args.len() - 1);
                if words.iter().any(|w| w.starts_with("--from=")) {
                    for src in sources {
                        let name = Path::new(src)
                            .file_name()
                            .unwrap()
                            .to_string_lossy()
                            .into_owned();
                        assert!(
                            bins.contains_key(&name),
                            "COPY --from of {src}: not a binary of the collector's crates"
                        );
                    }
                } else {
                    for src in sources {
                        assert!(
                            root().join(src).exists(),
                            "COPY source {src} does not exist"
                        );
                    }
                }
            }
            "RUN" if rest.contains("cargo build") => {
                let built: Vec<&str> = words
                    .windows(2)
                    .filter(|w| w[0] == "--bin")
                    .map(|w| w[1])
                    .collect();
                assert!(!built.is_empty());
                let packages: Vec<&str> = words
                    .windows(2)
                    .filter(|w| w[0] == "-p")
                    .map(|w| w[1])
                    .collect();
                for b in &built {
                    let package = bins.get(*b).unwrap_or_else(|| {
                        panic!("--bin {b} is not a binary of the collector's crates")
                    });
                    assert!(
                        packages.contains(&package.as_str()),
                        "--bin {b} needs -p {package}: {rest}"
                    );
                }
                assert!(rest.contains("--locked"), "{rest}");
                // The profile it names exists (built in or in the workspace manifest).
                let profile = read(&deploy().join("docker/Dockerfile"))
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("ARG CARGO_PROFILE="))
                    .expect("ARG CARGO_PROFILE")
                    .to_owned();
                let workspace: toml::Table = read(&root().join("Cargo.toml")).parse().unwrap();
                assert!(
                    profile == "release" || workspace["profile"].get(&profile).is_some(),
                    "profile {profile}"
                );
            }
            "ENTRYPOINT" => {
                let stage = stages.last().unwrap().clone();
                stage_entry.insert(stage, json_args(rest));
            }
            "CMD" => {
                let stage = stages.last().unwrap().clone();
                stage_cmd.insert(stage, json_args(rest));
            }
            "HEALTHCHECK" => {
                let cmd = rest.split_once("CMD").expect("HEALTHCHECK ... CMD").1;
                healthcheck = Some(json_args(cmd.trim()));
            }
            _ => {}
        }
    }
    // The collector is the default (last) stage; its entrypoint and command run.
    assert_eq!(stages.last().map(String::as_str), Some("collector"));
    assert!(stages.contains(&"demo".to_owned()));
    assert_eq!(stage_entry["collector"], ["holmes-collector"]);
    assert_eq!(stage_entry["demo"], ["holmes-demo"]);
    let default_config = deploy().join("docker/collector.toml");
    let out = check_config_run(
        &stage_cmd["collector"],
        &BTreeMap::from([("/etc/holmes/collector.toml", default_config.clone())]),
        &[],
        "Dockerfile CMD",
    );
    assert!(out.contains("/var/lib/holmes"), "{out}");
    // The health check asks /healthz on the port the default config serves HTTP on.
    let config = load_config(&read(&default_config), "deploy/docker/collector.toml");
    let healthcheck = healthcheck.expect("a HEALTHCHECK");
    let url = healthcheck.last().unwrap();
    assert_eq!(
        url,
        &format!("http://127.0.0.1:{}/healthz", config.http_addr.port())
    );
    assert!(
        holmes_collector::query::routes::document()
            .paths
            .paths
            .contains_key("/healthz"),
        "the collector serves /healthz"
    );
    // The demo stage's default command is the demo's real CLI.
    demo_accepts(&stage_cmd["demo"], &[]);
}

/// `holmes-demo` accepts these arguments: every `--flag` is in the help of the
/// (sub)command they call.
fn demo_accepts(args: &[String], sub: &[&str]) {
    let demo = holmes_devtools::workspace::bin("holmes-demo");
    let mut cmd = Command::new(&demo);
    cmd.args(sub).arg("--help");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", demo.display()));
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for a in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{a} ")),
            "holmes-demo {sub:?} has no {a}:\n{help}"
        );
    }
}

#[test]
fn the_compose_file_fits_together() {
    let dir = deploy().join("docker");
    let compose = &yaml_documents(&dir.join("docker-compose.yml"))[0];
    let services = get(compose, &["services"]).as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    for want in [
        "clickhouse",
        "kafka",
        "ingest",
        "process-1",
        "process-2",
        "checkout-1",
    ] {
        assert!(names.contains(want), "no service {want}: {names:?}");
    }
    let stages: BTreeSet<String> = dockerfile()
        .into_iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, rest)| rest.split_whitespace().last().unwrap().to_owned())
        .collect();
    let mut roles = BTreeMap::new();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        for dep in svc
            .get("depends_on")
            .and_then(Value::as_mapping)
            .into_iter()
            .flat_map(|m| m.keys())
        {
            assert!(
                names.contains(dep.as_str().unwrap()),
                "{name} depends on {dep:?}"
            );
        }
        if let Some(build) = svc.get("build") {
            let context = dir.join(s(build, &["context"]));
            assert!(
                context.join(s(build, &["dockerfile"])).is_file(),
                "{name}: dockerfile"
            );
            assert!(stages.contains(s(build, &["target"])), "{name}: target");
        }
        let mut files = BTreeMap::new();
        for volume in svc.get("volumes").map(strings).unwrap_or_default() {
            let parts: Vec<&str> = volume.split(':').collect();
            if parts[0].starts_with('.') {
                let source = dir.join(parts[0]);
                assert!(
                    source.is_file(),
                    "{name}: volume source {} missing",
                    parts[0]
                );
                files.insert(parts[1].to_owned(), source);
            } else {
                let volumes = get(compose, &["volumes"]).as_mapping().unwrap();
                assert!(
                    volumes.contains_key(parts[0]),
                    "{name}: volume {}",
                    parts[0]
                );
            }
        }
        let image = svc.get("image").and_then(Value::as_str).unwrap_or("");
        if image.starts_with("holmes-collector") {
            let env: Vec<(String, String)> = svc
                .get("environment")
                .and_then(Value::as_mapping)
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_owned(),
                        v.as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mapped: BTreeMap<&str, PathBuf> =
                files.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let out = check_config_run(&strings(&svc["command"]), &mapped, &env, name);
            assert!(out.contains("Clickhouse"), "{name}: {out}");
            let config_file = &files["/etc/holmes/collector.toml"];
            let text = read(config_file);
            let role = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("role = "))
                .map(|r| r.trim_matches('"').to_owned());
            roles.insert(name.to_owned(), role);
            let config = load_config(&text, name);
            assert_eq!(
                config.clickhouse.url.as_deref(),
                Some("http://clickhouse:8123")
            );
            if kafka_keys_known() {
                assert!(text.contains("kafka:9092"), "{name}: brokers");
            }
        }
        if image.starts_with("holmes-demo") {
            let command = strings(&svc["command"]);
            assert_eq!(command[0], "service");
            demo_accepts(&command[1..], &["service"]);
            let collector = command
                .windows(2)
                .find(|w| w[0] == "--collector")
                .map(|w| w[1].clone())
                .expect("--collector");
            assert_eq!(
                collector, "http://ingest:7070",
                "the demo points at the ingest node"
            );
        }
    }
    assert_eq!(roles["ingest"].as_deref(), Some("ingest"));
    assert_eq!(roles["process-1"].as_deref(), Some("process"));
    assert_eq!(roles["process-2"].as_deref(), Some("process"));
    // The broker listens where the collectors look for it.
    let kafka = strings(get(compose, &["services", "kafka", "command"]));
    assert!(kafka.contains(&"tcp://kafka:9092".to_owned()), "{kafka:?}");
    assert!(s(compose, &["services", "kafka", "image"]).starts_with("ghcr.io/tansu-io/tansu"));
}

#[test]
fn the_systemd_unit_runs_the_real_cli() {
    let path = deploy().join("systemd/holmes-collector.service");
    let text = read(&path);
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = Some(name.to_owned());
            sections.entry(name.to_owned()).or_default();
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {t}"));
        let section = current
            .clone()
            .unwrap_or_else(|| panic!("{t} outside a section"));
        sections
            .entry(section)
            .or_default()
            .push((k.to_owned(), v.to_owned()));
    }
    let keys: BTreeSet<&str> = sections.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["Install", "Service", "Unit"]));
    let service = &sections["Service"];
    let value = |k: &str| {
        service
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {k}="))
    };
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "holmes"),
        ("PrivateTmp", "yes"),
    ] {
        assert_eq!(value(k), v, "{k}");
    }
    let exec: Vec<String> = value("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let binary = Path::new(&exec[0]);
    assert!(binary.is_absolute());
    assert!(collector_bins().contains_key(binary.file_name().unwrap().to_str().unwrap()));
    let example = deploy().join("systemd/collector.toml");
    let out = check_config_run(
        &exec[1..],
        &BTreeMap::from([("/etc/holmes/collector.toml", example.clone())]),
        &[],
        "ExecStart",
    );
    // The data folder is the unit's StateDirectory, the one place it may write.
    assert!(out.contains("\"/var/lib/holmes\""), "{out}");
    assert!(sections["Install"].iter().any(|(k, _)| k == "WantedBy"));

    // systemd's own check, where systemd is installed: every directive known, the
    // binary executable (the one just built stands in for /usr/local/bin's).
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let tmp = tempfile::tempdir().unwrap();
        let unit = tmp.path().join("holmes-collector.service");
        std::fs::write(
            &unit,
            text.replace(&exec[0], env!("CARGO_BIN_EXE_holmes-collector")),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify: {said}"
        );
    } else {
        eprintln!("systemd-analyze is not installed: the unit's directives are not verified");
    }
}

#[test]
fn shell_scripts_parse() {
    let scripts = files(&deploy(), &[".sh"]);
    assert!(!scripts.is_empty());
    for script in scripts {
        let out = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bash -n {}: {}",
            rel(&script),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn deploy_docs_link_to_files_that_exist() {
    for doc in files(&deploy(), &[".md"]) {
        let text = read(&doc);
        // Markdown links `](target)` relative to the document.
        for piece in text.split("](").skip(1) {
            let target = piece.split(')').next().unwrap();
            let target = target.split('#').next().unwrap();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let resolved = doc.parent().unwrap().join(target);
            assert!(
                resolved.exists(),
                "{}: link to {target} is broken",
                rel(&doc)
            );
        }
    }
}
