//! Conformance cases of retention ([`Store::expire_before`]).

use std::time::{Duration, Instant};

use holmes_proto::Metric;

use super::profiles::{cpu_contents, meaning, profile_id, profile_query, record};
use super::{incident, incident_query, instance, point, query, trigger, trigger_query, SEC, T0};
use crate::{
    IncidentStatus, KnownByKey, LocationByKey, ProfileSample, StackByKey, Store, TableKeys,
    NO_LOCATIONS_KEPT,
};

const DAY: u64 = 86_400 * SEC;

/// Polls `done` (for deletes a backend runs asynchronously, ClickHouse's mutations)
/// until it holds, for at most a minute.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not happen within a minute"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Retention: the days before the cutoff's day go — metric samples, trigger events,
/// profiles, incidents that ended and instances last seen before it — and what is at or
/// after the cutoff stays (an incident's suspects go with it).
pub async fn expiry_removes_old_days_and_keeps_the_rest(store: impl Store) {
    let cutoff = T0 + 10 * DAY + 3_600 * SEC;
    let old = cutoff - 3 * DAY;
    let new = cutoff + SEC;
    store
        .insert_metrics(&[
            point("checkout", "a", Metric::CpuPercent, old, 1.0),
            point("checkout", "a", Metric::CpuPercent, new, 2.0),
        ])
        .await
        .unwrap();
    store
        .insert_triggers(&[
            trigger("checkout", "a", "old-event", old),
            trigger("checkout", "a", "new-event", new),
        ])
        .await
        .unwrap();
    for (n, at) in [(1, old), (2, new)] {
        store
            .insert_profile(&record(
                "checkout",
                "a",
                &profile_id(n),
                "new-event",
                at,
                Some(cpu_contents("b1", n)),
            ))
            .await
            .unwrap();
    }
    store
        .upsert_instance(&instance("checkout", "gone", old))
        .await
        .unwrap();
    store
        .upsert_instance(&instance("checkout", "live", new))
        .await
        .unwrap();
    store
        .upsert_incident(&incident("checkout", 1, old, IncidentStatus::Resolved, 1))
        .await
        .unwrap();
    store
        .upsert_incident(&incident("checkout", 2, new, IncidentStatus::Open, 1))
        .await
        .unwrap();
    for n in [1, 2] {
        store
            .put_incident_suspects(&super::suspects::suspects(
                "checkout",
                n,
                cutoff,
                crate::Comparison::None,
                &[("checkout::render", 1.0, 0.0)],
            ))
            .await
            .unwrap();
    }
    store.expire_before(cutoff).await.unwrap();

    let points = store
        .query_metrics(&query("checkout", Metric::CpuPercent, 0, u64::MAX / 2))
        .await
        .unwrap();
    assert_eq!(
        points.iter().map(|p| p.unix_nanos).collect::<Vec<_>>(),
        vec![new]
    );
    let triggers = store
        .query_triggers(&trigger_query("checkout", None, 0, u64::MAX / 2))
        .await
        .unwrap();
    assert_eq!(
        triggers
            .iter()
            .map(|t| t.event_id.as_str())
            .collect::<Vec<_>>(),
        vec!["new-event"]
    );
    let profiles = store
        .query_profiles(&profile_query("checkout", 0, u64::MAX / 2))
        .await
        .unwrap();
    assert_eq!(
        profiles
            .iter()
            .map(|p| p.profile_id.clone())
            .collect::<Vec<_>>(),
        vec![profile_id(2)]
    );
    assert_eq!(
        store.get_profile("checkout", &profile_id(1)).await.unwrap(),
        None
    );
    let kept = store
        .get_profile("checkout", &profile_id(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.contents.unwrap().samples.len(), 4);
    eventually("expiry of the old incident and instance", || async {
        let incidents = store
            .query_incidents(&incident_query(Some("checkout"), None))
            .await
            .unwrap();
        let instances = store.list_instances("checkout").await.unwrap();
        let suspects = store
            .get_incident_suspects("checkout", &profile_id(1))
            .await
            .unwrap();
        incidents.len() == 1 && instances.len() == 1 && suspects.is_none()
    })
    .await;
    let incidents = store
        .query_incidents(&incident_query(Some("checkout"), None))
        .await
        .unwrap();
    assert_eq!(incidents[0].incident_id, profile_id(2));
    assert_eq!(
        store.get_incident(&profile_id(1)).await.unwrap(),
        None,
        "the id lookup of an expired incident finds nothing"
    );
    assert!(
        store
            .get_incident_suspects("checkout", &profile_id(2))
            .await
            .unwrap()
            .is_some(),
        "a kept incident keeps its suspects"
    );
    assert_eq!(
        store.list_instances("checkout").await.unwrap()[0].instance_id,
        "live"
    );
    // Running it again finds nothing more to do.
    store.expire_before(cutoff).await.unwrap();
    assert_eq!(
        store
            .query_profiles(&profile_query("checkout", 0, u64::MAX / 2))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Stacks and locations go with the last profile that used them: a stack only expired
/// profiles used is gone, one a kept profile uses stays (even if first stored with an
/// expired one), and a later profile using an expired stack again stores it again.
pub async fn expiry_keeps_what_kept_profiles_refer_to(store: impl Store) {
    let cutoff = T0 + 10 * DAY;
    let old = cutoff - 2 * DAY;
    let new = cutoff + 3_600 * SEC;
    let mut old_contents = cutoff_contents_with_extra_stack();
    old_contents.header.comments = vec!["old".to_owned()];
    store
        .insert_profile(&record(
            "checkout",
            "a",
            &profile_id(1),
            "e",
            old,
            Some(old_contents.clone()),
        ))
        .await
        .unwrap();
    let shared = cpu_contents("b1", 2);
    let newer = record(
        "checkout",
        "a",
        &profile_id(2),
        "e",
        new,
        Some(shared.clone()),
    );
    store.insert_profile(&newer).await.unwrap();
    // The old profile's 4 stacks, 3 of them shared with the new one.
    assert_eq!(store.stack_count("checkout").await.unwrap(), 4);
    store.expire_before(cutoff).await.unwrap();
    assert_eq!(store.stack_count("checkout").await.unwrap(), 3);
    let kept = store
        .get_profile("checkout", &profile_id(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meaning(kept.contents.as_ref().unwrap()), meaning(&shared));
    // The expired stack used again, later: stored again, read back whole.
    let again = record(
        "checkout",
        "a",
        &profile_id(3),
        "e",
        new + SEC,
        Some(old_contents),
    );
    store.insert_profile(&again).await.unwrap();
    assert_eq!(store.stack_count("checkout").await.unwrap(), 4);
    let got = store
        .get_profile("checkout", &profile_id(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        meaning(got.contents.as_ref().unwrap()),
        meaning(again.contents.as_ref().unwrap())
    );
}

/// [`cpu_contents`] with one more stack, of a location no other profile has.
fn cutoff_contents_with_extra_stack() -> crate::ProfileContents {
    let mut c = cpu_contents("b1", 2);
    c.locations
        .push(crate::Location::Symbolic(vec![crate::StackFrame::new(
            "checkout::legacy::export",
            "src/legacy.rs",
            5,
        )]));
    c.stacks.push(vec![5, 2]);
    c.samples.push(crate::ProfileSample {
        stack: 3,
        values: vec![1, 10_000_000],
        labels: 1,
    });
    c
}

/// Stacks a writer names by key (an agent stream's own numbers, [`TableKeys`]) read back
/// as written and are stored once; a later day's profile writes its stacks again, so
/// that expiring the earlier day keeps them; and a key is never taken for another
/// service's stack.
pub async fn stacks_named_by_key_read_back_and_outlive_expiry(store: impl Store) {
    let scope = TableKeys::new_scope();
    let keyed = |build: &str, hot: u64, stacks: Vec<u32>| {
        let mut c = cpu_contents(build, hot);
        let locations = (0..c.locations.len() as u32).collect();
        c.table_keys = Some(TableKeys {
            scope,
            stacks,
            locations,
            left_out: Vec::new(),
        });
        c
    };
    let cutoff = T0 + 10 * DAY;
    let old = cutoff - 2 * DAY;
    let new = cutoff + 3_600 * SEC;
    let first = keyed("b1", 3, vec![0, 1, 2]);
    // The same stacks by their keys, other values.
    let second = keyed("b1", 5, vec![0, 1, 2]);
    // A later day's profile of one of them, under its key.
    let mut later = keyed("b1", 9, vec![2]);
    later.stacks = vec![later.stacks[2].clone()];
    later.samples = vec![ProfileSample {
        stack: 0,
        values: vec![9, 90_000_000],
        labels: 2,
    }];
    let profiles = [(1, old, &first), (2, old + SEC, &second), (3, new, &later)];
    for (id, at, c) in profiles {
        insert_checkout(&store, ("a", id, at), c.clone()).await;
    }
    assert_eq!(store.stack_count("checkout").await.unwrap(), 3);
    // Known, durable on the first day, not yet on the later one; not another service's.
    // (Key 9 is a stack the scope has not had, of a location key it has not had.)
    let asked = by_key(&[(0, &[0, 1, 2]), (1, &[3, 1, 2]), (2, &[4, 2]), (9, &[7, 2])]);
    let known = store
        .stacks_known_by_key("checkout", old + 2 * SEC, scope, &asked, &[])
        .stacks;
    assert!(known[..3].iter().all(Option::is_some) && known[3].is_none());
    let known_later = store
        .stacks_known_by_key("checkout", new + DAY, scope, &asked[..2], &[])
        .stacks;
    assert_eq!(known_later, [None, None]);
    assert_eq!(
        store
            .stacks_known_by_key("cart", old, scope, &asked[..1], &[])
            .stacks,
        [None]
    );
    // A profile leaving out what the store said it knows reads back whole.
    let whole = keyed("b1", 6, vec![0, 1, 2]);
    let left_out = vec![known[0], None, known[2]];
    let got = left_out_and_read_back(&store, ("a", 5, old + 2 * SEC), &whole, left_out).await;
    assert_eq!(meaning(&got), meaning(&whole));
    // One leaving out a stack as durable on an earlier day than its own is refused (a
    // later day must write its rows again), and nothing is stored.
    let mut unknown = keyed("b1", 6, vec![0, 1, 2]);
    if let Some(keys) = &mut unknown.table_keys {
        keys.left_out = vec![known[0], None, None];
    }
    unknown.stacks[0].clear();
    let refused = store
        .insert_profile(&record(
            "checkout",
            "a",
            &profile_id(6),
            "e",
            new,
            Some(unknown),
        ))
        .await;
    assert!(
        matches!(refused, Err(crate::StoreError::LeftOutStacks { count: 1 })),
        "{refused:?}"
    );
    assert_eq!(
        store.get_profile("checkout", &profile_id(6)).await.unwrap(),
        None
    );
    for (id, _, c) in profiles {
        let got = store
            .get_profile("checkout", &profile_id(id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            meaning(got.contents.as_ref().unwrap()),
            meaning(c),
            "profile {id}"
        );
    }
    store.expire_before(cutoff).await.unwrap();
    assert_eq!(store.stack_count("checkout").await.unwrap(), 1);
    let kept = store
        .get_profile("checkout", &profile_id(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meaning(kept.contents.as_ref().unwrap()), meaning(&later));
    // The same scope and keys, another service and build: that service's own stacks.
    let other = keyed("b2", 4, vec![0, 1, 2]);
    store
        .insert_profile(&record(
            "cart",
            "a",
            &profile_id(4),
            "e",
            new,
            Some(other.clone()),
        ))
        .await
        .unwrap();
    let got = store
        .get_profile("cart", &profile_id(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meaning(got.contents.as_ref().unwrap()), meaning(&other));
    assert_eq!(store.stack_count("cart").await.unwrap(), 3);
}

/// Stores `contents` as a profile of `checkout` (instance, id, start).
async fn insert_checkout(
    store: &impl Store,
    (instance, id, at): (&str, u64, u64),
    contents: crate::ProfileContents,
) {
    store
        .insert_profile(&record(
            "checkout",
            instance,
            &profile_id(id),
            "e",
            at,
            Some(contents),
        ))
        .await
        .unwrap();
}

/// Stores `whole` as a profile of `checkout` (instance, id, start) that leaves out the
/// stacks `left_out` names, with what it says of them, and reads it back.
async fn left_out_and_read_back(
    store: &impl Store,
    (instance, id, at): (&str, u64, u64),
    whole: &crate::ProfileContents,
    left_out: Vec<Option<crate::KnownStack>>,
) -> crate::ProfileContents {
    let mut sent = whole.clone();
    for (stack, known) in sent.stacks.iter_mut().zip(&left_out) {
        if known.is_some() {
            stack.clear();
        }
    }
    if let Some(keys) = &mut sent.table_keys {
        keys.left_out = left_out;
    }
    insert_checkout(store, (instance, id, at), sent).await;
    let got = store
        .get_profile("checkout", &profile_id(id))
        .await
        .unwrap()
        .unwrap();
    got.contents.unwrap()
}

/// Stacks as a writer asks about them: (key, its locations' keys).
fn by_key<'a>(stacks: &[(u32, &'a [u32])]) -> Vec<StackByKey<'a>> {
    stacks
        .iter()
        .map(|&(key, locations)| StackByKey { key, locations })
        .collect()
}

/// A stack new to a scope (an agent stream defining it) is known by its locations' keys
/// when the scope has had each of them and the writer knows the stack they make, from
/// another scope of the service (another instance's stream); a profile leaving it out
/// reads back whole, and nothing is stored twice.
pub async fn stacks_new_to_a_scope_are_known_by_their_locations(store: impl Store) {
    let (a, b) = (TableKeys::new_scope(), TableKeys::new_scope());
    let at = T0 + 3 * DAY;
    // Instance a's stream has the three stacks.
    let mut first = cpu_contents("b1", 3);
    first.table_keys = Some(TableKeys {
        scope: a,
        stacks: vec![0, 1, 2],
        locations: vec![0, 1, 2, 3, 4],
        left_out: Vec::new(),
    });
    // Instance b's stream has had every location, under keys of its own, in other
    // stacks: each one alone.
    let mut leaves = cpu_contents("b1", 3);
    leaves.stacks = (0..5).map(|l| vec![l]).collect();
    leaves.samples = (0..5)
        .map(|stack| ProfileSample {
            stack,
            values: vec![1, 10_000_000],
            labels: 1,
        })
        .collect();
    leaves.table_keys = Some(TableKeys {
        scope: b,
        stacks: vec![0, 1, 2, 3, 4],
        locations: vec![10, 11, 12, 13, 14],
        left_out: Vec::new(),
    });
    for (id, instance, c) in [(1, "a", &first), (2, "b", &leaves)] {
        insert_checkout(&store, (instance, id, at), c.clone()).await;
    }
    assert_eq!(store.stack_count("checkout").await.unwrap(), 8);
    // b's stream now defines a's first and third stacks, one with a location it has not
    // had, and one no stream had (a's first, reversed).
    let asked = by_key(&[
        (5, &[10, 11, 12]),
        (6, &[14, 12]),
        (7, &[10, 11, 99]),
        (8, &[12, 11, 10]),
    ]);
    let known = store
        .stacks_known_by_key("checkout", at + SEC, b, &asked, &[])
        .stacks;
    assert!(known[0].is_some() && known[1].is_some(), "{known:?}");
    assert_eq!(known[2..], [None, None]);
    // Durable on that day only; and the scope is not another service's.
    assert_eq!(
        store
            .stacks_known_by_key("checkout", at + DAY, b, &asked[..2], &[])
            .stacks,
        [None, None]
    );
    // Another service's scope: nothing known, and no locations of it held.
    assert_eq!(
        store.stacks_known_by_key("cart", at, b, &asked[..1], &[]),
        KnownByKey {
            stacks: vec![None],
            locations_told: NO_LOCATIONS_KEPT
        }
    );
    // Asked again, they are known by key.
    assert_eq!(
        store
            .stacks_known_by_key("checkout", at + SEC, b, &by_key(&[(5, &[]), (6, &[])]), &[])
            .stacks,
        known[..2]
    );
    // A stream that has had no profile tells the locations it defines: those the
    // writer knows (not the new one, key 3) are known by key at once, and so are the
    // stacks they make.
    let c = TableKeys::new_scope();
    let mut locations = cpu_contents("b1", 1).locations;
    locations[3] = crate::Location::Symbolic(vec![crate::StackFrame::new(
        "checkout::never::seen",
        "src/never.rs",
        1,
    )]);
    let told: Vec<LocationByKey<'_>> = (0..)
        .zip(&locations)
        .map(|(key, l)| LocationByKey {
            key,
            location: l.borrowed(),
        })
        .collect();
    let asked_c = by_key(&[(0, &[0, 1, 2]), (1, &[4, 2]), (2, &[3, 1, 2])]);
    // A stream new to the writer holds none of its locations: it tells them all.
    assert_eq!(
        store
            .stacks_known_by_key("checkout", at + SEC, c, &[], &[])
            .locations_told,
        0
    );
    assert_eq!(
        store.stacks_known_by_key("checkout", at + SEC, c, &asked_c, &told),
        KnownByKey {
            stacks: vec![known[0], known[1], None],
            locations_told: told.len() as u32,
        }
    );
    // Told from further on than it holds (as after the writer forgot the scope), it
    // says where to tell it again from.
    let later = [LocationByKey {
        key: 9,
        location: locations[0].borrowed(),
    }];
    assert_eq!(
        store
            .stacks_known_by_key("checkout", at + SEC, TableKeys::new_scope(), &[], &later)
            .locations_told,
        0
    );
    // A profile of b's stream leaving them out reads back as a's stacks.
    let mut whole = cpu_contents("b1", 6);
    whole.table_keys = Some(TableKeys {
        scope: b,
        stacks: vec![5, 9, 6],
        locations: vec![10, 11, 12, 13, 14],
        left_out: Vec::new(),
    });
    let left_out = vec![known[0], None, known[1]];
    let got = left_out_and_read_back(&store, ("b", 3, at + SEC), &whole, left_out).await;
    assert_eq!(meaning(&got), meaning(&whole));
    assert_eq!(store.stack_count("checkout").await.unwrap(), 8);
}
