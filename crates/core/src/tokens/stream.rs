//! Counting text that arrives in pieces, such as a streamed completion.

use super::Encoding;

/// Below this many pending bytes a push does not try to settle anything.
const MIN_SETTLE: usize = 256;

/// Counts text delivered in chunks. The total always equals counting the concatenation
/// of every chunk so far, whatever the chunk boundaries: pieces whose split could still
/// change with more text (a word cut in half, trailing spaces) stay pending.
pub struct TokenStream {
    encoding: &'static Encoding,
    settled_tokens: usize,
    pending: String,
    // Settling re-reads the pending text, so it waits until the pending text has grown
    // enough since the last try; this keeps a stream of one endless word linear.
    next_settle: usize,
}

impl TokenStream {
    pub fn new(encoding: &'static Encoding) -> Self {
        TokenStream {
            encoding,
            settled_tokens: 0,
            pending: String::new(),
            next_settle: MIN_SETTLE,
        }
    }

    pub fn push(&mut self, delta: &str) {
        self.pending.push_str(delta);
        if self.pending.len() >= self.next_settle {
            self.settle();
        }
    }

    fn settle(&mut self) {
        let (tokens, settled) = self.encoding.count_settled(&self.pending);
        self.settled_tokens += tokens;
        self.pending.drain(..settled);
        self.next_settle = (2 * self.pending.len()).max(MIN_SETTLE);
    }

    /// Tokens in everything pushed so far.
    pub fn total(&self) -> usize {
        self.settled_tokens + self.encoding.count(&self.pending)
    }

    /// Tokens in everything pushed so far followed by `suffix`, without pushing it.
    pub fn total_with(&self, suffix: &str) -> usize {
        let mut tail = String::with_capacity(self.pending.len() + suffix.len());
        tail.push_str(&self.pending);
        tail.push_str(suffix);
        self.settled_tokens + self.encoding.count(&tail)
    }

    pub fn encoding(&self) -> &'static Encoding {
        self.encoding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_chunking_gives_the_whole_count() {
        let text = "The quick brown fox's   jumps\n\n over 12345 lazy dogs!!\r\n  HTTPServer's \
                    naïve café ́ 中文字符 \t\t done  "
            .repeat(20);
        for name in super::super::ENCODINGS {
            let encoding = Encoding::get(name).unwrap();
            let expected = encoding.count(&text);
            for step in [1, 2, 3, 7, 64] {
                let mut stream = TokenStream::new(encoding);
                let chars: Vec<char> = text.chars().collect();
                for chunk in chars.chunks(step) {
                    stream.push(&chunk.iter().collect::<String>());
                }
                assert_eq!(stream.total(), expected, "{name} step {step}");
            }
        }
    }

    #[test]
    fn total_with_counts_a_suffix_without_keeping_it() {
        let encoding = Encoding::get("cl100k_base").unwrap();
        let mut stream = TokenStream::new(encoding);
        stream.push("hello wor");
        assert_eq!(stream.total_with("ld"), encoding.count("hello world"));
        assert_eq!(stream.total(), encoding.count("hello wor"));
    }
}
