//! The agent with a collector (a real gRPC one on loopback, `support::collector`):
//! profiles arrive as the agent's own native profiles — module and offset, no debug info
//! loaded in the process — that the executable's own debug info names; and the
//! executable's debug info is uploaded when the collector asks for it.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use holmes_agent::{Holmes, Metric, ProfileKind, Rule};
use holmes_proto::native::{Location, NativeProfile};
use holmes_proto::{
    AgentBody, CollectorMessage, DebugInfoChunk, DebugInfoRequest, Hello, ProfileChunk,
    ProfileFormat,
};
use holmes_symbolize::DebugInfo;
use support::collector::TestCollector;

const WAIT: Duration = Duration::from_secs(120);

fn agent(collector: &TestCollector, service: &str) -> holmes_agent::HolmesBuilder {
    let mut b = Holmes::builder()
        .service(service)
        .collector(collector.url())
        .collect_interval(Duration::from_millis(100))
        .send_interval(Duration::from_millis(100))
        .memory_fast_interval(None)
        .cpu_profile_duration(Duration::from_millis(300));
    for m in [
        Metric::CpuPercent,
        Metric::MemoryPercent,
        Metric::Threads,
        Metric::Tasks,
        Metric::HeapPercent,
    ] {
        b = b.rule(m, Rule::new().enabled(false));
    }
    b
}

fn hello(collector: &TestCollector) -> Hello {
    collector.wait_for_within(WAIT, "the agent's hello", |m| {
        m.iter()
            .any(|(_, m)| matches!(m.body, AgentBody::Hello(_)))
            .then_some(())
    });
    collector
        .bodies(|b| match b {
            AgentBody::Hello(h) => Some(h.clone()),
            _ => None,
        })
        .remove(0)
}

/// Each profile's chunks, joined, by profile id.
fn profiles(collector: &TestCollector) -> BTreeMap<String, (ProfileChunk, Vec<u8>)> {
    let mut out: BTreeMap<String, (ProfileChunk, Vec<u8>)> = BTreeMap::new();
    for c in collector.bodies(|b| match b {
        AgentBody::ProfileChunk(c) => Some(c.clone()),
        _ => None,
    }) {
        let entry = out
            .entry(c.profile_id.clone())
            .or_insert_with(|| (c.clone(), Vec::new()));
        entry.1.extend_from_slice(&c.data);
    }
    out
}

#[inline(never)]
fn parked_for_the_collector_test(gate: &Barrier, release: &Barrier) {
    gate.wait();
    release.wait();
}

#[test]
fn profiles_arrive_as_module_offsets_that_the_executables_debug_info_names() {
    let collector = TestCollector::start();
    let h = agent(&collector, "native-test").start().unwrap();
    let gate = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let parked = {
        let (gate, release) = (Arc::clone(&gate), Arc::clone(&release));
        std::thread::spawn(move || parked_for_the_collector_test(&gate, &release))
    };
    gate.wait();

    let hello = hello(&collector);
    let exe = hello
        .executable
        .clone()
        .expect("hello names the executable");
    let own_name = std::env::current_exe().unwrap();
    assert_eq!(exe.name, own_name.file_name().unwrap().to_string_lossy());
    let info = DebugInfo::from_elf_file(&own_name).unwrap();
    assert_eq!(Some(exe.build_id.as_str()), info.build_id());
    assert!(hello.debuginfo_upload);

    h.capture_now(&[ProfileKind::Threads, ProfileKind::Cpu])
        .unwrap();
    collector.wait_for_within(WAIT, "a threads and two cpu profiles", |_| {
        (profiles(&collector)
            .values()
            .filter(|(c, _)| c.kind == ProfileKind::Cpu)
            .count()
            >= 2
            && profiles(&collector)
                .values()
                .any(|(c, _)| c.kind == ProfileKind::Threads))
        .then_some(())
    });
    release.wait();
    parked.join().unwrap();
    h.stop();

    let mut named = Vec::new();
    for (chunk, data) in profiles(&collector).values() {
        assert_eq!(chunk.format, ProfileFormat::Native, "{chunk:?}");
        assert_eq!(chunk.error, None);
        let p = NativeProfile::decode(data).unwrap();
        // The threads' stacks run through the executable (an idle process's CPU profiles
        // may hold a few samples in libc, or none).
        if chunk.kind == ProfileKind::Threads {
            assert!(p.modules.contains(&exe), "{:?}", p.modules);
        }
        // Never an absolute address: code is a module offset, or unknown.
        for location in &p.locations {
            if let Location::Symbolic(frames) = location {
                assert_eq!(frames[0].function, "[unknown]", "{location:?}");
            }
        }
        for location in &p.locations {
            if let Location::Native { module, offset } = location {
                if p.modules[*module as usize] == exe {
                    // The collector's side: the module's own debug info names it.
                    if let Some(f) = info.frames(*offset).last() {
                        named.push(f.function.clone());
                    }
                }
            }
        }
    }
    assert!(
        named
            .iter()
            .any(|n| n == "collector::parked_for_the_collector_test"),
        "{named:?}"
    );
}

#[test]
fn debug_info_is_uploaded_when_asked_from_the_offset_asked() {
    let collector = TestCollector::start();
    // No gzip on the wire: the test binary's debug info is tens of MiB, and what is
    // tested is the upload, not the compression.
    let h = agent(&collector, "upload-test")
        .debuginfo_rate(256 << 20)
        .compression(holmes_agent::Compression::None)
        .start()
        .unwrap();
    let exe = hello(&collector).executable.unwrap();
    let chunks = |c: &TestCollector| -> Vec<DebugInfoChunk> {
        c.bodies(|b| match b {
            AgentBody::DebugInfoChunk(c) => Some(c.clone()),
            _ => None,
        })
    };
    // Someone else's build: nothing comes.
    assert_eq!(
        collector.send(&CollectorMessage::DebugInfoRequest(DebugInfoRequest {
            build_id: "0123456789abcdef".into(),
            offset: 0,
        })),
        1
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(chunks(&collector).is_empty());

    collector.send(&CollectorMessage::DebugInfoRequest(DebugInfoRequest {
        build_id: exe.build_id.clone(),
        offset: 0,
    }));
    let done = |all: &[DebugInfoChunk], from: u64| {
        all.iter()
            .any(|c| c.offset >= from && c.offset + c.data.len() as u64 == c.total_bytes)
    };
    collector.wait_for_within(WAIT, "the whole upload", |_| {
        done(&chunks(&collector), 0).then_some(())
    });
    let first = chunks(&collector);
    let total = first[0].total_bytes;
    let mut blob = Vec::new();
    for c in &first {
        assert_eq!(c.build_id, exe.build_id);
        assert_eq!(c.offset, blob.len() as u64, "chunks in order, none missing");
        assert!(c.data.len() <= 1 << 20);
        blob.extend_from_slice(&c.data);
    }
    assert_eq!(blob.len() as u64, total);
    let uploaded = DebugInfo::from_upload(&blob).unwrap();
    assert_eq!(uploaded.build_id(), Some(exe.build_id.as_str()));
    let local = DebugInfo::from_elf_file(&std::env::current_exe().unwrap()).unwrap();
    assert_eq!(uploaded.program_crate(), local.program_crate());

    // Asked again from the middle (the collector had the first part): from there on.
    let middle = total / 2;
    collector.send(&CollectorMessage::DebugInfoRequest(DebugInfoRequest {
        build_id: exe.build_id.clone(),
        offset: middle,
    }));
    collector.wait_for_within(WAIT, "the upload's second half", |_| {
        (chunks(&collector).len() > first.len() && done(&chunks(&collector)[first.len()..], middle))
            .then_some(())
    });
    let again = &chunks(&collector)[first.len()..];
    assert_eq!(again[0].offset, middle);
    let rest: Vec<u8> = again.iter().flat_map(|c| c.data.clone()).collect();
    assert!(rest == blob[middle as usize..]);
    h.stop();
}

#[test]
fn with_uploads_off_the_hello_says_so_and_requests_are_ignored() {
    let collector = TestCollector::start();
    let h = agent(&collector, "upload-off-test")
        .debuginfo_upload(false)
        .start()
        .unwrap();
    let hello = hello(&collector);
    assert!(!hello.debuginfo_upload);
    collector.send(&CollectorMessage::DebugInfoRequest(DebugInfoRequest {
        build_id: hello.executable.unwrap().build_id,
        offset: 0,
    }));
    std::thread::sleep(Duration::from_millis(500));
    assert!(collector
        .bodies(|b| matches!(b, AgentBody::DebugInfoChunk(_)).then_some(()))
        .is_empty());
    h.stop();
}
