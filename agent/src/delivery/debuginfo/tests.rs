use super::*;

fn settings(enabled: bool, rate: usize) -> UploadSettings {
    let exe = crate::capture::symbolize::modules::current();
    UploadSettings {
        enabled,
        rate,
        build_id: exe.executable().map(|m| m.module.build_id.clone()),
        path: PathBuf::from("/proc/self/exe"),
    }
}

fn collect(mut rx: mpsc::Receiver<DebugInfoChunk>) -> Vec<DebugInfoChunk> {
    let mut got = Vec::new();
    while let Some(c) = rx.blocking_recv() {
        let done = c.offset + c.data.len() as u64 >= c.total_bytes;
        got.push(c);
        if done {
            break;
        }
    }
    got
}

#[test]
fn uploads_this_executables_blob_from_the_asked_offset_in_bounded_chunks() -> crate::TestResult {
    let s = settings(true, 1 << 30);
    let own = s
        .build_id
        .clone()
        .ok_or("this executable has no build id")?;
    let blob = UploadBlob::from_elf_file(&s.path)?.to_vec()?;
    let offset = blob.len() as u64 / 3;
    let (uploads, rx) = Uploads::new(s);
    uploads.request(&DebugInfoRequest {
        build_id: own.clone(),
        offset,
    });
    let chunks = collect(rx);
    let mut rebuilt = Vec::new();
    let mut at = offset;
    for c in &chunks {
        assert_eq!(c.build_id, own);
        assert_eq!(c.offset, at);
        assert_eq!(c.total_bytes, blob.len() as u64);
        assert!(!c.data.is_empty() && c.data.len() <= CHUNK_BYTES);
        at += c.data.len() as u64;
        rebuilt.extend_from_slice(&c.data);
    }
    assert!(
        rebuilt == blob[offset as usize..],
        "the chunks are the blob from the offset on"
    );
    let info = holmes_symbolize::DebugInfo::from_upload(&blob)?;
    assert_eq!(info.build_id(), Some(own.as_str()));
    Ok(())
}

#[test]
fn requests_for_other_builds_or_with_uploads_off_send_nothing() -> crate::TestResult {
    let (uploads, mut rx) = Uploads::new(settings(true, 1 << 30));
    uploads.request(&DebugInfoRequest {
        build_id: "00112233".to_owned(),
        offset: 0,
    });
    let own = settings(false, 1 << 30)
        .build_id
        .ok_or("this executable has no build id")?;
    let (off, mut rx_off) = Uploads::new(settings(false, 1 << 30));
    off.request(&DebugInfoRequest {
        build_id: own,
        offset: 0,
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(rx.try_recv().is_err());
    assert!(rx_off.try_recv().is_err());
    Ok(())
}

#[test]
fn the_upload_keeps_to_its_rate_and_stops_with_its_stream() -> crate::TestResult {
    let rate = 2 * CHUNK_BYTES;
    let s = settings(true, rate);
    let own = s
        .build_id
        .clone()
        .ok_or("this executable has no build id")?;
    let (uploads, mut rx) = Uploads::new(s);
    let started = Instant::now();
    uploads.request(&DebugInfoRequest {
        build_id: own,
        offset: 0,
    });
    // Five chunks at two chunks a second take at least two seconds (the first goes
    // out at once): a lower bound, which a slow machine cannot break.
    for _ in 0..5 {
        assert!(rx.blocking_recv().is_some());
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The stream ends: the upload thread notices and ends too (nothing to assert on
    // the thread itself; the channel just closes without a panic).
    drop(rx);
    drop(uploads);
    Ok(())
}
