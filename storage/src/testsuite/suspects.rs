//! Conformance cases of incidents' suspects ([`Store::put_incident_suspects`]).

use holmes_proto::ProfileKind;

use super::profiles::profile_id;
use super::{incident, SEC, T0};
use crate::{Comparison, IncidentStatus, IncidentSuspects, Store, SuspectRecord};

pub(crate) fn suspects(
    service: &str,
    n: u64,
    computed: u64,
    comparison: Comparison,
    functions: &[(&str, f64, f64)],
) -> IncidentSuspects {
    IncidentSuspects {
        incident_id: profile_id(n),
        service: service.to_owned(),
        kind: ProfileKind::Cpu,
        comparison,
        sick_profiles: 2,
        comparison_profiles: if comparison == Comparison::None { 0 } else { 3 },
        computed_unix_nanos: computed,
        suspects: functions
            .iter()
            .map(|(f, sick, other)| SuspectRecord {
                function: (*f).to_owned(),
                sick_share: *sick,
                comparison_share: *other,
            })
            .collect(),
    }
}

/// Suspects: every field reads back exactly (full paths with generics and quotes, the
/// shares' bits); the latest computation replaces an earlier one, never the other way
/// round; they belong to their incident (another service's incident of the same id,
/// or an incident without any, finds none).
pub async fn incident_suspects_keep_the_latest_computation(store: impl Store) {
    store
        .upsert_incident(&incident("checkout", 1, T0, IncidentStatus::Open, 1))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_incident_suspects("checkout", &profile_id(1))
            .await
            .unwrap(),
        None,
        "none before they are computed"
    );
    let first = suspects(
        "checkout",
        1,
        T0 + 5 * SEC,
        Comparison::None,
        &[("checkout::render", 0.9, 0.0)],
    );
    store.put_incident_suspects(&first).await.unwrap();
    assert_eq!(
        store
            .get_incident_suspects("checkout", &profile_id(1))
            .await
            .unwrap()
            .as_ref(),
        Some(&first)
    );
    let second = suspects(
        "checkout",
        1,
        T0 + 10 * SEC,
        Comparison::Controls,
        &[
            (
                "<checkout::Cart<'a, \"x\"> as core::fmt::Display>::fmt",
                0.61,
                0.02,
            ),
            ("checkout::pricing::total", 1.0 / 3.0, 0.1 + 0.2),
            ("checkout::idle", 0.0, 0.75),
        ],
    );
    store.put_incident_suspects(&second).await.unwrap();
    // An older computation arriving late changes nothing.
    store.put_incident_suspects(&first).await.unwrap();
    let got = store
        .get_incident_suspects("checkout", &profile_id(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, second);
    assert_eq!(
        got.suspects[1].sick_share.to_bits(),
        (1.0f64 / 3.0).to_bits()
    );
    assert_eq!(got.comparison.as_str(), "controls");
    assert_eq!(
        store
            .get_incident_suspects("cart", &profile_id(1))
            .await
            .unwrap(),
        None,
        "another service's incident"
    );
    assert_eq!(
        store
            .get_incident_suspects("checkout", &profile_id(2))
            .await
            .unwrap(),
        None
    );
    let baselines = suspects("checkout", 2, T0, Comparison::Baselines, &[]);
    store.put_incident_suspects(&baselines).await.unwrap();
    assert_eq!(
        store
            .get_incident_suspects("checkout", &profile_id(2))
            .await
            .unwrap(),
        Some(baselines),
        "an empty list is a computation too"
    );
}

/// Fingerprints: incidents of a service whose top suspects are the same functions (in
/// any order) share one, found by it, the latest computed first; an incident whose
/// suspects changed since is found by its new one only; another service's incident
/// with the same suspects is not among them.
pub async fn incidents_are_found_by_fingerprint(store: impl Store) {
    let top = [
        ("checkout::render", 0.6, 0.0),
        ("checkout::pricing::total", 0.3, 0.1),
        ("checkout::idle", 0.1, 0.5),
    ];
    let first = suspects("checkout", 1, T0 + SEC, Comparison::Controls, &top);
    // The same problem again, its top two swapped and a fourth suspect below them.
    let mut swapped = top.to_vec();
    swapped.swap(0, 1);
    swapped.push(("checkout::log", 0.01, 0.0));
    let again = suspects("checkout", 2, T0 + 2 * SEC, Comparison::None, &swapped);
    let other = suspects("checkout", 3, T0 + 3 * SEC, Comparison::Controls, &top[..2]);
    let cart = suspects("cart", 4, T0 + 4 * SEC, Comparison::Controls, &top);
    let fingerprint = first.fingerprint().unwrap();
    assert_eq!(fingerprint.len(), 32);
    assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(again.fingerprint().as_ref(), Some(&fingerprint));
    assert_ne!(other.fingerprint().as_ref(), Some(&fingerprint));
    assert_eq!(
        suspects("checkout", 5, T0, Comparison::None, &[]).fingerprint(),
        None
    );
    for s in [&first, &again, &other, &cart] {
        store.put_incident_suspects(s).await.unwrap();
    }
    let found = |service: &'static str, fingerprint: String| {
        let store = &store;
        async move {
            store
                .incidents_with_fingerprint(service, &fingerprint, 10)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        found("checkout", fingerprint.clone()).await,
        [profile_id(2), profile_id(1)]
    );
    assert_eq!(found("cart", fingerprint.clone()).await, [profile_id(4)]);
    assert_eq!(
        found("checkout", other.fingerprint().unwrap()).await,
        [profile_id(3)]
    );
    assert_eq!(found("checkout", String::new()).await, Vec::<String>::new());
    // Incident 1's suspects changed: its old fingerprint no longer finds it.
    let changed = suspects(
        "checkout",
        1,
        T0 + 5 * SEC,
        Comparison::Controls,
        &[("checkout::encode", 0.9, 0.0)],
    );
    store.put_incident_suspects(&changed).await.unwrap();
    assert_eq!(
        found("checkout", fingerprint.clone()).await,
        [profile_id(2)]
    );
    assert_eq!(
        store
            .incidents_with_fingerprint("checkout", &fingerprint, 1)
            .await
            .unwrap()
            .len(),
        1,
        "at most the limit"
    );
}
