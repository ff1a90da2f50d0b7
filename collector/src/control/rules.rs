//! Central trigger rules: layers of rule texts per service, checked as agents would
//! check them, and resolved into the rules one agent gets.
//!
//! A service has a **layer** of rules for all its agents (selector `""`) and may have
//! more for agents whose labels match a selector (`zone=a`, `version=1.4.2,zone=a`).
//! Each layer maps metrics to a text in the agent's rule form (`HOLMES_RULE_*`,
//! [`holmes_proto::rule_spec`]). An agent's rule for a metric starts from the metric's
//! default rule; the service-wide text is applied to it, then the text of every layer
//! whose selector matches the agent, least specific first (fewer labels, then by
//! selector text), so keys a layer leaves out keep the value of the layer below. Metrics
//! no layer names are not sent: with `ConfigUpdate.replace` the agent keeps, or gets
//! back, its own rule for them.
//!
//! The config file's `[rules.<service>]` tables seed the service-wide layer
//! ([`super::seed`]).

use std::collections::BTreeMap;

use holmes_proto::names::{validate_name, NameError};
use holmes_proto::rule_floors::DEFAULT_FLOORS;
use holmes_proto::rule_spec::{apply, default_rule, RULE_METRICS};
use holmes_proto::{Metric, RuleConfig};
use holmes_storage::selector_pairs;

/// Rule texts by service, then by metric name (`cpu`, `memory`, `threads`, `tasks`,
/// `heap`): the config file's `[rules]` section.
pub type ServiceRules = BTreeMap<String, BTreeMap<String, String>>;

/// A configured rule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The service name breaks the naming rules.
    #[error("rules: {0}")]
    Service(NameError),
    /// A metric without a rule, a text that does not parse, or a rule below the floors.
    #[error("rules.{service}.{metric} = {text:?}: {reason}")]
    Rule {
        /// The service.
        service: String,
        /// The metric name as written.
        metric: String,
        /// The rule text.
        text: String,
        /// Why it cannot be used.
        reason: String,
    },
}

/// The metric a name stands for, if it has a rule; the error says why not.
pub fn rule_metric(name: &str) -> Result<Metric, String> {
    let metric: Metric = name.parse().map_err(|e| format!("{e}"))?;
    if default_rule(metric).is_none() {
        return Err(format!(
            "metric {name:?} has no trigger rule; rules exist for cpu, memory, threads, tasks and heap"
        ));
    }
    Ok(metric)
}

/// `text` applied to `base`, held to the floors every agent holds pushed rules to by
/// default (so what they would refuse is refused here, in their words).
pub fn apply_checked(base: &RuleConfig, text: &str) -> Result<RuleConfig, String> {
    let rule = apply(base, text).map_err(|e| e.to_string())?;
    DEFAULT_FLOORS.check(&rule)?;
    Ok(rule)
}

/// Checks a text for `metric` as the layer of `selector` would use it: over the
/// metric's default rule, and over the service-wide layer's rule (`below`) when the
/// layer is a selector's. The error names the field.
pub fn check_text(metric: Metric, text: &str, below: Option<&str>) -> Result<(), String> {
    let default = default_rule(metric).ok_or_else(|| format!("metric {metric} has no rule"))?;
    apply_checked(&default, text)?;
    if let Some(below) = below {
        let base = apply(&default, below).unwrap_or(default);
        apply_checked(&base, text)?;
    }
    Ok(())
}

/// Checks every service name, metric name and rule text of the config file.
pub fn check(rules: &ServiceRules) -> Result<(), RulesError> {
    for (service, metrics) in rules {
        validate_name("service", service).map_err(RulesError::Service)?;
        for (name, text) in metrics {
            rule_metric(name)
                .and_then(|metric| check_text(metric, text, None))
                .map_err(|reason| RulesError::Rule {
                    service: service.clone(),
                    metric: name.clone(),
                    text: text.clone(),
                    reason,
                })?;
        }
    }
    Ok(())
}

/// The central rules of one service: rule texts by selector, then by metric.
pub type Layers = BTreeMap<String, BTreeMap<Metric, String>>;

/// Whether an agent with `labels` matches `selector` (every pair present and equal).
pub fn matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    selector_pairs(selector)
        .into_iter()
        .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
}

/// The rules an agent with `labels` gets from `layers`, in [`RULE_METRICS`] order;
/// metrics no matching layer names are left out.
pub fn resolve(layers: &Layers, labels: &BTreeMap<String, String>) -> Vec<RuleConfig> {
    let mut matching: Vec<(&String, &BTreeMap<Metric, String>)> = layers
        .iter()
        .filter(|(selector, _)| matches(selector, labels))
        .collect();
    matching.sort_by_key(|(selector, _)| (selector_pairs(selector).len(), *selector));
    let mut out = Vec::new();
    for metric in RULE_METRICS {
        let Some(mut rule) = default_rule(metric) else {
            continue;
        };
        let mut named = false;
        for (_, texts) in &matching {
            if let Some(text) = texts.get(&metric) {
                // Texts were checked when they were set; one that no longer parses (a
                // store edited by hand) is skipped rather than sent.
                match apply(&rule, text) {
                    Ok(next) => {
                        rule = next;
                        named = true;
                    }
                    Err(err) => {
                        tracing::warn!(%metric, text, error = %err, "stored rule text skipped")
                    }
                }
            }
        }
        if named {
            out.push(rule);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rules(service: &str, pairs: &[(&str, &str)]) -> ServiceRules {
        let metrics = pairs
            .iter()
            .map(|(m, t)| ((*m).to_owned(), (*t).to_owned()))
            .collect();
        [(service.to_owned(), metrics)].into()
    }

    #[test]
    fn accepts_good_rules() {
        check(&rules(
            "checkout",
            &[("cpu", "abs=90,cooldown=2m"), ("threads", "off")],
        ))
        .unwrap();
        check(&ServiceRules::new()).unwrap();
    }

    #[test]
    fn errors_name_the_service_metric_text_and_field() {
        let cases = [
            (
                rules("check out", &[]),
                "rules: service \"check out\" has the character ' '",
            ),
            (
                rules("checkout", &[("cpux", "abs=1")]),
                "rules.checkout.cpux = \"abs=1\": unknown metric \"cpux\"",
            ),
            (
                rules("checkout", &[("rss", "abs=1")]),
                "rules.checkout.rss = \"abs=1\": metric \"rss\" has no trigger rule",
            ),
            (
                rules("checkout", &[("cpu", "abs=lots")]),
                "rules.checkout.cpu = \"abs=lots\": abs=\"lots\": expected a number",
            ),
            (
                rules("checkout", &[("cpu", "cooldown=1s")]),
                "rules.checkout.cpu = \"cooldown=1s\": cooldown 1s is below the agent's floor of 10s (HOLMES_MIN_PUSHED_COOLDOWN)",
            ),
            (
                rules("checkout", &[("threads", "window=1")]),
                "rules.checkout.threads = \"window=1\": window 1 is below the agent's floor of 2 (HOLMES_MIN_PUSHED_WINDOW)",
            ),
        ];
        for (bad, expected) in cases {
            let err = check(&bad).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        // A rule that is off is not held to the floors, as agents do not hold it.
        check(&rules("checkout", &[("cpu", "off")])).unwrap();
    }

    #[test]
    fn a_selector_layer_is_checked_over_the_service_wide_one() {
        assert_eq!(
            check_text(Metric::CpuPercent, "abs=95", Some("cooldown=2m")),
            Ok(())
        );
        assert_eq!(
            check_text(Metric::CpuPercent, "abs=95", Some("cooldown=20s,window=1")),
            Err("window 1 is below the agent's floor of 2 (HOLMES_MIN_PUSHED_WINDOW)".to_owned())
        );
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn layers_resolve_least_specific_first_over_the_default() {
        let layers: Layers = [
            (
                String::new(),
                [
                    (Metric::CpuPercent, "abs=90,cooldown=2m".to_owned()),
                    (Metric::Threads, "off".to_owned()),
                ]
                .into(),
            ),
            (
                "zone=a".to_owned(),
                [(Metric::CpuPercent, "abs=95".to_owned())].into(),
            ),
            (
                "version=1.4.2,zone=a".to_owned(),
                [(Metric::CpuPercent, "min=20".to_owned())].into(),
            ),
            (
                "zone=b".to_owned(),
                [(Metric::MemoryPercent, "abs=50".to_owned())].into(),
            ),
        ]
        .into();
        let mut cpu = default_rule(Metric::CpuPercent).unwrap();
        cpu.abs = 90.0;
        cpu.cooldown = Duration::from_secs(120);
        let mut threads = default_rule(Metric::Threads).unwrap();
        threads.enabled = false;
        assert_eq!(
            resolve(&layers, &labels(&[("zone", "c")])),
            vec![cpu.clone(), threads.clone()]
        );
        let mut zone_a = cpu.clone();
        zone_a.abs = 95.0;
        assert_eq!(
            resolve(&layers, &labels(&[("zone", "a"), ("version", "1.4.1")])),
            vec![zone_a.clone(), threads.clone()]
        );
        let mut both = zone_a;
        both.min = 20.0;
        assert_eq!(
            resolve(&layers, &labels(&[("zone", "a"), ("version", "1.4.2")])),
            vec![both, threads.clone()]
        );
        let mut memory = default_rule(Metric::MemoryPercent).unwrap();
        memory.abs = 50.0;
        assert_eq!(
            resolve(&layers, &labels(&[("zone", "b")])),
            vec![cpu, memory, threads]
        );
        assert!(resolve(&Layers::new(), &labels(&[])).is_empty());
    }
}
