use super::*;
use crate::Failure;
use holmes_proto::{Metric, RuleConfig, Sample};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[test]
fn writes_the_trigger_context_as_json() -> crate::TestResult {
    let tmp = tempfile::tempdir()?;
    let dump = DumpFolder::chosen(tmp.path().join("dumps"), 1 << 20);
    let event = TriggerEvent {
        event_id: "0123abcd".into(),
        metric: Some(Metric::CpuPercent),
        reason: TriggerReason::Diff,
        current: 88.5,
        window: vec![
            Sample {
                unix_nanos: 1,
                value: 10.0,
            },
            Sample {
                unix_nanos: 2,
                value: 88.5,
            },
        ],
        rule: Some(RuleConfig {
            metric: Metric::CpuPercent,
            enabled: true,
            min: 10.0,
            diff: 25.0,
            abs: f64::INFINITY,
            max: 0.0,
            cooldown: Duration::from_secs(60),
            window: 2,
        }),
        unix_nanos: 2,
        planned: vec![],
        request_id: None,
    };
    let path = dump
        .write_trigger("check\"out", "i-1", &event)
        .map_err(|e| format!("write the trigger: {e}"))?;
    assert_eq!(
        path.file_name()
            .ok_or("the trigger's path has no file name")?,
        "0123abcd.json"
    );
    let text = std::fs::read_to_string(&path)?;
    assert!(text.contains("\"service\":\"check\\\"out\""), "{text}");
    assert!(text.contains("\"reason\":\"diff\""));
    assert!(text.contains(
        "\"window\":[{\"unix_nanos\":1,\"value\":10},{\"unix_nanos\":2,\"value\":88.5}]"
    ));
    assert!(text.contains("abs=off"), "{text}");
    Ok(())
}

fn mode(path: &Path) -> crate::TestResult<u32> {
    let metadata =
        std::fs::metadata(path).map_err(|e| format!("metadata of {}: {e}", path.display()))?;
    Ok(metadata.mode() & 0o777)
}

#[test]
fn the_default_folder_is_made_private_and_its_files_too() -> crate::TestResult {
    let runtime = tempfile::tempdir()?;
    let dump = DumpFolder::default_private(Some(runtime.path().to_owned()), 1 << 20);
    assert_eq!(dump.path(), runtime.path().join("holmes"));
    let file = dump
        .write_file("a.json", b"{}")
        .map_err(|e| format!("write a.json: {e}"))?;
    assert_eq!(mode(dump.path())?, 0o700);
    assert_eq!(mode(&file)?, 0o600);
    // Without a runtime folder: the temporary folder, named for the user.
    let fallback = DumpFolder::default_private(None, 1);
    assert_eq!(
        fallback.path(),
        std::env::temp_dir().join(format!("holmes-{}", euid()))
    );
    assert_eq!(
        DumpFolder::default_private(Some("relative".into()), 1).path(),
        fallback.path()
    );
    Ok(())
}

#[test]
fn a_default_folder_others_can_write_to_or_that_is_a_link_is_refused() -> crate::TestResult {
    let runtime = tempfile::tempdir()?;
    let dump = DumpFolder::default_private(Some(runtime.path().to_owned()), 1 << 20);
    // Made beforehand by someone else, open to all, as a shared /tmp allows.
    std::fs::create_dir(dump.path())?;
    std::fs::set_permissions(dump.path(), std::fs::Permissions::from_mode(0o777))?;
    let err = dump.write_file("a.json", b"{}").failure()?;
    assert!(
        matches!(err, DumpError::OpenToOthers { mode: 0o777, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("others may write to it"), "{err}");
    assert!(!dump.path().join("a.json").exists());
    // A link planted where the folder would be.
    std::fs::remove_dir(dump.path())?;
    let elsewhere = tempfile::tempdir()?;
    std::os::unix::fs::symlink(elsewhere.path(), dump.path())?;
    let err = dump.write_file("a.json", b"{}").failure()?;
    assert!(matches!(err, DumpError::NotADirectory(_)), "{err}");
    assert_eq!(std::fs::read_dir(elsewhere.path())?.count(), 0);
    // A folder the host chose is the host's business.
    let chosen = DumpFolder::chosen(elsewhere.path().to_owned(), 1 << 20);
    std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o777))?;
    chosen
        .write_file("a.json", b"{}")
        .map_err(|e| format!("write a.json to the chosen folder: {e}"))?;
    Ok(())
}

#[test]
fn a_default_folder_of_another_user_is_refused() -> crate::TestResult {
    if euid() != 0 {
        // Only root can hand a folder to another user; the mode checks above run
        // for everyone.
        eprintln!("skipped: needs root to chown");
        return Ok(());
    }
    let runtime = tempfile::tempdir()?;
    let dump = DumpFolder::default_private(Some(runtime.path().to_owned()), 1 << 20);
    std::fs::create_dir(dump.path())?;
    std::fs::set_permissions(dump.path(), std::fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::chown(dump.path(), Some(65534), Some(65534))?;
    let err = dump.write_file("a.json", b"{}").failure()?;
    assert!(
        matches!(
            err,
            DumpError::NotOurs {
                owner: 65534,
                uid: 0,
                ..
            }
        ),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_oldest_dumps_go_first_to_keep_the_folder_under_its_cap() -> crate::TestResult {
    let tmp = tempfile::tempdir()?;
    let dump = DumpFolder::chosen(tmp.path().to_owned(), 1_000);
    std::fs::write(tmp.path().join("host-notes.txt.bak"), [0u8; 5_000])?;
    let t0 = std::time::SystemTime::now() - Duration::from_secs(100);
    for (i, name) in ["a.json", "cpu.a.pb.gz", "threads.a.txt", "b.json"]
        .iter()
        .enumerate()
    {
        let path = dump
            .write_file(name, &[1u8; 300])
            .map_err(|e| format!("write {name}: {e}"))?;
        // Ages one second apart, whatever the file system's time resolution.
        let f = std::fs::File::options().write(true).open(&path)?;
        f.set_modified(t0 + Duration::from_secs(i as u64))?;
    }
    // 4 × 300 > 1 000: writing the fourth deleted the oldest.
    let names = |dir: &Path| -> crate::TestResult<Vec<String>> {
        let mut v = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?
                .file_name()
                .into_string()
                .map_err(|name| format!("a file name that is not UTF-8: {name:?}"))?;
            v.push(name);
        }
        v.sort();
        Ok(v)
    };
    assert_eq!(
        names(tmp.path())?,
        [
            "b.json",
            "cpu.a.pb.gz",
            "host-notes.txt.bak",
            "threads.a.txt"
        ]
    );
    dump.write_file("c.json", &[1u8; 650])
        .map_err(|e| format!("write c.json: {e}"))?;
    assert_eq!(
        names(tmp.path())?,
        ["b.json", "c.json", "host-notes.txt.bak"]
    );
    let err = dump.write_file("huge.pb.gz", &[0u8; 1_001]).failure()?;
    assert!(
        matches!(
            err,
            DumpError::TooLarge {
                bytes: 1_001,
                cap: 1_000,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        names(tmp.path())?.len(),
        3,
        "nothing deleted for a file that cannot fit"
    );
    Ok(())
}
