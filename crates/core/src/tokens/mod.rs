//! Exact token counts for OpenAI's `cl100k_base` and `o200k_base` encodings.
//!
//! A count equals `len(tiktoken.get_encoding(name).encode_ordinary(text))`: text that
//! looks like a special token is ordinary text. Counting splits the text with a
//! hand-written pretokenizer ([`pretokenize`]), looks each piece up whole in the rank
//! map (most pieces are one token), and runs byte pair encoding ([`bpe`]) on the rest.
//!
//! One deliberate difference: tiktoken's o200k regex overflows its stack on 999,999 or
//! more consecutive whitespace characters and returns no count at all. Here such a run
//! is split exactly as the pattern defines (the same pieces tiktoken returns for shorter
//! runs), so every string has a count.

mod bpe;
mod chars;
mod packed_table;
mod piece_cache;
mod pretokenize;
mod rank_queue;
mod ranks;
mod stream;

use std::cell::RefCell;
use std::sync::OnceLock;

pub use stream::TokenStream;

use crate::{Error, Result};
use piece_cache::PieceCache;
use pretokenize::{Pattern, Pieces};
use ranks::{RankFile, RankMap};

/// The encodings this crate counts, by their tiktoken names.
pub const ENCODINGS: [&str; 2] = ["cl100k_base", "o200k_base"];

/// A loaded encoding: its pattern and rank map.
pub struct Encoding {
    name: &'static str,
    pattern: Pattern,
    ranks: RankMap,
}

thread_local! {
    /// Counts of recent pieces, per thread and encoding (see [`piece_cache`]).
    static PIECE_CACHES: RefCell<[PieceCache; 2]> = RefCell::default();
}

static CL100K: OnceLock<Result<Encoding>> = OnceLock::new();
static O200K: OnceLock<Result<Encoding>> = OnceLock::new();

fn load(file: &RankFile, pattern: Pattern) -> Result<Encoding> {
    chars::warm_up();
    Ok(Encoding {
        name: file.name,
        pattern,
        ranks: file.load()?,
    })
}

impl Encoding {
    /// The encoding called `name`, loaded on first use and shared afterwards.
    pub fn get(name: &str) -> Result<&'static Encoding> {
        let loaded = match name {
            "cl100k_base" => CL100K.get_or_init(|| load(&ranks::CL100K_BASE, Pattern::Cl100k)),
            "o200k_base" => O200K.get_or_init(|| load(&ranks::O200K_BASE, Pattern::O200k)),
            _ => {
                return Err(Error::NotFound(format!(
                    "unknown encoding {name:?}; use one of {}",
                    ENCODINGS.join(", ")
                )))
            }
        };
        loaded.as_ref().map_err(Clone::clone)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The number of tokens in `text`.
    pub fn count(&self, text: &str) -> usize {
        let bytes = text.as_bytes();
        let slot = match self.pattern {
            Pattern::Cl100k => 0,
            Pattern::O200k => 1,
        };
        let count_all = |cache: &mut PieceCache| -> usize {
            Pieces::new(self.pattern, text)
                .map(|p| cache.count(&self.ranks, &bytes[p.start..p.end]))
                .sum()
        };
        // The cache is out of reach only while the thread is being torn down.
        PIECE_CACHES
            .try_with(|caches| match caches.try_borrow_mut() {
                Ok(mut caches) => count_all(&mut caches[slot]),
                Err(_) => count_all(&mut PieceCache::default()),
            })
            .unwrap_or_else(|_| count_all(&mut PieceCache::default()))
    }

    #[cfg(test)]
    pub(crate) fn ranks(&self) -> &RankMap {
        &self.ranks
    }

    /// Counts the leading pieces of `text` that no appended text can change; returns
    /// their token count and byte length. The rest must be kept until more text comes.
    pub fn count_settled(&self, text: &str) -> (usize, usize) {
        let bytes = text.as_bytes();
        let mut tokens = 0;
        let mut settled = 0;
        for piece in Pieces::new(self.pattern, text) {
            if piece.touches_end {
                break;
            }
            tokens += bpe::count_piece(&self.ranks, &bytes[piece.start..piece.end]);
            settled = piece.end;
        }
        (tokens, settled)
    }

    /// Counts every text, on several threads when the batch is large enough to pay
    /// for them.
    pub fn count_batch(&self, texts: &[&str]) -> Vec<usize> {
        const BYTES_PER_THREAD: usize = 256 * 1024;
        let total: usize = texts.iter().map(|t| t.len()).sum();
        // Asking for the core count reads cgroup files, which costs more than counting a
        // small batch: only ask when the batch could use two threads.
        if total < 2 * BYTES_PER_THREAD || texts.len() < 2 {
            return texts.iter().map(|t| self.count(t)).collect();
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores.min(total / BYTES_PER_THREAD).min(texts.len()).max(1);
        if threads == 1 {
            return texts.iter().map(|t| self.count(t)).collect();
        }

        let chunk = texts.len().div_ceil(threads);
        let mut counts = vec![0; texts.len()];
        std::thread::scope(|scope| {
            for (texts, counts) in texts.chunks(chunk).zip(counts.chunks_mut(chunk)) {
                scope.spawn(move || {
                    for (text, count) in texts.iter().zip(counts.iter_mut()) {
                        *count = self.count(text);
                    }
                });
            }
        });
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(name: &str, text: &str) -> usize {
        Encoding::get(name).unwrap().count(text)
    }

    #[test]
    fn known_counts() {
        // Figures from tiktoken 0.14 encode_ordinary.
        assert_eq!(count("cl100k_base", "hello world"), 2);
        assert_eq!(count("o200k_base", "hello world"), 2);
        assert_eq!(count("cl100k_base", "<|endoftext|>"), 7);
        assert_eq!(count("cl100k_base", ""), 0);
    }

    #[test]
    fn unknown_encoding_is_not_found() {
        let err = Encoding::get("p50k_base").err().unwrap();
        assert!(matches!(&err, Error::NotFound(m) if m.contains("cl100k_base, o200k_base")));
    }

    #[test]
    fn settled_prefix_plus_rest_is_the_whole() {
        let text = "Hello wor";
        for name in ENCODINGS {
            let encoding = Encoding::get(name).unwrap();
            let (tokens, settled) = encoding.count_settled(text);
            assert_eq!(settled, 5);
            assert_eq!(
                tokens + encoding.count(&text[settled..]),
                encoding.count(text)
            );
        }
    }

    #[test]
    fn batch_matches_single_counts() {
        let encoding = Encoding::get("o200k_base").unwrap();
        let big = "lorem ipsum dolor ".repeat(20_000);
        let texts = [big.as_str(), "a", "", big.as_str()];
        let expected: Vec<usize> = texts.iter().map(|t| encoding.count(t)).collect();
        assert_eq!(encoding.count_batch(&texts), expected);
    }

    #[test]
    fn worst_cases_finish() {
        // Megabyte inputs are tested from Python against the optimised build; these stay
        // small enough for an unoptimised test binary.
        for name in ENCODINGS {
            let encoding = Encoding::get(name).unwrap();
            for text in [
                " ".repeat(100_000),
                "a".repeat(100_000),
                "\t ".repeat(50_000),
            ] {
                assert!(encoding.count(&text) > 0);
            }
        }
    }
}
