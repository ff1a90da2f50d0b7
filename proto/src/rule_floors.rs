//! What a collector may not push: rules that would make the host capture too often, or
//! that are not rules at all. The agent's host sets the floors (the agent's
//! `.min_pushed_cooldown()`, `.min_pushed_window()` or their `HOLMES_*` variables);
//! nothing the collector sends can lower them. A pushed rule below a floor is refused,
//! not clamped: the agent keeps its previous rule for that metric and says why in
//! `ConfigApplied.refused`, so the operator sees the rule did not take instead of
//! running a different one unknowingly. The collector holds the rules an operator sets
//! to the default floors with the same check, so that what every agent would refuse is
//! refused at once, with the same words.

use std::time::Duration;

use crate::rule_spec::MAX_WINDOW;
use crate::RuleConfig;

/// The host's bounds on rules pushed by the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floors {
    /// Shortest cooldown of an enabled pushed rule.
    pub min_cooldown: Duration,
    /// Smallest window of an enabled pushed rule.
    pub min_window: u32,
}

/// The floors of an agent whose host set none: a cooldown of 10 s, a window of 2.
pub const DEFAULT_FLOORS: Floors = Floors {
    min_cooldown: Duration::from_secs(10),
    min_window: 2,
};

impl Floors {
    /// Why `rule` may not be applied, naming the field; `Ok` when it may.
    pub fn check(&self, rule: &RuleConfig) -> Result<(), String> {
        for (field, value) in [
            ("min", rule.min),
            ("diff", rule.diff),
            ("abs", rule.abs),
            ("max", rule.max),
        ] {
            if value.is_nan() {
                return Err(format!("{field} is not a number"));
            }
        }
        if rule.window > MAX_WINDOW {
            return Err(format!(
                "window {} is above the largest window, {MAX_WINDOW}",
                rule.window
            ));
        }
        if !rule.enabled {
            // A rule that is off captures nothing, whatever its other fields.
            return Ok(());
        }
        if rule.diff < 0.0 {
            return Err(format!(
                "diff {} is negative: every sample at or above min would fire",
                rule.diff
            ));
        }
        if rule.cooldown < self.min_cooldown {
            return Err(format!(
                "cooldown {} is below the agent's floor of {} (HOLMES_MIN_PUSHED_COOLDOWN)",
                humantime::format_duration(rule.cooldown),
                humantime::format_duration(self.min_cooldown)
            ));
        }
        if rule.window < self.min_window {
            return Err(format!(
                "window {} is below the agent's floor of {} (HOLMES_MIN_PUSHED_WINDOW)",
                rule.window, self.min_window
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule_spec;
    use crate::Metric;

    fn floors() -> Floors {
        DEFAULT_FLOORS
    }

    fn cpu(text: &str) -> RuleConfig {
        let base = rule_spec::default_rule(Metric::CpuPercent).unwrap();
        rule_spec::apply(&base, text).unwrap()
    }

    #[test]
    fn refuses_what_is_below_a_floor_naming_the_field() {
        assert_eq!(floors().check(&cpu("cooldown=10s,window=2")), Ok(()));
        assert_eq!(
            floors().check(&cpu("cooldown=0s")),
            Err(
                "cooldown 0s is below the agent's floor of 10s (HOLMES_MIN_PUSHED_COOLDOWN)"
                    .to_owned()
            )
        );
        assert_eq!(
            floors().check(&cpu("window=1")),
            Err("window 1 is below the agent's floor of 2 (HOLMES_MIN_PUSHED_WINDOW)".to_owned())
        );
        let mut negative = cpu("");
        negative.diff = -5.0;
        assert!(floors()
            .check(&negative)
            .unwrap_err()
            .starts_with("diff -5"));
        let mut nan = cpu("");
        nan.abs = f64::NAN;
        assert_eq!(floors().check(&nan), Err("abs is not a number".to_owned()));
        let mut huge = cpu("");
        huge.window = MAX_WINDOW + 1;
        assert!(floors()
            .check(&huge)
            .unwrap_err()
            .starts_with("window 1001"));
    }

    #[test]
    fn a_rule_that_is_off_is_not_held_to_the_floors() {
        let mut off = cpu("cooldown=0s,window=1");
        off.enabled = false;
        assert_eq!(floors().check(&off), Ok(()));
        // Off switches nothing on: a number is still a number.
        off.min = f64::NAN;
        assert!(floors().check(&off).is_err());
    }
}
