//! What one stack entry stands for, and the content ids of locations and stacks.
//!
//! A [`Location`] is native — a module (file name and GNU build id) and the offset in it
//! as the ELF file sees it — or symbolic, a list of frames innermost first. Its
//! [`LocationId`] is the BLAKE3 hash, truncated to 128 bits, of a canonical encoding of
//! its content, and a [`StackId`] the same hash of its locations' ids, leaf first: the
//! same code path in two processes of one build, or before and after a restart, has the
//! same ids, and a crafted stack cannot take another's id (collision resistance).

use std::fmt;

use holmes_proto::Module;

/// One frame of a symbolic location (or of a native location's symbols): function,
/// source file and line (empty and 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct StackFrame {
    /// Function name with its full path, e.g. `checkout::cart::total`.
    pub function: String,
    /// Source file.
    pub file: String,
    /// Line in the file.
    pub line: u32,
    /// The function's name as the object file spells it (pprof's system name), when a
    /// pprof profile gave one (kept so that a download reads back the same).
    pub system_name: String,
    /// The line the function starts at, when a pprof profile gave one (0 otherwise).
    pub start_line: u32,
}

impl StackFrame {
    /// A frame of `function` in `file` at `line`.
    pub fn new(function: impl Into<String>, file: impl Into<String>, line: u32) -> Self {
        StackFrame {
            function: function.into(),
            file: file.into(),
            line,
            ..StackFrame::default()
        }
    }
}

/// What one stack entry stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// Code in a module, at `offset` as the ELF file sees it (the value `addr2line -e
    /// <file>` takes). Named once the module's debug info is known; until then shown as
    /// `name+0x<offset>`.
    Native {
        /// The module.
        module: Module,
        /// Offset in it.
        offset: u64,
    },
    /// Frames already named, innermost (inlined) first; at least one.
    Symbolic(Vec<StackFrame>),
}

/// 128 bits of BLAKE3.
fn blake3_128(bytes: &[u8]) -> [u8; 16] {
    let hash = blake3::hash(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.as_bytes()[..16]);
    out
}

/// Bytes no UTF-8 text contains: they end fields and mark extensions.
const END: u8 = 0xff;
const EXTRA: u8 = 0xfe;

/// A [`Location`] borrowed from wherever its parts are kept (an ingest stream's
/// tables, say): what a writer names when it asks about a location it has not built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationRef<'a> {
    /// See [`Location::Native`].
    Native {
        /// The module.
        module: &'a Module,
        /// Offset in it.
        offset: u64,
    },
    /// See [`Location::Symbolic`].
    Symbolic(&'a [StackFrame]),
}

impl LocationRef<'_> {
    /// The canonical encoding the id is the hash of: native → `b"N" build_id 0xff name
    /// 0xff offset_le` (the name only when the build id is empty); symbolic → `b"S"` and
    /// each frame's `function 0xff file 0xff line_le`, followed by `0xfe system_name 0xff
    /// start_line_le` for a frame that has either (only pprof profiles give them).
    pub fn canonical_bytes(&self, out: &mut Vec<u8>) {
        match *self {
            LocationRef::Native { module, offset } => {
                out.push(b'N');
                out.extend_from_slice(module.build_id.as_bytes());
                out.push(END);
                if module.build_id.is_empty() {
                    out.extend_from_slice(module.name.as_bytes());
                }
                out.push(END);
                out.extend_from_slice(&offset.to_le_bytes());
            }
            LocationRef::Symbolic(frames) => {
                out.push(b'S');
                for f in frames {
                    out.extend_from_slice(f.function.as_bytes());
                    out.push(END);
                    out.extend_from_slice(f.file.as_bytes());
                    out.push(END);
                    out.extend_from_slice(&f.line.to_le_bytes());
                    if !f.system_name.is_empty() || f.start_line != 0 {
                        out.push(EXTRA);
                        out.extend_from_slice(f.system_name.as_bytes());
                        out.push(END);
                        out.extend_from_slice(&f.start_line.to_le_bytes());
                    }
                }
            }
        }
    }
}

impl Location {
    /// The location, borrowed.
    pub fn borrowed(&self) -> LocationRef<'_> {
        match self {
            Location::Native { module, offset } => LocationRef::Native {
                module,
                offset: *offset,
            },
            Location::Symbolic(frames) => LocationRef::Symbolic(frames),
        }
    }

    /// Its canonical encoding (see [`LocationRef::canonical_bytes`]).
    pub fn canonical_bytes(&self, out: &mut Vec<u8>) {
        self.borrowed().canonical_bytes(out);
    }

    /// The location's content id.
    pub fn id(&self) -> LocationId {
        let mut bytes = Vec::with_capacity(64);
        self.canonical_bytes(&mut bytes);
        LocationId::of_canonical(&bytes)
    }

    /// How a native location is shown until its module's debug info is known:
    /// `libc.so.6+0x29d8f`.
    pub fn native_name(module: &Module, offset: u64) -> String {
        format!("{}+{offset:#x}", module.name)
    }

    /// The frames this location stands for, without symbols: a symbolic location's own,
    /// a native one's [`Location::native_name`].
    pub fn frames_without_symbols(&self) -> Vec<StackFrame> {
        match self {
            Location::Native { module, offset } => {
                vec![StackFrame::new(
                    Location::native_name(module, *offset),
                    "",
                    0,
                )]
            }
            Location::Symbolic(frames) => frames.clone(),
        }
    }
}

/// A location's content id: BLAKE3 of [`LocationRef::canonical_bytes`], 128 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocationId(pub [u8; 16]);

/// A stack's content id: BLAKE3 of its locations' ids, leaf first, 128 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub [u8; 16]);

impl LocationId {
    /// The id of the location whose canonical bytes ([`Location::canonical_bytes`]) are
    /// `bytes`.
    pub fn of_canonical(bytes: &[u8]) -> LocationId {
        LocationId(blake3_128(bytes))
    }
}

impl StackId {
    /// The id of the stack made of `locations`, leaf first.
    pub fn of(locations: impl IntoIterator<Item = LocationId>) -> StackId {
        let mut hasher = blake3::Hasher::new();
        for l in locations {
            hasher.update(&l.0);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        StackId(out)
    }
}

/// The 32 lowercase hex digits of a 128-bit id, as ids are shown and sent in queries.
pub(crate) fn hex(bytes: &[u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

impl fmt::Display for LocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for LocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocationId(")?;
        f.write_str(&hex(&self.0))?;
        write!(f, ")")
    }
}

impl fmt::Display for StackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for StackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StackId(")?;
        f.write_str(&hex(&self.0))?;
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libc(offset: u64) -> Location {
        Location::Native {
            module: Module {
                name: "libc.so.6".into(),
                build_id: "4f5c1e0b".into(),
            },
            offset,
        }
    }

    #[test]
    fn canonical_encodings_follow_the_contract() {
        let mut bytes = Vec::new();
        libc(0x29d8f).canonical_bytes(&mut bytes);
        let mut expected = b"N4f5c1e0b\xff\xff".to_vec();
        expected.extend_from_slice(&0x29d8fu64.to_le_bytes());
        assert_eq!(bytes, expected);
        // Without a build id, the name tells modules apart.
        let mut bytes = Vec::new();
        Location::Native {
            module: Module {
                name: "[vdso]".into(),
                build_id: String::new(),
            },
            offset: 7,
        }
        .canonical_bytes(&mut bytes);
        let mut expected = b"N\xff[vdso]\xff".to_vec();
        expected.extend_from_slice(&7u64.to_le_bytes());
        assert_eq!(bytes, expected);
        let mut bytes = Vec::new();
        Location::Symbolic(vec![StackFrame::new("a::b", "src/b.rs", 3)])
            .canonical_bytes(&mut bytes);
        let mut expected = b"Sa::b\xffsrc/b.rs\xff".to_vec();
        expected.extend_from_slice(&3u32.to_le_bytes());
        assert_eq!(bytes, expected);
    }

    #[test]
    fn ids_depend_on_content_only() {
        assert_eq!(libc(1).id(), libc(1).id());
        assert_ne!(libc(1).id(), libc(2).id());
        let a = Location::Symbolic(vec![StackFrame::new("f", "x.rs", 1)]);
        let mut with_start = StackFrame::new("f", "x.rs", 1);
        with_start.start_line = 1;
        let b = Location::Symbolic(vec![with_start]);
        assert_ne!(a.id(), b.id());
        // Field boundaries are unambiguous: "ab"+"c" differs from "a"+"bc".
        let c = Location::Symbolic(vec![StackFrame::new("ab", "c", 0)]);
        let d = Location::Symbolic(vec![StackFrame::new("a", "bc", 0)]);
        assert_ne!(c.id(), d.id());
        let s1 = StackId::of([libc(1).id(), libc(2).id()]);
        let s2 = StackId::of([libc(2).id(), libc(1).id()]);
        assert_ne!(s1, s2);
        assert_eq!(s1, StackId::of([libc(1).id(), libc(2).id()]));
        assert_eq!(format!("{}", s1).len(), 32);
    }

    #[test]
    fn native_locations_are_named_by_module_and_offset() {
        assert_eq!(
            libc(0x29d8f).frames_without_symbols(),
            vec![StackFrame::new("libc.so.6+0x29d8f", "", 0)]
        );
    }
}
