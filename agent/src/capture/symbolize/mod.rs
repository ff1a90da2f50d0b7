//! Symbolization: the functions, files and lines at an address of this process, from
//! the objects' own debug info ([`debuginfo`]), inlined frames expanded. Stacks are
//! symbolized when a profile is encoded, never in a signal handler: this allocates and
//! takes a lock.

pub(crate) mod debuginfo;

use std::collections::HashMap;

/// Most inlined frames kept for one address.
const MAX_INLINE_DEPTH: usize = 32;
/// Most addresses a symbolizer remembers before it starts over.
const MAX_CACHED_ADDRESSES: usize = 1 << 16;

/// One symbolic frame: a function, its source file and line (empty and 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Frame {
    pub(crate) function: String,
    pub(crate) file: String,
    pub(crate) line: u32,
}

impl Frame {
    /// A frame for an address nothing is known about: `0x…`, no file, line 0.
    pub(crate) fn unknown(address: usize) -> Frame {
        Frame {
            function: format!("{address:#x}"),
            file: String::new(),
            line: 0,
        }
    }
}

/// The address whose code a stack entry stands for: the interrupted pc itself for the
/// leaf, the call instruction (return address − 1) for the others.
pub(crate) fn lookup_address(addr: usize, leaf: bool) -> usize {
    if leaf {
        addr
    } else {
        addr.saturating_sub(1)
    }
}

/// Turns addresses into frames, remembering what it resolved.
#[derive(Debug, Default)]
pub(crate) struct Symbolizer {
    pub(super) cache: HashMap<usize, Vec<Frame>>,
}

impl Symbolizer {
    pub(crate) fn new() -> Self {
        Symbolizer::default()
    }

    /// The frames at `addr`, innermost (inlined) first, never empty. `leaf` says `addr`
    /// is an interrupted pc; otherwise it is a return address and the call before it is
    /// looked up. Unknown addresses give one frame named `0x<looked-up address>`.
    pub(crate) fn frames(&mut self, addr: usize, leaf: bool) -> &[Frame] {
        let lookup = lookup_address(addr, leaf);
        if self.cache.len() >= MAX_CACHED_ADDRESSES && !self.cache.contains_key(&lookup) {
            self.cache.clear();
        }
        self.cache.entry(lookup).or_insert_with(|| resolve(lookup))
    }
}

/// Resolves the code at `lookup`, inlined frames innermost first; never empty.
fn resolve(lookup: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    if lookup != 0 {
        // A DWARF reader fed a malformed file may panic; the host must not see it.
        let resolved = std::panic::catch_unwind(|| debuginfo::resolve(lookup));
        if let Ok(raw) = resolved {
            frames.extend(
                raw.into_iter()
                    .take(MAX_INLINE_DEPTH)
                    .filter_map(|f| frame_of(f, lookup)),
            );
        }
    }
    if frames.is_empty() {
        frames.push(Frame::unknown(lookup));
    }
    frames
}

/// A frame from a resolved one; None when it says nothing.
fn frame_of(raw: debuginfo::RawFrame, lookup: usize) -> Option<Frame> {
    // Demangled names come without their hash; the strip catches the rest.
    let name = raw
        .function
        .map(|n| strip_hash(&n).to_owned())
        .filter(|n| !n.is_empty());
    let file = raw.file.unwrap_or_default();
    if name.is_none() && file.is_empty() {
        return None;
    }
    Some(Frame {
        function: name.unwrap_or_else(|| format!("{lookup:#x}")),
        file,
        line: raw.line,
    })
}

/// `foo::bar::h0123456789abcdef` → `foo::bar`.
pub(crate) fn strip_hash(name: &str) -> &str {
    if let Some(pos) = name.rfind("::h") {
        let hash = name.get(pos + 3..).unwrap_or("");
        if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return name.get(..pos).unwrap_or(name);
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            function: function.into(),
            file: file.into(),
            line,
        }
    }

    #[test]
    fn unknown_addresses_become_hex_names() {
        let mut sym = Symbolizer::new();
        assert_eq!(sym.frames(0, true), &[frame("0x0", "", 0)]);
        assert_eq!(sym.frames(0, false), &[frame("0x0", "", 0)]);
        assert_eq!(sym.frames(1, false), &[frame("0x0", "", 0)]);
        assert_eq!(sym.frames(0x10, true), &[frame("0x10", "", 0)]);
        let top = sym.frames(usize::MAX, true).to_vec();
        assert_eq!(top, vec![frame(&format!("{:#x}", usize::MAX), "", 0)]);
        assert_eq!(strip_hash("a::b::h0123456789abcdef"), "a::b");
        assert_eq!(strip_hash("a::b::hello"), "a::b::hello");
        assert_eq!(strip_hash("::h"), "::h");
    }
}
