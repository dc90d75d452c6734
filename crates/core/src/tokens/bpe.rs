//! Byte pair encoding of one piece, counting tokens without building the id list.
//!
//! BPE repeatedly merges the adjacent pair of parts whose concatenation has the lowest
//! rank, leftmost first on ties, until no adjacent pair is a token. Short pieces use a
//! flat scan per merge (quadratic, but tiny and cache-friendly); long pieces use a rank
//! queue with lazily invalidated entries, so that a megabyte with no split point
//! (one repeated character, base64, random letters) stays fast.

use super::rank_queue::RankQueue;
use super::ranks::{RankMap, NO_RANK};

/// Pieces at least this long use the rank queue; below it the flat scan is faster.
const LARGE_PIECE: usize = 256;

#[inline]
fn rank(ranks: &RankMap, bytes: &[u8]) -> u32 {
    ranks.rank(bytes)
}

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
    if piece.len() < LARGE_PIECE {
        count_short(ranks, piece)
    } else {
        count_long(ranks, piece)
    }
}

/// Flat version: `starts[i]` is where part i begins, `pair_rank[i]` the rank of part i
/// joined with part i + 1.
fn count_short(ranks: &RankMap, piece: &[u8]) -> usize {
    let n = piece.len();
    let mut starts = [0u8; LARGE_PIECE + 1];
    let mut pair_rank = [NO_RANK; LARGE_PIECE];
    for (i, start) in starts.iter_mut().enumerate().take(n + 1) {
        *start = i as u8;
    }
    for i in 0..n - 1 {
        pair_rank[i] = rank(ranks, &piece[i..i + 2]);
    }

    let mut parts = n;
    loop {
        let pairs = &pair_rank[..parts - 1];
        let Some((best, &best_rank)) = pairs.iter().enumerate().min_by_key(|&(_, r)| *r) else {
            break;
        };
        if best_rank == NO_RANK {
            break;
        }
        // Part best + 1 disappears into part best.
        starts.copy_within(best + 2..=parts, best + 1);
        pair_rank.copy_within(best + 1..parts - 1, best);
        parts -= 1;

        let span = |i: usize| -> u32 {
            if i + 2 <= parts {
                rank(ranks, &piece[starts[i] as usize..starts[i + 2] as usize])
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

/// Long version over a linked list of parts. Each part is named by its start offset;
/// `end[i]` is where it ends, `prev[i]` where the previous part starts, and `pair[i]`
/// the rank of part i joined with its successor (`NO_RANK` once merged away). A queued
/// pair is stale when its rank no longer equals `pair[i]`: the bytes of a pair only
/// grow, and distinct byte strings have distinct ranks. Offsets are `u32` to halve the
/// memory traffic that dominates on megabyte pieces.
fn count_long(ranks: &RankMap, piece: &[u8]) -> usize {
    // A single piece of 4 GiB or more is counted in 4 GiB slices: exact below that size,
    // and never a panic above it.
    if piece.len() > u32::MAX as usize {
        return piece
            .chunks(u32::MAX as usize)
            .map(|chunk| count_piece(ranks, chunk))
            .sum();
    }
    let n = piece.len();
    let mut end: Vec<u32> = (1..=n as u32).collect();
    let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
    let mut pair: Vec<u32> = vec![NO_RANK; n];
    let mut queue = RankQueue::new(ranks.rank_limit());
    for i in 0..n - 1 {
        pair[i] = rank(ranks, &piece[i..i + 2]);
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
            rank(ranks, &piece[i..end[new_end] as usize])
        } else {
            NO_RANK
        };
        if pair[i] != NO_RANK {
            queue.push(pair[i], i as u32);
        }
        if i > 0 {
            let p = prev[i] as usize;
            pair[p] = rank(ranks, &piece[p..new_end]);
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

    #[test]
    fn merges_lowest_rank_first() {
        let ranks = toy_ranks();
        // "ab" (256) wins over "bc" (257), then "ab"+"c" is "abc".
        assert_eq!(count_short(&ranks, b"abcd"), 2);
        assert_eq!(count_long(&ranks, b"abcd"), 2);
        // Leftmost on ties: "aa" "aa" "a" then "aaaa" "a".
        assert_eq!(count_short(&ranks, b"aaaaa"), 2);
        assert_eq!(count_long(&ranks, b"aaaaa"), 2);
    }

    #[test]
    fn short_and_long_agree() {
        let ranks = toy_ranks();
        let mut seed = 7u64;
        for len in 2..LARGE_PIECE {
            let piece: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b"abcd"[(seed >> 33) as usize % 4]
                })
                .collect();
            assert_eq!(
                count_short(&ranks, &piece),
                count_long(&ranks, &piece),
                "{piece:?}"
            );
        }
    }
}
