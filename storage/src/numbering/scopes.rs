//! The memory by key: per scope of [`TableKeys`] (one ingest stream), the number and
//! day of each stack key and the ordinal of each location key, so that a profile's
//! stacks known by key are numbered from that alone (see the parent module).

use std::collections::HashMap;

use foldhash::quality::RandomState;

use super::KnownStack;
use crate::contents::{ProfileContents, StackByKey, TableKeys, NO_LOCATIONS_KEPT};

/// The stacks and locations of one scope, by key.
struct Scope {
    service: String,
    stacks: Vec<Option<KnownStack>>,
    /// Each location key's ordinal plus one (0: not known).
    locations: Vec<u32>,
    /// When it was last asked about or told something ([`Scopes::tick`]).
    used: u64,
    /// How many of its locations, from key 0 on, it was told
    /// ([`crate::KnownByKey::locations_told`]).
    told: u32,
}

impl Scope {
    /// Keys it holds, as [`Scopes`] counts them.
    fn keys(&self) -> usize {
        self.stacks.len() + self.locations.len()
    }
}

/// What a profile needs numbered (see [`Scopes::plan`]).
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Each stack's number and day when known by key and durable on the profile's day.
    pub(super) by_key: Vec<Option<KnownStack>>,
    /// Whether each location is used by a stack not known by key.
    pub(super) needed: Vec<bool>,
    /// Stacks left out of the contents that are not known by key (see
    /// [`TableKeys::left_out`]): the profile cannot be numbered.
    pub(super) lost: usize,
}

/// Every scope's keys.
#[derive(Default)]
pub(super) struct Scopes {
    by_scope: HashMap<u64, Scope, RandomState>,
    /// Keys held, all scopes together.
    count: usize,
    /// Counts the asks and tells, to find the scopes used least recently.
    tick: u64,
}

impl Scopes {
    pub(super) fn forget(&mut self) {
        self.by_scope.clear();
        self.count = 0;
    }

    /// Makes room for `more` keys within `max` in all: when they would not fit, forgets
    /// the scopes used least recently until they hold at most half of `max` (a stream
    /// that ended, its process gone, is never used again; the streams still sending
    /// keep what they have, and need not be told it again).
    pub(super) fn make_room(&mut self, more: usize, max: usize) {
        if self.count + more <= max {
            return;
        }
        let mut by_age: Vec<(u64, u64, usize)> = self
            .by_scope
            .iter()
            .map(|(&key, scope)| (scope.used, key, scope.keys()))
            .collect();
        by_age.sort_unstable();
        for (_, key, keys) in by_age {
            if self.count + more <= max / 2 {
                break;
            }
            self.by_scope.remove(&key);
            self.count -= keys;
        }
    }

    /// The next tick, marking a scope used.
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Which stacks of `c`, a profile of `day`, are known by key and durable on `day` or
    /// later (their number), and which locations the others use (all of them when none
    /// is known by key).
    pub(super) fn plan(&self, service: &str, day: u32, c: &ProfileContents) -> Plan {
        let scope = self.scope_of(service, c);
        let keys = c.table_keys.as_ref();
        let mut lost = 0;
        let mut needed = vec![scope.is_none(); c.locations.len()];
        let by_key = c
            .stacks
            .iter()
            .enumerate()
            .map(|(i, stack)| {
                // Left out with its number (which stays true whatever the memory
                // forgets since), or remembered by key.
                let known = match keys.and_then(|k| k.left_out.get(i).copied().flatten()) {
                    Some(given) => Some(given),
                    None => scope.and_then(|(keys, scope)| {
                        scope
                            .stacks
                            .get(*keys.stacks.get(i)? as usize)
                            .copied()
                            .flatten()
                    }),
                }
                .filter(|k| k.day >= day);
                if known.is_none() {
                    if keys.is_some_and(|k| k.is_left_out(i)) {
                        lost += 1;
                    }
                    for &l in stack {
                        if let Some(n) = needed.get_mut(l as usize) {
                            *n = true;
                        }
                    }
                }
                known
            })
            .collect::<Vec<_>>();
        Plan {
            by_key,
            needed,
            lost,
        }
    }

    /// The scope of `c`'s keys, when it has keys for every stack and location and the
    /// scope is `service`'s.
    fn scope_of<'a>(
        &'a self,
        service: &str,
        c: &'a ProfileContents,
    ) -> Option<(&'a TableKeys, &'a Scope)> {
        let keys = c.table_keys.as_ref()?;
        let scope = self.by_scope.get(&keys.scope)?;
        (scope.service == service
            && keys.stacks.len() == c.stacks.len()
            && keys.locations.len() == c.locations.len())
        .then_some((keys, scope))
    }

    /// The ordinal of each location of `c` known by its key (empty when none can be).
    pub(super) fn keyed_ordinals(&self, service: &str, c: &ProfileContents) -> Vec<Option<u32>> {
        let Some((keys, scope)) = self.scope_of(service, c) else {
            return Vec::new();
        };
        keys.locations
            .iter()
            .map(|&k| scope.locations.get(k as usize)?.checked_sub(1))
            .collect()
    }

    /// What is known of `stacks` (of `scope`) for `service`, durable on `day` or later.
    /// A stack is known by its key; one the scope does not know by key (or not as
    /// durable on `day`) is looked up by its locations' ordinals with `find` (the
    /// service's memory), when the scope knows each of its location keys, and what
    /// `find` knows of it is kept under its key.
    pub(super) fn known(
        &mut self,
        service: &str,
        day: u32,
        scope: u64,
        stacks: &[StackByKey<'_>],
        find: impl Fn(&[u32]) -> Option<KnownStack>,
    ) -> Vec<Option<KnownStack>> {
        let tick = self.next_tick();
        let Some(s) = self
            .by_scope
            .get_mut(&scope)
            .filter(|s| s.service == service)
        else {
            return vec![None; stacks.len()];
        };
        s.used = tick;
        let mut ordinals = Vec::with_capacity(64);
        let mut grown = 0;
        let known = stacks
            .iter()
            .map(|stack| {
                let k = stack.key as usize;
                let by_key = s.stacks.get(k).copied().flatten();
                if by_key.is_some_and(|known| known.day >= day) {
                    return by_key;
                }
                ordinals.clear();
                for &l in stack.locations {
                    ordinals.push(s.locations.get(l as usize)?.checked_sub(1)?);
                }
                let found = find(&ordinals)?;
                if k >= s.stacks.len() {
                    grown += k + 1 - s.stacks.len();
                    s.stacks.resize(k + 1, None);
                }
                s.stacks[k] = Some(found);
                Some(found).filter(|found| found.day >= day)
            })
            .collect();
        self.count += grown;
        known
    }

    /// Remembers what keys of `scope` name for `service`: stacks (`stacks`: key and what
    /// is known of it) and locations (`locations`: key and ordinal). Nothing when the
    /// scope is another service's.
    pub(super) fn remember(
        &mut self,
        service: &str,
        scope: u64,
        stacks: &[(u32, KnownStack)],
        locations: &[(u32, u32)],
    ) {
        let tick = self.next_tick();
        let scope = self.by_scope.entry(scope).or_insert_with(|| Scope {
            service: service.to_owned(),
            stacks: Vec::new(),
            locations: Vec::new(),
            used: tick,
            told: 0,
        });
        if scope.service != service {
            return;
        }
        scope.used = tick;
        let mut grown = 0;
        for &(key, known) in stacks {
            let key = key as usize;
            if key >= scope.stacks.len() {
                grown += key + 1 - scope.stacks.len();
                scope.stacks.resize(key + 1, None);
            }
            scope.stacks[key] = Some(known);
        }
        for &(key, ordinal) in locations {
            let key = key as usize;
            if key >= scope.locations.len() {
                grown += key + 1 - scope.locations.len();
                scope.locations.resize(key + 1, 0);
            }
            scope.locations[key] = ordinal + 1;
        }
        self.count += grown;
    }

    /// Records that `scope` (of `service`) was told its locations with keys from
    /// `first`, `count` of them: what it was told from key 0 on grows when they follow
    /// on (a scope it forgot, then made again, was told only the latest).
    pub(super) fn told(&mut self, service: &str, scope: u64, first: u32, count: usize) {
        if let Some(s) = self
            .by_scope
            .get_mut(&scope)
            .filter(|s| s.service == service)
        {
            if first <= s.told {
                let end =
                    u32::try_from(count).map_or(u32::MAX, |count| first.saturating_add(count));
                s.told = s.told.max(end);
            }
        }
    }

    /// How many of `scope`'s locations, from key 0 on, it was told and holds: 0 for a
    /// scope it does not hold, [`NO_LOCATIONS_KEPT`] for another service's (whose
    /// keys are not this one's to hold).
    pub(super) fn locations_told(&self, service: &str, scope: u64) -> u32 {
        match self.by_scope.get(&scope) {
            Some(s) if s.service == service => s.told,
            Some(_) => NO_LOCATIONS_KEPT,
            None => 0,
        }
    }

    /// Marks the stacks of `scope` with keys `keys` durable on `day`.
    pub(super) fn written(&mut self, scope: u64, keys: &[u32], day: u32) {
        let Some(scope) = self.by_scope.get_mut(&scope) else {
            return;
        };
        for &key in keys {
            if let Some(Some(k)) = scope.stacks.get_mut(key as usize) {
                k.day = k.day.max(day);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known_by_key(scopes: &mut Scopes, scope: u64, key: u32) -> Option<KnownStack> {
        let stack = [StackByKey {
            key,
            locations: &[0, 1],
        }];
        scopes.known("checkout", 7, scope, &stack, |_| None)[0]
    }

    #[test]
    fn making_room_forgets_the_scopes_used_least_recently() {
        let mut scopes = Scopes::default();
        let stack = KnownStack { num: 42, day: 7 };
        // Three streams, each with ten stack keys and two location keys.
        for scope in [1, 2, 3] {
            scopes.remember("checkout", scope, &[(9, stack)], &[(0, 5), (1, 6)]);
            scopes.told("checkout", scope, 0, 2);
        }
        assert_eq!(scopes.count, 36);
        // Told from key 3 on, having held 2: a gap, which it does not count as told.
        scopes.told("checkout", 3, 3, 4);
        assert_eq!(scopes.locations_told("checkout", 3), 2);
        scopes.told("checkout", 3, 1, 4);
        assert_eq!(scopes.locations_told("checkout", 3), 5);
        assert_eq!(scopes.locations_told("cart", 3), NO_LOCATIONS_KEPT);
        // Stream 1 sends again; 2 and 3 have not since.
        assert_eq!(known_by_key(&mut scopes, 1, 9), Some(stack));
        // Room to spare: nothing is forgotten.
        scopes.make_room(4, 40);
        assert_eq!(scopes.by_scope.len(), 3);
        // Past the cap: down to half of it, the oldest first (2, then 3).
        scopes.make_room(5, 40);
        assert_eq!(known_by_key(&mut scopes, 2, 9), None);
        assert_eq!(known_by_key(&mut scopes, 3, 9), None);
        assert_eq!(known_by_key(&mut scopes, 1, 9), Some(stack));
        assert_eq!(scopes.count, 12);
        // A forgotten scope holds none of its locations: its stream tells them again.
        assert_eq!(scopes.locations_told("checkout", 2), 0);
        assert_eq!(scopes.locations_told("checkout", 1), 2);
        // Forgetting everything (the memory started over) leaves nothing.
        scopes.forget();
        assert_eq!(known_by_key(&mut scopes, 1, 9), None);
        assert_eq!(scopes.count, 0);
    }
}
