//! Incremental scanning of streamed text with bounded memory.
//!
//! The scanner keeps the text it has not released yet plus a little already-released
//! context. After each delta it rescans that buffer and releases everything except
//! a tail long enough to hold any match still in progress (`Guard::stream_bounds`),
//! never cutting through a finding. A match spanning two deltas is therefore found,
//! and findings over any chunking equal those over the whole text, as long as no
//! single match is longer than the rule set's bound.
//!
//! Length limits (`max_chars`) are not evaluated here: they concern a whole text and
//! the caller counts output length itself.

use std::sync::Arc;

use super::engine::Guard;
use super::findings::{redact, Finding};
use super::rules::Scope;

pub struct StreamScanner {
    guard: Arc<Guard>,
    scope: Scope,
    tail: usize,
    openers: Vec<(&'static [u8], usize)>,
    buf: String,
    /// Bytes at the start of `buf` already released (kept as left context).
    released: usize,
    /// Characters of the stream before `buf`.
    base_chars: usize,
}

/// What one step of the scanner releases.
pub struct StreamStep {
    /// Text safe to forward, with `redact` findings already applied.
    pub text: String,
    /// New findings, with character offsets into the whole stream.
    pub findings: Vec<Finding>,
}

fn floor_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

impl StreamScanner {
    pub fn new(guard: Arc<Guard>, scope: Scope) -> StreamScanner {
        let (tail, openers) = guard.stream_bounds(scope);
        StreamScanner {
            guard,
            scope,
            tail,
            openers,
            buf: String::new(),
            released: 0,
            base_chars: 0,
        }
    }

    /// Characters the scanner may hold back at most (for callers sizing buffers).
    pub fn holdback(&self) -> usize {
        self.tail
    }

    pub fn feed(&mut self, delta: &str) -> StreamStep {
        self.buf.push_str(delta);
        self.step(false)
    }

    /// Releases everything still held; call once at the end of the stream.
    pub fn finish(&mut self) -> StreamStep {
        self.step(true)
    }

    fn step(&mut self, last: bool) -> StreamStep {
        let findings = self.guard.scan(&self.buf, self.scope);
        let cut = self.safe_cut(&findings, last);

        let released = self.released;
        let mut new: Vec<Finding> = findings
            .into_iter()
            .filter(|f| f.start >= released && f.end <= cut && f.end > f.start)
            .collect();
        let shifted: Vec<Finding> = new
            .iter()
            .map(|f| Finding {
                start: f.start - released,
                end: f.end - released,
                ..f.clone()
            })
            .collect();
        let text = redact(&self.buf[released..cut], &shifted, &self.guard.rules);
        self.to_stream_chars(&mut new);

        let keep_from = floor_boundary(&self.buf, cut.saturating_sub(self.tail));
        self.base_chars += self.buf[..keep_from].chars().count();
        self.buf.drain(..keep_from);
        self.released = cut - keep_from;
        StreamStep {
            text,
            findings: new,
        }
    }

    /// The furthest point up to which no match can still change.
    fn safe_cut(&self, findings: &[Finding], last: bool) -> usize {
        if last {
            return self.buf.len();
        }
        let mut cut = floor_boundary(&self.buf, self.buf.len().saturating_sub(self.tail));
        for &(opener, max_len) in &self.openers {
            let from = floor_boundary(&self.buf, self.buf.len().saturating_sub(max_len));
            let region = &self.buf.as_bytes()[from.max(self.released)..];
            if let Some(p) = region.windows(opener.len()).position(|w| w == opener) {
                cut = cut.min(from.max(self.released) + p);
            }
        }
        loop {
            let straddling = findings
                .iter()
                .filter(|f| f.start < cut && f.end > cut)
                .map(|f| f.start)
                .min();
            match straddling {
                Some(start) => cut = start,
                None => break,
            }
        }
        cut.max(self.released)
    }

    fn to_stream_chars(&self, findings: &mut [Finding]) {
        for f in findings {
            let start = self.buf[..f.start].chars().count();
            let len = self.buf[f.start..f.end].chars().count();
            f.start = self.base_chars + start;
            f.end = self.base_chars + start + len;
        }
    }
}
