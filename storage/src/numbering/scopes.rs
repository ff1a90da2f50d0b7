//! The memory by key: per scope of [`TableKeys`] (one ingest stream), the number and
//! day of each stack key and the ordinal of each location key, so that a profile's
//! stacks known by key are numbered from that alone (see the parent module).

use std::collections::HashMap;

use foldhash::quality::RandomState;

use super::KnownStack;
use crate::contents::{ProfileContents, StackByKey, TableKeys};

/// The stacks and locations of one scope, by key.
struct Scope {
    service: String,
    stacks: Vec<Option<KnownStack>>,
    /// Each location key's ordinal plus one (0: not known).
    locations: Vec<u32>,
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
}

impl Scopes {
    /// Keys held, all scopes together.
    pub(super) fn len(&self) -> usize {
        self.count
    }

    pub(super) fn forget(&mut self) {
        self.by_scope.clear();
        self.count = 0;
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
        let Some(s) = self
            .by_scope
            .get_mut(&scope)
            .filter(|s| s.service == service)
        else {
            return vec![None; stacks.len()];
        };
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
        let scope = self.by_scope.entry(scope).or_insert_with(|| Scope {
            service: service.to_owned(),
            stacks: Vec::new(),
            locations: Vec::new(),
        });
        if scope.service != service {
            return;
        }
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
