//! Byte pair encoding of one piece, counting tokens without building the id list.
//!
//! BPE repeatedly merges the adjacent pair of parts whose concatenation has the lowest
//! rank, leftmost first on ties, until no adjacent pair is a token. Short pieces use a
//! flat scan per merge (quadratic, but tiny and cache-friendly). Longer pieces keep their
//! parts in a linked list and their pairs in a priority queue with lazily invalidated
//! entries: a binary heap up to a few kilobytes, where the heap fits in the cache, and a
//! rank queue beyond, so that a megabyte with no split point (one repeated character,
//! base64, random letters) stays fast.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::rank_queue::RankQueue;
use super::ranks::{RankMap, NO_RANK};

/// Pieces at least this long use a merge queue; below it the flat scan is faster.
const QUEUED_PIECE: usize = 48;
/// Pieces at least this long use the rank queue instead of a binary heap.
const LARGE_PIECE: usize = 4096;

/// The number of tokens BPE makes of `piece` (non-empty).
#[inline]
pub fn count_piece(ranks: &RankMap, piece: &[u8]) -> usize {
    if piece.len() == 1 || ranks.get(piece).is_some() {
        return 1;
    }
    count_merged(ranks, piece)
}

/// The number of tokens BPE makes of `piece`, known not to be a single token.
pub fn count_merged(ranks: &RankMap, piece: &[u8]) -> usize {
    if piece.len() < QUEUED_PIECE {
        count_short(ranks, piece)
    } else if piece.len() < LARGE_PIECE {
        count_queued(ranks, piece, HeapQueue::with_capacity(piece.len()))
    } else {
        count_long(ranks, piece)
    }
}

/// Flat version: `starts[i]` is where part i begins, `pair_rank[i]` the rank of part i
/// joined with part i + 1. The arrays are small enough that filling them costs less than
/// anything smarter.
fn count_short(ranks: &RankMap, piece: &[u8]) -> usize {
    let n = piece.len();
    let mut starts = [0u8; QUEUED_PIECE + 1];
    let mut pair_rank = [NO_RANK; QUEUED_PIECE];
    for (i, start) in starts.iter_mut().enumerate().take(n + 1) {
        *start = i as u8;
    }
    for i in 0..n - 1 {
        pair_rank[i] = ranks.rank(&piece[i..i + 2]);
    }

    let mut parts = n;
    loop {
        let pairs = &pair_rank[..parts - 1];
        // A plain minimum then a search for it: both loops vectorise or stay branch-light,
        // where a combined arg-min carries the index through every comparison.
        let best_rank = pairs.iter().copied().min().unwrap_or(NO_RANK);
        if best_rank == NO_RANK {
            break;
        }
        let Some(best) = pairs.iter().position(|&r| r == best_rank) else {
            break;
        };
        // Part best + 1 disappears into part best.
        starts.copy_within(best + 2..=parts, best + 1);
        pair_rank.copy_within(best + 1..parts - 1, best);
        parts -= 1;

        let span = |i: usize| -> u32 {
            if i + 2 <= parts {
                ranks.rank(&piece[starts[i] as usize..starts[i + 2] as usize])
            } else {
                NO_RANK
            }
        };
        pair_rank[best] = span(best);
        if best > 0 {
            pair_rank[best - 1] = span(best - 1);
        }
    }
    parts
}

/// A min-queue of `(rank, position)` pairs.
trait MergeQueue {
    fn push(&mut self, rank: u32, pos: u32);
    fn pop(&mut self) -> Option<(u32, u32)>;
}

/// A binary heap of rank and position packed into one `u64`, so that one integer
/// comparison orders by rank, then leftmost.
struct HeapQueue(BinaryHeap<Reverse<u64>>);

impl HeapQueue {
    fn with_capacity(capacity: usize) -> Self {
        HeapQueue(BinaryHeap::with_capacity(capacity))
    }
}

impl MergeQueue for HeapQueue {
    #[inline]
    fn push(&mut self, rank: u32, pos: u32) {
        self.0.push(Reverse(u64::from(rank) << 32 | u64::from(pos)));
    }

    #[inline]
    fn pop(&mut self) -> Option<(u32, u32)> {
        self.0
            .pop()
            .map(|Reverse(key)| ((key >> 32) as u32, key as u32))
    }
}

impl MergeQueue for RankQueue {
    #[inline]
    fn push(&mut self, rank: u32, pos: u32) {
        RankQueue::push(self, rank, pos);
    }

    #[inline]
    fn pop(&mut self) -> Option<(u32, u32)> {
        RankQueue::pop(self)
    }
}

/// The rank queue version, for pieces of any length.
fn count_long(ranks: &RankMap, piece: &[u8]) -> usize {
    // A single piece of 4 GiB or more is counted in 4 GiB slices: exact below that size,
    // and never a panic above it.
    if piece.len() > u32::MAX as usize {
        return piece
            .chunks(u32::MAX as usize)
            .map(|chunk| count_piece(ranks, chunk))
            .sum();
    }
    count_queued(ranks, piece, RankQueue::new(ranks.rank_limit()))
}

/// Queue version over a linked list of parts. Each part is named by its start offset;
/// `end[i]` is where it ends, `prev[i]` where the previous part starts, and `pair[i]`
/// the rank of part i joined with its successor (`NO_RANK` once merged away). A queued
/// pair is stale when its rank no longer equals `pair[i]`: the bytes of a pair only
/// grow, and distinct byte strings have distinct ranks. Offsets are `u32` to halve the
/// memory traffic that dominates on megabyte pieces; `piece` is shorter than 4 GiB.
fn count_queued(ranks: &RankMap, piece: &[u8], mut queue: impl MergeQueue) -> usize {
    let n = piece.len();
    let mut end: Vec<u32> = (1..=n as u32).collect();
    let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
    let mut pair: Vec<u32> = vec![NO_RANK; n];
    for i in 0..n - 1 {
        pair[i] = ranks.rank(&piece[i..i + 2]);
        if pair[i] != NO_RANK {
            queue.push(pair[i], i as u32);
        }
    }

    let mut parts = n;
    while let Some((r, i)) = queue.pop() {
        let i = i as usize;
        if pair[i] != r {
            continue;
        }
        let gone = end[i] as usize;
        let new_end = end[gone] as usize;
        end[i] = new_end as u32;
        pair[gone] = NO_RANK;
        if new_end < n {
            prev[new_end] = i as u32;
        }
        parts -= 1;

        pair[i] = if new_end < n {
            ranks.rank(&piece[i..end[new_end] as usize])
        } else {
            NO_RANK
        };
        if pair[i] != NO_RANK {
            queue.push(pair[i], i as u32);
        }
        if i > 0 {
            let p = prev[i] as usize;
            pair[p] = ranks.rank(&piece[p..new_end]);
            if pair[p] != NO_RANK {
                queue.push(pair[p], p as u32);
            }
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Encoding;
    use proptest::prelude::*;

    fn toy_ranks() -> RankMap {
        let mut ranks = RankMap::default();
        for b in 0..=255u8 {
            ranks.insert(&[b], u32::from(b));
        }
        for (rank, token) in ["ab", "bc", "abc", "aa", "aaaa", "cd"].iter().enumerate() {
            ranks.insert(token.as_bytes(), 256 + rank as u32);
        }
        ranks
    }

    /// Textbook BPE, as tiktoken writes it: a vector of part boundaries, the lowest
    /// ranked pair found by a scan and removed by a shift on every merge.
    fn reference_count(ranks: &RankMap, piece: &[u8]) -> usize {
        let mut bounds: Vec<usize> = (0..=piece.len()).collect();
        loop {
            let best = (0..bounds.len().saturating_sub(2))
                .map(|i| (ranks.rank(&piece[bounds[i]..bounds[i + 2]]), i))
                .min();
            match best {
                Some((rank, i)) if rank != NO_RANK => {
                    bounds.remove(i + 1);
                }
                _ => return bounds.len() - 1,
            }
        }
    }

    fn every_version(ranks: &RankMap, piece: &[u8]) -> [usize; 4] {
        let short = if piece.len() < QUEUED_PIECE {
            count_short(ranks, piece)
        } else {
            reference_count(ranks, piece)
        };
        [
            short,
            count_queued(ranks, piece, HeapQueue::with_capacity(0)),
            count_long(ranks, piece),
            count_merged(ranks, piece),
        ]
    }

    #[test]
    fn merges_lowest_rank_first() {
        let ranks = toy_ranks();
        // "ab" (256) wins over "bc" (257), then "ab"+"c" is "abc".
        assert_eq!(every_version(&ranks, b"abcd"), [2; 4]);
        // Leftmost on ties: "aa" "aa" "a" then "aaaa" "a".
        assert_eq!(every_version(&ranks, b"aaaaa"), [2; 4]);
    }

    #[test]
    fn every_version_agrees_on_toy_ranks() {
        let ranks = toy_ranks();
        let mut seed = 7u64;
        for len in 2..300 {
            let piece: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b"abcd"[(seed >> 33) as usize % 4]
                })
                .collect();
            let expected = reference_count(&ranks, &piece);
            assert_eq!(every_version(&ranks, &piece), [expected; 4], "{piece:?}");
        }
    }

    proptest! {
        /// Every version against the textbook one on real ranks, over text that mixes
        /// scripts and repeats (the mixes that make the queue versions reorder merges).
        #[test]
        fn every_version_agrees_on_real_ranks(
            words in proptest::collection::vec(
                prop_oneof![
                    Just("the"), Just("ing"), Just("สวัสดี"), Just("中文字"),
                    Just("привет"), Just("aaaa"), Just("=="), Just("é"), Just("🙂")
                ],
                1..40,
            ),
            name in prop_oneof![Just("cl100k_base"), Just("o200k_base")],
        ) {
            let ranks = Encoding::get(name).unwrap().ranks();
            let piece = words.concat();
            let expected = reference_count(ranks, piece.as_bytes());
            prop_assert_eq!(every_version(ranks, piece.as_bytes()), [expected; 4]);
        }
    }
}
