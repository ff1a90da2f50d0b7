//! holmes-symbolize against a real program built the way the agent's README tells hosts
//! to build (`tests/fixtures/bar_truth`: release, `debug = "line-tables-only"`, frame
//! pointers), with binutils (`nm`, `addr2line`, `objcopy`, `strip`, `readelf`) as the
//! reference and as the "CI" that strips binaries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use holmes_symbolize::{
    crate_of_path, DebugInfo, Frame, LoadError, UploadBlob, UPLOAD_HEADER_BYTES,
};

/// The fixture's executable, built once per test run.
fn fixture() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let manifest =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bar_truth/Cargo.toml");
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bar_truth");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--locked", "--offline", "--quiet"])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .env("RUSTFLAGS", "-C force-frame-pointers=yes")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "the fixture builds");
        target.join("release/bar_truth")
    })
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} runs (binutils): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Start and size of the function whose mangled name contains `needle`, from `nm -S`.
fn function_range(binary: &Path, needle: &str) -> (u64, u64) {
    let listing = run("nm", &["-S", binary.to_str().unwrap()]);
    let line = listing
        .lines()
        .find(|l| l.contains(needle) && l.split_whitespace().count() == 4)
        .unwrap_or_else(|| panic!("{needle} in nm's listing"));
    let mut parts = line.split_whitespace();
    let start = u64::from_str_radix(parts.next().unwrap(), 16).unwrap();
    let size = u64::from_str_radix(parts.next().unwrap(), 16).unwrap();
    (start, size)
}

/// Every address of `bar_spin` and `main`.
fn addresses(binary: &Path) -> Vec<u64> {
    let mut all = Vec::new();
    for f in ["8bar_spin", "9bar_truth4main"] {
        let (start, size) = function_range(binary, f);
        all.extend(start..start + size);
    }
    all
}

/// binutils' `addr2line -a -f -i`: per address, (function, file, line) innermost first.
fn binutils_frames(binary: &Path, addrs: &[u64]) -> Vec<Vec<(String, String, u32)>> {
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut child = Command::new("addr2line")
        .args(["-a", "-f", "-i", "-e", binary.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("addr2line runs (binutils)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut blocks: Vec<Vec<(String, String, u32)>> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("0x") {
            blocks.push(Vec::new());
            continue;
        }
        let location = lines.next().unwrap_or("??:0");
        let location = location.split(" (discriminator").next().unwrap();
        let (file, line_no) = location.rsplit_once(':').unwrap();
        let file = if file == "??" { "" } else { file };
        blocks.last_mut().unwrap().push((
            line.to_owned(),
            file.to_owned(),
            line_no.parse().unwrap_or(0),
        ));
    }
    assert_eq!(blocks.len(), addrs.len());
    blocks
}

fn names(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(|f| f.function.as_str()).collect()
}

#[test]
fn line_tables_only_gives_full_paths_for_outer_and_inlined_frames() {
    let binary = fixture();
    let info = DebugInfo::from_elf_file(binary).unwrap();
    assert!(info.has_dwarf() && info.has_symbols(), "{info:?}");
    assert_eq!(info.program_crate(), Some("bar_truth"));
    let readelf = run("readelf", &["-n", binary.to_str().unwrap()]);
    let build_id = readelf
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap();
    assert_eq!(info.build_id(), Some(build_id));

    let addrs = addresses(binary);
    let reference = binutils_frames(binary, &addrs);
    let (mut saw_mix, mut saw_core, mut compared) = (false, false, 0);
    for (addr, theirs) in addrs.iter().zip(&reference) {
        let ours = info.frames(*addr);
        // Same inline chain, same files and lines as binutils.
        let ours_loc: Vec<(&str, u32)> = ours.iter().map(|f| (f.file.as_str(), f.line)).collect();
        let theirs_loc: Vec<(&str, u32)> =
            theirs.iter().map(|(_, f, l)| (f.as_str(), *l)).collect();
        assert_eq!(ours_loc, theirs_loc, "at {addr:#x}: {ours:#?}");
        // The outer function's full path from the symbol table.
        let outer = ours.last().unwrap();
        assert!(
            outer.function == "bar_truth::bar_spin" || outer.function == "bar_truth::main",
            "at {addr:#x}: {ours:#?}"
        );
        // Inlined frames: binutils' short DWARF name with the crate of the frame's file
        // in front (where binutils names one at all: for some, the innermost always, it
        // prints the outer symbol instead).
        for (i, frame) in ours.iter().enumerate().take(ours.len() - 1) {
            let krate = crate_of_path(&frame.file, Some("bar_truth")).unwrap();
            assert!(
                frame.function.starts_with(&format!("{krate}::")),
                "at {addr:#x}: {ours:#?}"
            );
            if !theirs[i].0.starts_with("_ZN") {
                assert_eq!(
                    frame.function,
                    format!("{krate}::{}", theirs[i].0),
                    "at {addr:#x}"
                );
                compared += 1;
            }
            saw_mix |= frame.function == "bar_truth::mix" && frame.file.ends_with("src/main.rs");
            saw_core |=
                frame.function.starts_with("core::") && frame.file.contains("/library/core/");
        }
    }
    assert!(
        saw_mix && saw_core,
        "an address inside mix, and one inlined from core"
    );
    assert!(
        compared >= 20,
        "only {compared} inlined names compared with binutils'"
    );
}

#[test]
fn a_stripped_binary_is_named_from_its_separate_debug_file() {
    let binary = fixture();
    let dir = tempfile::tempdir().unwrap();
    let debug = dir.path().join("bar_truth.debug");
    let stripped = dir.path().join("bar_truth");
    let (b, d, s) = (
        binary.to_str().unwrap(),
        debug.to_str().unwrap(),
        stripped.to_str().unwrap(),
    );
    run("objcopy", &["--only-keep-debug", b, d]);
    run("strip", &["--strip-all", b, "-o", s]);

    assert!(!UploadBlob::from_elf_file(&stripped)
        .unwrap()
        .has_debug_info());
    assert!(UploadBlob::from_elf_file(&debug).unwrap().has_debug_info());
    assert!(UploadBlob::from_elf_file(binary).unwrap().has_debug_info());
    let bare = DebugInfo::from_elf_file(&stripped).unwrap();
    let separate = DebugInfo::from_elf_file(&debug).unwrap();
    let full = DebugInfo::from_elf_file(binary).unwrap();
    assert!(!bare.has_dwarf());
    assert!(separate.has_dwarf() && separate.has_symbols());
    assert_eq!(bare.build_id(), full.build_id());
    assert_eq!(separate.build_id(), full.build_id());
    let (spin, _) = function_range(binary, "8bar_spin");
    // bar_spin is a local symbol: the stripped binary knows nothing about it.
    assert!(
        bare.frames(spin + 0x20).is_empty(),
        "{:?}",
        bare.frames(spin + 0x20)
    );
    for addr in addresses(binary) {
        assert_eq!(separate.frames(addr), full.frames(addr), "at {addr:#x}");
    }
    // What CI would upload for the stripped binary: its debug file's blob, matched by
    // build id.
    let blob = UploadBlob::from_elf_file(&debug).unwrap();
    assert_eq!(blob.build_id(), bare.build_id());
    let uploaded = DebugInfo::from_upload(&blob.to_vec().unwrap()).unwrap();
    assert_eq!(
        names(&uploaded.frames(spin + 0x20)),
        names(&full.frames(spin + 0x20))
    );
}

#[test]
fn an_upload_blob_round_trips_and_binutils_reads_it() {
    let binary = fixture();
    let blob = UploadBlob::from_elf_file(binary).unwrap();
    let bytes = blob.to_vec().unwrap();
    assert_eq!(bytes.len() as u64, blob.len());
    assert_eq!(&bytes[..9], b"HOLMESDI\x01");
    let file_len = std::fs::metadata(binary).unwrap().len();
    assert!(blob.len() < file_len, "{} of {file_len} bytes", blob.len());

    // Read in pieces from anywhere, as an upload resumes.
    for chunk in [1usize, 7, 4096, 65_536, 1 << 20] {
        let mut offset = 0u64;
        let mut rebuilt = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = blob.read_at(offset, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            rebuilt.extend_from_slice(&buf[..n]);
            offset += n as u64;
            if chunk == 1 && offset > 50_000 {
                // Byte by byte is slow; the rest in one go.
                let mut rest = vec![0u8; (blob.len() - offset) as usize];
                let n = blob.read_at(offset, &mut rest).unwrap();
                rebuilt.extend_from_slice(&rest[..n]);
                break;
            }
        }
        assert!(rebuilt == bytes, "pieces of {chunk} bytes");
    }
    assert_eq!(blob.read_at(blob.len(), &mut [0u8; 8]).unwrap(), 0);
    assert_eq!(blob.read_at(blob.len() + 100, &mut [0u8; 8]).unwrap(), 0);

    let uploaded = DebugInfo::from_upload(&bytes).unwrap();
    let full = DebugInfo::from_elf_file(binary).unwrap();
    assert_eq!(uploaded.build_id(), full.build_id());
    assert_eq!(uploaded.build_id(), blob.build_id());
    assert_eq!(uploaded.program_crate(), Some("bar_truth"));
    let addrs = addresses(binary);
    for addr in &addrs {
        assert_eq!(uploaded.frames(*addr), full.frames(*addr), "at {addr:#x}");
    }

    // The ELF inside is one binutils reads as it reads the binary.
    let dir = tempfile::tempdir().unwrap();
    let elf = dir.path().join("debug.elf");
    std::fs::write(&elf, &bytes[UPLOAD_HEADER_BYTES..]).unwrap();
    let sections = run("readelf", &["-S", "-W", elf.to_str().unwrap()]);
    let kind = |name: &str| {
        sections
            .lines()
            .find(|l| l.contains(&format!(" {name} ")))
            .and_then(|l| {
                l.split_whitespace()
                    .find(|w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_') && w.len() > 3)
            })
            .map(str::to_owned)
    };
    assert_eq!(
        kind(".debug_line").as_deref(),
        Some("PROGBITS"),
        "{sections}"
    );
    assert_eq!(kind(".symtab").as_deref(), Some("SYMTAB"), "{sections}");
    assert_eq!(kind(".text").as_deref(), Some("NOBITS"), "{sections}");
    let sample: Vec<u64> = addrs.iter().step_by(7).copied().collect();
    assert_eq!(
        binutils_frames(&elf, &sample),
        binutils_frames(binary, &sample)
    );
}

#[test]
fn compressed_debug_sections_are_read_and_stay_compressed_in_the_upload() {
    let binary = fixture();
    let dir = tempfile::tempdir().unwrap();
    for style in ["zlib", "zlib-gnu"] {
        let compressed = dir.path().join(format!("bar_truth.{style}"));
        run(
            "objcopy",
            &[
                &format!("--compress-debug-sections={style}"),
                binary.to_str().unwrap(),
                compressed.to_str().unwrap(),
            ],
        );
        let full = DebugInfo::from_elf_file(binary).unwrap();
        let inflated = DebugInfo::from_elf_file(&compressed).unwrap();
        assert!(inflated.has_dwarf(), "{style}");
        let blob = UploadBlob::from_elf_file(&compressed).unwrap();
        let plain = UploadBlob::from_elf_file(binary).unwrap();
        assert!(
            blob.len() * 2 < plain.len(),
            "{style}: {} vs {} bytes",
            blob.len(),
            plain.len()
        );
        let uploaded = DebugInfo::from_upload(&blob.to_vec().unwrap()).unwrap();
        for addr in addresses(binary) {
            let want = full.frames(addr);
            assert_eq!(inflated.frames(addr), want, "{style} at {addr:#x}");
            assert_eq!(uploaded.frames(addr), want, "{style} upload at {addr:#x}");
        }
    }
}

#[test]
fn malformed_input_is_an_error_or_fewer_frames_never_a_panic() {
    let binary = fixture();
    let blob = UploadBlob::from_elf_file(binary).unwrap().to_vec().unwrap();
    assert!(matches!(
        DebugInfo::from_upload(b"HOLMESDI"),
        Err(LoadError::NotUpload { .. })
    ));
    assert!(matches!(
        DebugInfo::from_upload(b"not an upload at all"),
        Err(LoadError::NotUpload { .. })
    ));
    let mut v2 = blob.clone();
    v2[8] = 2;
    assert!(matches!(
        DebugInfo::from_upload(&v2),
        Err(LoadError::UploadVersion { version: 2 })
    ));
    assert!(DebugInfo::from_elf_bytes(&[0x7f, b'E', b'L', b'F', 2, 1, 1]).is_err());
    assert!(DebugInfo::from_elf_file(Path::new("/nonexistent/bar_truth")).is_err());
    assert!(UploadBlob::from_elf_bytes(vec![0u8; 100]).is_err());

    let addrs = addresses(binary);
    let (spin, _) = function_range(binary, "8bar_spin");
    // Truncations and scribbles all over the headers and the DWARF.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..60 {
        let mut bad = blob.clone();
        if round % 3 == 0 {
            bad.truncate((next() as usize) % bad.len());
        } else {
            for _ in 0..(1 + next() % 64) {
                let at = (next() as usize) % bad.len();
                bad[at] = next() as u8;
            }
        }
        if let Ok(info) = DebugInfo::from_upload(&bad) {
            for addr in addrs.iter().step_by(5) {
                let _ = info.frames(*addr);
            }
            let _ = info.frames(spin);
            let _ = info.frames(u64::MAX);
        }
        let _ = UploadBlob::from_elf_bytes(bad.get(UPLOAD_HEADER_BYTES..).unwrap_or(&[]).to_vec());
    }
}
