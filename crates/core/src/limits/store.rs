//! Sharded maps from scope value to state, one per limit.
//!
//! Each shard is its own mutex, so requests for different scope values rarely meet on a
//! lock and there is no global lock on the hot path. Idle entries are swept out of a shard
//! whenever it has doubled in size since its last sweep, which keeps memory within twice
//! the live keys at amortised constant cost per insert.

use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::HashMap;
use parking_lot::{Mutex, MutexGuard};

use super::decision::ScopeState;

const SHARDS: usize = 64;
/// A shard is not swept before it holds this many entries.
const MIN_SWEEP_LEN: usize = 256;

/// Keeps each shard's lock on its own cache line, so threads working on neighbouring
/// shards do not slow each other down.
#[repr(align(64))]
#[derive(Debug)]
struct Padded<T>(T);

/// The entries of one shard.
#[derive(Debug)]
pub struct Shard {
    map: HashMap<Arc<str>, ScopeState, RandomState>,
    sweep_at: usize,
}

impl Shard {
    /// The state of `key`, created empty on first use. A new key may first trigger a sweep
    /// that drops every entry `is_idle` accepts.
    pub fn entry(
        &mut self,
        key: &str,
        is_idle: impl FnMut(&mut ScopeState) -> bool,
    ) -> (&Arc<str>, &mut ScopeState) {
        if !self.map.contains_key(key) {
            if self.map.len() >= self.sweep_at {
                self.sweep(is_idle);
            }
            self.map.insert(Arc::from(key), ScopeState::default());
        }
        match self.map.get_key_value_mut(key) {
            Some(found) => found,
            // Inserted just above under the same lock.
            None => unreachable!("entry inserted under the lock is present"),
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut ScopeState> {
        self.map.get_mut(key)
    }

    /// Drops idle entries; returns how many.
    pub fn sweep(&mut self, mut is_idle: impl FnMut(&mut ScopeState) -> bool) -> usize {
        let before = self.map.len();
        self.map.retain(|_, state| !is_idle(state));
        self.map.shrink_to_fit();
        self.sweep_at = MIN_SWEEP_LEN.max(self.map.len() * 2);
        before - self.map.len()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Arc<str>, &mut ScopeState)> {
        self.map.iter_mut()
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
        let shards = (0..SHARDS)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    map: HashMap::with_hasher(RandomState::default()),
                    sweep_at: MIN_SWEEP_LEN,
                }))
            })
            .collect();
        Self {
            shards,
            hasher: RandomState::default(),
        }
    }

    /// Locks the shard that holds `key`.
    pub fn lock(&self, key: &str) -> MutexGuard<'_, Shard> {
        // The top bits: the map inside the shard uses its own seed, so the low bits it
        // relies on stay independent of the shard choice.
        let index = (self.hasher.hash_one(key) >> 58) as usize % SHARDS;
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
