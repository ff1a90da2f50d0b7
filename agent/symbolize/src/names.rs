//! Whose code a source file is, from its path: the standard library, a dependency
//! (registry, git or vendored crate) or the program itself; and the crate it belongs to,
//! which names inlined frames whose debug info carries a short name only.

/// Where a source file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceOrigin {
    /// The standard library (`/rustc/<hash>/library/<crate>/…`, or a local
    /// `…/lib/rustlib/src/rust/library/<crate>/…`): `core`, `alloc`, `std`, …
    Std {
        /// The library crate.
        krate: String,
    },
    /// A dependency: a registry crate (`…/registry/src/<index>/<crate>-<version>/…`), a
    /// git one (`…/git/checkouts/<repo>-<hash>/<rev>/…`) or a vendored one
    /// (`…/vendor/<crate>/…`).
    Dependency {
        /// The crate, with `-` written `_` as in paths.
        krate: String,
    },
    /// Anything else: the program's own code.
    Program,
}

/// Where `file` comes from (see [`SourceOrigin`]). An empty path is the program's.
pub fn source_origin(file: &str) -> SourceOrigin {
    let parts: Vec<&str> = file.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let next = |k: usize| parts.get(i + k).copied();
        match *part {
            "library" if is_std_root(&parts[..i]) => {
                if let Some(krate) = next(1) {
                    return SourceOrigin::Std {
                        krate: std_crate(krate).to_owned(),
                    };
                }
            }
            "registry" if next(1) == Some("src") => {
                if let Some(krate) = next(3).and_then(strip_version) {
                    return SourceOrigin::Dependency {
                        krate: krate.replace('-', "_"),
                    };
                }
            }
            "git" if next(1) == Some("checkouts") => {
                if let (Some(repo), Some(_rev)) = (next(2), next(3)) {
                    // The folder holding `src/` names a crate of a multi-crate repository.
                    let inner = parts.get(i + 4..).unwrap_or(&[]);
                    let krate = inner
                        .iter()
                        .position(|p| *p == "src")
                        .and_then(|s| s.checked_sub(1))
                        .and_then(|s| inner.get(s).copied())
                        .unwrap_or_else(|| strip_hash_suffix(repo));
                    return SourceOrigin::Dependency {
                        krate: krate.replace('-', "_"),
                    };
                }
            }
            "vendor" => {
                if let Some(dir) = next(1).filter(|_| next(2).is_some()) {
                    let krate = strip_version(dir).unwrap_or(dir);
                    return SourceOrigin::Dependency {
                        krate: krate.replace('-', "_"),
                    };
                }
            }
            _ => {}
        }
    }
    SourceOrigin::Program
}

/// Whether `file` is the standard library's or a dependency's, not the program's own
/// code.
pub fn is_std_or_dependency(file: &str) -> bool {
    source_origin(file) != SourceOrigin::Program
}

/// The crate `file` belongs to: the library crate, the dependency, or for the
/// program's own code `program_crate` (the binary's crate, when known).
pub fn crate_of_path(file: &str, program_crate: Option<&str>) -> Option<String> {
    match source_origin(file) {
        SourceOrigin::Std { krate } | SourceOrigin::Dependency { krate } => Some(krate),
        SourceOrigin::Program => program_crate.map(str::to_owned),
    }
}

/// `rustc/<40 hex>` (how rustc remaps its sources) or `lib/rustlib/src/rust`.
fn is_std_root(before: &[&str]) -> bool {
    match before {
        [.., "rustc", hash] => hash.len() >= 7 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        [.., "rustlib", "src", "rust"] => true,
        _ => false,
    }
}

/// The crate a `library/<dir>` folder of the standard library's sources is re-exported
/// from: `stdarch` is `core::arch`, `portable-simd` is `core::simd`, `backtrace` is
/// inside `std`.
fn std_crate(dir: &str) -> &str {
    match dir {
        "stdarch" | "portable-simd" | "core_arch" => "core",
        "backtrace" | "std_detect" => "std",
        other => other,
    }
}

/// `tikv-jemalloc-sys-0.7.0+5.3.0-1-ge4d4c9` → `tikv-jemalloc-sys`: the name before the
/// first `-<major>.<minor>`.
fn strip_version(dir: &str) -> Option<&str> {
    dir.match_indices('-').map(|(i, _)| i).find_map(|i| {
        let rest = dir.get(i + 1..)?;
        let major = rest.split('.').next()?;
        let is_version = !major.is_empty()
            && major.bytes().all(|b| b.is_ascii_digit())
            && rest.len() > major.len()
            && rest
                .get(major.len() + 1..)
                .is_some_and(|m| m.starts_with(|c: char| c.is_ascii_digit()));
        is_version.then(|| dir.get(..i)).flatten()
    })
}

/// `tokio-1a2b3c4d5e6f7a8b` → `tokio` (cargo's checkout folder names).
fn strip_hash_suffix(repo: &str) -> &str {
    match repo.rsplit_once('-') {
        Some((name, hash)) if !name.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => repo,
    }
}

/// A frame's full path from a short name that debug info gave without one
/// (`wrapping_add` → `core::wrapping_add`): prefixed with the crate of the frame's source
/// file. Names already carrying a path, frames in non-Rust files and frames whose crate
/// is unknown are left as they are.
pub(crate) fn qualify(name: &str, file: &str, program_crate: Option<&str>) -> String {
    let rust = file.ends_with(".rs");
    if !rust || has_path(name) {
        return name.to_owned();
    }
    match crate_of_path(file, program_crate) {
        Some(krate) if !krate.is_empty() => format!("{krate}::{name}"),
        _ => name.to_owned(),
    }
}

/// Whether `name` already has a `::` path outside its generic arguments
/// (`call_once<fn(), ()>` has none; `<T as Trait>::f` and `a::b` have one).
fn has_path(name: &str) -> bool {
    let mut depth = 0i32;
    let bytes = name.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'<' | b'(' | b'[' => depth += 1,
            b'>' | b')' | b']' => depth -= 1,
            b':' if depth <= 0 && bytes.get(i + 1) == Some(&b':') => return true,
            _ => {}
        }
    }
    name.starts_with('<')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_library_is_known_by_its_remapped_path() {
        let core =
            "/rustc/90b35a6239c3d8bdabc530a6a0816f7ff89a0aaf/library/core/src/num/uint_macros.rs";
        assert_eq!(
            source_origin(core),
            SourceOrigin::Std {
                krate: "core".into()
            }
        );
        assert_eq!(crate_of_path(core, Some("app")).as_deref(), Some("core"));
        let std = "/rustc/90b35a6239c3d8bdabc530a6a0816f7ff89a0aaf/library/std/src/thread/mod.rs";
        assert_eq!(crate_of_path(std, None).as_deref(), Some("std"));
        let arch = "/rustc/90b35a6239c3d8bdabc530a6a0816f7ff89a0aaf/library/stdarch/crates/core_arch/src/x86/sse2.rs";
        assert_eq!(crate_of_path(arch, None).as_deref(), Some("core"));
        let local = "/home/me/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/lib/rustlib/src/rust/library/alloc/src/vec/mod.rs";
        assert_eq!(crate_of_path(local, None).as_deref(), Some("alloc"));
        assert!(is_std_or_dependency(core));
    }

    #[test]
    fn dependencies_are_known_by_registry_git_and_vendor_paths() {
        let cases = [
            (
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/runtime/park.rs",
                "tokio",
            ),
            (
                "/usr/local/cargo/registry/src/index.crates.io-6f17d22bba15001f/tikv-jemalloc-sys-0.7.0+5.3.0-1-ge4d4c9/jemalloc/src/prof.c",
                "tikv_jemalloc_sys",
            ),
            (
                "/root/.cargo/registry/src/github.com-1ecc6299db9ec823/sha-1-0.10.1/src/lib.rs",
                "sha_1",
            ),
            (
                "/root/.cargo/registry/src/index.crates.io-x/holmes-agent-0.1.0-rc.1/src/heap/sampling.rs",
                "holmes_agent",
            ),
            (
                "/root/.cargo/git/checkouts/tokio-1a2b3c4d5e6f7a8b/0123abc/tokio-util/src/codec.rs",
                "tokio_util",
            ),
            (
                "/root/.cargo/git/checkouts/serde-aaaabbbbccccdddd/abc123/src/lib.rs",
                "serde",
            ),
            ("/build/app/vendor/bytes/src/buf.rs", "bytes"),
            ("/build/app/vendor/bytes-1.7.0/src/buf.rs", "bytes"),
        ];
        for (path, krate) in cases {
            assert_eq!(
                source_origin(path),
                SourceOrigin::Dependency {
                    krate: krate.into()
                },
                "{path}"
            );
            assert!(is_std_or_dependency(path), "{path}");
        }
    }

    #[test]
    fn everything_else_is_the_programs_own_code() {
        for path in [
            "src/main.rs",
            "/work/app/src/handlers/checkout.rs",
            "/work/app/crates/registry/src/lib.rs",
            "/home/me/library/src/lib.rs",
            "",
        ] {
            assert_eq!(source_origin(path), SourceOrigin::Program, "{path}");
            assert!(!is_std_or_dependency(path), "{path}");
            assert_eq!(crate_of_path(path, Some("app")).as_deref(), Some("app"));
            assert_eq!(crate_of_path(path, None), None);
        }
    }

    #[test]
    fn short_names_get_their_crate_and_full_paths_stay() {
        let core = "/rustc/90b35a6239c3d8bdabc530a6a0816f7ff89a0aaf/library/core/src/num/mod.rs";
        assert_eq!(
            qualify("wrapping_add", core, Some("app")),
            "core::wrapping_add"
        );
        assert_eq!(
            qualify("call_once<fn(), ()>", core, None),
            "core::call_once<fn(), ()>"
        );
        assert_eq!(
            qualify("bar_spin", "/w/app/src/main.rs", Some("app")),
            "app::bar_spin"
        );
        assert_eq!(qualify("bar_spin", "/w/app/src/main.rs", None), "bar_spin");
        assert_eq!(qualify("core::fmt::write", core, None), "core::fmt::write");
        assert_eq!(
            qualify("<T as core::Trait>::f", core, None),
            "<T as core::Trait>::f"
        );
        assert_eq!(
            qualify("{closure#0}<i32>", "src/lib.rs", Some("a")),
            "a::{closure#0}<i32>"
        );
        assert_eq!(qualify("memcpy", "string/memcpy.S", Some("a")), "memcpy");
        assert_eq!(qualify("malloc", "", Some("a")), "malloc");
    }
}
