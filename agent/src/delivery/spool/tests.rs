use super::*;
use crate::Failure;
use holmes_proto::{
    Metric, MetricSeries, MetricWindow, ProfileChunk, ProfileKind, Sample, TriggerEvent,
    TriggerReason,
};

fn window(ts: u64) -> AgentBody {
    AgentBody::MetricWindow(MetricWindow {
        series: vec![MetricSeries {
            metric: Metric::CpuPercent,
            samples: vec![Sample {
                unix_nanos: ts,
                value: 1.5,
            }],
        }],
    })
}

fn trigger(id: &str) -> AgentBody {
    AgentBody::Trigger(TriggerEvent {
        event_id: id.to_owned(),
        metric: Some(Metric::CpuPercent),
        reason: TriggerReason::Abs,
        current: 99.0,
        window: vec![],
        rule: None,
        unix_nanos: 7,
        planned: vec![ProfileKind::Cpu],
        request_id: None,
    })
}

fn chunks(profile_id: &str, n: u32) -> Vec<AgentBody> {
    (0..n)
        .map(|i| {
            AgentBody::ProfileChunk(ProfileChunk {
                profile_id: profile_id.to_owned(),
                event_id: "e".into(),
                kind: ProfileKind::Cpu,
                chunk_index: i,
                chunk_count: n,
                total_bytes: u64::from(n) * 100,
                data: vec![i as u8; 100],
                started_unix_nanos: 1,
                duration: Default::default(),
                error: None,
                labels: Default::default(),
                format: Default::default(),
            })
        })
        .collect()
}

fn names(dir: &Path) -> crate::TestResult<Vec<String>> {
    let mut v: Vec<String> = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?
            .file_name()
            .into_string()
            .map_err(|n| format!("a file name that is not UTF-8: {n:?}"))?;
        if name != LOCK_FILE {
            v.push(name);
        }
    }
    v.sort();
    Ok(v)
}

#[test]
fn messages_round_trip_through_files_in_write_order() -> crate::TestResult {
    let dir = tempfile::tempdir()?;
    let opened = Spool::open(dir.path())?;
    assert!(opened.found.is_empty());
    let spool = opened.spool;
    let w = spool.write(&[window(1)])?;
    let t = spool.write(&[trigger("ev-1")])?;
    let p = spool.write(&chunks("abc123", 3))?;
    assert_eq!(spool.read(&w[0].0)?, window(1));
    assert_eq!(spool.read(&t[0].0)?, trigger("ev-1"));
    assert_eq!(spool.read(&p[2].0)?, chunks("abc123", 3)[2]);
    assert_eq!(w[0].1, fs::metadata(dir.path().join(w[0].0.name()))?.len());
    drop(spool);

    let again = Spool::open(dir.path())?;
    let kinds: Vec<Kind> = again.found.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Window,
            Kind::Trigger,
            Kind::Profile,
            Kind::Profile,
            Kind::Profile
        ]
    );
    assert_eq!(again.discarded, 0);
    assert_eq!(again.found[2].profile.as_deref(), Some("abc123"));
    let next = again.spool.write(&[window(2)])?;
    assert!(
        next[0].0.name() > again.found[4].file.name(),
        "ids keep growing after a restart"
    );
    Ok(())
}

#[test]
fn a_second_process_cannot_open_a_spool_in_use() -> crate::TestResult {
    let dir = tempfile::tempdir()?;
    let first = Spool::open(dir.path())?;
    // flock locks belong to the open file description: a second open conflicts
    // within one process too.
    assert!(matches!(
        Spool::open(dir.path()),
        Err(SpoolError::Locked(_))
    ));
    drop(first);
    Spool::open(dir.path())?;
    Ok(())
}

#[test]
fn torn_and_corrupt_files_are_reported_not_panicked_on() -> crate::TestResult {
    let dir = tempfile::tempdir()?;
    let spool = Spool::open(dir.path())?.spool;
    let mut files: Vec<SpoolFile> = Vec::new();
    for i in 0..4 {
        files.push(spool.write(&[window(i)])?.remove(0).0);
    }
    let path = |f: &SpoolFile| dir.path().join(f.name());
    let full = fs::read(path(&files[0]))?;
    // Torn tail: the last bytes never reached the disk.
    fs::write(path(&files[0]), &full[..full.len() - 3])?;
    // A flipped bit.
    let mut flipped = fs::read(path(&files[1]))?;
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    fs::write(path(&files[1]), flipped)?;
    // Shorter than a header, and a zero-filled file (extents allocated, data lost).
    fs::write(path(&files[2]), b"HSP")?;
    fs::write(path(&files[3]), vec![0u8; full.len()])?;
    for (f, needle) in files.iter().zip(["torn", "checksum", "header", "magic"]) {
        match spool.read(f) {
            Err(ReadError::Corrupt { reason, .. }) => {
                assert!(reason.contains(needle), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
    // Every prefix of a valid file is refused.
    for cut in 0..full.len() {
        assert!(decode(&full[..cut]).is_err(), "prefix of {cut} bytes");
    }
    assert_eq!(decode(&full)?, window(0));
    Ok(())
}

#[test]
fn half_written_files_and_incomplete_profiles_are_deleted_and_counted_at_start() -> crate::TestResult
{
    let dir = tempfile::tempdir()?;
    let spool = Spool::open(dir.path())?.spool;
    spool.write(&[window(1)])?;
    let p = spool.write(&chunks("aaaa", 3))?;
    spool.write(&chunks("bbbb", 2))?;
    spool.write(&[trigger("ev")])?;
    drop(spool);
    // A crash between the chunks of profile aaaa, and one during a write.
    fs::remove_file(dir.path().join(p[1].0.name()))?;
    fs::write(dir.path().join(".00000000000000ff.tmp"), b"HSP1\0")?;
    fs::write(dir.path().join("0000000000000100.x.hsp"), b"?")?;

    let opened = Spool::open(dir.path())?;
    assert_eq!(
        opened.discarded,
        2 + 1 + 1,
        "two chunks, a temp file, a bad name"
    );
    let found: Vec<(Kind, Option<&str>)> = opened
        .found
        .iter()
        .map(|f| (f.kind, f.profile.as_deref()))
        .collect();
    assert_eq!(
        found,
        [
            (Kind::Window, None),
            (Kind::Profile, Some("bbbb")),
            (Kind::Profile, Some("bbbb")),
            (Kind::Trigger, None)
        ]
    );
    let left = names(dir.path())?;
    assert_eq!(left.len(), 4, "{left:?}");
    Ok(())
}

#[test]
fn removed_files_are_gone_and_missing_ones_say_so() -> crate::TestResult {
    let dir = tempfile::tempdir()?;
    let spool = Spool::open(dir.path())?.spool;
    let files: Vec<SpoolFile> = spool
        .write(&chunks("cc", 2))?
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    spool.remove(files.clone());
    assert!(names(dir.path())?.is_empty());
    assert!(spool.read(&files[0]).failure()?.is_missing());
    spool.remove(files); // twice is harmless
    Ok(())
}

#[test]
fn names_parse_back() {
    assert_eq!(
        parse_name("00000000000000ab.p.deadbeef.1.3.hsp"),
        Some(Name {
            id: 0xab,
            kind: Kind::Profile,
            chunk: Some(("deadbeef".into(), 1, 3))
        })
    );
    for bad in [
        "ab.w.hsp",
        "00000000000000ab.w.x.hsp",
        "00000000000000ab.p.id.3.3.hsp",
        "00000000000000ab.p..0.1.hsp",
        "00000000000000ab.w",
    ] {
        assert_eq!(parse_name(bad), None, "{bad}");
    }
}
