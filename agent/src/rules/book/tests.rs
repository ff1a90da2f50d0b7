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
fn host_edits_and_pushed_updates_bump_the_generation() -> crate::TestResult {
    let book = book();
    assert_eq!(book.generation(), 0);
    book.update(CPU, |r| r.abs(50.0))?;
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
    Ok(())
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
    let Applied::Applied { answer, changed } = book.apply(&update(3, true, &[(CPU, rule(80.0))]))
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
fn a_host_edit_wins_until_the_collector_sets_that_metric_again() -> crate::TestResult {
    let book = book();
    book.apply(&update(1, true, &[(CPU, rule(90.0))]));
    book.update(CPU, |r| r.enabled(false))?;
    assert!(!in_force(&book, CPU).enabled);
    assert_eq!(in_force(&book, CPU).abs, 90.0, "edited the rule in force");
    // A replacing update without cpu keeps the host's edit: it is the own rule now.
    book.apply(&update(2, true, &[]));
    assert!(!in_force(&book, CPU).enabled);
    book.apply(&update(3, true, &[(CPU, rule(95.0))]));
    assert!(in_force(&book, CPU).enabled);
    Ok(())
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
