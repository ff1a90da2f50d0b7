//! The `HOLMES_*` environment variables: each fills the setting code left unset, and a
//! malformed one is a [`ConfigError::InvalidEnv`] naming it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use holmes_proto::names;
use holmes_proto::rule_spec;
use holmes_proto::Metric;

use super::{ConfigError, HolmesBuilder};
use crate::rules::Rule;

impl HolmesBuilder {
    /// Fills every setting not made in code from the `HOLMES_*` environment variables.
    /// A malformed variable is an error naming it.
    pub fn with_env(self) -> Result<Self, ConfigError> {
        self.with_env_from(|name| std::env::var(name).ok())
    }

    /// Like [`Self::with_env`], reading variables through `lookup` (for tests and for
    /// hosts that keep their settings elsewhere).
    pub fn with_env_from(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |var: &'static str| lookup(var).filter(|v| !v.trim().is_empty());
        if self.enabled.is_none() {
            if let Some(v) = get("HOLMES_ENABLED") {
                self.enabled = Some(parse_bool("HOLMES_ENABLED", &v)?);
            }
        }
        if self.service.is_none() {
            self.service = get("HOLMES_SERVICE");
        }
        if self.instance.is_none() {
            self.instance = get("HOLMES_INSTANCE");
        }
        if self.collector.is_none() {
            self.collector = get("HOLMES_COLLECTOR");
        }
        if self.transport.token.is_none() {
            self.transport.token = get("HOLMES_TOKEN").map(|t| t.trim().to_owned());
        }
        if self.transport.tls_ca_file.is_none() {
            if let Some(path) = get("HOLMES_TLS_CA_FILE") {
                if !cfg!(feature = "tls") {
                    return Err(invalid(
                        "HOLMES_TLS_CA_FILE",
                        &path,
                        "this build of holmes-agent has no TLS (enable its `tls` feature)",
                    ));
                }
                self.transport.tls_ca_file = Some(PathBuf::from(path.trim()));
            }
        }
        if self.transport.compression.is_none() {
            if let Some(v) = get("HOLMES_COMPRESSION") {
                let c = v
                    .parse()
                    .map_err(|reason: String| invalid("HOLMES_COMPRESSION", &v, reason))?;
                self.transport.compression = Some(c);
            }
        }
        if let Some(v) = get("HOLMES_LABELS") {
            self.env_labels = parse_labels("HOLMES_LABELS", &v)?;
        }
        self.detected_labels = super::kubernetes::detect(&get);
        if self.dump_dir.is_none() {
            self.dump_dir = get("HOLMES_DUMP_DIR").map(PathBuf::from);
        }
        if self.dump_bytes.is_none() {
            if let Some(v) = get("HOLMES_DUMP_BYTES") {
                self.dump_bytes = Some(parse_bytes("HOLMES_DUMP_BYTES", &v)?);
            }
        }
        if self.min_pushed_cooldown.is_none() {
            if let Some(v) = get("HOLMES_MIN_PUSHED_COOLDOWN") {
                self.min_pushed_cooldown = Some(parse_duration("HOLMES_MIN_PUSHED_COOLDOWN", &v)?);
            }
        }
        if self.min_pushed_window.is_none() {
            if let Some(v) = get("HOLMES_MIN_PUSHED_WINDOW") {
                let n = v.trim().parse::<u32>().map_err(|_| {
                    invalid(
                        "HOLMES_MIN_PUSHED_WINDOW",
                        &v,
                        "expected a number of samples such as 5",
                    )
                })?;
                self.min_pushed_window = Some(n);
            }
        }
        if self.capture_request_interval.is_none() {
            if let Some(v) = get("HOLMES_CAPTURE_REQUEST_INTERVAL") {
                self.capture_request_interval =
                    Some(parse_duration("HOLMES_CAPTURE_REQUEST_INTERVAL", &v)?);
            }
        }
        if self.baseline_interval.is_none() {
            if let Some(v) = get("HOLMES_BASELINE_INTERVAL") {
                self.baseline_interval = Some(if v.trim().eq_ignore_ascii_case("off") {
                    None
                } else {
                    Some(parse_duration("HOLMES_BASELINE_INTERVAL", &v)?)
                });
            }
        }
        if self.collect_interval.is_none() {
            if let Some(v) = get("HOLMES_INTERVAL") {
                self.collect_interval = Some(parse_duration("HOLMES_INTERVAL", &v)?);
            }
        }
        if self.send_interval.is_none() {
            if let Some(v) = get("HOLMES_SEND_INTERVAL") {
                self.send_interval = Some(parse_duration("HOLMES_SEND_INTERVAL", &v)?);
            }
        }
        if self.outbox_bytes.is_none() {
            if let Some(v) = get("HOLMES_OUTBOX_BYTES") {
                self.outbox_bytes = Some(parse_bytes("HOLMES_OUTBOX_BYTES", &v)?);
            }
        }
        if self.spool_dir.is_none() {
            self.spool_dir = get("HOLMES_SPOOL_DIR").map(PathBuf::from);
        }
        if self.spool_bytes.is_none() {
            if let Some(v) = get("HOLMES_SPOOL_BYTES") {
                self.spool_bytes = Some(parse_bytes("HOLMES_SPOOL_BYTES", &v)?);
            }
        }
        for (var, metric) in RULE_VARS {
            if let Some(v) = get(var) {
                let base = rule_spec::default_rule(metric)
                    .ok_or_else(|| invalid(var, &v, "this metric has no rule"))?;
                let config =
                    rule_spec::apply(&base, &v).map_err(|e| invalid(var, &v, e.to_string()))?;
                self.env_rules.insert(metric, Rule::from_config(&config));
            }
        }
        if self.cpu_max.is_none() {
            if let Some(v) = get("HOLMES_CPU_MAX") {
                let n: f64 = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite() && *n >= 0.0)
                    .ok_or_else(|| invalid("HOLMES_CPU_MAX", &v, "expected a percentage >= 0"))?;
                self.cpu_max = Some(n);
            }
        }
        if self.cpu_cores.is_none() {
            if let Some(v) = get("HOLMES_CPU_CORES") {
                let n: f64 = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite() && *n > 0.0)
                    .ok_or_else(|| {
                        invalid(
                            "HOLMES_CPU_CORES",
                            &v,
                            "expected a positive number of cores such as 2 or 0.5",
                        )
                    })?;
                self.cpu_cores = Some(n);
            }
        }
        if self.flight_recorder.is_none() {
            if let Some(v) = get("HOLMES_FLIGHT_RECORDER") {
                self.flight_recorder = Some(parse_bool("HOLMES_FLIGHT_RECORDER", &v)?);
            }
        }
        if self.flight_recorder_window.is_none() {
            if let Some(v) = get("HOLMES_FLIGHT_RECORDER_WINDOW") {
                self.flight_recorder_window =
                    Some(parse_duration("HOLMES_FLIGHT_RECORDER_WINDOW", &v)?);
            }
        }
        if self.cpu_profile_duration.is_none() {
            if let Some(v) = get("HOLMES_CPU_PROFILE_DURATION") {
                self.cpu_profile_duration =
                    Some(parse_duration("HOLMES_CPU_PROFILE_DURATION", &v)?);
            }
        }
        if self.prewarm_symbols.is_none() {
            if let Some(v) = get("HOLMES_PREWARM_SYMBOLS") {
                self.prewarm_symbols = Some(parse_bool("HOLMES_PREWARM_SYMBOLS", &v)?);
            }
        }
        if self.log_decisions.is_none() {
            if let Some(v) = get("HOLMES_LOG_DECISIONS") {
                self.log_decisions = Some(parse_bool("HOLMES_LOG_DECISIONS", &v)?);
            }
        }
        if self.memory_fast_interval.is_none() {
            if let Some(v) = get("HOLMES_MEMORY_FAST_INTERVAL") {
                self.memory_fast_interval = Some(if v.trim().eq_ignore_ascii_case("off") {
                    None
                } else {
                    Some(parse_duration("HOLMES_MEMORY_FAST_INTERVAL", &v)?)
                });
            }
        }
        Ok(self)
    }
}

/// The variables holding each metric's rule.
const RULE_VARS: [(&str, Metric); 5] = [
    ("HOLMES_RULE_MEMORY", Metric::MemoryPercent),
    ("HOLMES_RULE_CPU", Metric::CpuPercent),
    ("HOLMES_RULE_THREADS", Metric::Threads),
    ("HOLMES_RULE_TASKS", Metric::Tasks),
    ("HOLMES_RULE_HEAP", Metric::HeapPercent),
];

pub(super) fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidEnv {
        var,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(var, value, "expected true or false")),
    }
}

fn parse_duration(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim())
        .map_err(|e| invalid(var, value, format!("{e} (write e.g. 1s, 500ms, 2m)")))
}

fn parse_bytes(var: &'static str, value: &str) -> Result<usize, ConfigError> {
    let v = value.trim();
    let (digits, unit) = v
        .find(|c: char| !c.is_ascii_digit())
        .map_or((v, ""), |i| v.split_at(i));
    let n: usize = digits.parse().map_err(|_| {
        invalid(
            var,
            value,
            "expected a size such as 4194304, 512KiB or 4MiB",
        )
    })?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        other => return Err(invalid(var, value, format!("unknown unit {other:?}"))),
    };
    n.checked_mul(mult)
        .ok_or_else(|| invalid(var, value, "too large"))
}

fn parse_labels(var: &'static str, value: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut labels = BTreeMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| invalid(var, value, format!("{pair:?} is not key=value")))?;
        let k = k.trim();
        names::validate_name("label key", k).map_err(|e| invalid(var, value, e.to_string()))?;
        labels.insert(k.to_owned(), v.trim().to_owned());
    }
    Ok(labels)
}
