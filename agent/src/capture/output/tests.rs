use std::collections::BTreeMap;
use std::time::Duration;

use holmes_proto::native::NativeProfile;
use holmes_proto::ProfileKind;

use super::*;
use crate::capture::profile::ProfileBuilder;
use crate::config::HolmesBuilder;

#[inline(never)]
fn output_test_walk() -> Vec<usize> {
    let mut out = [0usize; 16];
    crate::unwind::init();
    let n = crate::unwind::walk_here(&mut out);
    out[..n].to_vec()
}

fn captured(stack: &[usize]) -> Captured {
    let mut b = ProfileBuilder::new(&[("threads", "count")], ("threads", "count"), 1);
    b.add_sample(stack, &[1], &[]);
    Captured {
        kind: ProfileKind::Threads,
        started_unix_nanos: 1_700_000_000_000_000_000,
        duration: Duration::from_millis(3),
        labels: BTreeMap::new(),
        result: Ok(b),
        text: None,
    }
}

#[test]
fn with_a_collector_profiles_go_native_and_no_debug_info_is_loaded() -> crate::TestResult {
    let cfg = HolmesBuilder::default()
        .service("t")
        .collector("http://127.0.0.1:9")
        .resolve()
        .map_err(|e| format!("the configuration: {e}"))?;
    let delivery = Delivery::new(1 << 20);
    let symbols = LocalSymbolizer::default();
    let stack = output_test_walk();
    let made = deliver(
        &cfg,
        cfg.dump.as_ref(),
        &delivery,
        &symbols,
        "ev1",
        &captured(&stack),
    );
    assert!(
        !symbols.is_loaded(),
        "no symbols for the collector's profiles"
    );
    let queued = delivery.pending_after(0, 16);
    assert_eq!(queued.len(), 1);
    let holmes_proto::AgentBody::ProfileChunk(chunk) = &queued[0].body else {
        panic!("{queued:?}");
    };
    assert_eq!(chunk.format, ProfileFormat::Native);
    assert_eq!((chunk.chunk_index, chunk.chunk_count), (0, 1));
    assert_eq!(chunk.event_id, "ev1");
    assert_eq!(made, Ok(chunk.data.len()), "the size of what was queued");
    let profile = NativeProfile::decode(&chunk.data)
        .map_err(|e| format!("decode the queued profile: {e}"))?;
    assert_eq!(profile.samples.len(), 1);
    let exe = crate::capture::symbolize::modules::current()
        .executable()
        .ok_or("the executable is not among the modules")?
        .module
        .clone();
    assert!(profile.modules.contains(&exe), "{profile:?}");
    Ok(())
}

#[test]
fn without_one_dumps_are_symbolized_pprof_and_the_symbols_are_dropped_when_idle(
) -> crate::TestResult {
    let dir = tempfile::tempdir()?;
    let cfg = HolmesBuilder::default()
        .service("t")
        .dump_dir(dir.path())
        .resolve()
        .map_err(|e| format!("the configuration: {e}"))?;
    let delivery = Delivery::new(1 << 20);
    let symbols = LocalSymbolizer::default();
    let made = deliver(
        &cfg,
        cfg.dump.as_ref(),
        &delivery,
        &symbols,
        "ev2",
        &captured(&output_test_walk()),
    );
    assert!(delivery.pending_after(0, 16).is_empty());
    let file = std::fs::read_dir(dir.path())?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(".pb.gz"))
        .ok_or("no .pb.gz file in the dump folder")?;
    let written = std::fs::read(file.path())?;
    assert_eq!(made, Ok(written.len()), "the size of what was written");
    let profile = crate::capture::profile::decode::decode(&std::fs::read(file.path())?)?;
    assert!(
        profile.samples[0]
            .stack
            .iter()
            .any(|f| f.ends_with("output::tests::output_test_walk")),
        "{profile:#?}"
    );
    assert!(symbols.is_loaded());
    assert!(symbols.release_if_idle(Duration::ZERO));
    assert!(!symbols.is_loaded());
    Ok(())
}

#[test]
fn file_times_are_compact() {
    assert_eq!(compact_time(1_500_000_000), "19700101T000001.500Z");
}
