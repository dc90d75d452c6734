//! Per-thread memory of recent pieces and their token counts.
//!
//! Natural text repeats a few thousand words, and a rank-map lookup misses the CPU cache
//! (the map is several megabytes) while this table stays in it. Short pieces go through a
//! small direct-mapped table; longer pieces that need merging, where a hit saves a dozen
//! lookups, through a bounded hash map.

use rustc_hash::FxHashMap;

use super::bpe;
use super::ranks::{pack, RankMap, PACKED_MAX};

const HOT_BITS: u32 = 12;
/// Pieces up to this long that need merging have their counts remembered.
const MERGED_PIECE_MAX: usize = 256;
/// The map of merged pieces is emptied when it reaches this size, bounding its memory.
const MERGED_PIECES: usize = 1 << 14;

pub struct PieceCache {
    // Packed piece and its count; a packed key is never 0 (its length byte is not), so
    // zeroed slots are empty.
    hot: Box<[(u128, u32)]>,
    merged: FxHashMap<Box<[u8]>, u32>,
}

impl Default for PieceCache {
    fn default() -> Self {
        PieceCache {
            hot: vec![(0, 0); 1 << HOT_BITS].into_boxed_slice(),
            merged: FxHashMap::default(),
        }
    }
}

#[inline]
fn hot_slot(key: u128) -> usize {
    let mixed = (key as u64 ^ (key >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - HOT_BITS)) as usize
}

impl PieceCache {
    /// The number of tokens in `piece` (non-empty).
    #[inline]
    pub fn count(&mut self, ranks: &RankMap, piece: &[u8]) -> usize {
        if piece.len() == 1 {
            return 1;
        }
        if piece.len() <= PACKED_MAX {
            let key = pack(piece);
            let slot = &mut self.hot[hot_slot(key)];
            if slot.0 == key {
                return slot.1 as usize;
            }
            let count = bpe::count_piece(ranks, piece);
            *slot = (key, count as u32);
            return count;
        }
        if ranks.get(piece).is_some() {
            return 1;
        }
        if piece.len() > MERGED_PIECE_MAX {
            return bpe::count_merged(ranks, piece);
        }
        if let Some(&count) = self.merged.get(piece) {
            return count as usize;
        }
        let count = bpe::count_merged(ranks, piece);
        if self.merged.len() >= MERGED_PIECES {
            self.merged.clear();
        }
        self.merged.insert(piece.into(), count as u32);
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Encoding;

    #[test]
    fn cached_counts_equal_fresh_counts() {
        let encoding = Encoding::get("o200k_base").unwrap();
        let mut cache = PieceCache::default();
        let pieces: [&[u8]; 5] = [
            b" hello",
            b" hello",
            "สวัสดีครับ".as_bytes(),
            "สวัสดีครับ".as_bytes(),
            b"x",
        ];
        for piece in pieces {
            assert_eq!(
                cache.count(encoding.ranks(), piece),
                bpe::count_piece(encoding.ranks(), piece)
            );
        }
    }
}
