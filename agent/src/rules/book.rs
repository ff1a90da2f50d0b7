//! The rules in force, shared by the handle (run-time edits), the sender (updates pushed
//! by the collector, the version announced in each hello and heartbeat) and the monitor,
//! which picks up a new generation on its next wake-up.
//!
//! Two layers: the agent's own rules (the host's code, its `HOLMES_RULE_*` variables,
//! the defaults, and run-time edits through the handle) and the collector's rules over
//! them. A `ConfigUpdate` with `replace` is the collector's whole set: a metric it does
//! not list falls back to the agent's own rule, so deleting a central rule gives the
//! agent its own back. The book also holds the collector's pause of captures, which
//! comes with the same versioned update.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use holmes_proto::rule_floors::Floors;
use holmes_proto::{CapturePause, ConfigApplied, ConfigUpdate, Metric, RuleConfig, RuleRefusal};

use super::Rule;

/// A rule change that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The metric has no rule (only cpu, memory, threads, tasks and heap do).
    #[error("metric {0} has no rule; rules exist for cpu, memory, threads, tasks and heap")]
    NoRule(Metric),
}

/// The rules by metric, with a generation bumped on every change.
#[derive(Debug)]
pub(crate) struct RuleBook {
    book: Mutex<Book>,
    generation: AtomicU64,
    /// Mirrors `Book::version` for lock-free reads (heartbeats, stats).
    version: AtomicU64,
    floors: Floors,
}

#[derive(Debug)]
struct Book {
    /// The agent's own rules.
    own: BTreeMap<Metric, Rule>,
    /// The collector's rules, by metric, over the agent's own.
    central: BTreeMap<Metric, Rule>,
    /// Version of the collector's last update applied (0: none yet).
    version: u64,
    /// Captures paused by the collector, until when and why.
    pause: Option<CapturePause>,
}

impl Book {
    fn in_force(&self, metric: Metric) -> Option<Rule> {
        self.central
            .get(&metric)
            .or_else(|| self.own.get(&metric))
            .copied()
    }

    fn all_in_force(&self) -> BTreeMap<Metric, Rule> {
        let mut rules = self.own.clone();
        rules.extend(self.central.iter().map(|(m, r)| (*m, *r)));
        rules
    }
}

/// What the book did with a collector's update.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Applied {
    /// Older than the version in force: nothing changed.
    Stale {
        /// The version in force.
        in_force: u64,
    },
    /// Applied (all of it but what `answer.refused` lists).
    Applied {
        /// What to tell the collector.
        answer: ConfigApplied,
        /// Rules that changed, by metric: the one in force before and the one after.
        changed: Vec<(Metric, Rule, Rule)>,
    },
}

impl RuleBook {
    /// The agent's own rules, and the floors pushed rules are held to.
    pub(crate) fn new(rules: BTreeMap<Metric, Rule>, floors: Floors) -> Self {
        RuleBook {
            book: Mutex::new(Book {
                own: rules,
                central: BTreeMap::new(),
                version: 0,
                pause: None,
            }),
            generation: AtomicU64::new(0),
            version: AtomicU64::new(0),
            floors,
        }
    }

    /// Changes with every edit and every update applied.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Version of the collector's rules in force (0: the agent's own rules only).
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The generation and the rules in force.
    pub(crate) fn snapshot(&self) -> (u64, BTreeMap<Metric, Rule>) {
        let book = self.lock();
        (self.generation(), book.all_in_force())
    }

    /// The rules in force as the protocol carries them (a hello announces them).
    pub(crate) fn configs(&self) -> Vec<RuleConfig> {
        self.lock()
            .all_in_force()
            .iter()
            .map(|(metric, rule)| rule.to_config(*metric))
            .collect()
    }

    /// The collector's pause of captures, if one lasts beyond `now_unix_nanos`.
    pub(crate) fn paused(&self, now_unix_nanos: u64) -> Option<CapturePause> {
        self.lock()
            .pause
            .clone()
            .filter(|p| p.until_unix_nanos > now_unix_nanos)
    }

    /// Edits the metric's rule in force on the host's behalf; it becomes the agent's own
    /// rule and wins over the collector's until the collector's next update sets this
    /// metric. Fails for metrics without rules.
    pub(crate) fn update(
        &self,
        metric: Metric,
        edit: impl FnOnce(Rule) -> Rule,
    ) -> Result<(), RuleError> {
        let mut book = self.lock();
        let current = book.in_force(metric).ok_or(RuleError::NoRule(metric))?;
        book.own.insert(metric, edit(current));
        book.central.remove(&metric);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Applies a collector's update, unless a newer version is in force: its rules that
    /// pass the floors (the others are refused, keeping the rule in force), its pause,
    /// and with `replace` the agent's own rule for every metric it does not list.
    pub(crate) fn apply(&self, update: &ConfigUpdate) -> Applied {
        let mut book = self.lock();
        if update.version < book.version {
            return Applied::Stale {
                in_force: book.version,
            };
        }
        let mut accepted: BTreeMap<Metric, Rule> = BTreeMap::new();
        let mut refused: Vec<RuleRefusal> = Vec::new();
        for config in &update.rules {
            let verdict = if !book.own.contains_key(&config.metric) {
                Err(format!(
                    "metric {} has no rule; rules exist for cpu, memory, threads, tasks and heap",
                    config.metric
                ))
            } else {
                self.floors.check(config)
            };
            match verdict {
                Ok(()) => {
                    accepted.insert(config.metric, Rule::from_config(config));
                }
                Err(reason) => {
                    // A metric listed twice is refused once, by its last word.
                    accepted.remove(&config.metric);
                    refused.retain(|r| r.metric != config.metric);
                    refused.push(RuleRefusal {
                        metric: config.metric,
                        reason,
                    });
                }
            }
        }
        let before = book.all_in_force();
        let mut central = if update.replace {
            // A refused metric keeps what was in force for it, the collector's or not.
            refused
                .iter()
                .filter_map(|r| book.central.get(&r.metric).map(|rule| (r.metric, *rule)))
                .collect()
        } else {
            book.central.clone()
        };
        central.extend(accepted);
        book.central = central;
        book.version = update.version;
        book.pause = update.pause.clone();
        let after = book.all_in_force();
        drop(book);
        self.version.store(update.version, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        let changed = after
            .iter()
            .filter_map(|(metric, rule)| {
                let old = before.get(metric).copied()?;
                (old != *rule).then_some((*metric, old, *rule))
            })
            .collect();
        Applied::Applied {
            answer: ConfigApplied {
                version: update.version,
                refused,
            },
            changed,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // Nothing panics while it is held; a poisoned lock is taken over.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
