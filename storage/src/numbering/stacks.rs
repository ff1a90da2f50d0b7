//! The memory of one service's stacks, by their locations' ordinals.
//!
//! Every remembered stack's key (its locations' ordinals, leaf first) sits in one
//! buffer, one after the other; a table of entry indexes finds a key by its hash and
//! compares it with its run of the buffer. A map keyed by a boxed slice per stack cost a
//! key allocated for every lookup and one more pointer chased per comparison, and its
//! keys were as many heap blocks as stacks.

use std::hash::BuildHasher;

use foldhash::quality::RandomState;
use hashbrown::HashTable;

use super::KnownStack;

/// Where one remembered stack's key is, and what is known of it.
#[derive(Clone, Copy)]
struct Entry {
    start: u32,
    len: u32,
    known: KnownStack,
}

/// A service's remembered stacks and its next stack counter. An entry's index stays
/// valid until [`ServiceStacks::clear`].
#[derive(Default)]
pub(super) struct ServiceStacks {
    /// The service's next stack counter (kept across `clear`).
    pub(super) next: u32,
    hash: RandomState,
    keys: Vec<u32>,
    entries: Vec<Entry>,
    /// Indexes into `entries`, by the hash of their key.
    table: HashTable<u32>,
}

impl ServiceStacks {
    fn key(&self, e: &Entry) -> &[u32] {
        let start = e.start as usize;
        self.keys.get(start..start + e.len as usize).unwrap_or(&[])
    }

    /// The entry of the stack whose key is `key`, if remembered.
    pub(super) fn find(&self, key: &[u32]) -> Option<u32> {
        let hash = self.hash.hash_one(key);
        self.table
            .find(hash, |&i| {
                self.entries
                    .get(i as usize)
                    .is_some_and(|e| self.key(e) == key)
            })
            .copied()
    }

    /// What is known of entry `entry`.
    pub(super) fn known(&self, entry: u32) -> Option<KnownStack> {
        self.entries.get(entry as usize).map(|e| e.known)
    }

    /// Marks entry `entry` durable on `day`.
    pub(super) fn mark_written(&mut self, entry: u32, day: u32) {
        if let Some(e) = self.entries.get_mut(entry as usize) {
            e.known.day = e.known.day.max(day);
        }
    }

    /// Remembers the stack whose key is `key` (not remembered yet: see
    /// [`ServiceStacks::find`]) as `known`; its entry. `None` when the buffer cannot
    /// index it (past 4 Gi ordinals), which leaves the stack unremembered.
    pub(super) fn insert(&mut self, key: &[u32], known: KnownStack) -> Option<u32> {
        let start = u32::try_from(self.keys.len()).ok()?;
        let len = u32::try_from(key.len()).ok()?;
        start.checked_add(len)?;
        let index = u32::try_from(self.entries.len()).ok()?;
        self.keys.extend_from_slice(key);
        self.entries.push(Entry { start, len, known });
        let hash = self.hash.hash_one(key);
        let Self {
            hash: hasher,
            keys,
            entries,
            table,
            ..
        } = self;
        table.insert_unique(hash, index, |&i| {
            let e = entries[i as usize];
            hasher.hash_one(&keys[e.start as usize..(e.start + e.len) as usize])
        });
        Some(index)
    }

    /// Forgets every stack (the counter stays).
    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.entries.clear();
        self.table.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(num: u64) -> KnownStack {
        KnownStack { num, day: 0 }
    }

    #[test]
    fn stacks_are_found_by_their_whole_key_and_forgotten_on_clear() {
        let mut s = ServiceStacks::default();
        assert_eq!(s.find(&[1, 2, 3]), None);
        let a = s.insert(&[1, 2, 3], known(10)).unwrap();
        let b = s.insert(&[1, 2], known(11)).unwrap();
        let c = s.insert(&[], known(12)).unwrap();
        // Many more, so that the table grows and rehashes from the buffer.
        for i in 0..5000u32 {
            s.insert(&[i, i + 1, 7, 7], known(100 + u64::from(i)))
                .unwrap();
        }
        assert_eq!(s.find(&[1, 2, 3]), Some(a));
        assert_eq!(s.find(&[1, 2]), Some(b));
        assert_eq!(s.find(&[]), Some(c));
        assert_eq!(s.find(&[1, 2, 3, 4]), None);
        assert_eq!(s.find(&[2, 1]), None);
        let e = s.find(&[4999, 5000, 7, 7]).unwrap();
        assert_eq!(s.known(e), Some(known(5099)));
        s.mark_written(a, 20_000);
        s.mark_written(a, 19_000);
        assert_eq!(
            s.known(a),
            Some(KnownStack {
                num: 10,
                day: 20_000
            })
        );
        s.next = 42;
        s.clear();
        assert_eq!(s.find(&[1, 2, 3]), None);
        assert_eq!(s.known(a), None);
        assert_eq!(s.next, 42);
    }
}
