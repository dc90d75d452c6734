//! Guardrails: rule-based checks of prompts and outputs.
//!
//! A [`RuleSetSpec`] (packs, rules, overrides) compiles once into a [`Guard`]. A scan
//! normalises the text (see `text.rs`), runs every rule in scope and returns
//! [`Finding`]s. Offsets in findings returned by the public methods here are
//! **character offsets (Unicode code points) into the original text**, which is what
//! Python's `str` indexing uses; internally the engine works in bytes.

mod blobs;
mod chat;
mod checks;
mod compile;
mod detectors;
mod engine;
mod findings;
mod injection;
mod packs;
mod phone;
mod rules;
mod schema;
pub mod spec;
mod stream;
mod text;

pub use chat::{ChatFinding, ChatVerdict};
pub use engine::Guard;
pub use findings::Finding;
pub use packs::PACK_NAMES;
pub use rules::{Rule, Scope};
pub use schema::OutputSchema;
pub use spec::{Action, AppliesTo, Role, RuleSetSpec, Severity, Target};
pub use stream::{StreamScanner, StreamStep};

impl Guard {
    /// Findings with character offsets into `text`.
    pub fn scan_text(&self, text: &str, scope: Scope) -> Vec<Finding> {
        let mut findings = self.scan(text, scope);
        to_char_offsets(text, &mut findings);
        findings
    }

    /// `text` with the `redact` findings replaced by their placeholders.
    pub fn redact_text(&self, text: &str, scope: Scope) -> String {
        findings::redact(text, &self.scan(text, scope), &self.rules)
    }
}

/// Rewrites byte offsets as character offsets in one pass over the text.
pub(crate) fn to_char_offsets(text: &str, findings: &mut [Finding]) {
    if text.is_ascii() || findings.is_empty() {
        return;
    }
    let mut offsets: Vec<usize> = findings.iter().flat_map(|f| [f.start, f.end]).collect();
    offsets.sort_unstable();
    offsets.dedup();
    let mut chars = Vec::with_capacity(offsets.len());
    let (mut byte, mut count) = (0usize, 0usize);
    let mut iter = text.char_indices().peekable();
    for &target in &offsets {
        while byte < target {
            match iter.next() {
                Some((_, c)) => {
                    byte += c.len_utf8();
                    count += 1;
                }
                None => break,
            }
        }
        chars.push(count);
    }
    let lookup = |b: usize| offsets.binary_search(&b).map_or(0, |i| chars[i]);
    for f in findings {
        f.start = lookup(f.start);
        f.end = lookup(f.end);
    }
}

#[cfg(test)]
mod tests;
