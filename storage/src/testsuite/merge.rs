//! Conformance cases of merges and stacks: profiles merged by stack over a service's
//! instances, each stack stored once per service, native locations named by symbols.

use holmes_proto::ProfileKind;

use super::profiles::{cpu_contents, native, profile_id, record};
use super::{SEC, T0};
use crate::{Location, MergeQuery, ProfileContents, StackFrame, Store, ValueType};

/// A CPU merge of `service`'s profiles over `since..until`.
pub(super) fn merge_query(service: &str, since: u64, until: u64) -> MergeQuery {
    MergeQuery {
        service: service.to_owned(),
        kind: ProfileKind::Cpu,
        since_unix_nanos: since,
        until_unix_nanos: until,
        limit: 10_000,
    }
}

/// A service's profiles of one kind over a range merge into one: each distinct stack
/// once, its values summed over the profiles, sample types matched by name and unit;
/// other kinds, other services and profiles outside the range count for nothing.
pub async fn profiles_merge_by_stack(store: impl Store) {
    let a = cpu_contents("b1", 2);
    let mut b = cpu_contents("b1", 4);
    // The second profile lists its sample types the other way round.
    b.header.sample_types.reverse();
    for s in &mut b.samples {
        s.values.reverse();
    }
    store
        .insert_profile(&record("checkout", "a", &profile_id(1), "e", T0, Some(a)))
        .await
        .unwrap();
    store
        .insert_profile(&record(
            "checkout",
            "b",
            &profile_id(2),
            "e",
            T0 + SEC,
            Some(b),
        ))
        .await
        .unwrap();
    let mut heap = record(
        "checkout",
        "a",
        &profile_id(3),
        "e",
        T0 + SEC,
        Some(cpu_contents("b1", 100)),
    );
    heap.kind = ProfileKind::Heap;
    store.insert_profile(&heap).await.unwrap();
    for (service, id, at) in [("cart", 4, T0), ("checkout", 5, T0 + 3_600 * SEC)] {
        store
            .insert_profile(&record(
                service,
                "x",
                &profile_id(id),
                "e",
                at,
                Some(cpu_contents("b1", 100)),
            ))
            .await
            .unwrap();
    }
    let merged = store
        .merge_profiles(&merge_query("checkout", T0, T0 + 60 * SEC))
        .await
        .unwrap();
    assert_eq!(merged.profiles, 2);
    let c = &merged.contents;
    let mut types = c.header.sample_types.clone();
    types.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        types,
        vec![
            ValueType::new("cpu", "nanoseconds"),
            ValueType::new("samples", "count")
        ]
    );
    let (count, cpu) = (
        c.value_index(Some("samples")).unwrap(),
        c.value_index(Some("cpu")).unwrap(),
    );
    // Stack 0 of cpu_contents has samples of 7 and 3; stack 2 of `hot`.
    let mut by_stack: Vec<(Vec<Location>, Vec<i64>)> = c
        .samples
        .iter()
        .map(|s| {
            (
                c.stacks[s.stack as usize]
                    .iter()
                    .map(|&l| c.locations[l as usize].clone())
                    .collect(),
                vec![s.values[count], s.values[cpu]],
            )
        })
        .collect();
    by_stack.sort_by_key(|(_, v)| v[0]);
    let counts: Vec<i64> = by_stack.iter().map(|(_, v)| v[0]).collect();
    assert_eq!(counts, vec![2, 6, 20]);
    let nanos: Vec<i64> = by_stack.iter().map(|(_, v)| v[1]).collect();
    assert_eq!(nanos, vec![20_000_000, 60_000_000, 200_000_000]);
    assert_eq!(
        by_stack[1].0,
        vec![
            native("[vdso]", "", 0xa3c),
            native("libc.so.6", "c0ffee", 0x29d8f)
        ]
    );
    let none = store
        .merge_profiles(&merge_query("checkout", T0 + 7_200 * SEC, T0 + 7_300 * SEC))
        .await
        .unwrap();
    assert_eq!(none.profiles, 0);
    assert!(none.contents.samples.is_empty());
}

/// Each distinct stack is stored once per service: profiles from several processes of
/// one build (the same module offsets) add no stacks, a new build's stacks are new, and
/// another service numbers its own.
pub async fn stacks_are_stored_once_per_service(store: impl Store) {
    for i in 0..5u64 {
        store
            .insert_profile(&record(
                "checkout",
                &format!("checkout-{i}"),
                &profile_id(i),
                "e",
                T0 + i * SEC,
                Some(cpu_contents("b1", 3)),
            ))
            .await
            .unwrap();
    }
    assert_eq!(store.stack_count("checkout").await.unwrap(), 3);
    // Other values on the same stacks add none; another build's stacks are new.
    store
        .insert_profile(&record(
            "checkout",
            "x",
            &profile_id(10),
            "e",
            T0,
            Some(cpu_contents("b1", 4)),
        ))
        .await
        .unwrap();
    assert_eq!(store.stack_count("checkout").await.unwrap(), 3);
    store
        .insert_profile(&record(
            "checkout",
            "x",
            &profile_id(11),
            "e",
            T0,
            Some(cpu_contents("b2", 3)),
        ))
        .await
        .unwrap();
    // b2's executable frames are other locations: 2 new stacks; the vdso one is shared.
    assert_eq!(store.stack_count("checkout").await.unwrap(), 5);
    store
        .insert_profile(&record(
            "cart",
            "x",
            &profile_id(12),
            "e",
            T0,
            Some(cpu_contents("b1", 3)),
        ))
        .await
        .unwrap();
    assert_eq!(store.stack_count("cart").await.unwrap(), 3);
    assert_eq!(store.stack_count("nobody").await.unwrap(), 0);
}

/// Symbols recorded for native locations show in place of `name+0x<offset>`, inlined
/// frames included, in every profile that uses them; writing them again replaces them.
pub async fn symbols_name_native_locations(store: impl Store) {
    store
        .insert_profile(&record(
            "checkout",
            "a",
            &profile_id(1),
            "e",
            T0,
            Some(cpu_contents("b1", 3)),
        ))
        .await
        .unwrap();
    let leaf = native("checkout", "b1", 0x1_2345);
    store
        .insert_symbols(&[(
            leaf.id(),
            vec![
                StackFrame::new("checkout::price::inner", "src/price.rs", 7),
                StackFrame::new("checkout::price::total", "src/price.rs", 30),
            ],
        )])
        .await
        .unwrap();
    let read = |store_c: ProfileContents| -> Vec<String> {
        let s = store_c.samples[0].stack;
        store_c
            .stack_frames(s)
            .into_iter()
            .map(|f| f.function)
            .collect()
    };
    let c = store
        .get_profile("checkout", &profile_id(1))
        .await
        .unwrap()
        .unwrap()
        .contents
        .unwrap();
    assert_eq!(
        read(c.clone()),
        [
            "checkout::price::inner",
            "checkout::price::total",
            "checkout+0x10040",
            "libc.so.6+0x29d8f"
        ]
    );
    // The location itself stays native: a download gives it its address back.
    assert!(c.locations.contains(&leaf));
    store
        .insert_symbols(&[(
            leaf.id(),
            vec![StackFrame::new(
                "checkout::price::total",
                "src/price.rs",
                31,
            )],
        )])
        .await
        .unwrap();
    let merged = store
        .merge_profiles(&merge_query("checkout", T0, T0 + SEC))
        .await
        .unwrap();
    let frames: Vec<Vec<String>> = (0..merged.contents.stacks.len() as u32)
        .map(|s| {
            merged
                .contents
                .stack_frames(s)
                .into_iter()
                .map(|f| f.function)
                .collect()
        })
        .collect();
    assert!(
        frames.iter().any(|f| f[0] == "checkout::price::total"),
        "{frames:?}"
    );
    assert!(frames.iter().all(|f| f[0] != "checkout::price::inner"));
}
