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
