use super::*;

#[inline(never)]
fn some_code() -> usize {
    std::hint::black_box(7)
}

#[test]
fn the_agents_own_code_is_known_and_nothing_else() {
    init();
    init();
    assert!(
        is_own(some_code as *const () as usize, 16),
        "a function of the agent"
    );
    assert!(is_own(is_own as *const () as usize, 1));
    let local = 0u64;
    assert!(!is_own(&local as *const u64 as usize, 8), "the stack");
    let heap = Box::new([0u8; 64]);
    assert!(!is_own(heap.as_ptr() as usize, 8), "the heap");
    assert!(
        !is_own(usize::MAX - 4, 16),
        "past the end of the address space"
    );
}
