//! `go tool pprof` as the reader of what the collector hands out.

use std::path::Path;
use std::process::Command;

/// Whether `go` runs here; without it a test skips, unless `HOLMES_TEST_REQUIRE_GO=1`
/// (set by `deploy/dev/test.sh`) asks for it, where that fails.
pub(crate) fn go_available() -> bool {
    let ok = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("HOLMES_TEST_REQUIRE_GO").as_deref() != Ok("1"),
            "go is required (apt-get install golang-go)"
        );
        eprintln!("skipped: go is not installed");
    }
    ok
}

/// `go tool pprof -symbolize=none <args> <file>`'s output (no symbolization: what the
/// file itself says); fails the test if pprof does.
pub(crate) fn pprof(args: &[&str], file: &Path) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof", "-symbolize=none"])
        .args(args)
        .arg(file)
        .env("HOME", std::env::temp_dir())
        .env("PPROF_BINARY_PATH", "/nonexistent")
        .output()
        .expect("go tool pprof runs");
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
