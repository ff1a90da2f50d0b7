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
mod tests {
    use super::*;
    use std::time::Duration;

    const CPU: Metric = Metric::CpuPercent;
    const THREADS: Metric = Metric::Threads;

    fn book() -> RuleBook {
        RuleBook::new(
            BTreeMap::from([
                (CPU, Rule::new().abs(70.0).cooldown(Duration::from_secs(60))),
                (THREADS, Rule::new().abs(500.0)),
            ]),
            Floors {
                min_cooldown: Duration::from_secs(10),
                min_window: 2,
            },
        )
    }

    fn rule(abs: f64) -> Rule {
        Rule::new().abs(abs).cooldown(Duration::from_secs(30))
    }

    fn update(version: u64, replace: bool, rules: &[(Metric, Rule)]) -> ConfigUpdate {
        ConfigUpdate {
            version,
            rules: rules.iter().map(|(m, r)| r.to_config(*m)).collect(),
            replace,
            pause: None,
        }
    }

    fn in_force(book: &RuleBook, metric: Metric) -> Rule {
        book.snapshot().1[&metric]
    }

    #[test]
    fn host_edits_and_pushed_updates_bump_the_generation() {
        let book = book();
        assert_eq!(book.generation(), 0);
        book.update(CPU, |r| r.abs(50.0)).unwrap();
        assert_eq!(book.generation(), 1);
        assert_eq!(in_force(&book, CPU).abs, 50.0);
        assert_eq!(
            book.update(Metric::RssBytes, |r| r),
            Err(RuleError::NoRule(Metric::RssBytes))
        );
        assert_eq!(book.generation(), 1);
        assert!(matches!(
            book.apply(&update(5, false, &[(CPU, rule(90.0))])),
            Applied::Applied { .. }
        ));
        assert_eq!((book.generation(), book.version()), (2, 5));
        assert_eq!(in_force(&book, CPU).abs, 90.0);
    }

    #[test]
    fn an_older_version_changes_nothing() {
        let book = book();
        book.apply(&update(5, false, &[(CPU, rule(90.0))]));
        let generation = book.generation();
        assert_eq!(
            book.apply(&update(4, true, &[(CPU, rule(10.0))])),
            Applied::Stale { in_force: 5 }
        );
        assert_eq!(in_force(&book, CPU).abs, 90.0);
        assert_eq!((book.generation(), book.version()), (generation, 5));
        // The same version again is applied (a collector resending what it has).
        assert!(matches!(
            book.apply(&update(5, false, &[(CPU, rule(91.0))])),
            Applied::Applied { .. }
        ));
        assert_eq!(in_force(&book, CPU).abs, 91.0);
    }

    #[test]
    fn a_replacing_update_gives_unlisted_metrics_their_own_rule_back() {
        let book = book();
        book.apply(&update(1, true, &[(CPU, rule(90.0)), (THREADS, rule(9.0))]));
        assert_eq!(in_force(&book, THREADS).abs, 9.0);
        // Without replace, what is not listed keeps the collector's rule.
        book.apply(&update(2, false, &[(CPU, rule(80.0))]));
        assert_eq!(in_force(&book, THREADS).abs, 9.0);
        // The central threads rule is deleted: the agent's own comes back.
        let Applied::Applied { answer, changed } =
            book.apply(&update(3, true, &[(CPU, rule(80.0))]))
        else {
            panic!("applied")
        };
        assert_eq!(
            answer,
            ConfigApplied {
                version: 3,
                refused: vec![]
            }
        );
        assert_eq!(in_force(&book, THREADS).abs, 500.0);
        assert_eq!(changed, vec![(THREADS, rule(9.0), Rule::new().abs(500.0))]);
        // And an empty replacing set is every metric on its own rule.
        book.apply(&update(4, true, &[]));
        assert_eq!(in_force(&book, CPU).abs, 70.0);
    }

    #[test]
    fn a_rule_below_a_floor_is_refused_and_the_rule_in_force_stays() {
        let book = book();
        book.apply(&update(1, true, &[(CPU, rule(90.0))]));
        let hostile = Rule::new().abs(1.0).cooldown(Duration::ZERO);
        let Applied::Applied { answer, .. } = book.apply(&update(
            2,
            true,
            &[
                (CPU, hostile),
                (THREADS, rule(9.0)),
                (Metric::RssBytes, rule(1.0)),
            ],
        )) else {
            panic!("applied")
        };
        assert_eq!(answer.version, 2);
        let refused: Vec<(Metric, &str)> = answer
            .refused
            .iter()
            .map(|r| (r.metric, r.reason.as_str()))
            .collect();
        assert_eq!(
            refused,
            vec![
                (
                    CPU,
                    "cooldown 0s is below the agent's floor of 10s (HOLMES_MIN_PUSHED_COOLDOWN)"
                ),
                (
                    Metric::RssBytes,
                    "metric rss has no rule; rules exist for cpu, memory, threads, tasks and heap"
                ),
            ]
        );
        // The refused cpu rule keeps the collector's previous one, even under replace.
        assert_eq!(in_force(&book, CPU).abs, 90.0);
        assert_eq!(in_force(&book, THREADS).abs, 9.0);
        assert_eq!(book.version(), 2);
    }

    #[test]
    fn a_host_edit_wins_until_the_collector_sets_that_metric_again() {
        let book = book();
        book.apply(&update(1, true, &[(CPU, rule(90.0))]));
        book.update(CPU, |r| r.enabled(false)).unwrap();
        assert!(!in_force(&book, CPU).enabled);
        assert_eq!(in_force(&book, CPU).abs, 90.0, "edited the rule in force");
        // A replacing update without cpu keeps the host's edit: it is the own rule now.
        book.apply(&update(2, true, &[]));
        assert!(!in_force(&book, CPU).enabled);
        book.apply(&update(3, true, &[(CPU, rule(95.0))]));
        assert!(in_force(&book, CPU).enabled);
    }

    #[test]
    fn a_pause_comes_and_goes_with_the_versioned_update() {
        let book = book();
        let mut paused = update(1, false, &[]);
        paused.pause = Some(CapturePause {
            until_unix_nanos: 2_000,
            reason: "deploy".into(),
        });
        book.apply(&paused);
        assert_eq!(book.paused(1_000).map(|p| p.reason), Some("deploy".into()));
        assert_eq!(book.paused(2_000), None, "over at its end");
        // An older update does not lift it; a newer one without a pause does.
        book.apply(&update(0, false, &[]));
        assert!(book.paused(1_000).is_some());
        book.apply(&update(2, false, &[]));
        assert_eq!(book.paused(1_000), None);
    }
}
