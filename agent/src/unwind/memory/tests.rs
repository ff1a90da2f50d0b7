use super::*;

#[test]
fn reads_what_is_mapped_and_refuses_what_is_not() {
    let pair = [11usize, 22];
    assert_eq!(read_pair(pair.as_ptr() as usize), Some((11, 22)));
    assert_eq!(read_pair(8), None);
    assert_eq!(read_pair(usize::MAX - 7), None);

    let local = [0u8; 100_000];
    let lo = local.as_ptr() as usize;
    assert!(range_readable(lo, lo + local.len()));
    assert!(!range_readable(0, 4096));
    // A guard page: mapped, but not readable.
    let page = 4096;
    // SAFETY: a fresh anonymous mapping of three pages, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            3 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let base = map as usize;
    // SAFETY: the middle page of the mapping made above.
    let rc = unsafe { libc::mprotect((base + page) as *mut _, page, libc::PROT_NONE) };
    assert_eq!(rc, 0);
    assert!(range_readable(base, base + page));
    assert!(!range_readable(base, base + 3 * page));
    assert_eq!(read_pair(base + page), None);
    assert!(read_pair(base + 2 * page).is_some());
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(map, 3 * page) };
}

#[test]
fn finds_the_main_threads_stack() -> crate::TestResult {
    let (lo, hi) = main_stack_mapping().ok_or("no [stack] mapping found")?;
    assert!(lo < hi && hi - lo >= 4096, "{lo:#x}-{hi:#x}");
    assert!(range_readable(hi - 4096, hi));
    assert_eq!(
        parse_range(b"7ffd1000-7ffd3000 rw-p 00000000 00:00 0 [stack]"),
        Some((0x7ffd_1000, 0x7ffd_3000))
    );
    assert_eq!(parse_range(b"zz-1"), None);
    Ok(())
}
