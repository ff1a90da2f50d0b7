//! The text form of a trigger rule, shared by the agent's `HOLMES_RULE_*` variables and
//! the collector's per-service rules: `min=10,diff=25,abs=80,max=0,cooldown=60s`
//! (any subset, in any order; `window=10` too), or `off`.
//!
//! Keys left out keep the value of the base rule the text is applied to, so
//! `abs=90` changes only the absolute threshold of a metric's default rule. `diff=off`
//! and `abs=off` switch one condition off (stored as an infinite threshold).

use std::time::Duration;

use crate::{Metric, RuleConfig};

/// A rule text that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleSpecError {
    /// A part is not `key=value`.
    #[error(
        "{part:?} is not key=value (keys: min, diff, abs, max, cooldown, window; or the word off)"
    )]
    NotKeyValue {
        /// The offending part.
        part: String,
    },
    /// An unknown key.
    #[error("unknown key {key:?} (keys: min, diff, abs, max, cooldown, window)")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A value that does not parse or is out of range.
    #[error("{key}={value:?}: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// Largest ring window a rule may ask for.
pub const MAX_WINDOW: u32 = 1_000;
/// Samples in a rule's ring window unless it says otherwise (mosn/holmes: 10).
pub const DEFAULT_WINDOW: u32 = 10;

/// The default rule of a metric, with mosn/holmes' values (tokio tasks stand in for
/// goroutines); `None` for metrics that have no rule (RSS, heap bytes, fds, throttling).
pub fn default_rule(metric: Metric) -> Option<RuleConfig> {
    let (min, diff, abs, cooldown_secs) = match metric {
        Metric::MemoryPercent => (10.0, 25.0, 80.0, 60),
        Metric::CpuPercent => (10.0, 25.0, 70.0, 60),
        Metric::Threads => (10.0, 25.0, 70.0, 3_600),
        Metric::Tasks => (3_000.0, 20.0, 200_000.0, 600),
        Metric::HeapPercent => (10.0, 20.0, 40.0, 60),
        Metric::RssBytes | Metric::HeapBytes | Metric::OpenFds | Metric::CpuThrottledPercent => {
            return None
        }
    };
    Some(RuleConfig {
        metric,
        enabled: true,
        min,
        diff,
        abs,
        max: 0.0,
        cooldown: Duration::from_secs(cooldown_secs),
        window: DEFAULT_WINDOW,
    })
}

/// The metrics that have a rule, in a fixed order.
pub const RULE_METRICS: [Metric; 5] = [
    Metric::CpuPercent,
    Metric::MemoryPercent,
    Metric::Threads,
    Metric::Tasks,
    Metric::HeapPercent,
];

/// Applies `text` to `base`: `off` disables it, anything else sets the keys it names
/// and enables the rule.
pub fn apply(base: &RuleConfig, text: &str) -> Result<RuleConfig, RuleSpecError> {
    let mut rule = base.clone();
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        rule.enabled = false;
        return Ok(rule);
    }
    rule.enabled = true;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| RuleSpecError::NotKeyValue {
                part: part.to_owned(),
            })?;
        let bad = |reason: &str| RuleSpecError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let number = || -> Result<f64, RuleSpecError> {
            if value.eq_ignore_ascii_case("off") && matches!(key, "diff" | "abs") {
                return Ok(f64::INFINITY);
            }
            let n: f64 = value.parse().map_err(|_| bad("expected a number"))?;
            if !n.is_finite() || n < 0.0 {
                return Err(bad("expected a number >= 0"));
            }
            Ok(n)
        };
        match key {
            "min" => rule.min = number()?,
            "diff" => rule.diff = number()?,
            "abs" => rule.abs = number()?,
            "max" => rule.max = number()?,
            "cooldown" => {
                rule.cooldown = humantime::parse_duration(value)
                    .map_err(|e| bad(&format!("{e}; write e.g. 60s, 10m, 1h")))?;
                if rule.cooldown > Duration::from_secs(7 * 24 * 3600) {
                    return Err(bad("at most 7 days"));
                }
            }
            "window" => {
                let w: u32 = value.parse().map_err(|_| bad("expected a whole number"))?;
                if w == 0 || w > MAX_WINDOW {
                    return Err(bad(&format!("between 1 and {MAX_WINDOW}")));
                }
                rule.window = w;
            }
            _ => {
                return Err(RuleSpecError::UnknownKey {
                    key: key.to_owned(),
                })
            }
        }
    }
    Ok(rule)
}

/// A threshold in text: `off` for the infinite "never fires" value.
fn threshold(v: f64) -> String {
    if v.is_infinite() {
        "off".to_owned()
    } else {
        v.to_string()
    }
}

/// The text form of a rule; [`apply`] on any base gives the rule back.
pub fn format(rule: &RuleConfig) -> String {
    if !rule.enabled {
        return "off".to_owned();
    }
    format!(
        "min={},diff={},abs={},max={},cooldown={},window={}",
        rule.min,
        threshold(rule.diff),
        threshold(rule.abs),
        rule.max,
        humantime::format_duration(rule.cooldown),
        rule.window
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RuleConfig {
        RuleConfig {
            metric: Metric::MemoryPercent,
            enabled: true,
            min: 10.0,
            diff: 25.0,
            abs: 80.0,
            max: 0.0,
            cooldown: Duration::from_secs(60),
            window: 10,
        }
    }

    #[test]
    fn sets_only_the_keys_named() {
        let r = apply(&base(), "abs=90, cooldown=2m").unwrap();
        assert_eq!(r.abs, 90.0);
        assert_eq!(r.cooldown, Duration::from_secs(120));
        assert_eq!((r.min, r.diff, r.max, r.window), (10.0, 25.0, 0.0, 10));
        let full = apply(&base(), "min=1,diff=2.5,abs=3,max=4,cooldown=5s,window=6").unwrap();
        assert_eq!(
            (full.min, full.diff, full.abs, full.max, full.window),
            (1.0, 2.5, 3.0, 4.0, 6)
        );
    }

    #[test]
    fn off_disables_and_text_enables() {
        let off = apply(&base(), "OFF").unwrap();
        assert!(!off.enabled);
        assert!(apply(&off, "abs=5").unwrap().enabled);
        assert_eq!(format(&off), "off");
    }

    #[test]
    fn defaults_are_mosn_holmes_values() {
        let cpu = default_rule(Metric::CpuPercent).unwrap();
        assert_eq!(
            (cpu.min, cpu.diff, cpu.abs, cpu.max),
            (10.0, 25.0, 70.0, 0.0)
        );
        let threads = default_rule(Metric::Threads).unwrap();
        assert_eq!(threads.cooldown, Duration::from_secs(3_600));
        let tasks = default_rule(Metric::Tasks).unwrap();
        assert_eq!(
            (tasks.min, tasks.diff, tasks.abs),
            (3_000.0, 20.0, 200_000.0)
        );
        assert_eq!(default_rule(Metric::HeapPercent).unwrap().abs, 40.0);
        assert_eq!(default_rule(Metric::MemoryPercent).unwrap().abs, 80.0);
        assert!(default_rule(Metric::RssBytes).is_none());
        assert!(RULE_METRICS.iter().all(|m| default_rule(*m).is_some()));
    }

    #[test]
    fn format_round_trips() {
        let r = apply(&base(), "min=3,diff=12.5,cooldown=1h30m").unwrap();
        assert_eq!(apply(&base(), &format(&r)).unwrap(), r);
        let no_abs = apply(&base(), "abs=off").unwrap();
        assert_eq!(no_abs.abs, f64::INFINITY);
        assert!(format(&no_abs).contains("abs=off"));
        assert_eq!(apply(&base(), &format(&no_abs)).unwrap(), no_abs);
        assert!(apply(&base(), "min=off").is_err());
    }

    #[test]
    fn errors_name_the_offending_part() {
        let cases = [
            ("abs", "\"abs\" is not key=value"),
            ("speed=3", "unknown key \"speed\""),
            ("abs=lots", "abs=\"lots\": expected a number"),
            ("min=-1", "min=\"-1\": expected a number >= 0"),
            ("cooldown=soon", "cooldown=\"soon\""),
            ("window=0", "window=\"0\": between 1 and 1000"),
        ];
        for (text, expected) in cases {
            let err = apply(&base(), text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
