use super::*;

/// A value the fast reader gives when a fresh read of the file, taken between two
/// fast reads, agrees with both: other tests of this binary allocate and start
/// threads meanwhile, so only agreement says the reader reads what is there now.
fn agreed(
    reader: &mut FastReaders,
    fast: fn(&mut FastReaders) -> Option<u64>,
    fresh: fn() -> Option<u64>,
) -> u64 {
    for _ in 0..1_000 {
        let (a, b, c) = (fast(reader), fresh(), fast(reader));
        if a.is_some() && a == b && b == c {
            return b.unwrap_or_default();
        }
    }
    panic!("the fast reader never agreed with a fresh read");
}

#[test]
fn the_fast_readers_follow_the_process() -> crate::TestResult {
    let mut reader = FastReaders::new();
    let rss_before = agreed(&mut reader, FastReaders::rss_bytes, rss_bytes);
    let big = std::hint::black_box(vec![1u8; 64 << 20]);
    let rss_after = agreed(&mut reader, FastReaders::rss_bytes, rss_bytes);
    assert_ne!(rss_before, rss_after, "64 MiB touched since");
    drop(big);
    let threads_before = agreed(&mut reader, FastReaders::threads, thread_count);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv().ok());
    let threads_after = agreed(&mut reader, FastReaders::threads, thread_count);
    assert!(threads_after >= 2 && threads_before >= 1);
    drop(tx);
    t.join().map_err(|_| "the waiting thread panicked")?;
    Ok(())
}

#[test]
fn parses_meminfo_total() {
    let meminfo = "MemTotal:       24683656 kB\nMemFree:        1000 kB\n";
    assert_eq!(parse_meminfo_total(meminfo), Some(24_683_656 * 1024));
    assert_eq!(
        parse_meminfo_total("MemFree: 1 kB\nMemTotal: 2 kB\n"),
        Some(2048)
    );
    assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
    assert_eq!(parse_meminfo_total("MemTotal: lots kB\n"), None);
    assert_eq!(parse_meminfo_total("MemTotal: 1 MB\n"), None);
    assert_eq!(
        parse_meminfo_total("MemTotal: 18446744073709551615 kB\n"),
        None
    );
    assert_eq!(parse_meminfo_total(""), None);
}

#[test]
fn parses_statm_and_stat_including_awkward_command_names() {
    assert_eq!(parse_statm_rss_pages("1000 250 30 1 0 100 0"), Some(250));
    assert_eq!(parse_statm_rss_pages("1000"), None);
    assert_eq!(parse_statm_rss_pages("1000 x"), None);
    assert_eq!(parse_statm_rss_pages(""), None);
    let stat = "4242 (my (weird) prog) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                12 3 0 0 20 0 17 0 12345 100000 250 18446744073709551615";
    assert_eq!(parse_stat_threads(stat), Some(17));
    assert_eq!(parse_stat_threads("4242 (short) S 1 2"), None);
    assert_eq!(parse_stat_threads("garbage"), None);
    assert_eq!(parse_stat_threads(""), None);
}

#[test]
fn counts_directory_entries() -> crate::TestResult {
    let dir = std::env::temp_dir().join(format!("holmes-procfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for name in ["a", "b", "c"] {
        std::fs::write(dir.join(name), b"")?;
    }
    let n = count_fd_entries(&dir);
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(n, Some(3));
    assert_eq!(count_fd_entries(Path::new("/nonexistent/holmes")), None);
    Ok(())
}

#[test]
fn reads_this_process() -> crate::TestResult {
    // At least stdout and stderr; other test threads open files meanwhile, so no
    // exact count.
    assert!(open_fds().ok_or("open_fds read nothing")? >= 2);
    assert!(rss_bytes().ok_or("rss_bytes read nothing")? > 1_000_000);
    assert!(thread_count().ok_or("thread_count read nothing")? >= 1);
    assert!(host_memory_bytes().ok_or("host_memory_bytes read nothing")? > 64 * 1024 * 1024);
    assert!(page_size() >= 4096);
    assert!(affinity_cpus().ok_or("affinity_cpus read nothing")? >= 1);
    Ok(())
}
