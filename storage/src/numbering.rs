//! The numbers a writer gives locations and stacks, and its memory of them.
//!
//! Samples refer to stacks, and stacks to locations, by number rather than by their
//! 128-bit content ids: a number costs a byte or two stored, an id sixteen that do not
//! compress. A number is `epoch << 32 | counter`: the epoch is claimed by the store when
//! it opens (unique among every writer of the store, see the backends), the counter is
//! the writer's own — one for locations, one per service for stacks. Several writers
//! sharing a store (collectors on one ClickHouse) each number their own new stacks, so a
//! stack may get two numbers; both stand for the same id and frames, so every read stays
//! correct, only the dedupe is imperfect.
//!
//! The memory ([`Numbering`]) maps a location's content, and a stack's locations, to
//! their numbers, so that a profile of known stacks is numbered without hashing
//! anything. What it does not know is looked up in the store by id (a restart, another
//! writer's stacks, an entry forgotten when the memory was full) before a new number is
//! given. A number is remembered as written only once its row is durable; until then
//! every profile that uses it writes the row again (duplicates fold).
//!
//! A writer may also name a profile's stacks and locations by key ([`TableKeys`](crate::TableKeys): the
//! ingest stream's own numbers, the same key always the same stack or location in its
//! scope). The memory then keeps, per scope, each stack key's number and day and each
//! location key's ordinal: a stack it knows by key and finds durable on the profile's
//! day is numbered from that alone, its locations not even looked at, and the locations
//! of the other stacks are found by key before they are hashed. A stack new to the scope
//! whose locations the scope has all had is found by their ordinals, without its
//! locations (the same stack from another scope: another instance of the service). A
//! writer that asked first ([`Numbering::known_by_key`]) may even leave the stacks it
//! knows out of the contents;
//! should the memory have forgotten them by the time the profile is numbered, numbering
//! fails ([`StoreError::LeftOutStacks`]) and the writer sends them again.
//!
//! Rows carry a day, and retention drops the days before its cutoff: a profile of day
//! `d` writes again each of its stacks and locations not yet written on day `d` or later
//! (once per day of use), so that whatever a kept profile refers to is kept with it, and
//! what no kept profile refers to goes.

use std::collections::HashMap;
use std::sync::Mutex;

use foldhash::quality::RandomState;
use holmes_proto::Module;

use crate::contents::{KnownByKey, LocationByKey, ProfileContents, StackByKey};
use crate::location::{Location, LocationId, LocationRef, StackId};
use crate::StoreError;
use scopes::{Plan, Scopes};
use stacks::ServiceStacks;
use symbolic::Symbolics;

mod scopes;
mod stacks;
mod symbolic;

/// Locations remembered; past this many the memory of locations and stacks starts over.
pub const MAX_KNOWN_LOCATIONS: usize = 1 << 19;
/// Bytes of symbolic locations' content remembered; past this many the memory of
/// locations and stacks starts over.
pub const MAX_KNOWN_SYMBOLIC_BYTES: usize = 128 << 20;
/// Stacks remembered (all services together); past this many they start over.
pub const MAX_KNOWN_STACKS: usize = 1 << 19;
/// Location ordinals of remembered stacks (all services together, 4 bytes each); past
/// this many the memory of locations and stacks starts over.
pub const MAX_KNOWN_STACK_ENTRIES: usize = 32 << 20;
/// Stack and location keys remembered (all scopes together); past this many the scopes
/// used least recently are forgotten, down to half as many.
pub(crate) const MAX_SCOPED_KEYS: usize = 1 << 20;

/// A remembered location.
struct KnownLocation {
    num: u64,
    id: LocationId,
    /// Latest day its row is known to be durable on (0: none known).
    day: u32,
}

/// A stack a writer numbered: its number, and the latest day its rows are known to be
/// durable on (0: none known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownStack {
    /// The writer's number for it.
    pub num: u64,
    /// Days since 1970-01-01.
    pub day: u32,
}

/// A stack's entry in its service's memory, when it has none.
const NO_ENTRY: u32 = u32::MAX;

struct Inner {
    epoch: u32,
    next_location: u32,
    /// Bumped whenever the memory starts over, so that stale ordinals are not marked.
    generation: u64,
    /// Ordinals of native locations, by module (see `modules`) and offset: a key
    /// compared inline, with no string behind a pointer to chase.
    natives: HashMap<(u32, u64), u32, RandomState>,
    /// The modules of native locations, numbered in the order first seen.
    modules: HashMap<Module, u32, RandomState>,
    /// Ordinals of symbolic locations, by content.
    symbolics: Symbolics,
    locations: Vec<KnownLocation>,
    /// Each service's stacks, keyed by their locations' ordinals (indexes into
    /// `locations`), leaf first.
    stacks: HashMap<String, ServiceStacks>,
    stack_count: usize,
    /// Ordinals in the keys of `stacks`, all services together.
    stack_entries: usize,
    /// Stacks and locations by scope and key.
    scopes: Scopes,
}

impl Inner {
    fn forget(&mut self) {
        self.natives.clear();
        self.modules.clear();
        self.symbolics.clear();
        self.locations.clear();
        for s in self.stacks.values_mut() {
            s.clear();
        }
        self.stack_count = 0;
        self.stack_entries = 0;
        self.scopes.forget();
        self.generation += 1;
    }

    fn number(&self, counter: u32) -> u64 {
        u64::from(self.epoch) << 32 | u64::from(counter)
    }

    /// The ordinal of a remembered location. `last` caches the last module looked up
    /// (a profile's locations come from a few modules, mostly in runs); `canonical`
    /// receives a symbolic location's canonical bytes, made to look it up (see
    /// [`id_of`]).
    fn ordinal<'a>(
        &self,
        l: LocationRef<'a>,
        last: &mut LastModule<'a>,
        canonical: &mut Vec<u8>,
    ) -> Option<u32> {
        match l {
            LocationRef::Native { module, offset } => {
                let m = match last.get(module) {
                    Some(ordinal) => ordinal,
                    None => {
                        let ordinal = self.modules.get(module).copied();
                        last.put(module, ordinal);
                        ordinal
                    }
                }?;
                self.natives.get(&(m, offset)).copied()
            }
            LocationRef::Symbolic(_) => {
                canonical.clear();
                l.canonical_bytes(canonical);
                self.symbolics.get(canonical)
            }
        }
    }

    /// Remembers location `l` as `ordinal`; `canonical` holds its canonical bytes if it
    /// is symbolic (as [`Inner::ordinal`] left them).
    fn remember(&mut self, l: &Location, canonical: &[u8], ordinal: u32) {
        match l {
            Location::Native { module, offset } => {
                let next = u32::try_from(self.modules.len()).unwrap_or(u32::MAX);
                let m = *self.modules.entry(module.clone()).or_insert(next);
                self.natives.insert((m, *offset), ordinal);
            }
            Location::Symbolic(_) => self.symbolics.insert(canonical, ordinal),
        }
    }
}

/// The content id of `l`; `canonical` holds its canonical bytes if it is symbolic (as
/// [`Inner::ordinal`] left them), which spares making them again.
fn id_of(l: &Location, canonical: &[u8]) -> LocationId {
    match l {
        Location::Symbolic(_) => LocationId::of_canonical(canonical),
        Location::Native { .. } => l.id(),
    }
}

/// Ids made by [`Numbering::unknown`] for some indexes of a profile's locations or
/// stacks, ascending, taken as [`Numbering::number`] goes through the indexes in order.
struct IdsByIndex<'a, T> {
    indexes: &'a [u32],
    ids: &'a [T],
    next: usize,
}

impl<'a, T: Copy> IdsByIndex<'a, T> {
    fn new(indexes: &'a [u32], ids: &'a [T]) -> Self {
        IdsByIndex {
            indexes,
            ids,
            next: 0,
        }
    }

    /// The id made for `index`, if one was; indexes must be asked in ascending order.
    fn take(&mut self, index: usize) -> Option<T> {
        while let Some(&i) = self.indexes.get(self.next) {
            match (i as usize).cmp(&index) {
                std::cmp::Ordering::Less => self.next += 1,
                std::cmp::Ordering::Equal => {
                    self.next += 1;
                    return self.ids.get(self.next - 1).copied();
                }
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}

/// The modules a profile's native locations looked up last, and their ordinals: a
/// profile's locations come from a few modules, and a stream's name theirs from one
/// table, so most are found here by address, without hashing a module's names.
#[derive(Default)]
struct LastModule<'a> {
    seen: [Option<(&'a Module, Option<u32>)>; LAST_MODULES],
    next: usize,
}

/// Modules [`LastModule`] holds.
const LAST_MODULES: usize = 4;

impl<'a> LastModule<'a> {
    fn get(&self, module: &Module) -> Option<Option<u32>> {
        let seen = self.seen.iter().flatten();
        seen.clone()
            .find(|(m, _)| std::ptr::eq(*m, module))
            .or_else(|| seen.clone().find(|(m, _)| *m == module))
            .map(|&(_, ordinal)| ordinal)
    }

    fn put(&mut self, module: &'a Module, ordinal: Option<u32>) {
        self.seen[self.next % LAST_MODULES] = Some((module, ordinal));
        self.next = self.next.wrapping_add(1);
    }
}

/// What the memory does not know of a profile: to be looked up in the store by id. It
/// also keeps what the memory did know, so that [`Numbering::number`] does not hash the
/// profile's locations and stacks a second time (unless the memory started over since).
#[derive(Debug, Default)]
pub(crate) struct Unknown {
    /// Ids of the locations not remembered.
    pub(crate) locations: Vec<LocationId>,
    /// Ids of the stacks not remembered.
    pub(crate) stacks: Vec<StackId>,
    /// The index of each of `locations` in the profile, ascending.
    location_indexes: Vec<u32>,
    /// The index of each of `stacks` in the profile, ascending.
    stack_indexes: Vec<u32>,
    /// The memory's generation when read.
    generation: u64,
    /// Each location's ordinal, when remembered.
    location_ordinals: Vec<Option<u32>>,
    /// Each stack's entry in its service's memory, when remembered.
    stack_entries: Vec<Option<u32>>,
    /// What was known by key, for the day asked.
    plan: Plan,
    day: u32,
}

impl Unknown {
    pub(crate) fn is_empty(&self) -> bool {
        self.locations.is_empty() && self.stacks.is_empty()
    }
}

/// A profile numbered: every location's and stack's number, and the rows to write.
#[derive(Debug, Default)]
pub(crate) struct Numbered {
    /// Number of each location, by index.
    pub(crate) location_nums: Vec<u64>,
    /// Number of each stack, by index.
    pub(crate) stack_nums: Vec<u64>,
    /// Locations whose rows are not known to be durable on the profile's day or later:
    /// (index, id), to write.
    pub(crate) new_locations: Vec<(u32, LocationId)>,
    /// Stacks whose rows are not known to be durable on the profile's day or later:
    /// (index, id), to write.
    pub(crate) new_stacks: Vec<(u32, StackId)>,
    /// The profile's day (days since 1970-01-01, at least 1).
    pub(crate) day: u32,
    generation: u64,
    location_ordinals: Vec<u32>,
    /// Each stack's entry in its service's memory ([`NO_ENTRY`]: none).
    stack_entries: Vec<u32>,
    /// The scope of the profile's stack keys, and the key of each of `new_stacks`.
    scoped_new: Option<(u64, Vec<u32>)>,
}

/// The numbers of one writer (see the module docs).
pub(crate) struct Numbering {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Numbering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Numbering").finish_non_exhaustive()
    }
}

impl Numbering {
    /// A writer numbering under `epoch`.
    pub(crate) fn new(epoch: u32) -> Self {
        Numbering {
            inner: Mutex::new(Inner {
                epoch,
                next_location: 0,
                generation: 0,
                natives: HashMap::default(),
                modules: HashMap::default(),
                symbolics: Symbolics::default(),
                locations: Vec::new(),
                stacks: HashMap::new(),
                stack_count: 0,
                stack_entries: 0,
                scopes: Scopes::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer's epoch.
    pub(crate) fn epoch(&self) -> u32 {
        self.lock().epoch
    }

    /// What the memory knows of `stacks` (of `scope`) for `service`, durable on `day` or
    /// later: by key, or, for a stack new to the scope, by its locations' keys (see
    /// [`Scopes::known`]); `locations`, defined in the scope since it last asked, are
    /// first found by content and their keys remembered.
    pub(crate) fn known_by_key(
        &self,
        service: &str,
        day: u32,
        scope: u64,
        stacks: &[StackByKey<'_>],
        locations: &[LocationByKey<'_>],
    ) -> KnownByKey {
        let mut inner = self.lock();
        inner
            .scopes
            .make_room(locations.len() + stacks.len(), MAX_SCOPED_KEYS);
        if !locations.is_empty() {
            let (mut last, mut canonical) = (LastModule::default(), Vec::with_capacity(256));
            let ordinals: Vec<(u32, u32)> = locations
                .iter()
                .filter_map(|l| {
                    Some((l.key, inner.ordinal(l.location, &mut last, &mut canonical)?))
                })
                .collect();
            inner.scopes.remember(service, scope, &[], &ordinals);
            let first = locations.first().map_or(0, |l| l.key);
            inner.scopes.told(service, scope, first, locations.len());
        }
        let locations_told = inner.scopes.locations_told(service, scope);
        let Inner {
            scopes,
            stacks: by_service,
            ..
        } = &mut *inner;
        let service_stacks = by_service.get(service);
        KnownByKey {
            stacks: scopes.known(service, day.max(1), scope, stacks, |key| {
                service_stacks.and_then(|s| s.known(s.find(key)?))
            }),
            locations_told,
        }
    }

    /// The ids of what `contents`, a profile of `day`, uses that the memory does not
    /// know.
    pub(crate) fn unknown(&self, service: &str, day: u32, c: &ProfileContents) -> Unknown {
        let inner = self.lock();
        let day = day.max(1);
        let mut out = Unknown {
            generation: inner.generation,
            location_ordinals: Vec::with_capacity(c.locations.len()),
            plan: inner.scopes.plan(service, day, c),
            day,
            ..Unknown::default()
        };
        // The ids of the locations not remembered, by index (`location_indexes` is
        // ascending); a remembered one's is read from the memory only for a stack that is
        // not (most stacks are remembered, and each read is a cache miss).
        let mut last = LastModule::default();
        let mut canonical = Vec::with_capacity(256);
        let keyed = inner.scopes.keyed_ordinals(service, c);
        for (i, l) in c.locations.iter().enumerate() {
            if !out.plan.needed[i] {
                out.location_ordinals.push(None);
                continue;
            }
            let ordinal = keyed
                .get(i)
                .copied()
                .flatten()
                .or_else(|| inner.ordinal(l.borrowed(), &mut last, &mut canonical));
            if ordinal.is_none() {
                let id = id_of(l, &canonical);
                out.locations.push(id);
                out.location_indexes.push(i as u32);
            }
            out.location_ordinals.push(ordinal);
        }
        let id_of_index = |l: u32| -> LocationId {
            match out.location_ordinals.get(l as usize).copied().flatten() {
                Some(o) => inner.locations[o as usize].id,
                None => out
                    .location_indexes
                    .binary_search(&l)
                    .ok()
                    .and_then(|k| out.locations.get(k).copied())
                    .unwrap_or(LocationId([0; 16])),
            }
        };
        let known = inner.stacks.get(service);
        let left_out = |i: usize| c.table_keys.as_ref().is_some_and(|k| k.is_left_out(i));
        let mut key = Vec::with_capacity(64);
        let (mut stack_ids, mut stack_indexes) = (Vec::new(), Vec::new());
        let mut stack_entries = Vec::with_capacity(c.stacks.len());
        for (i, stack) in c.stacks.iter().enumerate() {
            if out.plan.by_key[i].is_some() || left_out(i) {
                // Known by key; or left out and not known, which numbering refuses.
                stack_entries.push(None);
                continue;
            }
            key.clear();
            for &l in stack {
                match out.location_ordinals.get(l as usize).copied().flatten() {
                    Some(o) => key.push(o),
                    None => break,
                }
            }
            let entry = match known {
                Some(s) if key.len() == stack.len() => s.find(&key),
                _ => None,
            };
            if entry.is_none() {
                stack_ids.push(StackId::of(stack.iter().map(|&l| id_of_index(l))));
                stack_indexes.push(i as u32);
            }
            stack_entries.push(entry);
        }
        out.stacks = stack_ids;
        out.stack_indexes = stack_indexes;
        out.stack_entries = stack_entries;
        out
    }

    /// Numbers every location and stack of `contents`, a profile of `day`: remembered
    /// ones as remembered (`unknown`, from [`Numbering::unknown`] of the same contents,
    /// says which), ones the store has (`found_*`, from looking up `unknown`) with the
    /// store's number, new ones with the next numbers of this writer.
    pub(crate) fn number(
        &self,
        service: &str,
        day: u32,
        c: &ProfileContents,
        mut unknown: Unknown,
        found_locations: &HashMap<LocationId, u64>,
        found_stacks: &HashMap<StackId, u64>,
    ) -> Result<Numbered, StoreError> {
        let mut inner = self.lock();
        if inner.locations.len() + c.locations.len() > MAX_KNOWN_LOCATIONS
            || inner.stack_count + c.stacks.len() > MAX_KNOWN_STACKS
            || inner.symbolics.bytes_held() > MAX_KNOWN_SYMBOLIC_BYTES
            || inner.stack_entries > MAX_KNOWN_STACK_ENTRIES
        {
            inner.forget();
        }
        inner
            .scopes
            .make_room(c.stacks.len() + c.locations.len(), MAX_SCOPED_KEYS);
        let day = day.max(1);
        // What `unknown` found still holds unless the memory started over since
        // (ordinals are only ever added to, and numbers never change).
        let still = unknown.generation == inner.generation
            && unknown.day == day
            && unknown.location_ordinals.len() == c.locations.len()
            && unknown.stack_entries.len() == c.stacks.len();
        let plan = if still {
            std::mem::take(&mut unknown.plan)
        } else {
            inner.scopes.plan(service, day, c)
        };
        if plan.lost > 0 {
            return Err(StoreError::LeftOutStacks { count: plan.lost });
        }
        let (locations, stacks) = (c.locations.len(), c.stacks.len());
        let mut out = Numbered {
            day,
            generation: inner.generation,
            scoped_new: c.table_keys.as_ref().map(|k| (k.scope, Vec::new())),
            location_nums: Vec::with_capacity(locations),
            location_ordinals: Vec::with_capacity(locations),
            stack_nums: Vec::with_capacity(stacks),
            stack_entries: Vec::with_capacity(stacks),
            ..Numbered::default()
        };
        let mut last = LastModule::default();
        let mut keyed_locations = Vec::with_capacity(locations);
        let mut canonical = Vec::with_capacity(256);
        let keyed = if still {
            Vec::new()
        } else {
            inner.scopes.keyed_ordinals(service, c)
        };
        // The ids `unknown` made, by index, so that none is hashed twice.
        let (mut location_ids, mut stack_ids) = if still {
            (
                IdsByIndex::new(&unknown.location_indexes, &unknown.locations),
                IdsByIndex::new(&unknown.stack_indexes, &unknown.stacks),
            )
        } else {
            (IdsByIndex::new(&[], &[]), IdsByIndex::new(&[], &[]))
        };
        for (i, l) in c.locations.iter().enumerate() {
            if !plan.needed[i] {
                // Used only by stacks known by key: no row of it is written.
                out.location_nums.push(0);
                out.location_ordinals.push(u32::MAX);
                continue;
            }
            let remembered = if still {
                unknown.location_ordinals[i]
            } else {
                None
            };
            let ordinal = match remembered
                .or_else(|| keyed.get(i).copied().flatten())
                .or_else(|| inner.ordinal(l.borrowed(), &mut last, &mut canonical))
            {
                Some(o) => o,
                None => {
                    let id = location_ids.take(i).unwrap_or_else(|| id_of(l, &canonical));
                    let num = match found_locations.get(&id) {
                        Some(&num) => num,
                        None => {
                            let counter = inner.next_location;
                            inner.next_location =
                                counter.checked_add(1).ok_or(StoreError::NumbersExhausted)?;
                            inner.number(counter)
                        }
                    };
                    let o = inner.locations.len() as u32;
                    inner.locations.push(KnownLocation { num, id, day: 0 });
                    inner.remember(l, &canonical, o);
                    // A new module may now have an ordinal.
                    last = LastModule::default();
                    o
                }
            };
            if let Some(k) = c.table_keys.as_ref().and_then(|k| k.locations.get(i)) {
                keyed_locations.push((*k, ordinal));
            }
            let known = &inner.locations[ordinal as usize];
            out.location_nums.push(known.num);
            if known.day < day {
                out.new_locations.push((i as u32, known.id));
            }
            out.location_ordinals.push(ordinal);
        }
        let epoch = inner.epoch;
        let mut by_key = Vec::with_capacity(stacks);
        let Inner {
            stacks,
            locations,
            stack_count,
            stack_entries,
            ..
        } = &mut *inner;
        let service_stacks = stacks.entry(service.to_owned()).or_default();
        let mut key = Vec::with_capacity(64);
        for (i, stack) in c.stacks.iter().enumerate() {
            if let Some(known) = plan.by_key[i] {
                out.stack_nums.push(known.num);
                out.stack_entries.push(NO_ENTRY);
                continue;
            }
            key.clear();
            key.extend(
                stack
                    .iter()
                    .map(|&l| out.location_ordinals.get(l as usize).copied().unwrap_or(0)),
            );
            let remembered = if still {
                unknown.stack_entries.get(i).copied().flatten()
            } else {
                None
            }
            .or_else(|| service_stacks.find(&key));
            let stack_id = || StackId::of(key.iter().map(|&o| locations[o as usize].id));
            let (known, entry, mut id) =
                match remembered.and_then(|e| Some((service_stacks.known(e)?, e))) {
                    Some((k, e)) => (k, e, None),
                    None => {
                        let id = stack_ids.take(i).unwrap_or_else(stack_id);
                        let num = match found_stacks.get(&id) {
                            Some(&num) => num,
                            None => {
                                let counter = service_stacks.next;
                                service_stacks.next =
                                    counter.checked_add(1).ok_or(StoreError::NumbersExhausted)?;
                                u64::from(epoch) << 32 | u64::from(counter)
                            }
                        };
                        let k = KnownStack { num, day: 0 };
                        let entry = service_stacks.insert(&key, k).unwrap_or(NO_ENTRY);
                        *stack_count += 1;
                        *stack_entries += key.len();
                        (k, entry, Some(id))
                    }
                };
            out.stack_nums.push(known.num);
            let stack_key = c.table_keys.as_ref().and_then(|k| k.stacks.get(i).copied());
            if known.day < day {
                let id = id.take().unwrap_or_else(stack_id);
                out.new_stacks.push((i as u32, id));
                if let (Some((_, keys)), Some(k)) = (&mut out.scoped_new, stack_key) {
                    keys.push(k);
                }
            }
            if let Some(k) = stack_key {
                by_key.push((k, known));
            }
            out.stack_entries.push(entry);
        }
        if let Some(keys) = &c.table_keys {
            inner
                .scopes
                .remember(service, keys.scope, &by_key, &keyed_locations);
        }
        Ok(out)
    }

    /// Remembers the rows of `numbered` as durable (call once they are written).
    pub(crate) fn written(&self, service: &str, numbered: &Numbered) {
        let mut inner = self.lock();
        if inner.generation != numbered.generation {
            return;
        }
        for &(index, _) in &numbered.new_locations {
            if let Some(&o) = numbered.location_ordinals.get(index as usize) {
                if let Some(l) = inner.locations.get_mut(o as usize) {
                    l.day = l.day.max(numbered.day);
                }
            }
        }
        if let Some(s) = inner.stacks.get_mut(service) {
            for &(index, _) in &numbered.new_stacks {
                if let Some(&entry) = numbered.stack_entries.get(index as usize) {
                    s.mark_written(entry, numbered.day);
                }
            }
        }
        if let Some((scope, keys)) = &numbered.scoped_new {
            inner.scopes.written(*scope, keys, numbered.day);
        }
    }
}

#[cfg(test)]
mod tests {
    use holmes_proto::Module;

    use super::*;
    use crate::contents::TableKeys;
    use crate::location::StackFrame;

    /// Numbers `c` for `service` without a first pass (nothing found in the store).
    fn fresh(n: &Numbering, service: &str, day: u32, c: &ProfileContents) -> Numbered {
        n.number(
            service,
            day,
            c,
            Unknown::default(),
            &HashMap::new(),
            &HashMap::new(),
        )
        .unwrap()
    }

    /// Numbers `c` for `service` after asking what the memory does not know.
    fn remembered(n: &Numbering, service: &str, day: u32, c: &ProfileContents) -> Numbered {
        let unknown = n.unknown(service, day, c);
        numbered_after(n, service, day, c, unknown)
    }

    /// Numbers `c` for `service` with what `unknown` found (nothing found in the store).
    fn numbered_after(
        n: &Numbering,
        service: &str,
        day: u32,
        c: &ProfileContents,
        unknown: Unknown,
    ) -> Numbered {
        n.number(service, day, c, unknown, &HashMap::new(), &HashMap::new())
            .unwrap()
    }

    fn contents(offsets: &[u64]) -> ProfileContents {
        ProfileContents {
            locations: offsets
                .iter()
                .map(|&offset| Location::Native {
                    module: Module {
                        name: "checkout".into(),
                        build_id: "ab".into(),
                    },
                    offset,
                })
                .chain([Location::Symbolic(vec![StackFrame::new("main", "", 0)])])
                .collect(),
            stacks: vec![vec![0, 1, 2], vec![1, 2]],
            ..ProfileContents::default()
        }
    }

    #[test]
    fn numbers_are_given_once_and_remembered_when_written() {
        let n = Numbering::new(7);
        let c = contents(&[0x10, 0x20]);
        let unknown = n.unknown("checkout", 10, &c);
        assert_eq!((unknown.locations.len(), unknown.stacks.len()), (3, 2));
        let first = fresh(&n, "checkout", 10, &c);
        assert_eq!(first.location_nums, vec![7 << 32, 7 << 32 | 1, 7 << 32 | 2]);
        assert_eq!(first.stack_nums, vec![7 << 32, 7 << 32 | 1]);
        assert_eq!((first.new_locations.len(), first.new_stacks.len()), (3, 2));
        // Not written yet: the next profile writes the rows again, with the same numbers.
        let again = fresh(&n, "checkout", 10, &c);
        assert_eq!(again.stack_nums, first.stack_nums);
        assert_eq!(again.new_stacks.len(), 2);
        n.written("checkout", &first);
        assert!(n.unknown("checkout", 10, &c).is_empty());
        let known = fresh(&n, "checkout", 10, &c);
        assert!(known.new_locations.is_empty() && known.new_stacks.is_empty());
        // A profile of an earlier day needs nothing more; one of a later day writes the
        // rows again, on its day, so that retention keeps them as long as it.
        let earlier = fresh(&n, "checkout", 9, &c);
        assert!(earlier.new_locations.is_empty() && earlier.new_stacks.is_empty());
        let later = fresh(&n, "checkout", 11, &c);
        assert_eq!(later.stack_nums, first.stack_nums);
        assert_eq!((later.new_locations.len(), later.new_stacks.len()), (3, 2));
        // Another service numbers its own stacks (from 0), sharing the locations.
        let other = fresh(&n, "cart", 10, &c);
        assert_eq!(other.location_nums, first.location_nums);
        assert_eq!(other.stack_nums, vec![7 << 32, 7 << 32 | 1]);
        assert_eq!(other.new_stacks.len(), 2);
    }

    #[test]
    fn what_unknown_remembered_numbers_as_a_fresh_lookup_does() {
        let n = Numbering::new(3);
        let c = contents(&[0x10, 0x20]);
        let first = remembered(&n, "checkout", 10, &c);
        n.written("checkout", &first);
        let c2 = contents(&[0x10, 0x20, 0x30]);
        let reused = remembered(&n, "checkout", 10, &c2);
        let fresh = fresh(&n, "checkout", 10, &c2);
        assert_eq!(reused.location_nums, fresh.location_nums);
        assert_eq!(reused.stack_nums, fresh.stack_nums);
        assert_eq!(reused.location_nums[..2], first.location_nums[..2]);
        // The memory starts over between the two calls: nothing stale is used.
        let unknown = n.unknown("checkout", 10, &c2);
        n.lock().forget();
        let after = numbered_after(&n, "checkout", 10, &c2, unknown);
        assert_eq!(after.new_locations.len(), 4, "every row is written again");
        assert!(after
            .location_nums
            .iter()
            .all(|l| !fresh.location_nums.contains(l)));
        // What `unknown` found points at entries of the memory; once it starts over,
        // other stacks take those entries, and must not lend their numbers.
        let unknown = n.unknown("checkout", 10, &c2);
        n.lock().forget();
        let mut other = contents(&[0x40, 0x50, 0x60]);
        other.stacks = vec![vec![3, 2], vec![0, 1, 2, 3]];
        let others = remembered(&n, "checkout", 10, &other);
        let stale = numbered_after(&n, "checkout", 10, &c2, unknown);
        assert!(stale
            .stack_nums
            .iter()
            .all(|s| !others.stack_nums.contains(s)));
        assert_eq!(
            remembered(&n, "checkout", 10, &c2).stack_nums,
            stale.stack_nums
        );
    }

    #[test]
    fn stacks_known_by_key_are_numbered_without_their_locations() {
        let n = Numbering::new(5);
        let mut c = contents(&[0x10, 0x20]);
        c.table_keys = Some(TableKeys {
            scope: 42,
            stacks: vec![7, 8],
            locations: vec![0, 1, 2],
            left_out: Vec::new(),
        });
        let first = remembered(&n, "checkout", 10, &c);
        // Not durable yet: nothing is known by key.
        let before = n.unknown("checkout", 10, &c);
        assert!(before.plan.by_key.iter().all(Option::is_none));
        n.written("checkout", &first);
        let unknown = n.unknown("checkout", 10, &c);
        assert!(unknown.is_empty());
        assert!(unknown.plan.by_key.iter().all(Option::is_some));
        assert!(unknown.plan.needed.iter().all(|needed| !needed));
        let again = numbered_after(&n, "checkout", 10, &c, unknown);
        assert_eq!(again.stack_nums, first.stack_nums);
        assert!(again.new_locations.is_empty() && again.new_stacks.is_empty());
        // A later day writes the rows again, with the same numbers, and then knows them
        // by key on that day.
        let later = remembered(&n, "checkout", 11, &c);
        assert_eq!(later.stack_nums, first.stack_nums);
        assert_eq!((later.new_locations.len(), later.new_stacks.len()), (3, 2));
        n.written("checkout", &later);
        assert!(n
            .unknown("checkout", 11, &c)
            .plan
            .by_key
            .iter()
            .all(Option::is_some));
        // One stack known by key, one not: only the other's locations are looked at.
        // (Key 8 is still `[0x20, main]`.)
        let mut mixed = contents(&[0x20, 0x40]);
        mixed.stacks = vec![vec![1], vec![0, 2]];
        mixed.table_keys = Some(TableKeys {
            scope: 42,
            stacks: vec![9, 8],
            locations: vec![1, 3, 2],
            left_out: Vec::new(),
        });
        let unknown = n.unknown("checkout", 11, &mixed);
        assert_eq!(unknown.plan.needed, vec![false, true, false]);
        assert_eq!(unknown.locations.len(), 1, "0x40 is looked up");
        let numbered = numbered_after(&n, "checkout", 11, &mixed, unknown);
        assert_eq!(numbered.stack_nums[1], first.stack_nums[1]);
        assert_eq!(numbered.new_stacks.len(), 1);
        assert_eq!(numbered.new_locations.len(), 1);
        // The scope is the service's own: another service is not served from it.
        assert!(n
            .unknown("cart", 10, &c)
            .plan
            .by_key
            .iter()
            .all(Option::is_none));
    }

    #[test]
    fn what_the_store_has_keeps_its_number() {
        let n = Numbering::new(2);
        let c = contents(&[0x10, 0x20]);
        let unknown = n.unknown("checkout", 10, &c);
        let found_l: HashMap<LocationId, u64> = [(unknown.locations[0], 1 << 32 | 99)].into();
        let found_s: HashMap<StackId, u64> = [(unknown.stacks[1], 1 << 32 | 5)].into();
        let first_stack = unknown.stacks[0];
        let numbered = n
            .number("checkout", 10, &c, unknown, &found_l, &found_s)
            .unwrap();
        assert_eq!(numbered.location_nums[0], 1 << 32 | 99);
        assert_eq!(numbered.location_nums[1], 2 << 32);
        assert_eq!(numbered.stack_nums, vec![2 << 32, 1 << 32 | 5]);
        // Found ones are written again once, on this day (retention keeps them then).
        assert_eq!(numbered.new_locations.len(), 3);
        assert_eq!(numbered.new_stacks.len(), 2);
        assert_eq!(numbered.new_stacks[0].1, first_stack);
    }

    #[test]
    fn ids_made_before_are_taken_by_index_in_ascending_order() {
        let (indexes, ids) = ([2u32, 5, 9], ['a', 'b', 'c']);
        let mut made = IdsByIndex::new(&indexes, &ids);
        assert_eq!(made.take(0), None);
        assert_eq!(made.take(2), Some('a'));
        assert_eq!(made.take(3), None);
        assert_eq!(made.take(4), None);
        // 5 skipped: its id is passed over, not handed to a later index.
        assert_eq!(made.take(9), Some('c'));
        assert_eq!(made.take(10), None);
    }

    #[test]
    fn the_last_modules_are_found_by_address_or_content_and_the_oldest_goes() {
        let module = |name: &str| Module {
            name: name.into(),
            build_id: "b1".into(),
        };
        let modules: Vec<Module> = ["a", "b", "c", "d", "e"].map(module).into();
        let same_as_a = module("a");
        let mut last = LastModule::default();
        assert_eq!(last.get(&modules[0]), None);
        last.put(&modules[0], Some(0));
        last.put(&modules[1], None);
        assert_eq!(last.get(&modules[0]), Some(Some(0)));
        assert_eq!(last.get(&same_as_a), Some(Some(0)));
        assert_eq!(last.get(&modules[1]), Some(None));
        assert_eq!(last.get(&modules[2]), None);
        for (i, m) in modules.iter().enumerate().skip(2) {
            last.put(m, Some(i as u32));
        }
        // Five put into four places: the first is forgotten.
        assert_eq!(last.get(&modules[0]), None);
        assert_eq!(last.get(&modules[4]), Some(Some(4)));
        assert_eq!(last.get(&module("b")), Some(None));
    }
}
