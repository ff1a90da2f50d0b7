//! The workspace's own programs, for tests that run them: built by cargo into the
//! calling test's target folder and profile with the same selection the workspace's
//! test build makes, so that cargo resolves the same features and compiles nothing
//! again (a command that resolved differently would rebuild shared libraries, and the
//! running test with them).
//!
//! Test support: these functions panic, with what went wrong, when cargo cannot build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The binaries of the workspace that tests run: `holmes` (the CLI, `holmes-cli`),
/// `holmes-demo` and `holmes-soak` (this crate).
pub const BINS: [&str; 3] = ["holmes", "holmes-demo", "holmes-soak"];

/// The path of `name`, one of [`BINS`]. Cargo builds, and names in `CARGO_BIN_EXE_*`,
/// only the binaries of the package under test; so the first call has cargo build
/// these (a no-op when they are fresh), and every call returns the path cargo reported.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(build_bins);
    built
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not one of the workspace binaries {built:?}"))
        .clone()
}

/// The calling test's target folder and the profile it was built with (`debug`,
/// `release` or a custom profile's name).
pub fn target_of_this_test() -> (PathBuf, String) {
    // A test runs as <target>/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from <target>/<profile>/deps");
    let target = profile_dir.parent().expect("a target folder").to_owned();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile folder")
        .to_owned();
    (target, profile)
}

/// `cargo` run in the workspace, into `target_dir`, without the variables cargo sets
/// for a running test (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...): build scripts that
/// watch one (ring's does) would run again and everything above them be rebuilt.
pub fn cargo(target_dir: &Path) -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()));
    cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--quiet")
        .env("CARGO_TARGET_DIR", target_dir);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
            || matches!(
                name.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
            )
        {
            cargo.env_remove(&key);
        }
    }
    cargo
}

/// `cargo test --workspace --no-run`, exactly as the workspace's tests are built (same
/// target folder, profile and package selection): a narrower selection such as
/// `-p holmes-collector` unifies dependency features differently, so cargo would compile
/// a second copy of tokio, tonic, the collector and every binary while tests run (it
/// did, for four minutes of every CI run). Every package's binaries are built for its
/// own integration tests, so this reports all of [`BINS`].
fn build_bins() -> BTreeMap<String, PathBuf> {
    let (target, profile) = target_of_this_test();
    let mut cargo = cargo(&target);
    cargo.args([
        "test",
        "--workspace",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cargo.arg("--release");
        }
        name => {
            cargo.args(["--profile", name]);
        }
    }
    let out = cargo
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo could not build {BINS:?}: {cargo:?}"
    );
    let mut built = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        // The binaries themselves, not their unit tests.
        let is_bin = message.pointer("/target/kind/0").and_then(|k| k.as_str()) == Some("bin")
            && message.pointer("/profile/test").and_then(|t| t.as_bool()) == Some(false);
        let name = message.pointer("/target/name").and_then(|n| n.as_str());
        let exe = message.get("executable").and_then(|e| e.as_str());
        if let (true, Some(name), Some(exe)) = (is_bin, name, exe) {
            built.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    for bin in BINS {
        assert!(built.contains_key(bin), "cargo built no {bin}: {built:?}");
    }
    built
}
