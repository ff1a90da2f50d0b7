use crate::Failure;
use std::process::Command;

use holmes_proto::pprof::{Profile, Sample};
use prost::Message;

use super::decode::{decode, decode_with_limit, PprofError};
use super::*;
use crate::capture::symbolize::local::LocalSymbols;
use crate::capture::symbolize::modules::Resolver;

fn frame(function: &str, file: &str, line: u32) -> Frame {
    Frame {
        function: function.into(),
        file: file.into(),
        line,
    }
}

#[inline(never)]
fn holmes_pprof_leaf_target(x: u64) -> u64 {
    let mut acc = std::hint::black_box(x);
    for i in 0..std::hint::black_box(5u64) {
        acc = acc.wrapping_mul(31).wrapping_add(i);
    }
    std::hint::black_box(acc)
}

#[inline(never)]
fn holmes_pprof_caller_target(x: u64) -> u64 {
    let mut acc = std::hint::black_box(x);
    for i in 0..std::hint::black_box(7u64) {
        acc = acc.wrapping_add(holmes_pprof_leaf_target(i));
    }
    std::hint::black_box(acc)
}

/// An address a few bytes into a function, past its prologue.
fn pc_in(f: fn(u64) -> u64) -> usize {
    f as usize + 4
}

fn sample_profile() -> ProfileBuilder {
    let mut b = ProfileBuilder::new(
        &[("samples", "count"), ("cpu", "nanoseconds")],
        ("cpu", "nanoseconds"),
        10_000_000,
    );
    b.set_time(1_700_000_000_000_000_000, 5_000_000_000);
    b.add_comment("trigger cpu abs 91.5");
    b
}

#[test]
fn round_trip_merges_values_and_keeps_labels() -> crate::TestResult {
    let mut b = sample_profile();
    let stack = [
        frame("checkout::db::query", "src/db.rs", 42),
        frame("checkout::handler::serve", "src/handler.rs", 10),
    ];
    let labels = [
        ("thread", LabelValue::Str("worker-1")),
        ("bytes", LabelValue::Num(4096, "bytes")),
    ];
    b.add_symbolic_sample(&stack, &[1, 10_000_000], &labels);
    b.add_symbolic_sample(&stack, &[2, 20_000_000], &labels);
    // Another thread: same stack, separate sample.
    b.add_symbolic_sample(
        &stack,
        &[1, 10_000_000],
        &[("thread", LabelValue::Str("worker-2"))],
    );
    // Too few values count 0, too many are ignored.
    b.add_symbolic_sample(&stack[1..], &[3], &[]);
    b.add_symbolic_sample(&stack[1..], &[1, 5, 99], &[]);

    let gz = b.encode_gzip(&mut LocalSymbols::default());
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    let p = decode(&gz)?;
    assert_eq!(
        p.sample_types,
        vec![
            ("samples".to_string(), "count".to_string()),
            ("cpu".to_string(), "nanoseconds".to_string())
        ]
    );
    assert_eq!(p.period_type, ("cpu".into(), "nanoseconds".into()));
    assert_eq!(p.period, 10_000_000);
    assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);
    assert_eq!(p.duration_nanos, 5_000_000_000);
    assert_eq!(p.comments, vec!["trigger cpu abs 91.5".to_string()]);
    assert_eq!(p.samples.len(), 3, "{p:#?}");

    let s = &p.samples[0];
    assert_eq!(
        s.stack,
        vec!["checkout::db::query", "checkout::handler::serve"]
    );
    assert_eq!(s.frames[0], stack[0]);
    assert_eq!(s.frames[1], stack[1]);
    assert_eq!(s.values, vec![3, 30_000_000]);
    assert_eq!(s.label("thread"), Some("worker-1"));
    assert_eq!(s.num_labels, vec![("bytes".into(), 4096, "bytes".into())]);

    let s = &p.samples[1];
    assert_eq!(s.values, vec![1, 10_000_000]);
    assert_eq!(s.label("thread"), Some("worker-2"));

    let s = &p.samples[2];
    assert_eq!(s.stack, vec!["checkout::handler::serve"]);
    assert_eq!(s.values, vec![4, 5]);
    assert!(s.labels.is_empty() && s.num_labels.is_empty());

    assert_eq!(p.total("samples"), 8);
    assert_eq!(p.total("cpu"), 40_000_005);
    assert_eq!(p.total("nope"), 0);
    // Plain (not gzipped) protobuf decodes too.
    let raw = sample_profile()
        .encode_proto(&mut LocalSymbols::default())
        .encode_to_vec();
    assert_eq!(decode(&raw)?.period, 10_000_000);
    Ok(())
}

#[test]
fn trimmed_leaf_frames_make_the_allocating_function_the_leaf() -> crate::TestResult {
    let mut b = ProfileBuilder::new(&[("alloc_space", "bytes")], ("space", "bytes"), 1);
    b.trim_leaf_frames(|name, _| {
        [
            "prof_backtrace_impl",
            "_rjem_je_prof_",
            "je_prof_",
            "malloc",
        ]
        .iter()
        .any(|p| name.starts_with(p))
    });
    let alloc_stack = |leaf: &str| {
        vec![
            frame("prof_backtrace_impl", "", 0),
            frame("_rjem_je_prof_tctx_create", "", 0),
            frame("malloc", "", 0),
            frame(leaf, "src/cache.rs", 7),
            frame("checkout::main", "src/main.rs", 3),
        ]
    };
    b.add_symbolic_sample(&alloc_stack("checkout::cache::grow"), &[100], &[]);
    // After trimming these two stacks are the same and merge.
    let mut shorter = alloc_stack("checkout::cache::grow");
    shorter.remove(1);
    b.add_symbolic_sample(&shorter, &[50], &[]);
    // A stack of allocator frames only is kept whole.
    b.add_symbolic_sample(&alloc_stack("checkout::x")[..3], &[1], &[]);
    // Only leaf frames are trimmed: a matching frame further out stays.
    b.add_symbolic_sample(
        &[
            frame("checkout::leaf", "src/a.rs", 1),
            frame("malloc_wrapper_user", "src/b.rs", 2),
        ],
        &[2],
        &[],
    );

    let p = decode(&b.encode_gzip(&mut LocalSymbols::default()))?;
    assert_eq!(p.samples.len(), 3, "{p:#?}");
    assert_eq!(
        p.samples[0].stack,
        vec!["checkout::cache::grow", "checkout::main"]
    );
    assert_eq!(p.samples[0].values, vec![150]);
    assert_eq!(
        p.samples[1].stack,
        vec!["prof_backtrace_impl", "_rjem_je_prof_tctx_create", "malloc"]
    );
    assert_eq!(
        p.samples[2].stack,
        vec!["checkout::leaf", "malloc_wrapper_user"]
    );
    Ok(())
}

#[test]
fn trimming_splits_a_location_with_inlined_frames() -> crate::TestResult {
    // Fake addresses with known frames: 0x1000 holds two allocator frames inlined into
    // the allocating function, 0x2000 is a return address into its caller.
    let mut sym = LocalSymbols::default();
    sym.insert_test_frames(
        0x1000,
        vec![
            frame("je_prof_backtrace", "jemalloc/prof.c", 1),
            frame("_rjem_je_prof_tctx_create", "jemalloc/prof.c", 2),
            frame("checkout::cache::grow", "src/cache.rs", 7),
        ],
    );
    sym.insert_test_frames(0x1fff, vec![frame("checkout::main", "src/main.rs", 3)]);
    let mut b = ProfileBuilder::new(&[("alloc_space", "bytes")], ("space", "bytes"), 1);
    b.trim_leaf_frames(|name, _| {
        name.starts_with("je_prof_") || name.starts_with("_rjem_je_prof_")
    });
    b.add_sample(&[0x1000, 0x2000], &[64], &[]);
    b.add_sample(&[0x1000, 0x2000], &[64], &[("k", LabelValue::Str("v"))]);
    let profile = b.encode_proto(&mut sym);
    // Two base locations plus the split one; functions deduplicated by (name, file).
    assert_eq!(profile.location.len(), 3, "{profile:#?}");
    assert_eq!(profile.function.len(), 4, "{profile:#?}");
    let split = &profile.location[2];
    assert_eq!(split.address, 0x1000);
    assert_eq!(split.line.len(), 1);
    assert_eq!(profile.location[1].address, 0x1fff);

    let p = decode(&profile.encode_to_vec())?;
    assert_eq!(p.samples.len(), 2);
    for s in &p.samples {
        assert_eq!(s.stack, vec!["checkout::cache::grow", "checkout::main"]);
        assert_eq!(
            s.frames[0],
            frame("checkout::cache::grow", "src/cache.rs", 7)
        );
        assert_eq!(s.values, vec![64]);
    }
    Ok(())
}

#[test]
fn a_real_address_symbolizes_to_its_function_and_file() -> crate::TestResult {
    let mut sym = LocalSymbols::default();
    let pc = pc_in(holmes_pprof_leaf_target);
    let frames = sym.frames(&mut Resolver::new(), pc).to_vec();
    // The function itself is the outermost frame at its address; inlined callees
    // (black_box, the loop's iterator) may come before it.
    let own = frames
        .last()
        .ok_or_else(|| format!("no frames at {pc:#x}"))?;
    assert!(
        own.function
            .ends_with("profile::tests::holmes_pprof_leaf_target"),
        "{frames:#?}"
    );
    assert!(
        own.file.ends_with("src/capture/profile/tests.rs"),
        "{frames:#?}"
    );
    assert!(own.line > 0, "{frames:#?}");
    // The same address as a return address resolves to the instruction before it,
    // still in the function.
    let as_return = sym
        .frames(&mut Resolver::new(), lookup_address(pc + 1, false))
        .to_vec();
    assert_eq!(
        as_return
            .last()
            .ok_or_else(|| format!("no frames at the return address {:#x}", pc + 1))?
            .function,
        own.function
    );

    // And through a whole profile.
    let mut b = ProfileBuilder::new(&[("samples", "count")], ("cpu", "nanoseconds"), 1);
    let stack = [pc, pc_in(holmes_pprof_caller_target) + 8];
    b.add_sample(&stack, &[1], &[]);
    b.add_sample(&stack, &[2], &[("thread", LabelValue::Str("main"))]);
    b.add_sample(&stack, &[3], &[]);
    let p = decode(&b.encode_gzip(&mut sym))?;
    assert_eq!(p.samples.len(), 2);
    assert_eq!(p.samples[0].values, vec![4]);
    let s = &p.samples[0];
    assert!(
        s.stack
            .iter()
            .any(|f| f.ends_with("holmes_pprof_leaf_target")),
        "{s:#?}"
    );
    assert!(
        s.stack
            .last()
            .ok_or_else(|| format!("an empty stack: {s:#?}"))?
            .ends_with("holmes_pprof_caller_target"),
        "{s:#?}"
    );
    Ok(())
}

#[test]
fn caps_stack_depth_and_distinct_samples() -> crate::TestResult {
    let mut b = ProfileBuilder::new(&[("samples", "count")], ("cpu", "nanoseconds"), 1);
    b.max_samples = 3;
    let deep: Vec<Frame> = (0..300).map(|i| frame(&format!("f{i}"), "", 0)).collect();
    b.add_symbolic_sample(&deep, &[1], &[]);
    for i in 0..5 {
        b.add_symbolic_sample(&[frame(&format!("g{i}"), "", 0)], &[1], &[]);
    }
    // Merging into an existing sample still works when full.
    b.add_symbolic_sample(&[frame("g0", "", 0)], &[1], &[]);
    let p = decode(&b.encode_gzip(&mut LocalSymbols::default()))?;
    assert_eq!(p.samples.len(), 3);
    assert_eq!(p.samples[0].stack.len(), MAX_STACK_DEPTH);
    assert_eq!(p.samples[1].values, vec![2]);
    assert_eq!(
        p.comments,
        vec![
            "holmes: 3 samples dropped beyond 3 distinct samples".to_string(),
            "holmes: 1 stacks truncated to 256 frames".to_string(),
        ]
    );
    Ok(())
}

#[test]
fn decode_rejects_garbage_and_oversized_profiles() -> crate::TestResult {
    assert!(matches!(
        decode(&[0x1f, 0x8b, 1, 2, 3]),
        Err(PprofError::Decompress(_))
    ));
    assert!(matches!(
        decode(&[0xff, 0xff, 0xff]),
        Err(PprofError::Malformed(_))
    ));
    let gz = sample_profile().encode_gzip(&mut LocalSymbols::default());
    let err = decode_with_limit(&gz, 16).failure()?;
    assert!(matches!(err, PprofError::TooLarge { limit: 16 }));
    assert_eq!(
        err.to_string(),
        "the profile decompresses to more than 16 bytes"
    );
    // A sample pointing at a location that does not exist.
    let bad = Profile {
        sample: vec![Sample {
            location_id: vec![7],
            value: vec![1],
            label: vec![],
        }],
        string_table: vec![String::new()],
        ..Profile::default()
    };
    let err = decode(&bad.encode_to_vec()).failure()?;
    assert_eq!(
        err.to_string(),
        "malformed profile: it refers to a missing location 7"
    );
    Ok(())
}

fn go_required() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("CI") || set("HOLMES_TEST_REQUIRE_GO")
}

fn go_pprof(
    args: &[&str],
    file: &std::path::Path,
    tmp: &std::path::Path,
) -> crate::TestResult<String> {
    let mut cmd = Command::new("go");
    cmd.arg("tool")
        .arg("pprof")
        .args(args)
        .arg(file)
        .env("PPROF_TMPDIR", tmp)
        .env("PPROF_BINARY_PATH", tmp);
    if std::env::var_os("HOME").is_none() {
        cmd.env("HOME", tmp);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("run go tool pprof: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!("$ go tool pprof {args:?}\n{stdout}{stderr}");
    Ok(stdout)
}

#[test]
fn go_tool_pprof_opens_the_profile() -> crate::TestResult {
    let go = Command::new("go").arg("version").output();
    if !go.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            !go_required(),
            "`go` is required (CI or HOLMES_TEST_REQUIRE_GO set) but not usable: {go:?}"
        );
        eprintln!("skipping go_tool_pprof_opens_the_profile: `go` is not installed");
        return Ok(());
    }

    let mut b = sample_profile();
    let stack = [
        pc_in(holmes_pprof_leaf_target),
        pc_in(holmes_pprof_caller_target) + 8,
    ];
    b.add_sample(
        &stack,
        &[7, 70_000_000],
        &[("thread", LabelValue::Str("main"))],
    );
    b.add_symbolic_sample(
        &[
            frame("checkout::db::query", "src/db.rs", 42),
            frame(
                "<checkout::handler::Serve as tower::Service>::call",
                "src/handler.rs",
                10,
            ),
        ],
        &[3, 30_000_000],
        &[("bytes", LabelValue::Num(4096, "bytes"))],
    );
    let gz = b.encode_gzip(&mut LocalSymbols::default());
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cpu.pb.gz");
    std::fs::write(&file, &gz)?;

    let top = go_pprof(&["-top", "-nodecount=20"], &file, dir.path())?;
    for name in [
        "holmes_agent::capture::profile::tests::holmes_pprof_leaf_target",
        "holmes_agent::capture::profile::tests::holmes_pprof_caller_target",
        "checkout::db::query",
        // Not cut down to `::call` by pprof's C++ name simplification.
        "<checkout::handler::Serve as tower::Service>::call",
    ] {
        assert!(top.contains(name), "{name} missing from -top:\n{top}");
    }
    assert!(top.contains("Type: cpu"), "{top}");
    assert!(!top.contains("Local symbolization failed"), "{top}");

    let traces = go_pprof(&["-traces"], &file, dir.path())?;
    for needle in [
        "holmes_agent::capture::profile::tests::holmes_pprof_leaf_target",
        "holmes_agent::capture::profile::tests::holmes_pprof_caller_target",
        "checkout::db::query",
        "thread:  main",
    ] {
        assert!(
            traces.contains(needle),
            "{needle} missing from -traces:\n{traces}"
        );
    }

    // With line granularity pprof shows the files and lines.
    let traces = go_pprof(&["-traces", "-lines"], &file, dir.path())?;
    for needle in [
        "profile/tests.rs:",
        "checkout::db::query src/db.rs:42",
        "src/handler.rs:10",
    ] {
        assert!(
            traces.contains(needle),
            "{needle} missing from -traces:\n{traces}"
        );
    }

    let lines = go_pprof(&["-top", "-lines", "-nodecount=20"], &file, dir.path())?;
    assert!(lines.contains("profile/tests.rs:"), "{lines}");
    assert!(lines.contains("src/db.rs:42"), "{lines}");
    Ok(())
}
