use crate::Failure;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::limits::{detect_with, Host};
use super::mounts::{choose, Hierarchy};
use super::parse::*;
use super::*;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// 8 CPUs, 8 GiB: larger than every fixture limit.
const HOST: Host = Host {
    parallelism: Some(8),
    affinity_cpus: Some(8),
    memory_bytes: Some(8 * GIB),
};

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cgroup")
        .join(name)
}

fn fixture_texts(name: &str) -> crate::TestResult<(String, String)> {
    let dir = fixture_dir(name);
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    Ok((read("proc_self_cgroup")?, read("mountinfo")?))
}

fn fixture_with(name: &str, host: &Host) -> crate::TestResult<CgroupLimits> {
    let (proc_cgroup, mountinfo) = fixture_texts(name)?;
    Ok(detect_with(
        &proc_cgroup,
        &mountinfo,
        &fixture_dir(name),
        host,
    ))
}

fn fixture(name: &str) -> crate::TestResult<CgroupLimits> {
    fixture_with(name, &HOST)
}

fn p(s: &str) -> &Path {
    Path::new(s)
}

#[test]
fn parses_cpu_max() -> crate::TestResult {
    assert_eq!(parse_cpu_max(p("f"), "max 100000\n")?, None);
    assert_eq!(parse_cpu_max(p("f"), "max")?, None);
    assert_eq!(parse_cpu_max(p("f"), "50000 100000\n")?, Some(0.5));
    assert_eq!(parse_cpu_max(p("f"), "250000 100000")?, Some(2.5));
    assert_eq!(parse_cpu_max(p("f"), "150000")?, Some(1.5));
    for bad in [
        "",
        "\n",
        "fifty percent",
        "0 100000",
        "-1 100000",
        "max 0",
        "1 2 3",
        "max x",
    ] {
        let err = parse_cpu_max(p("/cg/cpu.max"), bad).failure()?.to_string();
        assert!(err.starts_with("/cg/cpu.max malformed: "), "{err}");
        assert!(err.contains(&format!("{:?}", bad.trim())), "{err}");
    }
    Ok(())
}

#[test]
fn parses_cfs() -> crate::TestResult {
    let (q, per) = (p("/cg/cpu.cfs_quota_us"), p("/cg/cpu.cfs_period_us"));
    assert_eq!(parse_cfs(q, "-1\n", per, "100000\n")?, None);
    assert_eq!(parse_cfs(q, "-1", per, "garbage")?, None);
    assert_eq!(parse_cfs(q, "150000\n", per, "100000\n")?, Some(1.5));
    assert_eq!(parse_cfs(q, "50000", per, "200000")?, Some(0.25));
    let err = parse_cfs(q, "-2", per, "100000").failure()?.to_string();
    assert!(
        err.contains("/cg/cpu.cfs_quota_us") && err.contains("\"-2\""),
        "{err}"
    );
    let err = parse_cfs(q, "100000", per, "0").failure()?.to_string();
    assert!(
        err.contains("/cg/cpu.cfs_period_us") && err.contains("\"0\""),
        "{err}"
    );
    assert!(parse_cfs(q, "", per, "100000").is_err());
    Ok(())
}

#[test]
fn parses_memory_limits() -> crate::TestResult {
    let f = p("/cg/memory.max");
    assert_eq!(parse_memory_max(f, "max\n")?, None);
    assert_eq!(parse_memory_max(f, "536870912\n")?, Some(512 * MIB));
    for bad in ["", "lots", "-1", "0", "1.5G"] {
        let err = parse_memory_max(f, bad).failure()?.to_string();
        assert!(
            err.contains("/cg/memory.max") && err.contains(&format!("{bad:?}")),
            "{err}"
        );
    }
    let f = p("/cg/memory.limit_in_bytes");
    assert_eq!(
        parse_memory_limit_in_bytes(f, "9223372036854771712\n")?,
        None
    );
    assert_eq!(parse_memory_limit_in_bytes(f, "9223372036854710272")?, None);
    assert_eq!(parse_memory_limit_in_bytes(f, "-1")?, None);
    assert_eq!(
        parse_memory_limit_in_bytes(f, "268435456\n")?,
        Some(256 * MIB)
    );
    assert!(parse_memory_limit_in_bytes(f, "max").is_err());
    assert!(parse_memory_limit_in_bytes(f, "18446744073709551616").is_err());
    Ok(())
}

#[test]
fn parses_throttled_time() -> crate::TestResult {
    let v2 = "usage_usec 5\nnr_throttled 2\nthrottled_usec 1500\n";
    let v1 = "nr_periods 3\nnr_throttled 2\nthrottled_time 2500000000\n";
    let f = p("/cg/cpu.stat");
    assert_eq!(
        parse_throttled(f, v2, CgroupVersion::V2)?,
        Some(Duration::from_micros(1500))
    );
    assert_eq!(
        parse_throttled(f, v1, CgroupVersion::V1)?,
        Some(Duration::from_millis(2500))
    );
    assert_eq!(parse_throttled(f, v1, CgroupVersion::V2)?, None);
    assert_eq!(parse_throttled(f, v2, CgroupVersion::V1)?, None);
    assert_eq!(
        parse_throttled(f, v1, CgroupVersion::Hybrid)?,
        Some(Duration::from_millis(2500))
    );
    assert_eq!(
        parse_throttled(f, "usage_usec 5\n", CgroupVersion::V2)?,
        None
    );
    assert_eq!(parse_throttled(f, "", CgroupVersion::V2)?, None);
    let err = parse_throttled(f, "throttled_usec lots\n", CgroupVersion::V2)
        .failure()?
        .to_string();
    assert!(
        err.contains("/cg/cpu.stat") && err.contains("throttled_usec lots"),
        "{err}"
    );
    assert!(parse_throttled(f, "throttled_time\n", CgroupVersion::V1).is_err());
    Ok(())
}

#[test]
fn parses_proc_cgroup_and_mountinfo() {
    let lines = parse_proc_cgroup("11:cpu,cpuacct:/a/b\n1:name=systemd:/\n0::/x:y\nbad\n");
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].controllers, ["cpu", "cpuacct"]);
    assert!(!lines[0].unified);
    assert!(lines[2].unified);
    assert_eq!(lines[2].path, "/x:y");

    let mounts = parse_mountinfo(
        "36 35 0:32 /docker/ab /sys/fs/cgroup/cpu,cpuacct ro,nosuid master:17 shared:3 - cgroup cgroup rw,cpu,cpuacct\n\
         41 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n\
         42 31 0:39 / /no/separator rw cgroup2 cgroup2 rw\n\
         short line\n",
    );
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[0].root, "/docker/ab");
    assert_eq!(mounts[0].mount_point, "/sys/fs/cgroup/cpu,cpuacct");
    assert_eq!(mounts[0].fstype, "cgroup");
    assert_eq!(mounts[0].super_options, ["rw", "cpu", "cpuacct"]);
    assert_eq!(mounts[1].mount_point, "/mnt/my cgroups");
    assert_eq!(mounts[1].fstype, "cgroup2");
    assert_eq!(unescape_octal("a\\134b\\011c\\9zz\\"), "a\\b\tc\\9zz\\");
}

#[test]
fn v1_takes_the_smallest_limit_up_the_tree() -> crate::TestResult {
    let l = fixture("v1")?;
    assert_eq!(l.version, CgroupVersion::V1);
    // ctr 1.5 cores, pod 4 cores, above unlimited.
    assert_eq!(l.cpu_cores, Some(1.5));
    // ctr 256 MiB, pod 16 GiB, above 9223372036854771712.
    assert_eq!(l.memory_bytes, Some(256 * MIB));
    let ctr = "sys/fs/cgroup/cpu,cpuacct/kubepods/burstable/pod1234/ctr/cpu.stat";
    assert_eq!(l.cpu_stat_path, Some(fixture_dir("v1").join(ctr)));
    assert_eq!(l.cpu_stat_version, CgroupVersion::V1);
    assert_eq!(l.read_throttled(), Some(Duration::from_millis(2500)));
    assert!(l.notes.is_empty(), "{:?}", l.notes);
    Ok(())
}

#[test]
fn v2_reads_cpu_max_and_memory_max() -> crate::TestResult {
    let l = fixture("v2")?;
    assert_eq!(l.version, CgroupVersion::V2);
    assert_eq!(l.cpu_cores, Some(0.5));
    assert_eq!(l.memory_bytes, Some(512 * MIB));
    assert_eq!(l.cpu_stat_version, CgroupVersion::V2);
    assert_eq!(l.read_throttled(), Some(Duration::from_micros(1_234_567)));
    assert!(l.notes.is_empty(), "{:?}", l.notes);
    Ok(())
}

#[test]
fn hybrid_uses_v2_for_the_controllers_it_has_and_v1_for_the_rest() -> crate::TestResult {
    let l = fixture("hybrid")?;
    assert_eq!(l.version, CgroupVersion::Hybrid);
    // cpu is not in unified/.../cgroup.controllers: v1 cpu,cpuacct.
    assert_eq!(l.cpu_cores, Some(2.0));
    // memory is: unified/batch/job42/memory.max.
    assert_eq!(l.memory_bytes, Some(GIB));
    let stat = "sys/fs/cgroup/cpu,cpuacct/batch/job42/cpu.stat";
    assert_eq!(l.cpu_stat_path, Some(fixture_dir("hybrid").join(stat)));
    assert_eq!(l.read_throttled(), Some(Duration::from_millis(42)));
    assert!(l.notes.is_empty(), "{:?}", l.notes);
    Ok(())
}

#[test]
fn no_limit_falls_back_to_the_host_with_notes() -> crate::TestResult {
    let host = Host {
        parallelism: Some(3),
        affinity_cpus: Some(3),
        memory_bytes: Some(4 * GIB),
    };
    let l = fixture_with("nolimit", &host)?;
    assert_eq!(l.version, CgroupVersion::V2);
    assert_eq!(l.cpu_cores, Some(3.0));
    assert_eq!(l.memory_bytes, Some(4 * GIB));
    assert_eq!(l.read_throttled(), Some(Duration::ZERO));
    assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
    assert!(
        l.notes[0].starts_with("cpu quota: none set in cpu.max of "),
        "{}",
        l.notes[0]
    );
    assert!(
        l.notes[0].ends_with("; using 3 cores (available parallelism)"),
        "{}",
        l.notes[0]
    );
    assert!(
        l.notes[1].starts_with("memory limit: none set in memory.max of "),
        "{}",
        l.notes[1]
    );
    assert!(l.notes[1].ends_with("using host RAM, 4294967296 bytes (/proc/meminfo MemTotal)"));

    // Nothing known about the host either: None plus a note, still no panic.
    let unknown = Host {
        parallelism: None,
        affinity_cpus: None,
        memory_bytes: None,
    };
    let l = fixture_with("nolimit", &unknown)?;
    assert_eq!((l.cpu_cores, l.memory_bytes), (None, None));
    assert!(
        l.notes[0].ends_with("cpu cores not reported"),
        "{:?}",
        l.notes
    );
    assert!(
        l.notes[1].ends_with("memory limit not reported"),
        "{:?}",
        l.notes
    );
    Ok(())
}

#[test]
fn malformed_files_fall_back_and_name_the_file_and_value() -> crate::TestResult {
    let host = Host {
        parallelism: Some(3),
        affinity_cpus: Some(3),
        memory_bytes: Some(4 * GIB),
    };
    let l = fixture_with("malformed", &host)?;
    assert_eq!(l.cpu_cores, Some(3.0));
    assert_eq!(l.memory_bytes, Some(4 * GIB));
    assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
    let app = fixture_dir("malformed").join("sys/fs/cgroup/app");
    assert_eq!(
        l.notes[0],
        format!(
            "cpu quota: {} malformed: \"fifty percent\" (quota is neither \"max\" nor a positive integer); using 3 cores (available parallelism)",
            app.join("cpu.max").display()
        )
    );
    assert_eq!(
        l.notes[1],
        format!(
            "memory limit: {} malformed: \"lots\" (neither \"max\" nor a positive integer); using host RAM, 4294967296 bytes (/proc/meminfo MemTotal)",
            app.join("memory.max").display()
        )
    );
    // The cpu.stat there is fine.
    assert_eq!(l.read_throttled(), Some(Duration::from_micros(7)));
    Ok(())
}

#[test]
fn nested_limits_apply_to_an_unlimited_child() -> crate::TestResult {
    let l = fixture("nested")?;
    // app: max; team: 0.25 cores, 128 MiB; tenant: 2 cores, 1 GiB.
    assert_eq!(l.cpu_cores, Some(0.25));
    assert_eq!(l.memory_bytes, Some(128 * MIB));
    let team = fixture_dir("nested").join("sys/fs/cgroup/tenant/team/cpu.stat");
    assert_eq!(l.cpu_stat_path, Some(team));
    assert_eq!(l.read_throttled(), Some(Duration::from_secs(5)));
    assert!(l.notes.is_empty(), "{:?}", l.notes);
    Ok(())
}

#[test]
fn container_root_maps_the_process_path_to_the_mount_point() -> crate::TestResult {
    let l = fixture("container-root")?;
    assert_eq!(l.version, CgroupVersion::V1);
    assert_eq!(l.cpu_cores, Some(3.0));
    assert_eq!(l.memory_bytes, Some(2 * GIB));
    let stat = fixture_dir("container-root").join("sys/fs/cgroup/cpu,cpuacct/cpu.stat");
    assert_eq!(l.cpu_stat_path, Some(stat));
    assert!(l.notes.is_empty(), "{:?}", l.notes);

    // A sub-cgroup of the container's root: its ancestors lead back to the limits.
    let (proc_cgroup, mountinfo) = fixture_texts("container-root")?;
    let sub = proc_cgroup.replace("/docker/0123abcd", "/docker/0123abcd/worker");
    let l = detect_with(&sub, &mountinfo, &fixture_dir("container-root"), &HOST);
    assert_eq!((l.cpu_cores, l.memory_bytes), (Some(3.0), Some(2 * GIB)));

    // A path outside the mount's root (or escaping it): the mount point, with a note.
    for outside in ["/", "/docker/0123abcd/../other"] {
        let odd = proc_cgroup.replace("/docker/0123abcd", outside);
        let l = detect_with(&odd, &mountinfo, &fixture_dir("container-root"), &HOST);
        assert_eq!((l.cpu_cores, l.memory_bytes), (Some(3.0), Some(2 * GIB)));
        assert!(
            l.notes
                .iter()
                .any(|n| n.contains("is not under the root \"/docker/0123abcd\"")
                    && n.ends_with("using the mount point")),
            "{:?}",
            l.notes
        );
    }
    Ok(())
}

#[test]
fn limits_above_the_host_are_capped_with_a_note() -> crate::TestResult {
    let small = Host {
        parallelism: Some(1),
        affinity_cpus: Some(1),
        memory_bytes: Some(128 * MIB),
    };
    let l = fixture_with("v1", &small)?;
    assert_eq!(l.cpu_cores, Some(1.0));
    assert_eq!(l.memory_bytes, Some(128 * MIB));
    assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
    assert!(l.notes[0].contains("1.5 cores in") && l.notes[0].ends_with("using 1 cores"));
    assert!(l.notes[1].contains("268435456 bytes in") && l.notes[1].ends_with("using host RAM"));
    Ok(())
}

#[test]
fn v2_is_preferred_when_it_lists_the_controller() -> crate::TestResult {
    let v1 = Hierarchy {
        version: CgroupVersion::V1,
        mount: "/sys/fs/cgroup/memory".into(),
        dir: "/sys/fs/cgroup/memory".into(),
    };
    let v2 = Hierarchy {
        version: CgroupVersion::V2,
        mount: "/sys/fs/cgroup/unified".into(),
        dir: "/sys/fs/cgroup/unified".into(),
    };
    let listed = Ok(("c".into(), vec!["memory".to_owned()]));
    let unlisted = Ok(("c".into(), vec!["hugetlb".to_owned()]));
    let unreadable = Err(malformed(p("c"), "", "test"));
    let mut notes = Vec::new();
    let pick = |ctrls, notes: &mut Vec<String>| {
        choose("memory", Some(&v1), Some(&v2), Some(ctrls), notes).map(|h| h.version)
    };
    assert_eq!(pick(&listed, &mut notes)?, CgroupVersion::V2);
    assert_eq!(pick(&unlisted, &mut notes)?, CgroupVersion::V1);
    assert_eq!(pick(&unreadable, &mut notes)?, CgroupVersion::V1);
    assert!(notes.is_empty());
    // v2 only, not listed: no source, and why.
    let err = choose("memory", None, Some(&v2), Some(&unlisted), &mut notes).failure()?;
    assert_eq!(err, "the memory controller is not enabled in c");
    // v2 only, list unreadable: try v2, with a note.
    let h = choose("memory", None, Some(&v2), Some(&unreadable), &mut notes)?;
    assert_eq!(h.version, CgroupVersion::V2);
    assert_eq!(notes.len(), 1);
    Ok(())
}

#[test]
fn no_cgroups_at_all_still_yields_numbers() -> crate::TestResult {
    let l = detect_with("", "", Path::new("/nonexistent"), &HOST);
    assert_eq!(l.version, CgroupVersion::None);
    assert_eq!((l.cpu_cores, l.memory_bytes), (Some(8.0), Some(8 * GIB)));
    assert_eq!(l.cpu_stat_path, None);
    assert_eq!(l.read_throttled(), None);
    assert_eq!(l.notes.len(), 3, "{:?}", l.notes);
    // Fixture texts whose tree is missing: every file absent, still numbers.
    let (proc_cgroup, mountinfo) = fixture_texts("v2")?;
    let l = detect_with(&proc_cgroup, &mountinfo, Path::new("/nonexistent"), &HOST);
    assert_eq!((l.cpu_cores, l.memory_bytes), (Some(8.0), Some(8 * GIB)));
    assert!(l.notes.iter().all(|n| !n.is_empty()));
    Ok(())
}

#[test]
fn detect_in_reads_fixtures_with_this_hosts_fallbacks() -> crate::TestResult {
    let (proc_cgroup, mountinfo) = fixture_texts("v2")?;
    let l = detect_in(&proc_cgroup, &mountinfo, &fixture_dir("v2"));
    assert_eq!(l.cpu_cores, Some(0.5));
    assert_eq!(l.memory_bytes, Some(512 * MIB));
    Ok(())
}

#[test]
fn detects_this_machine() {
    let l = detect();
    eprintln!("cgroup detect() on this machine: {l:#?}");
    assert!(l.cpu_cores.is_some_and(|c| c > 0.0), "{l:?}");
    assert!(l.memory_bytes.is_some_and(|b| b > 0), "{l:?}");
}
