//! The soak test at CI size: `holmes-soak` (collector/devtools) runs 10 honest agents and
//! 10 hostile clients — amplifying profiles, skewed clocks, slow readers and half-sent
//! requests, oversized ids, connection floods — against the real `holmes-collector`
//! process for 20 seconds. Every honest trigger, profile and alert must arrive exactly
//! once, the collector's resident memory stay under the bound, and every kind of hostile
//! traffic be refused with its reason in the collector's counters. `deploy/dev/soak.sh`
//! runs the full size (50 agents, minutes) in release mode.

use std::process::Command;

/// A debug build's collector, with decoding, suspects and flame graphs of the hostile
/// profiles under way at once; the release figures are in collector/README.md.
const RSS_BOUND_MIB: u64 = 512;

#[test]
fn honest_agents_lose_nothing_beside_hostile_clients_within_a_memory_bound() {
    let out = Command::new(holmes_devtools::workspace::bin("holmes-soak"))
        .arg("--collector-bin")
        .arg(env!("CARGO_BIN_EXE_holmes-collector"))
        .args(["--services", "2", "--instances", "5", "--hostile", "10"])
        .args(["--duration", "20s", "--spike-every", "6s", "--grace", "60s"])
        .args(["--rss-bound-mib", &RSS_BOUND_MIB.to_string(), "--json"])
        .output()
        .expect("holmes-soak runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "holmes-soak failed:\n{stdout}\n{stderr}"
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let n = |key: &str| r[key].as_u64().unwrap_or_else(|| panic!("{key} in {r}"));
    assert!(n("triggers_sent") >= 10, "{r}");
    assert_eq!(n("triggers_arrived_once"), n("triggers_sent"), "{r}");
    assert_eq!(n("triggers_in_one_incident"), n("triggers_sent"), "{r}");
    assert_eq!(n("profiles_arrived_once"), n("profiles_sent"), "{r}");
    assert!(
        n("incidents") >= 2 && n("incidents_resolved") == n("incidents"),
        "{r}"
    );
    // Each incident was opened and resolved on the hook, at least.
    assert!(n("alerts_received") >= 2 * n("incidents"), "{r}");
    assert!(n("rss_max_bytes") <= RSS_BOUND_MIB << 20, "{r}");
    for reason in [
        "holmes_profiles_refused_total:amplifies",
        "holmes_profiles_refused_total:name_too_long",
        "holmes_profiles_refused_total:too_deep",
        "holmes_ingest_refused_total:clock_skew",
        "holmes_ingest_refused_total:profile_idle",
        "holmes_ingest_refused_total:unfinished_profiles",
        "holmes_ingest_refused_total:http_header_timeout",
        "holmes_ingest_refused_total:invalid_id",
        "holmes_ingest_refused_total:too_many_services",
        "holmes_ingest_refused_total:too_many_streams_per_peer",
    ] {
        let counted = r["refused_by_reason"][reason].as_f64().unwrap_or(0.0);
        assert!(counted >= 1.0, "no {reason}: {r}");
    }
    // And the collector said so in its log.
    assert!(n_in(&r["log_lines"], "rejected agent stream") >= 1, "{r}");
    assert!(n_in(&r["log_lines"], "profile refused") >= 1, "{r}");
    assert_eq!(n_in(&r["log_lines"], "panicked"), 0, "{r}");
}

fn n_in(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}
