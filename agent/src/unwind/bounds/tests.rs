use super::*;

#[test]
fn a_thread_stack_is_checked_once_then_known() -> crate::TestResult {
    let tp = super::super::thread_pointer();
    let local = 0u64;
    let sp = &local as *const u64 as usize;
    if tp == 0 || sp >= tp {
        return Ok(()); // the main thread on a libc without the layout: nothing to learn
    }
    let epoch = WALKS.load(Ordering::Relaxed) / RECHECK_EVERY;
    assert_eq!(known_top(sp, tp), Some(tp));
    let lo = lookup(tp, epoch).ok_or_else(|| format!("the stack below {tp:#x} is not known"))?;
    assert!(lo <= sp && tp - lo < MAX_CHECKED);
    // A pretend thread whose "stack" runs into unmapped memory is never known.
    assert_eq!(known_top(8, 4096 * 4), None);
    assert_eq!(lookup(4096 * 4, epoch), None);
    Ok(())
}

#[test]
fn the_main_stack_is_read_from_the_maps() {
    init();
    let (lo, hi) = (
        MAIN_LO.load(Ordering::Relaxed),
        MAIN_HI.load(Ordering::Relaxed),
    );
    assert!(lo != 0 && lo < hi);
    // Any stack pointer in it is known up to its top, thread pointer or not.
    assert_eq!(known_top(hi - 64, 0), Some(hi));
}
