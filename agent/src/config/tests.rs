use crate::Failure;
use std::collections::HashMap;
use std::path::Path;

use holmes_proto::names;

use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn environment_fills_what_code_left_unset() -> crate::TestResult {
    let cfg = HolmesBuilder::default()
        .service("from-code")
        .label("region", "code")
        .with_env_from(env(&[
            ("HOLMES_SERVICE", "from-env"),
            ("HOLMES_COLLECTOR", "http://10.0.0.1:7070"),
            ("HOLMES_INSTANCE", "pod-7"),
            ("HOLMES_LABELS", "region=env, zone = a ,"),
            ("HOLMES_INTERVAL", "250ms"),
            ("HOLMES_SEND_INTERVAL", "2s"),
            ("HOLMES_OUTBOX_BYTES", "8MiB"),
            ("HOLMES_DUMP_DIR", "/var/tmp/holmes"),
        ]))?
        .resolve()?;
    assert_eq!(cfg.service, "from-code");
    assert_eq!(cfg.instance, "pod-7");
    assert_eq!(cfg.collector.as_deref(), Some("http://10.0.0.1:7070"));
    assert_eq!(cfg.labels.get("region").map(String::as_str), Some("code"));
    assert_eq!(cfg.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(cfg.collect_interval, Duration::from_millis(250));
    assert_eq!(cfg.send_interval, Duration::from_secs(2));
    assert_eq!(cfg.outbox_bytes, 8 * 1024 * 1024);
    assert_eq!(
        cfg.dump.as_ref().map(|d| d.path()),
        Some(Path::new("/var/tmp/holmes"))
    );
    Ok(())
}

#[test]
fn spool_settings_come_from_code_then_environment_then_defaults() -> crate::TestResult {
    let base = || HolmesBuilder::default().service("s");
    let cfg = base().resolve()?;
    assert_eq!(
        (cfg.spool_dir, cfg.spool_bytes),
        (None, DEFAULT_SPOOL_BYTES)
    );
    let vars = env(&[
        ("HOLMES_SPOOL_DIR", "/var/spool/holmes"),
        ("HOLMES_SPOOL_BYTES", "64MiB"),
    ]);
    let cfg = base().with_env_from(&vars)?.resolve()?;
    assert_eq!(cfg.spool_dir, Some(PathBuf::from("/var/spool/holmes")));
    assert_eq!(cfg.spool_bytes, 64 * 1024 * 1024);
    let cfg = base()
        .spool_dir("/tmp/mine")
        .spool_bytes(2 * 1024 * 1024)
        .with_env_from(&vars)?
        .resolve()?;
    assert_eq!(cfg.spool_dir, Some(PathBuf::from("/tmp/mine")));
    assert_eq!(cfg.spool_bytes, 2 * 1024 * 1024);
    let err = base()
        .with_env_from(env(&[("HOLMES_SPOOL_BYTES", "lots")]))
        .failure()?;
    assert!(err.to_string().starts_with("HOLMES_SPOOL_BYTES="), "{err}");
    assert!(matches!(
        base().spool_bytes(1000).resolve(),
        Err(ConfigError::OutOfRange {
            setting: "spool_bytes",
            ..
        })
    ));
    Ok(())
}

#[test]
fn code_wins_even_when_set_after_the_environment() -> crate::TestResult {
    let cfg = HolmesBuilder::default()
        .with_env_from(env(&[("HOLMES_SERVICE", "env"), ("HOLMES_INTERVAL", "5s")]))?
        .service("code")
        .collect_interval(Duration::from_secs(2))
        .resolve()?;
    assert_eq!(cfg.service, "code");
    assert_eq!(cfg.collect_interval, Duration::from_secs(2));
    Ok(())
}

#[test]
fn defaults_apply_when_nothing_is_set() -> crate::TestResult {
    let cfg = HolmesBuilder::default()
        .service("svc")
        .with_env_from(env(&[]))?
        .resolve()?;
    assert!(cfg.enabled);
    assert_eq!(cfg.collect_interval, DEFAULT_COLLECT_INTERVAL);
    assert_eq!(cfg.send_interval, DEFAULT_SEND_INTERVAL);
    assert_eq!(cfg.outbox_bytes, DEFAULT_OUTBOX_BYTES);
    assert_eq!(cfg.collector, None);
    assert!(cfg.instance.ends_with(&format!("-{}", std::process::id())));
    names::validate_name("instance", &cfg.instance)?;
    assert_eq!(
        cfg.floors,
        Floors {
            min_cooldown: DEFAULT_MIN_PUSHED_COOLDOWN,
            min_window: DEFAULT_MIN_PUSHED_WINDOW
        }
    );
    assert_eq!(
        cfg.capture_request_interval,
        DEFAULT_CAPTURE_REQUEST_INTERVAL
    );
    assert_eq!(cfg.baseline_interval, Some(DEFAULT_BASELINE_INTERVAL));
    // Local mode: the private default folder; with a collector, no folder.
    let dump = cfg.dump.ok_or("no dump folder without a collector")?;
    assert!(
        dump.path().ends_with("holmes") || dump.path().ends_with(format!("holmes-{}", euid()?)),
        "{}",
        dump.path().display()
    );
    let cfg = HolmesBuilder::default()
        .service("svc")
        .collector("http://127.0.0.1:1")
        .resolve()?;
    assert_eq!(cfg.dump, None);
    Ok(())
}

/// The effective user id, read from the process's status file.
fn euid() -> crate::TestResult<String> {
    Ok(std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .ok_or("no effective uid in /proc/self/status")?
        .to_owned())
}

#[test]
fn control_bounds_baselines_and_the_dump_cap_come_from_code_then_environment() -> crate::TestResult
{
    let vars = env(&[
        ("HOLMES_MIN_PUSHED_COOLDOWN", "1m"),
        ("HOLMES_MIN_PUSHED_WINDOW", "5"),
        ("HOLMES_CAPTURE_REQUEST_INTERVAL", "2m"),
        ("HOLMES_BASELINE_INTERVAL", "off"),
        ("HOLMES_DUMP_BYTES", "16MiB"),
        ("HOLMES_DUMP_DIR", "/var/tmp/holmes"),
    ]);
    let cfg = HolmesBuilder::default()
        .service("svc")
        .with_env_from(&vars)?
        .resolve()?;
    assert_eq!(
        cfg.floors,
        Floors {
            min_cooldown: Duration::from_secs(60),
            min_window: 5
        }
    );
    assert_eq!(cfg.capture_request_interval, Duration::from_secs(120));
    assert_eq!(cfg.baseline_interval, None);
    assert_eq!(
        cfg.dump,
        Some(DumpFolder::chosen(
            "/var/tmp/holmes".into(),
            16 * 1024 * 1024
        ))
    );
    let cfg = HolmesBuilder::default()
        .service("svc")
        .min_pushed_cooldown(Duration::ZERO)
        .min_pushed_window(1)
        .capture_request_interval(Duration::from_secs(1))
        .baseline_interval(Some(Duration::from_secs(90)))
        .dump_bytes(2 * 1024 * 1024)
        .with_env_from(&vars)?
        .resolve()?;
    assert_eq!(
        cfg.floors,
        Floors {
            min_cooldown: Duration::ZERO,
            min_window: 1
        }
    );
    assert_eq!(cfg.capture_request_interval, Duration::from_secs(1));
    assert_eq!(cfg.baseline_interval, Some(Duration::from_secs(90)));
    assert_eq!(
        cfg.dump,
        Some(DumpFolder::chosen(
            "/var/tmp/holmes".into(),
            2 * 1024 * 1024
        ))
    );
    for (var, value) in [
        ("HOLMES_MIN_PUSHED_WINDOW", "a few"),
        ("HOLMES_BASELINE_INTERVAL", "hourly"),
        ("HOLMES_DUMP_BYTES", "lots"),
    ] {
        let err = HolmesBuilder::default()
            .with_env_from(env(&[(var, value)]))
            .failure()?;
        assert!(err.to_string().starts_with(&format!("{var}=")), "{err}");
    }
    let out_of_range = |b: HolmesBuilder| match b.service("svc").resolve() {
        Err(ConfigError::OutOfRange { setting, .. }) => setting,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        out_of_range(HolmesBuilder::default().baseline_interval(Some(Duration::from_millis(10)))),
        "baseline_interval"
    );
    assert_eq!(
        out_of_range(HolmesBuilder::default().dump_bytes(1000)),
        "dump_bytes"
    );
    Ok(())
}

#[test]
fn labels_from_code_win_over_holmes_labels_which_win_over_kubernetes() -> crate::TestResult {
    let cfg = HolmesBuilder::default()
        .service("svc")
        .label("k8s.pod.name", "from-code")
        .with_env_from(env(&[
            ("POD_NAME", "checkout-7f9c5d8b6-x2x4q"),
            ("POD_NAMESPACE", "shop"),
            ("NODE_NAME", "node-3"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.version=1.4.2"),
            ("HOLMES_LABELS", "k8s.namespace.name=from-env,zone=a"),
        ]))?
        .resolve()?;
    let labels: Vec<(&str, &str)> = cfg
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("k8s.namespace.name", "from-env"),
            ("k8s.node.name", "node-3"),
            ("k8s.pod.name", "from-code"),
            ("service.version", "1.4.2"),
            ("zone", "a"),
        ]
    );
    Ok(())
}

#[test]
fn malformed_variables_are_errors_naming_the_variable() -> crate::TestResult {
    let cases = [
        ("HOLMES_INTERVAL", "soon"),
        ("HOLMES_SEND_INTERVAL", "5 parsecs"),
        ("HOLMES_LABELS", "region"),
        ("HOLMES_LABELS", "bad key=v"),
        ("HOLMES_OUTBOX_BYTES", "4 bananas"),
        ("HOLMES_ENABLED", "maybe"),
    ];
    for (var, value) in cases {
        let err = HolmesBuilder::default()
            .with_env_from(env(&[(var, value)]))
            .failure()?;
        let text = err.to_string();
        assert!(text.starts_with(&format!("{var}=")), "{text}");
        assert!(matches!(err, ConfigError::InvalidEnv { var: v, .. } if v == var));
    }
    Ok(())
}

#[test]
fn rules_come_from_code_then_environment_then_defaults() -> crate::TestResult {
    let cfg = HolmesBuilder::default()
        .service("svc")
        .cpu_rule(Rule::new().abs(50.0))
        .with_env_from(env(&[
            ("HOLMES_RULE_CPU", "abs=99"),
            ("HOLMES_RULE_MEMORY", "abs=90,cooldown=2m"),
            ("HOLMES_RULE_THREADS", "off"),
            ("HOLMES_CPU_MAX", "85"),
            ("HOLMES_LOG_DECISIONS", "true"),
            ("HOLMES_MEMORY_FAST_INTERVAL", "off"),
        ]))?
        .resolve()?;
    assert_eq!(cfg.rules[&Metric::CpuPercent], Rule::new().abs(50.0));
    let mem = cfg.rules[&Metric::MemoryPercent];
    assert_eq!(
        (mem.min, mem.diff, mem.abs),
        (10.0, 25.0, 90.0),
        "env applies over the default"
    );
    assert_eq!(mem.cooldown, Duration::from_secs(120));
    assert!(!cfg.rules[&Metric::Threads].is_enabled());
    assert_eq!(
        cfg.rules[&Metric::Tasks],
        Rule::default_for(Metric::Tasks).ok_or("no default tasks rule")?
    );
    assert_eq!(cfg.cpu_max, 85.0);
    assert!(cfg.log_decisions);
    assert_eq!(cfg.memory_fast_interval, None);
    Ok(())
}

#[test]
fn debuginfo_upload_settings_come_from_code_then_environment_then_the_defaults() -> crate::TestResult
{
    let base = || HolmesBuilder::default().service("s");
    let cfg = base().with_env_from(env(&[]))?.resolve()?;
    assert_eq!(cfg.debuginfo_upload, DEFAULT_DEBUGINFO_UPLOAD);
    assert_eq!(cfg.debuginfo_rate, DEFAULT_DEBUGINFO_RATE);
    let set = env(&[
        ("HOLMES_DEBUGINFO_UPLOAD", "off"),
        ("HOLMES_DEBUGINFO_RATE", "256KiB"),
    ]);
    let cfg = base().with_env_from(&set)?.resolve()?;
    assert!(!cfg.debuginfo_upload);
    assert_eq!(cfg.debuginfo_rate, 256 * 1024);
    let cfg = base()
        .debuginfo_upload(true)
        .debuginfo_rate(2 << 20)
        .with_env_from(&set)?
        .resolve()?;
    assert!(cfg.debuginfo_upload);
    assert_eq!(cfg.debuginfo_rate, 2 << 20);
    for (var, value) in [
        ("HOLMES_DEBUGINFO_UPLOAD", "soon"),
        ("HOLMES_DEBUGINFO_RATE", "fast"),
    ] {
        let err = base().with_env_from(env(&[(var, value)])).failure()?;
        assert!(err.to_string().starts_with(&format!("{var}=")), "{err}");
    }
    let err = base().debuginfo_rate(100).resolve().failure()?;
    assert!(err.to_string().starts_with("debuginfo_rate = 100"), "{err}");
    Ok(())
}

#[test]
fn malformed_rule_variables_name_the_variable() -> crate::TestResult {
    for (var, value) in [
        ("HOLMES_RULE_MEMORY", "abs=lots"),
        ("HOLMES_RULE_CPU", "speed=3"),
        ("HOLMES_RULE_HEAP", "abs"),
        ("HOLMES_CPU_MAX", "-3"),
        ("HOLMES_MEMORY_FAST_INTERVAL", "quick"),
    ] {
        let err = HolmesBuilder::default()
            .with_env_from(env(&[(var, value)]))
            .failure()?;
        assert!(err.to_string().starts_with(&format!("{var}=")), "{err}");
    }
    Ok(())
}

#[test]
fn the_fast_memory_path_defaults_on_and_stays_below_the_interval() -> crate::TestResult {
    let cfg = HolmesBuilder::default().service("s").resolve()?;
    assert_eq!(cfg.memory_fast_interval, Some(DEFAULT_MEMORY_FAST_INTERVAL));
    let slow = HolmesBuilder::default()
        .service("s")
        .collect_interval(Duration::from_millis(50))
        .resolve()?;
    assert_eq!(
        slow.memory_fast_interval, None,
        "pointless when sampling is faster"
    );
    Ok(())
}

#[test]
fn bad_settings_are_refused_at_start() -> crate::TestResult {
    let resolve = |b: HolmesBuilder| b.resolve().failure();
    assert_eq!(
        resolve(HolmesBuilder::default())?,
        ConfigError::MissingService
    );
    assert!(matches!(
        resolve(HolmesBuilder::default().service("bad name"))?,
        ConfigError::InvalidName(_)
    ));
    for url in ["127.0.0.1:7070", "ftp://x", "http://", "https://"] {
        assert!(
            matches!(
                resolve(HolmesBuilder::default().service("s").collector(url))?,
                ConfigError::InvalidCollector { .. }
            ),
            "{url}"
        );
    }
    assert!(matches!(
        resolve(
            HolmesBuilder::default()
                .service("s")
                .collect_interval(Duration::from_millis(1))
        )?,
        ConfigError::OutOfRange { .. }
    ));
    assert!(matches!(
        resolve(
            HolmesBuilder::default()
                .service("s")
                .max_backoff(Duration::MAX)
        )?,
        ConfigError::OutOfRange {
            setting: "max_backoff",
            ..
        }
    ));
    Ok(())
}

#[test]
fn transport_settings_come_from_the_environment_too() -> crate::TestResult {
    let cfg = HolmesBuilder::default()
        .service("s")
        .collector("http://h:1")
        .with_env_from(env(&[
            ("HOLMES_TOKEN", " s3cret "),
            ("HOLMES_COMPRESSION", "none"),
        ]))?
        .resolve()?;
    assert_eq!(cfg.transport.compression, Compression::None);
    assert_eq!(
        cfg.transport
            .request(())
            .metadata()
            .get("authorization")
            .ok_or("no authorization header")?,
        "Bearer s3cret"
    );
    let err = HolmesBuilder::default()
        .with_env_from(env(&[("HOLMES_COMPRESSION", "lz4")]))
        .failure()?;
    assert!(matches!(
        err,
        ConfigError::InvalidEnv {
            var: "HOLMES_COMPRESSION",
            ..
        }
    ));
    let err = HolmesBuilder::default()
        .service("s")
        .token("two words")
        .resolve()
        .failure()?;
    assert!(
        matches!(
            err,
            ConfigError::OutOfRange {
                setting: "token",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("two words"), "{err}");
    Ok(())
}

#[cfg(not(feature = "tls"))]
#[test]
fn https_and_a_ca_file_need_the_tls_feature() -> crate::TestResult {
    let err = HolmesBuilder::default()
        .service("s")
        .collector("https://h:1")
        .resolve()
        .failure()?;
    assert!(matches!(err, ConfigError::InvalidCollector { .. }), "{err}");
    assert!(err.to_string().contains("`tls` feature"), "{err}");
    let err = HolmesBuilder::default()
        .with_env_from(env(&[("HOLMES_TLS_CA_FILE", "/ca.pem")]))
        .failure()?;
    assert!(err.to_string().starts_with("HOLMES_TLS_CA_FILE="), "{err}");
    assert!(err.to_string().contains("`tls` feature"), "{err}");
    Ok(())
}

#[test]
fn cpu_cores_come_from_code_then_environment_and_must_be_a_positive_number() -> crate::TestResult {
    let base = || HolmesBuilder::default().service("s");
    assert_eq!(base().resolve()?.cpu_cores, None, "detected by default");
    let sixteen = env(&[("HOLMES_CPU_CORES", "16")]);
    let cfg = base().with_env_from(&sixteen)?.resolve()?;
    assert_eq!(cfg.cpu_cores, Some(16.0));
    let cfg = base().cpu_cores(0.5).with_env_from(&sixteen)?.resolve()?;
    assert_eq!(cfg.cpu_cores, Some(0.5), "code wins");
    for bad in ["0", "-2", "many", "inf", "NaN"] {
        let err = base()
            .with_env_from(env(&[("HOLMES_CPU_CORES", bad)]))
            .failure()?;
        assert_eq!(
            err.to_string(),
            format!(
                "HOLMES_CPU_CORES={bad:?} is invalid: expected a positive number of cores such as 2 or 0.5"
            )
        );
    }
    for bad in [0.0, -1.0, f64::INFINITY, f64::NAN] {
        let err = base().cpu_cores(bad).resolve().failure()?;
        assert!(
            matches!(
                err,
                ConfigError::OutOfRange {
                    setting: "cpu_cores",
                    ..
                }
            ),
            "{bad}: {err}"
        );
        assert!(err.to_string().starts_with("cpu_cores = "), "{err}");
    }
    Ok(())
}
