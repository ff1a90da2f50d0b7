//! The checks and defaults that turn a builder into an [`AgentConfig`]: every setting in
//! range or a [`ConfigError`] naming it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use holmes_proto::names;
use holmes_proto::rule_spec::RULE_METRICS;

use super::*;
use crate::delivery::transport::TransportError;

impl HolmesBuilder {
    /// Checks every setting and resolves defaults.
    pub(crate) fn resolve(self) -> Result<AgentConfig, ConfigError> {
        let service = self.service.ok_or(ConfigError::MissingService)?;
        names::validate_name("service", &service)?;
        let instance = match self.instance {
            Some(i) => i,
            None => default_instance_id(),
        };
        names::validate_name("instance id", &instance)?;
        let mut labels = kubernetes::valid_labels(self.detected_labels);
        labels.extend(self.env_labels);
        labels.extend(self.labels);
        names::validate_labels(&labels)?;
        let collector = self.collector.map(|c| validate_collector(&c)).transpose()?;
        let transport = self
            .transport
            .resolve(collector.as_deref())
            .map_err(|err| match err {
                TransportError::BadToken => ConfigError::OutOfRange {
                    setting: "token",
                    value: "<redacted>".to_owned(),
                    reason: err.to_string(),
                },
                TransportError::NoZstd => ConfigError::OutOfRange {
                    setting: "compression",
                    value: "zstd".to_owned(),
                    reason: err.to_string(),
                },
                TransportError::Tls { url, reason } => {
                    ConfigError::InvalidCollector { url, reason }
                }
            })?;
        let collect_interval = self.collect_interval.unwrap_or(DEFAULT_COLLECT_INTERVAL);
        if collect_interval < MIN_COLLECT_INTERVAL {
            return Err(ConfigError::OutOfRange {
                setting: "collect_interval",
                value: format!("{collect_interval:?}"),
                reason: format!("at least {MIN_COLLECT_INTERVAL:?}"),
            });
        }
        let durations = [
            ("collect_interval", Some(collect_interval)),
            ("send_interval", self.send_interval),
            ("flush_timeout", self.flush_timeout),
            ("max_backoff", self.max_backoff),
            ("flight_recorder_window", self.flight_recorder_window),
            ("cpu_profile_duration", self.cpu_profile_duration),
            ("min_pushed_cooldown", self.min_pushed_cooldown),
            ("capture_request_interval", self.capture_request_interval),
        ];
        for (setting, value) in durations {
            if let Some(v) = value.filter(|v| *v > MAX_DURATION_SETTING) {
                return Err(ConfigError::OutOfRange {
                    setting,
                    value: format!("{v:?}"),
                    reason: format!("at most {MAX_DURATION_SETTING:?}"),
                });
            }
        }
        let outbox_bytes = self.outbox_bytes.unwrap_or(DEFAULT_OUTBOX_BYTES);
        if outbox_bytes < 64 * 1024 {
            return Err(ConfigError::OutOfRange {
                setting: "outbox_bytes",
                value: outbox_bytes.to_string(),
                reason: "at least 64 KiB".to_owned(),
            });
        }
        let dump_bytes = self.dump_bytes.unwrap_or(DEFAULT_DUMP_BYTES);
        if dump_bytes < 1024 * 1024 {
            return Err(ConfigError::OutOfRange {
                setting: "dump_bytes",
                value: dump_bytes.to_string(),
                reason: "at least 1 MiB".to_owned(),
            });
        }
        let dump = match (self.dump_dir, &collector) {
            (Some(dir), _) => Some(DumpFolder::chosen(dir, dump_bytes as u64)),
            (None, None) => Some(DumpFolder::default_private(
                std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
                dump_bytes as u64,
            )),
            (None, Some(_)) => None,
        };
        let baseline_interval = self
            .baseline_interval
            .unwrap_or(Some(DEFAULT_BASELINE_INTERVAL));
        if let Some(every) = baseline_interval {
            if !(MIN_BASELINE_INTERVAL..=MAX_BASELINE_INTERVAL).contains(&every) {
                return Err(ConfigError::OutOfRange {
                    setting: "baseline_interval",
                    value: format!("{every:?}"),
                    reason: format!(
                        "from {MIN_BASELINE_INTERVAL:?} to {MAX_BASELINE_INTERVAL:?}, or off"
                    ),
                });
            }
        }
        let spool_bytes = self.spool_bytes.unwrap_or(DEFAULT_SPOOL_BYTES);
        if spool_bytes < 1024 * 1024 {
            return Err(ConfigError::OutOfRange {
                setting: "spool_bytes",
                value: spool_bytes.to_string(),
                reason: "at least 1 MiB".to_owned(),
            });
        }
        let mut rules = BTreeMap::new();
        for metric in RULE_METRICS {
            let rule = self
                .rules
                .get(&metric)
                .or_else(|| self.env_rules.get(&metric))
                .copied()
                .or_else(|| Rule::default_for(metric));
            if let Some(rule) = rule {
                rules.insert(metric, rule);
            }
        }
        for metric in self.rules.keys().filter(|m| !RULE_METRICS.contains(m)) {
            tracing::warn!(target: "holmes", %metric, "ignoring a rule for a metric that has none");
        }
        let memory_fast_interval = self
            .memory_fast_interval
            .unwrap_or(Some(DEFAULT_MEMORY_FAST_INTERVAL))
            .filter(|fast| *fast < collect_interval)
            .map(|fast| fast.max(MIN_COLLECT_INTERVAL));
        let cpu_max = self.cpu_max.unwrap_or(0.0);
        if !cpu_max.is_finite() || cpu_max < 0.0 {
            return Err(ConfigError::OutOfRange {
                setting: "cpu_max",
                value: cpu_max.to_string(),
                reason: "a percentage >= 0 (0: no gate)".to_owned(),
            });
        }
        if let Some(cores) = self.cpu_cores {
            if !cores.is_finite() || cores <= 0.0 {
                return Err(ConfigError::OutOfRange {
                    setting: "cpu_cores",
                    value: cores.to_string(),
                    reason: "a positive, finite number of cores".to_owned(),
                });
            }
        }
        Ok(AgentConfig {
            flight_recorder: self.flight_recorder.unwrap_or(true),
            flight_recorder_window: self
                .flight_recorder_window
                .unwrap_or(DEFAULT_FLIGHT_RECORDER_WINDOW)
                .max(Duration::from_secs(1)),
            cpu_profile_duration: self
                .cpu_profile_duration
                .unwrap_or(DEFAULT_CPU_PROFILE_DURATION)
                .max(Duration::from_millis(100)),
            prewarm_symbols: self.prewarm_symbols.unwrap_or(DEFAULT_PREWARM_SYMBOLS),
            rules,
            cpu_max,
            cpu_cores: self.cpu_cores,
            log_decisions: self.log_decisions.unwrap_or(false),
            memory_fast_interval,
            runtimes: self.runtimes,
            enabled: self.enabled.unwrap_or(true),
            service,
            instance,
            host: hostname(),
            labels,
            collector,
            dump,
            floors: Floors {
                min_cooldown: self
                    .min_pushed_cooldown
                    .unwrap_or(DEFAULT_MIN_PUSHED_COOLDOWN),
                min_window: self.min_pushed_window.unwrap_or(DEFAULT_MIN_PUSHED_WINDOW),
            },
            capture_request_interval: self
                .capture_request_interval
                .unwrap_or(DEFAULT_CAPTURE_REQUEST_INTERVAL),
            baseline_interval,
            collect_interval,
            send_interval: self
                .send_interval
                .unwrap_or(DEFAULT_SEND_INTERVAL)
                .max(collect_interval),
            outbox_bytes,
            spool_dir: self.spool_dir,
            spool_bytes,
            flush_timeout: self.flush_timeout.unwrap_or(DEFAULT_FLUSH_TIMEOUT),
            max_backoff: self
                .max_backoff
                .unwrap_or(DEFAULT_MAX_BACKOFF)
                .max(Duration::from_millis(100)),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            transport,
        })
    }
}

fn validate_collector(url: &str) -> Result<String, ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidCollector {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    // https:// is checked against the build's features with the TLS settings.
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(bad("expected http://host:port or https://host:port"));
    };
    if rest.trim_end_matches('/').is_empty() {
        return Err(bad("no host"));
    }
    tonic::transport::Endpoint::from_shared(url.to_owned()).map_err(|e| bad(&e.to_string()))?;
    Ok(url.to_owned())
}

/// The machine's host name, or "unknown".
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `<hostname>-<pid>`, with characters outside the name alphabet replaced by `-`.
fn default_instance_id() -> String {
    let raw = format!("{}-{}", hostname(), std::process::id());
    let mut id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if id.len() > names::MAX_NAME_LEN {
        id = id.split_off(id.len() - names::MAX_NAME_LEN);
    }
    id
}
