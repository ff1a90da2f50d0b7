use std::alloc::{GlobalAlloc, Layout, System};

use super::*;
use crate::capture::profile::decode::decode;
use crate::capture::symbolize::local::LocalSymbols;
use crate::heap::tests::serial;
use crate::heap::SamplingAllocator;

#[inline(never)]
fn heap_unit_test_culprit(a: &SamplingAllocator) -> crate::TestResult<(*mut u8, Layout)> {
    let layout = Layout::from_size_align(3 << 20, 16)?;
    // SAFETY: a valid layout; freed by the caller with it.
    let p = unsafe { a.alloc(layout) };
    assert!(!p.is_null());
    Ok((std::hint::black_box(p), layout))
}

#[test]
fn the_profile_has_go_sample_types_and_the_allocating_function_as_leaf() -> crate::TestResult {
    let _serial = serial();
    let a = SamplingAllocator::new(System, 64 * 1024);
    let (p, layout) = heap_unit_test_culprit(&a)?;
    assert!(available());
    let gz = capture(1_700_000_000_000_000_000)
        .map(|profile| profile.encode_gzip(&mut LocalSymbols::default()));
    // SAFETY: allocated above with this layout.
    unsafe { a.dealloc(p, layout) };
    let gz = gz.map_err(|e| format!("the heap capture: {e}"))?;
    let profile = decode(&gz)?;
    let types: Vec<(&str, &str)> = profile
        .sample_types
        .iter()
        .map(|(t, u)| (t.as_str(), u.as_str()))
        .collect();
    assert_eq!(types, SAMPLE_TYPES);
    assert_eq!(profile.period_type, ("space".into(), "bytes".into()));
    assert_eq!(profile.period, 64 * 1024);
    assert_eq!(profile.time_nanos, 1_700_000_000_000_000_000);
    let culprit = profile
        .samples
        .iter()
        .find(|s| {
            s.stack
                .first()
                .is_some_and(|f| f.ends_with("heap::tests::heap_unit_test_culprit"))
        })
        .unwrap_or_else(|| panic!("no sample with the culprit as leaf: {profile:#?}"));
    assert_eq!(culprit.values, vec![1, 3 << 20, 1, 3 << 20], "{culprit:#?}");
    assert!(
        culprit
            .stack
            .iter()
            .any(|f| f
                .ends_with("the_profile_has_go_sample_types_and_the_allocating_function_as_leaf")),
        "{culprit:#?}"
    );
    // The sampler's own frames are gone from every stack that has others.
    for s in &profile.samples {
        assert!(
            s.stack.len() < 2 || !s.stack[0].contains("holmes_agent::heap"),
            "{s:#?}"
        );
    }
    Ok(())
}

#[test]
fn the_error_names_what_to_install() {
    assert_eq!(
        HeapError::NotAvailable.to_string(),
        "no heap profiler: install holmes_agent::SamplingAllocator as the global allocator, or enable the jemalloc feature"
    );
}
