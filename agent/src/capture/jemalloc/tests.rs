use super::*;
use crate::capture::profile::decode::decode;
use crate::capture::symbolize::local::LocalSymbols;
use holmes_symbolize::Frame;

fn frame(function: &str, file: &str) -> Frame {
    Frame {
        function: function.to_owned(),
        file: file.to_owned(),
        line: 1,
    }
}

#[test]
fn allocator_frames_cover_what_jemalloc_puts_on_top() {
    let build = "/t/debug/build/tikv-jemalloc-sys-a5e8/out/build";
    for f in [
        frame(
            "prof_alloc_prep",
            &format!("{build}/include/jemalloc/internal/prof_inlines.h"),
        ),
        frame("imalloc", &format!("{build}/src/jemalloc.c")),
        frame("_rjem_mallocx", &format!("{build}/src/jemalloc.c")),
        frame("calloc", ""),
        frame("__rustc::__rust_alloc", ""),
    ] {
        assert!(is_allocator_frame(&f.function, &f.file), "{f:?}");
    }
    for f in [
        frame("checkout::cache::grow", "src/cache.rs"),
        frame(
            "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
            "raw_vec/mod.rs",
        ),
        frame("checkout::jemalloc::setup", "src/jemalloc.rs"),
    ] {
        assert!(!is_allocator_frame(&f.function, &f.file), "{f:?}");
    }
    for name in [
        "prof_backtrace_impl",
        "_rjem_je_prof_backtrace",
        "_rjem_je_prof_tctx_create",
        "_rjem_je_malloc_default",
        "calloc",
        "__rust_alloc_zeroed",
        "alloc::alloc::alloc_zeroed",
        "<tikv_jemallocator::Jemalloc as core::alloc::global::GlobalAlloc>::alloc_zeroed",
    ] {
        assert!(
            ALLOCATOR_FRAMES.iter().any(|p| name.starts_with(p)),
            "{name}"
        );
    }
    assert!(!ALLOCATOR_FRAMES
        .iter()
        .any(|p| "checkout::cache::grow".starts_with(p)));
}

#[test]
fn only_the_allocator_frames_on_top_are_trimmed() -> crate::TestResult {
    let jemalloc_c = "/b/tikv-jemalloc-sys-1/out/build/src/jemalloc.c";
    let stack = vec![
        frame("prof_alloc_prep", jemalloc_c),
        frame("_rjem_mallocx", jemalloc_c),
        frame("__rustc::__rust_alloc", ""),
        frame("checkout::cache::grow", "src/cache.rs"),
        frame("malloc_stats_user", "src/stats.rs"),
        frame("checkout::main", "src/main.rs"),
    ];
    let names =
        |frames: &[Frame]| -> Vec<String> { frames.iter().map(|f| f.function.clone()).collect() };
    let mut b = ProfileBuilder::new(&[("inuse_space", "bytes")], ("space", "bytes"), 1);
    b.trim_leaf_frames(is_allocator_frame);
    b.add_symbolic_sample(&stack, &[10], &[]);
    b.add_symbolic_sample(&stack[..3], &[20], &[]);
    let profile = decode(&b.encode_gzip(&mut LocalSymbols::default()))?;
    let stacks: Vec<Vec<String>> = profile.samples.iter().map(|s| s.stack.clone()).collect();
    assert!(stacks.contains(&names(&stack[3..])), "{stacks:?}");
    // A stack made only of allocator frames is kept whole.
    assert!(stacks.contains(&names(&stack[..3])), "{stacks:?}");
    Ok(())
}

#[test]
fn without_jemalloc_profiling_there_is_no_capture() {
    // The unit-test binary links jemalloc (prefixed) but runs on the system
    // allocator, without `prof:true`: no capture, and no heap figure from it.
    assert!(capture().is_none());
    assert_eq!(allocated_bytes(), None);
}

#[test]
fn a_stuck_dump_times_out_and_holds_off_the_next_one_until_it_ends() -> crate::TestResult {
    let quick = run_with_timeout(|| Ok(7), Duration::from_secs(5));
    assert_eq!(quick, Ok(7));
    let (release, released) = mpsc::channel::<()>();
    let stuck = run_with_timeout(
        move || {
            let _ = released.recv();
            Ok(1)
        },
        Duration::from_millis(50),
    );
    assert_eq!(stuck, Err("jemalloc heap dump timed out".to_owned()));
    assert_eq!(
        run_with_timeout(|| Ok(2), Duration::from_secs(5)),
        Err("a previous jemalloc heap dump is still running".to_owned())
    );
    release
        .send(())
        .map_err(|e| format!("release the stuck dump: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while DUMP_IN_FLIGHT.load(Ordering::Acquire) {
        assert!(Instant::now() < deadline, "the stuck dump ends");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(run_with_timeout(|| Ok(3), Duration::from_secs(5)), Ok(3));
    let failed: Result<(), String> =
        run_with_timeout(|| Err("no".to_owned()), Duration::from_secs(5));
    assert_eq!(failed, Err("no".to_owned()));
    Ok(())
}
