//! Outstanding reservations, by handle, with a deadline after which they expire.
//!
//! A handler that crashes or a stream that is cancelled never settles; its reservation
//! must not hold budget or a concurrency slot forever. Deadlines are issued from a
//! monotonic clock with one fixed time-to-live, so in each shard they arrive in order and
//! a queue finds the expired ones without scanning.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::RandomState;
use hashbrown::HashMap;
use parking_lot::Mutex;
use smallvec::SmallVec;

use super::decision::Held;

const SHARDS: usize = 16;

/// What an admitted request holds, and what it reserved.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// When the request was admitted, to learn how long requests stay in flight.
    pub admitted_ns: u64,
    pub deadline_ns: u64,
    pub tokens: u64,
    pub cost: u64,
    pub held: SmallVec<[Held; 4]>,
}

#[derive(Debug, Default)]
struct Shard {
    live: HashMap<u64, Reservation, RandomState>,
    /// (deadline, handle) in issue order; handles settled meanwhile are skipped.
    deadlines: VecDeque<(u64, u64)>,
}

impl Shard {
    /// Settled handles stay in the queue until their deadline; drop them once they
    /// outnumber the live ones, so the queue stays proportional to what is outstanding.
    fn compact(&mut self) {
        if self.deadlines.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.deadlines
                .retain(|(_, handle)| live.contains_key(handle));
        }
    }
}

/// The table of outstanding reservations.
#[derive(Debug)]
pub struct Reservations {
    shards: Box<[Mutex<Shard>]>,
    next_handle: AtomicU64,
}

impl Reservations {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            next_handle: AtomicU64::new(1),
        }
    }

    fn shard(&self, handle: u64) -> &Mutex<Shard> {
        &self.shards[(handle % SHARDS as u64) as usize]
    }

    /// Records a reservation; returns its handle (never 0, which means "nothing held").
    pub fn insert(&self, reservation: Reservation) -> u64 {
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(handle).lock();
        shard.deadlines.push_back((reservation.deadline_ns, handle));
        shard.live.insert(handle, reservation);
        shard.compact();
        handle
    }

    /// Removes and returns the reservation, if it is still outstanding.
    pub fn take(&self, handle: u64) -> Option<Reservation> {
        let mut shard = self.shard(handle).lock();
        let taken = shard.live.remove(&handle);
        shard.compact();
        taken
    }

    /// Removes up to `max` reservations of the shard of `handle` whose deadline has passed.
    pub fn take_expired_near(&self, handle: u64, now: u64, max: usize) -> Vec<Reservation> {
        take_expired(&mut self.shard(handle).lock(), now, max)
    }

    /// Removes up to `max` reservations whose deadline has passed, visiting the shards in
    /// turn.
    pub fn take_some_expired(&self, now: u64, max: usize) -> Vec<Reservation> {
        let mut expired = Vec::new();
        for shard in self.shards.iter() {
            let room = max - expired.len();
            if room == 0 {
                break;
            }
            expired.extend(take_expired(&mut shard.lock(), now, room));
        }
        expired
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().live.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Reservations {
    fn default() -> Self {
        Self::new()
    }
}

fn take_expired(shard: &mut Shard, now: u64, max: usize) -> Vec<Reservation> {
    let mut expired = Vec::new();
    while expired.len() < max {
        match shard.deadlines.front() {
            Some(&(deadline, handle)) if deadline <= now => {
                shard.deadlines.pop_front();
                if let Some(reservation) = shard.live.remove(&handle) {
                    expired.push(reservation);
                }
            }
            _ => break,
        }
    }
    expired
}
