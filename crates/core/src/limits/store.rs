//! Sharded maps from scope value to state, one per limit.
//!
//! Each shard is its own mutex, so requests for different scope values rarely meet on a
//! lock and there is no global lock on the hot path. A key is hashed once: some bits pick
//! the shard, the table inside uses the same hash. Idle entries are swept out of a shard
//! whenever it has doubled in size since its last sweep, which keeps memory within twice
//! the live keys at amortised constant cost per insert.

use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

use super::decision::ScopeState;

const SHARDS: usize = 64;
/// Hash bits 40..46 pick the shard: the table uses the low bits for the bucket and the
/// top seven as tags, so the shard choice stays independent of both.
const SHARD_SHIFT: u32 = 40;
/// A shard is not swept before it holds this many entries.
const MIN_SWEEP_LEN: usize = 256;

/// Keeps each shard's lock on its own cache line, so threads working on neighbouring
/// shards do not slow each other down.
#[repr(align(64))]
#[derive(Debug)]
struct Padded<T>(T);

/// A stored key (shared with the reservations that hold it) and its state.
pub type Slot = (Arc<str>, ScopeState);

/// The entries of one shard.
#[derive(Debug)]
pub struct Shard {
    table: HashTable<Slot>,
    hasher: RandomState,
    sweep_at: usize,
}

/// A key with its hash, computed once per admission.
#[derive(Debug, Clone, Copy)]
pub struct Hashed<'a> {
    key: &'a str,
    hash: u64,
}

impl<'a> Hashed<'a> {
    pub fn key(&self) -> &'a str {
        self.key
    }
}

impl Shard {
    /// The state of `key`, created empty on first use. A new key may first trigger a sweep
    /// that drops every entry `is_idle` accepts.
    pub fn entry(
        &mut self,
        key: Hashed<'_>,
        is_idle: impl FnMut(&mut ScopeState) -> bool,
    ) -> &mut Slot {
        if self.table.len() >= self.sweep_at && self.get(key).is_none() {
            self.sweep(is_idle);
        }
        let hasher = &self.hasher;
        let rehash = move |slot: &Slot| hasher.hash_one(&*slot.0);
        match self
            .table
            .entry(key.hash, |slot| &*slot.0 == key.key, rehash)
        {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(empty) => empty
                .insert((Arc::from(key.key), ScopeState::default()))
                .into_mut(),
        }
    }

    /// The stored key (shared with reservations) and the state of an existing entry.
    pub fn get(&mut self, key: Hashed<'_>) -> Option<&mut Slot> {
        self.table.find_mut(key.hash, |slot| &*slot.0 == key.key)
    }

    /// Drops idle entries; returns how many.
    pub fn sweep(&mut self, mut is_idle: impl FnMut(&mut ScopeState) -> bool) -> usize {
        let before = self.table.len();
        self.table.retain(|slot| !is_idle(&mut slot.1));
        let hasher = &self.hasher;
        self.table.shrink_to_fit(|slot| hasher.hash_one(&*slot.0));
        self.sweep_at = MIN_SWEEP_LEN.max(self.table.len() * 2);
        before - self.table.len()
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.table.iter_mut()
    }
}

/// All scope values of one limit.
#[derive(Debug)]
pub struct Store {
    shards: Box<[Padded<Mutex<Shard>>]>,
    hasher: RandomState,
}

impl Store {
    pub fn new() -> Self {
        let hasher = RandomState::default();
        let shards = (0..SHARDS)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    table: HashTable::new(),
                    hasher: hasher.clone(),
                    sweep_at: MIN_SWEEP_LEN,
                }))
            })
            .collect();
        Self { shards, hasher }
    }

    pub fn hash<'a>(&self, key: &'a str) -> Hashed<'a> {
        Hashed {
            key,
            hash: self.hasher.hash_one(key),
        }
    }

    /// Locks the shard that holds `key`.
    pub fn lock(&self, key: Hashed<'_>) -> MutexGuard<'_, Shard> {
        let index = (key.hash >> SHARD_SHIFT) as usize % SHARDS;
        self.shards[index].0.lock()
    }

    /// Every shard in turn, each locked only while `visit` runs.
    pub fn for_each_shard(&self, mut visit: impl FnMut(&mut Shard)) {
        for shard in self.shards.iter() {
            visit(&mut shard.0.lock());
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}
