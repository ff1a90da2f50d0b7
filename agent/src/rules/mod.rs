//! Trigger rules with mosn/holmes semantics.
//!
//! Each metric has a ring window of its recent samples (default 10). A new sample is
//! pushed, then judged in this order:
//! 1. rule disabled → nothing;
//! 2. window not full yet → nothing (warm-up);
//! 3. still cooling down from the last firing → nothing;
//! 4. `current < min` → nothing;
//! 5. `max != 0 && current >= max` → nothing (too far gone to be worth a capture);
//! 6. `current > abs` → fire, reason `abs`;
//! 7. `current >= avg * (100 + diff) / 100`, the average taken over the window
//!    *including* the current sample → fire, reason `diff`;
//! 8. otherwise nothing.
//!
//! After firing, the rule sleeps for its cooldown. Unlike the Go library the arithmetic
//! is in `f64`, not truncated integers, so a threshold of 41.25 means 41.25.
//!
//! [`book`] holds the rules in force, which the host and the collector change at run
//! time; `holmes_proto::rule_floors` bounds what the collector may push.

mod book;

pub use book::RuleError;
pub(crate) use book::{Applied, RuleBook};

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use holmes_proto::rule_spec::{self, DEFAULT_WINDOW, MAX_WINDOW};
use holmes_proto::{Metric, RuleConfig, Sample, TriggerReason};

/// A trigger rule, built by value: `Rule::new().min(10).diff(25).abs(80)`.
///
/// A fresh `Rule::new()` is enabled and fires on nothing: `diff` and `abs` start off
/// (infinite), `min` and `max` at 0, cooldown 0, window 10. Set what you want.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub(crate) enabled: bool,
    pub(crate) min: f64,
    pub(crate) diff: f64,
    pub(crate) abs: f64,
    pub(crate) max: f64,
    pub(crate) cooldown: Duration,
    pub(crate) window: u32,
}

impl Default for Rule {
    fn default() -> Self {
        Rule::new()
    }
}

impl Rule {
    /// An enabled rule with no thresholds set.
    pub fn new() -> Self {
        Rule {
            enabled: true,
            min: 0.0,
            diff: f64::INFINITY,
            abs: f64::INFINITY,
            max: 0.0,
            cooldown: Duration::ZERO,
            window: DEFAULT_WINDOW,
        }
    }

    /// The metric's default rule (mosn/holmes values); `None` for metrics without rules.
    pub fn default_for(metric: Metric) -> Option<Rule> {
        rule_spec::default_rule(metric).map(|c| Rule::from_config(&c))
    }

    /// Below this value nothing fires.
    pub fn min(mut self, min: f64) -> Self {
        self.min = min;
        self
    }

    /// Fires when the current value is this many percent above the window's average.
    pub fn diff(mut self, percent: f64) -> Self {
        self.diff = percent;
        self
    }

    /// Fires when the current value is above this.
    pub fn abs(mut self, abs: f64) -> Self {
        self.abs = abs;
        self
    }

    /// At or above this value nothing fires (0: no ceiling).
    pub fn max(mut self, max: f64) -> Self {
        self.max = max;
        self
    }

    /// How long the rule sleeps after firing.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Samples in the ring window, 1 to 1000 (default 10); nothing fires until it is full.
    pub fn window(mut self, samples: u32) -> Self {
        self.window = samples.clamp(1, MAX_WINDOW);
        self
    }

    /// Turns the rule on or off.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Whether it is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn from_config(c: &RuleConfig) -> Rule {
        Rule {
            enabled: c.enabled,
            min: c.min,
            diff: c.diff,
            abs: c.abs,
            max: c.max,
            cooldown: c.cooldown,
            window: c.window.clamp(1, MAX_WINDOW),
        }
    }

    pub(crate) fn to_config(self, metric: Metric) -> RuleConfig {
        RuleConfig {
            metric,
            enabled: self.enabled,
            min: self.min,
            diff: self.diff,
            abs: self.abs,
            max: self.max,
            cooldown: self.cooldown,
            window: self.window,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&rule_spec::format(&self.to_config(Metric::CpuPercent)))
    }
}

/// What a rule made of one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The rule is disabled.
    Disabled,
    /// The window is not full yet.
    WarmingUp {
        /// Samples in the window.
        have: usize,
        /// Samples needed.
        need: usize,
    },
    /// Still sleeping after the last firing.
    CoolingDown {
        /// Time left.
        left: Duration,
    },
    /// Below `min`.
    BelowMin,
    /// At or above `max`.
    AboveMax,
    /// Neither threshold reached.
    Quiet {
        /// The `diff` threshold it had to reach.
        threshold: f64,
    },
    /// Fire a trigger.
    Fire {
        /// Why.
        reason: TriggerReason,
        /// The threshold that was crossed.
        threshold: f64,
    },
}

impl Decision {
    /// Whether this decision fires.
    pub fn fires(&self) -> bool {
        matches!(self, Decision::Fire { .. })
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Disabled => f.write_str("skip (disabled)"),
            Decision::WarmingUp { have, need } => write!(f, "skip (warming up, {have}/{need})"),
            Decision::CoolingDown { left } => {
                write!(f, "skip (cooling down, {:.1}s left)", left.as_secs_f64())
            }
            Decision::BelowMin => f.write_str("skip (below min)"),
            Decision::AboveMax => f.write_str("skip (at or above max)"),
            Decision::Quiet { threshold } => write!(f, "quiet (diff threshold {threshold:.2})"),
            Decision::Fire {
                reason: TriggerReason::Abs,
                threshold,
            } => write!(f, "FIRE (abs: above {threshold})"),
            Decision::Fire { threshold, .. } => {
                write!(f, "FIRE (diff: at or above {threshold:.2})")
            }
        }
    }
}

/// One metric's rule, its ring window and its cooldown.
#[derive(Debug, Clone)]
pub(crate) struct RuleState {
    pub(crate) metric: Metric,
    pub(crate) rule: Rule,
    ring: VecDeque<Sample>,
    cooling_until: Option<Instant>,
}

impl RuleState {
    pub(crate) fn new(metric: Metric, rule: Rule) -> Self {
        RuleState {
            metric,
            rule,
            ring: VecDeque::with_capacity(rule.window as usize),
            cooling_until: None,
        }
    }

    /// Replaces the rule, keeping the window (no second warm-up) and the cooldown.
    pub(crate) fn set_rule(&mut self, rule: Rule) {
        self.rule = rule;
        while self.ring.len() > rule.window as usize {
            self.ring.pop_front();
        }
    }

    /// The window, oldest first.
    pub(crate) fn window(&self) -> Vec<Sample> {
        self.ring.iter().copied().collect()
    }

    /// Pushes a sample and judges it.
    pub(crate) fn observe(&mut self, sample: Sample, now: Instant) -> Decision {
        if self.ring.len() >= self.rule.window as usize {
            self.ring.pop_front();
        }
        self.ring.push_back(sample);
        let sum: f64 = self.ring.iter().map(|s| s.value).sum();
        self.judge(sample.value, sum, self.ring.len(), now)
    }

    /// Judges a value as if it were pushed, without keeping it: the fast memory path
    /// checks between two regular samples. A firing still starts the cooldown.
    pub(crate) fn peek(&mut self, value: f64, now: Instant) -> Decision {
        let full = self.ring.len() >= self.rule.window as usize;
        let mut sum: f64 = self.ring.iter().map(|s| s.value).sum();
        let mut len = self.ring.len();
        if full {
            if let Some(oldest) = self.ring.front() {
                sum -= oldest.value;
                len -= 1;
            }
        }
        self.judge(value, sum + value, len + 1, now)
    }

    fn judge(&mut self, current: f64, sum: f64, len: usize, now: Instant) -> Decision {
        let rule = self.rule;
        let need = rule.window as usize;
        if !rule.enabled {
            return Decision::Disabled;
        }
        if len < need {
            return Decision::WarmingUp { have: len, need };
        }
        if let Some(until) = self.cooling_until {
            if now < until {
                return Decision::CoolingDown { left: until - now };
            }
        }
        if current < rule.min {
            return Decision::BelowMin;
        }
        if rule.max != 0.0 && current >= rule.max {
            return Decision::AboveMax;
        }
        let decision = if current > rule.abs {
            Decision::Fire {
                reason: TriggerReason::Abs,
                threshold: rule.abs,
            }
        } else {
            let avg = sum / len as f64;
            let threshold = avg * (100.0 + rule.diff) / 100.0;
            if current >= threshold {
                Decision::Fire {
                    reason: TriggerReason::Diff,
                    threshold,
                }
            } else {
                Decision::Quiet { threshold }
            }
        };
        if decision.fires() {
            self.cooling_until = now.checked_add(rule.cooldown);
        }
        decision
    }
}

#[cfg(test)]
mod tests;
