//! The rules in force, shared by the handle (run-time edits), the sender (rules pushed by
//! the collector, rules announced in each hello) and the monitor, which picks up a new
//! version on its next wake-up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use holmes_proto::{ConfigUpdate, Metric, RuleConfig};

use super::Rule;

/// A rule change that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The metric has no rule (only cpu, memory, threads, tasks and heap do).
    #[error("metric {0} has no rule; rules exist for cpu, memory, threads, tasks and heap")]
    NoRule(Metric),
}

/// The rules by metric, with a version bumped on every edit.
#[derive(Debug)]
pub(crate) struct RuleBook {
    book: Mutex<Book>,
    version: AtomicU64,
}

#[derive(Debug)]
struct Book {
    rules: BTreeMap<Metric, Rule>,
    /// The version of the last update the collector pushed.
    collector_version: u64,
}

impl RuleBook {
    /// The rules the agent starts with.
    pub(crate) fn new(rules: BTreeMap<Metric, Rule>) -> Self {
        RuleBook {
            book: Mutex::new(Book {
                rules,
                collector_version: 0,
            }),
            version: AtomicU64::new(0),
        }
    }

    /// The current version; it changes with every edit.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The version and the rules.
    pub(crate) fn snapshot(&self) -> (u64, BTreeMap<Metric, Rule>) {
        let book = self.lock();
        (self.version(), book.rules.clone())
    }

    /// The rules as the protocol carries them (a hello announces them).
    pub(crate) fn configs(&self) -> Vec<RuleConfig> {
        self.lock()
            .rules
            .iter()
            .map(|(metric, rule)| rule.to_config(*metric))
            .collect()
    }

    /// Edits a metric's rule; fails for metrics without rules.
    pub(crate) fn update(
        &self,
        metric: Metric,
        edit: impl FnOnce(Rule) -> Rule,
    ) -> Result<(), RuleError> {
        let mut book = self.lock();
        let rule = book
            .rules
            .get_mut(&metric)
            .ok_or(RuleError::NoRule(metric))?;
        *rule = edit(*rule);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Applies rules pushed by the collector, unless a newer version is in force.
    pub(crate) fn apply(&self, update: &ConfigUpdate) {
        let mut book = self.lock();
        if update.version < book.collector_version {
            tracing::debug!(target: "holmes", version = update.version, "ignoring an older rule update");
            return;
        }
        book.collector_version = update.version;
        for config in &update.rules {
            if let Some(rule) = book.rules.get_mut(&config.metric) {
                *rule = Rule::from_config(config);
            } else {
                tracing::warn!(target: "holmes", metric = %config.metric, "ignoring a pushed rule for a metric that has none");
            }
        }
        self.version.fetch_add(1, Ordering::AcqRel);
        tracing::info!(target: "holmes", version = update.version, rules = update.rules.len(), "rules updated by the collector");
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // Nothing panics while it is held; a poisoned lock is taken over.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_and_pushed_updates_bump_the_version() {
        let book = RuleBook::new(BTreeMap::from([(Metric::CpuPercent, Rule::new())]));
        assert_eq!(book.version(), 0);
        book.update(Metric::CpuPercent, |r| r.abs(50.0)).unwrap();
        assert_eq!(book.version(), 1);
        assert_eq!(
            book.snapshot().1[&Metric::CpuPercent],
            Rule::new().abs(50.0)
        );
        assert_eq!(
            book.update(Metric::RssBytes, |r| r),
            Err(RuleError::NoRule(Metric::RssBytes))
        );
        assert_eq!(book.version(), 1);

        let pushed = |version, abs: f64| ConfigUpdate {
            version,
            rules: vec![Rule::new().abs(abs).to_config(Metric::CpuPercent)],
            replace: false,
            pause: None,
        };
        book.apply(&pushed(5, 70.0));
        assert_eq!(book.configs()[0].abs, 70.0);
        assert_eq!(book.version(), 2);
        // An older push changes nothing.
        book.apply(&pushed(4, 10.0));
        assert_eq!(book.configs()[0].abs, 70.0);
        assert_eq!(book.version(), 2);
    }
}
