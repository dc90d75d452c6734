//! The embedded rank tables: decompressed once, checked against the published digest,
//! parsed into a byte-string to rank map.

use std::io::Read;

use base64::Engine;
use flate2::read::GzDecoder;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

use super::packed_table::{PackedTable, RANK_LIMIT, TABLE_MAX};
use crate::{Error, Result};

/// Token bytes to rank; the lookup is the hot path of counting.
///
/// Tokens of up to 12 bytes (nearly all of them, and nearly every lookup) are packed with
/// their length into one `u128` key in a [`PackedTable`], so a lookup hashes two words and
/// compares in place instead of following a pointer to the key's bytes. A fast fixed hash
/// is safe: the keys come from a fixed vocabulary, so text can only choose which probe
/// sequences to walk, never make them longer. Longer tokens use FxHash.
///
/// Two-byte tokens, the first lookups of every merge, also sit in a direct table.
pub struct RankMap {
    pairs: Box<[u32]>,
    max_rank: u32,
    short: PackedTable,
    // Whether a token of at most `TABLE_MAX` bytes has a rank too large for the packed
    // table and sits in `long` (never, for the embedded files).
    short_in_long: bool,
    long: FxHashMap<Box<[u8]>, u32>,
}

impl Default for RankMap {
    fn default() -> Self {
        RankMap {
            pairs: vec![NO_RANK; 1 << 16].into_boxed_slice(),
            max_rank: 0,
            short: PackedTable::default(),
            short_in_long: false,
            long: FxHashMap::default(),
        }
    }
}

/// The rank of a byte string that is not a token.
pub const NO_RANK: u32 = u32::MAX;

impl std::fmt::Debug for RankMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RankMap({} tokens)", self.len())
    }
}

/// Tokens up to this long are stored packed into a `u128`.
pub const PACKED_MAX: usize = 15;

/// `bytes` (at most [`PACKED_MAX`] long) and their length in one word: the bytes in
/// little-endian order, the length in the top byte.
///
/// Copying a variable number of bytes into a buffer compiles to a call to `memcpy`,
/// which costs more than the hash lookup it prepares. Two overlapping fixed-size loads
/// (the first and the last 8, 4 or 1 bytes) cover every length without one.
#[inline]
pub fn pack(bytes: &[u8]) -> u128 {
    let len = bytes.len();
    let data = match len {
        0 => 0,
        1..=3 => {
            let byte = |i: usize| u128::from(bytes[i]) << (8 * i);
            byte(0) | byte(len / 2) | byte(len - 1)
        }
        4..=7 => {
            let word = |at: usize| u128::from(u32::from_le_bytes(load(&bytes[at..at + 4])));
            word(0) | word(len - 4) << (8 * (len - 4))
        }
        _ => {
            let word = |at: usize| u128::from(u64::from_le_bytes(load(&bytes[at..at + 8])));
            word(0) | word(len - 8) << (8 * (len - 8))
        }
    };
    data | (len as u128) << (8 * PACKED_MAX)
}

/// A fixed-size array from a slice of exactly that length.
#[inline]
fn load<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(bytes);
    array
}

impl RankMap {
    #[inline]
    pub fn get(&self, bytes: &[u8]) -> Option<u32> {
        let rank = self.rank(bytes);
        (rank != NO_RANK).then_some(rank)
    }

    /// The rank of `bytes`, or [`NO_RANK`].
    #[inline]
    pub fn rank(&self, bytes: &[u8]) -> u32 {
        if let [a, b] = bytes {
            return self.pairs[usize::from(*a) << 8 | usize::from(*b)];
        }
        self.rank_hashed(bytes)
    }

    #[inline]
    fn rank_hashed(&self, bytes: &[u8]) -> u32 {
        if bytes.len() <= TABLE_MAX {
            let rank = self.short.get(pack(bytes));
            if rank != NO_RANK || !self.short_in_long {
                return rank;
            }
        }
        self.long.get(bytes).copied().unwrap_or(NO_RANK)
    }

    pub fn insert(&mut self, bytes: &[u8], rank: u32) {
        self.max_rank = self.max_rank.max(rank);
        if let [a, b] = bytes {
            self.pairs[usize::from(*a) << 8 | usize::from(*b)] = rank;
        }
        if bytes.len() <= TABLE_MAX && rank < RANK_LIMIT {
            self.short.insert(pack(bytes), rank);
        } else {
            self.short_in_long |= bytes.len() <= TABLE_MAX;
            self.long.insert(bytes.into(), rank);
        }
    }

    /// One more than the highest rank.
    pub fn rank_limit(&self) -> u32 {
        self.max_rank.saturating_add(1)
    }

    pub fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }
}

/// One embedded rank file and the sha256 its decompressed content must have.
pub struct RankFile {
    pub name: &'static str,
    pub gzip: &'static [u8],
    pub sha256: &'static str,
}

pub const CL100K_BASE: RankFile = RankFile {
    name: "cl100k_base",
    gzip: include_bytes!("../../data/cl100k_base.tiktoken.gz"),
    sha256: "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
};

pub const O200K_BASE: RankFile = RankFile {
    name: "o200k_base",
    gzip: include_bytes!("../../data/o200k_base.tiktoken.gz"),
    sha256: "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
};

impl RankFile {
    /// Decompresses, verifies and parses the file.
    pub fn load(&self) -> Result<RankMap> {
        let mut content = Vec::new();
        GzDecoder::new(self.gzip)
            .read_to_end(&mut content)
            .map_err(|e| self.corrupt(&format!("cannot decompress it ({e})")))?;
        let digest = hex(&Sha256::digest(&content));
        if digest != self.sha256 {
            return Err(self.corrupt(&format!("sha256 is {digest}, expected {}", self.sha256)));
        }
        parse(&content).map_err(|line| self.corrupt(&format!("line {line} is malformed")))
    }

    fn corrupt(&self, what: &str) -> Error {
        Error::Config(format!(
            "the embedded {} rank file is corrupt: {what}; reinstall aiofast",
            self.name
        ))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `<base64> <rank>` lines; on error, the 1-based number of the bad line.
fn parse(content: &[u8]) -> std::result::Result<RankMap, usize> {
    let mut ranks = RankMap::default();
    // Size for exactly one entry per line: a table sized from a guess rounds up to the
    // next power of two and can hold twice the memory the vocabulary needs.
    let tokens = content.iter().filter(|&&b| b == b'\n').count();
    ranks.short = PackedTable::with_capacity(tokens);
    let lines = content
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty());
    for (index, line) in lines.enumerate() {
        let bad = || index + 1;
        let space = line.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let token = base64::engine::general_purpose::STANDARD
            .decode(&line[..space])
            .map_err(|_| bad())?;
        let rank = std::str::from_utf8(&line[space + 1..])
            .ok()
            .and_then(|r| r.parse::<u32>().ok())
            .ok_or_else(bad)?;
        ranks.insert(&token, rank);
    }
    Ok(ranks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious packing, which [`pack`] must equal.
    fn pack_by_copy(bytes: &[u8]) -> u128 {
        let mut key = [0u8; 16];
        key[..bytes.len()].copy_from_slice(bytes);
        key[PACKED_MAX] = bytes.len() as u8;
        u128::from_le_bytes(key)
    }

    proptest::proptest! {
        #[test]
        fn pack_equals_a_plain_copy(bytes in proptest::collection::vec(0u8.., 0..=PACKED_MAX)) {
            proptest::prop_assert_eq!(pack(&bytes), pack_by_copy(&bytes));
        }
    }

    #[test]
    fn short_tokens_with_huge_ranks_are_found() {
        let mut ranks = RankMap::default();
        ranks.insert(b"abc", RANK_LIMIT + 5);
        ranks.insert(b"abd", 7);
        assert_eq!(ranks.get(b"abc"), Some(RANK_LIMIT + 5));
        assert_eq!(ranks.get(b"abd"), Some(7));
        assert_eq!(ranks.get(b"abe"), None);
    }

    #[test]
    fn embedded_files_load() {
        let cl100k = CL100K_BASE.load().unwrap();
        assert_eq!(cl100k.len(), 100_256);
        assert_eq!(cl100k.get(b"!"), Some(0));
        assert!(cl100k.get(b"                                ").is_some());
        assert_eq!(O200K_BASE.load().unwrap().len(), 199_998);
    }

    #[test]
    fn digest_mismatch_is_a_config_error() {
        let tampered = RankFile {
            sha256: "00",
            ..CL100K_BASE
        };
        let err = tampered.load().unwrap_err();
        assert!(
            matches!(&err, Error::Config(msg) if msg.contains("sha256 is 2239")),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_a_config_error() {
        let garbage = RankFile {
            gzip: b"not gzip",
            ..CL100K_BASE
        };
        assert!(matches!(garbage.load(), Err(Error::Config(_))));
    }

    #[test]
    fn malformed_lines_are_reported() {
        assert_eq!(parse(b"IQ== 0\nIg==\n").unwrap_err(), 2);
        assert_eq!(parse(b"IQ== x\n").unwrap_err(), 1);
        assert_eq!(parse(b"IQ== 0\nIg== 1\n").unwrap().len(), 2);
    }
}
