use super::*;

fn s(value: f64) -> Sample {
    Sample {
        unix_nanos: 0,
        value,
    }
}

/// Feeds `values` one second apart and returns the decisions.
fn run(rule: Rule, values: &[f64]) -> Vec<Decision> {
    let mut state = RuleState::new(Metric::CpuPercent, rule);
    let t0 = Instant::now();
    values
        .iter()
        .enumerate()
        .map(|(i, v)| state.observe(s(*v), t0 + Duration::from_secs(i as u64)))
        .collect()
}

fn rule() -> Rule {
    Rule::new().min(10.0).diff(25.0).abs(70.0).window(4)
}

#[test]
fn nothing_fires_during_warm_up_even_above_abs() {
    let d = run(rule(), &[99.0, 99.0, 99.0]);
    assert_eq!(d[0], Decision::WarmingUp { have: 1, need: 4 });
    assert_eq!(d[2], Decision::WarmingUp { have: 3, need: 4 });
    assert!(run(rule(), &[99.0; 4])[3].fires());
}

#[test]
fn min_gates_everything() {
    // 9 is 800% above the average of 1, 1, 1, 9 = 3, but below min.
    let d = run(rule(), &[1.0, 1.0, 1.0, 9.0]);
    assert_eq!(d[3], Decision::BelowMin);
}

#[test]
fn max_silences_values_at_or_above_it() {
    let d = run(rule().max(90.0), &[20.0, 20.0, 20.0, 90.0]);
    assert_eq!(d[3], Decision::AboveMax);
    let d = run(rule().max(90.0), &[20.0, 20.0, 20.0, 89.0]);
    assert!(d[3].fires());
    // max = 0 means no ceiling.
    assert!(run(rule(), &[20.0, 20.0, 20.0, 1e9])[3].fires());
}

#[test]
fn abs_fires_strictly_above() {
    let flat = Rule::new().min(10.0).abs(70.0).window(4);
    assert_eq!(
        run(flat, &[70.0, 70.0, 70.0, 71.0])[3],
        Decision::Fire {
            reason: TriggerReason::Abs,
            threshold: 70.0
        }
    );
    assert_eq!(
        run(flat, &[70.0, 70.0, 70.0, 70.0])[3],
        Decision::Quiet {
            threshold: f64::INFINITY
        }
    );
}

#[test]
fn diff_compares_with_the_average_including_the_current_sample() {
    // Window 20, 20, 20, 40: avg 25, threshold 25 * 1.25 = 31.25; 40 >= 31.25 fires.
    assert_eq!(
        run(rule(), &[20.0, 20.0, 20.0, 40.0])[3],
        Decision::Fire {
            reason: TriggerReason::Diff,
            threshold: 31.25
        }
    );
    // Exactly at the threshold fires (>=): 20, 20, 20, x with x = 1.25 * (60 + x) / 4
    // → 4x = 75 + 1.25x → x = 75 / 2.75; pick a clean case instead: diff 100,
    // window 10, 10, 10, 30: avg 15, threshold 30.
    let d = run(
        Rule::new().min(1.0).diff(100.0).window(4),
        &[10.0, 10.0, 10.0, 30.0],
    );
    assert_eq!(
        d[3],
        Decision::Fire {
            reason: TriggerReason::Diff,
            threshold: 30.0
        }
    );
    // Just below it is quiet: 10, 10, 10, 29 → avg 14.75, threshold 29.5.
    let d = run(
        Rule::new().min(1.0).diff(100.0).window(4),
        &[10.0, 10.0, 10.0, 29.0],
    );
    assert_eq!(d[3], Decision::Quiet { threshold: 29.5 });
}

#[test]
fn cooldown_sleeps_after_firing_then_wakes() {
    let r = rule().cooldown(Duration::from_secs(3));
    let d = run(r, &[20.0, 20.0, 20.0, 99.0, 99.0, 99.0, 99.0, 99.0]);
    assert!(d[3].fires());
    assert_eq!(
        d[4],
        Decision::CoolingDown {
            left: Duration::from_secs(2)
        }
    );
    assert_eq!(
        d[5],
        Decision::CoolingDown {
            left: Duration::from_secs(1)
        }
    );
    assert!(d[6].fires(), "awake again after 3 s: {:?}", d[6]);
    assert!(matches!(d[7], Decision::CoolingDown { .. }));
}

#[test]
fn disabled_rules_keep_their_window() {
    let mut state = RuleState::new(Metric::CpuPercent, rule().enabled(false));
    let t0 = Instant::now();
    for i in 0..4 {
        assert_eq!(state.observe(s(20.0), t0), Decision::Disabled, "{i}");
    }
    state.set_rule(rule());
    assert!(state.observe(s(99.0), t0).fires(), "no second warm-up");
}

#[test]
fn a_rule_change_at_run_time_keeps_the_window() {
    let mut state = RuleState::new(Metric::CpuPercent, rule());
    let t0 = Instant::now();
    for _ in 0..4 {
        state.observe(s(50.0), t0);
    }
    // Window 50, 50, 50, 60: avg 52.5, threshold 52.5 * 1.25 = 65.625.
    assert_eq!(
        state.observe(s(60.0), t0),
        Decision::Quiet { threshold: 65.625 }
    );
    state.set_rule(rule().abs(55.0));
    assert_eq!(
        state.observe(s(60.0), t0),
        Decision::Fire {
            reason: TriggerReason::Abs,
            threshold: 55.0
        }
    );
    // A smaller window keeps the newest samples and stays warm.
    state.set_rule(rule().window(2).abs(1e9).diff(10.0));
    assert_eq!(state.window().len(), 2);
    assert!(matches!(
        state.observe(s(60.0), t0),
        Decision::Quiet { .. } | Decision::Fire { .. }
    ));
}

#[test]
fn peek_judges_without_keeping_the_sample() {
    let mut state = RuleState::new(
        Metric::MemoryPercent,
        rule().cooldown(Duration::from_secs(60)),
    );
    let t0 = Instant::now();
    for _ in 0..4 {
        state.observe(s(20.0), t0);
    }
    // As if pushed: window 20, 20, 20, 90 → abs fires.
    assert!(state.peek(90.0, t0).fires());
    assert_eq!(state.window().len(), 4);
    assert!(state.window().iter().all(|x| x.value == 20.0));
    // The firing started the cooldown for the regular path too.
    assert!(matches!(
        state.observe(s(95.0), t0),
        Decision::CoolingDown { .. }
    ));
}

#[test]
fn default_rules_match_the_go_library() -> crate::TestResult {
    let mem = Rule::default_for(Metric::MemoryPercent).ok_or("no default memory rule")?;
    assert_eq!(
        (mem.min, mem.diff, mem.abs, mem.cooldown),
        (10.0, 25.0, 80.0, Duration::from_secs(60))
    );
    assert!(Rule::default_for(Metric::RssBytes).is_none());
    assert_eq!(
        Rule::new().to_string(),
        "min=0,diff=off,abs=off,max=0,cooldown=0s,window=10"
    );
    Ok(())
}
