//! Per-service trigger rules from the configuration file, pushed to agents.
//!
//! ```toml
//! [rules.checkout]
//! cpu = "abs=90,cooldown=2m"
//! threads = "off"
//! ```
//!
//! Each text is in the agent's rule form ([`holmes_proto::rule_spec`]) and applies to
//! the rule the agent reported in its `Hello` for that metric (or the metric's default
//! rule), so keys left out keep the agent's values. An agent of a service with rules
//! gets one `ConfigUpdate` right after it connects.

use std::collections::BTreeMap;

use holmes_proto::names::{validate_name, NameError};
use holmes_proto::rule_spec::{apply, default_rule};
use holmes_proto::{ConfigUpdate, Hello, Metric, RuleConfig};

/// Rule texts by service, then by metric name (`cpu`, `memory`, `threads`, `tasks`, `heap`).
pub type ServiceRules = BTreeMap<String, BTreeMap<String, String>>;

/// Version of the `ConfigUpdate` an agent gets when it connects.
pub const CONFIG_VERSION: u64 = 1;

/// A configured rule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The service name breaks the naming rules.
    #[error("rules: {0}")]
    Service(NameError),
    /// A metric without a rule, or a text that does not parse.
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

/// The metric a configured name stands for, with the default rule to build on.
fn rule_metric(service: &str, name: &str, text: &str) -> Result<(Metric, RuleConfig), RulesError> {
    let err = |reason: String| RulesError::Rule {
        service: service.to_owned(),
        metric: name.to_owned(),
        text: text.to_owned(),
        reason,
    };
    let metric: Metric = name.parse().map_err(|e| err(format!("{e}")))?;
    let default = default_rule(metric).ok_or_else(|| {
        err(format!(
            "metric {name:?} has no trigger rule; rules exist for cpu, memory, threads, tasks and heap"
        ))
    })?;
    Ok((metric, default))
}

fn apply_text(
    service: &str,
    name: &str,
    base: &RuleConfig,
    text: &str,
) -> Result<RuleConfig, RulesError> {
    apply(base, text).map_err(|e| RulesError::Rule {
        service: service.to_owned(),
        metric: name.to_owned(),
        text: text.to_owned(),
        reason: e.to_string(),
    })
}

/// Checks every service name, metric name and rule text.
pub fn check(rules: &ServiceRules) -> Result<(), RulesError> {
    for (service, metrics) in rules {
        validate_name("service", service).map_err(RulesError::Service)?;
        for (name, text) in metrics {
            let (_, default) = rule_metric(service, name, text)?;
            apply_text(service, name, &default, text)?;
        }
    }
    Ok(())
}

/// The update for an agent that said `hello`: every configured rule of its service
/// applied to the agent's own rule for that metric, or to the default rule when the
/// agent reported none. `None` when the service has no rules configured.
pub fn update_for(rules: &ServiceRules, hello: &Hello) -> Result<Option<ConfigUpdate>, RulesError> {
    let Some(texts) = rules.get(&hello.service).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(texts.len());
    for (name, text) in texts {
        let (metric, default) = rule_metric(&hello.service, name, text)?;
        let base = hello
            .rules
            .iter()
            .find(|r| r.metric == metric)
            .unwrap_or(&default);
        out.push(apply_text(&hello.service, name, base, text)?);
    }
    Ok(Some(ConfigUpdate {
        version: CONFIG_VERSION,
        rules: out,
        replace: false,
        pause: None,
    }))
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

    fn hello(service: &str, rules: Vec<RuleConfig>) -> Hello {
        Hello {
            protocol_version: holmes_proto::PROTOCOL_VERSION,
            service: service.to_owned(),
            instance_id: "i-0".to_owned(),
            host: "h".to_owned(),
            pid: 1,
            labels: BTreeMap::new(),
            agent_version: "0.1.0".to_owned(),
            rules,
            started_at_unix_nanos: 0,
            collect_interval: Duration::from_secs(1),
            rules_version: 0,
            executable: None,
            debuginfo_upload: false,
        }
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
    fn errors_name_the_service_metric_and_text() {
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
        ];
        for (bad, expected) in cases {
            let err = check(&bad).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
    }

    #[test]
    fn updates_build_on_the_agents_rule_or_the_default() {
        let mut agent_cpu = default_rule(Metric::CpuPercent).unwrap();
        agent_cpu.min = 33.0;
        let configured = rules("checkout", &[("cpu", "abs=90"), ("memory", "off")]);
        let update = update_for(&configured, &hello("checkout", vec![agent_cpu.clone()]))
            .unwrap()
            .unwrap();
        assert_eq!(update.version, CONFIG_VERSION);
        let mut want_cpu = agent_cpu;
        want_cpu.abs = 90.0;
        let mut want_memory = default_rule(Metric::MemoryPercent).unwrap();
        want_memory.enabled = false;
        assert_eq!(update.rules, vec![want_cpu, want_memory]);
        assert_eq!(
            update_for(&configured, &hello("cart", vec![])).unwrap(),
            None
        );
        assert_eq!(
            update_for(&rules("checkout", &[]), &hello("checkout", vec![])).unwrap(),
            None
        );
    }
}
