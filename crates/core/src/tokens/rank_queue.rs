//! The priority queue of byte pair encoding on long pieces: pairs ordered by rank, then
//! by position, with far better memory locality than a binary heap.
//!
//! Pairs are kept in one bucket per rank. A bucket takes positions in ascending order
//! into a plain run that is consumed from the front (the initial scan of a piece, and
//! most later pushes, arrive that way) and keeps the rare out-of-order position in a
//! small heap. A bitmap over ranks finds the lowest non-empty bucket with a few word
//! scans. On a megabyte of one repeated character this touches memory sequentially
//! where a binary heap of a million entries misses the cache on every level.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

#[derive(Default)]
struct Bucket {
    run: Vec<u32>,
    next: usize,
    late: BinaryHeap<Reverse<u32>>,
}

impl Bucket {
    fn push(&mut self, pos: u32) {
        if self.next == self.run.len() {
            self.run.clear();
            self.next = 0;
        }
        match self.run.last() {
            Some(&last) if pos <= last => self.late.push(Reverse(pos)),
            _ => self.run.push(pos),
        }
    }

    fn pop(&mut self) -> Option<u32> {
        let in_run = self.run.get(self.next).copied();
        let late = self.late.peek().map(|r| r.0);
        match (in_run, late) {
            (Some(a), Some(b)) if b < a => self.late.pop().map(|r| r.0),
            (Some(a), _) => {
                self.next += 1;
                Some(a)
            }
            (None, _) => self.late.pop().map(|r| r.0),
        }
    }

    fn is_empty(&self) -> bool {
        self.next == self.run.len() && self.late.is_empty()
    }
}

/// Min-queue of `(rank, position)`.
pub struct RankQueue {
    buckets: FxHashMap<u32, Bucket>,
    nonempty: Vec<u64>,
    // Every non-empty bucket's word in `nonempty` is at or after this one.
    first_word: usize,
}

impl RankQueue {
    /// A queue for ranks below `rank_limit`.
    pub fn new(rank_limit: u32) -> Self {
        RankQueue {
            buckets: FxHashMap::default(),
            nonempty: vec![0; rank_limit as usize / 64 + 1],
            first_word: usize::MAX,
        }
    }

    pub fn push(&mut self, rank: u32, pos: u32) {
        let word = rank as usize / 64;
        // Ranks come from the rank map, so they are below the limit; a larger one would
        // be a bug, and is dropped rather than allowed to panic.
        let Some(bits) = self.nonempty.get_mut(word) else {
            return;
        };
        *bits |= 1 << (rank % 64);
        self.first_word = self.first_word.min(word);
        self.buckets.entry(rank).or_default().push(pos);
    }

    pub fn pop(&mut self) -> Option<(u32, u32)> {
        while self.first_word < self.nonempty.len() {
            let bits = self.nonempty[self.first_word];
            if bits == 0 {
                self.first_word += 1;
                continue;
            }
            let rank = (self.first_word * 64) as u32 + bits.trailing_zeros();
            let bucket = self.buckets.get_mut(&rank)?;
            let pos = bucket.pop()?;
            if bucket.is_empty() {
                self.nonempty[self.first_word] &= !(1 << (rank % 64));
            }
            return Some((rank, pos));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_rank_then_position() {
        let mut queue = RankQueue::new(1000);
        for (rank, pos) in [(5, 9), (5, 2), (700, 1), (3, 4), (5, 7), (64, 0), (3, 1)] {
            queue.push(rank, pos);
        }
        let mut popped = Vec::new();
        while let Some(entry) = queue.pop() {
            popped.push(entry);
            if entry == (5, 7) {
                queue.push(4, 100);
                queue.push(5, 3);
            }
        }
        assert_eq!(
            popped,
            [
                (3, 1),
                (3, 4),
                (5, 2),
                (5, 7),
                (4, 100),
                (5, 3),
                (5, 9),
                (64, 0),
                (700, 1)
            ]
        );
    }

    #[test]
    fn matches_a_binary_heap_on_random_operations() {
        let mut queue = RankQueue::new(300);
        let mut heap = BinaryHeap::new();
        let mut seed = 11u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for _ in 0..20_000 {
            if next() % 3 == 0 {
                assert_eq!(queue.pop(), heap.pop().map(|Reverse(e)| e));
            } else {
                let entry = (next() % 300, next() % 5_000);
                queue.push(entry.0, entry.1);
                heap.push(Reverse(entry));
            }
        }
        while let Some(Reverse(entry)) = heap.pop() {
            assert_eq!(queue.pop(), Some(entry));
        }
        assert_eq!(queue.pop(), None);
    }
}
