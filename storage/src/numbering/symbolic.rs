//! The memory of symbolic locations, by content.
//!
//! A symbolic location is known by its canonical bytes ([`Location::canonical_bytes`]),
//! kept one after the other in one buffer and found by a 64-bit hash of them. A lookup
//! hashes the profile's own bytes (in cache: just decoded) and compares them with one
//! run of the buffer, where a map keyed by the frames themselves chased a pointer per
//! string, and a key of the 128-bit content id cost a BLAKE3 per location. Two contents
//! with the same 64-bit hash are both kept: the later one in a map by its bytes.
//!
//! [`Location::canonical_bytes`]: crate::location::Location::canonical_bytes

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::quality::RandomState;

/// Where one remembered location's bytes are, and its ordinal.
#[derive(Clone, Copy)]
struct Entry {
    ordinal: u32,
    start: usize,
    len: u32,
}

/// Symbolic locations' ordinals by their canonical bytes (`S` hashes them).
#[derive(Default)]
pub(super) struct Symbolics<S = RandomState> {
    hash: S,
    by_hash: HashMap<u64, Entry, foldhash::fast::RandomState>,
    bytes: Vec<u8>,
    /// Contents whose hash another content had first.
    collided: HashMap<Box<[u8]>, u32, RandomState>,
}

impl<S: BuildHasher> Symbolics<S> {
    /// The ordinal of the location whose canonical bytes are `canonical`, if remembered.
    pub(super) fn get(&self, canonical: &[u8]) -> Option<u32> {
        let e = self.by_hash.get(&self.hash.hash_one(canonical))?;
        if self.bytes.get(e.start..e.start + e.len as usize) == Some(canonical) {
            return Some(e.ordinal);
        }
        self.collided.get(canonical).copied()
    }

    /// Remembers the location whose canonical bytes are `canonical` as `ordinal`.
    pub(super) fn insert(&mut self, canonical: &[u8], ordinal: u32) {
        let h = self.hash.hash_one(canonical);
        match self.by_hash.get_mut(&h) {
            None => {
                let Ok(len) = u32::try_from(canonical.len()) else {
                    self.collided.insert(canonical.into(), ordinal);
                    return;
                };
                let start = self.bytes.len();
                self.bytes.extend_from_slice(canonical);
                self.by_hash.insert(
                    h,
                    Entry {
                        ordinal,
                        start,
                        len,
                    },
                );
            }
            Some(e) if self.bytes.get(e.start..e.start + e.len as usize) == Some(canonical) => {
                e.ordinal = ordinal;
            }
            Some(_) => {
                self.collided.insert(canonical.into(), ordinal);
            }
        }
    }

    /// Bytes of content held.
    pub(super) fn bytes_held(&self) -> usize {
        self.bytes.len() + self.collided.keys().map(|k| k.len()).sum::<usize>()
    }

    pub(super) fn clear(&mut self) {
        self.by_hash.clear();
        self.bytes.clear();
        self.collided.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_remembers_and_nothing_else() {
        let mut s = Symbolics::<RandomState>::default();
        s.insert(b"Smain\xffmain.rs\xff\x01\0\0\0", 7);
        s.insert(b"Sfoo\xfffoo.rs\xff\x02\0\0\0", 9);
        assert_eq!(s.get(b"Smain\xffmain.rs\xff\x01\0\0\0"), Some(7));
        assert_eq!(s.get(b"Sfoo\xfffoo.rs\xff\x02\0\0\0"), Some(9));
        assert_eq!(s.get(b"Sfoo\xfffoo.rs\xff\x03\0\0\0"), None);
        s.clear();
        assert_eq!(s.get(b"Smain\xffmain.rs\xff\x01\0\0\0"), None);
        assert_eq!(s.bytes_held(), 0);
    }

    /// Hashes everything to the same number.
    #[derive(Default)]
    struct Constant;

    impl BuildHasher for Constant {
        type Hasher = Constant;
        fn build_hasher(&self) -> Constant {
            Constant
        }
    }

    impl std::hash::Hasher for Constant {
        fn finish(&self) -> u64 {
            42
        }
        fn write(&mut self, _: &[u8]) {}
    }

    #[test]
    fn contents_sharing_a_hash_are_told_apart() {
        let mut s = Symbolics::<Constant>::default();
        let (a, b, c) = (
            b"Sa\xffa.rs\xff\x01\0\0\0".as_slice(),
            b"Sb\xffb.rs\xff\x01\0\0\0".as_slice(),
            b"Sc\xffc.rs\xff\x01\0\0\0".as_slice(),
        );
        s.insert(a, 1);
        s.insert(b, 2);
        assert_eq!((s.get(a), s.get(b), s.get(c)), (Some(1), Some(2), None));
        s.insert(b, 3);
        assert_eq!((s.get(a), s.get(b)), (Some(1), Some(3)));
        assert_eq!(s.bytes_held(), a.len() + b.len());
    }
}
