//! The scan of one text by a compiled rule set.
//!
//! A scan builds the two normalised views, asks one regex set per view which patterns
//! occur at all (a single linear pass), runs only those patterns and their validators,
//! then the literal automaton, the injection phrases, hidden characters and limits.
//! Findings carry byte offsets into the original text here; the public API converts
//! them to character offsets. Compilation is in `compile.rs`.

use aho_corasick::AhoCorasick;
use regex::bytes::{Regex, RegexSet};

use super::blobs;
use super::detectors::{Candidate, CONTEXT_AFTER, CONTEXT_BEFORE, MIN_SCORE};
use super::findings::{resolve_overlaps, Finding};
use super::injection::{self, PHRASES};
use super::rules::{Matcher, Rule, Scope};
use super::spec::Target;
use super::text::Views;

/// Matches longer than this are held back from their opening marker instead of by
/// a fixed tail, so a 4 KB private-key rule does not delay every streamed token.
const LONG_MATCH: usize = 600;

/// A compiled rule set (built in `compile.rs`). Scans take `&self`: one `Guard` serves
/// every thread.
pub struct Guard {
    pub rules: Vec<Rule>,
    pub(super) clean_set: RegexSet,
    /// Rule index of each member of `clean_set`.
    pub(super) clean_members: Vec<usize>,
    pub(super) injection_set: RegexSet,
    pub(super) injection_regexes: Vec<Regex>,
    pub(super) decode_blobs: bool,
}

impl Guard {
    /// Encoded blobs are decoded in prompts, not in model output: smuggling is an
    /// input attack, and it would make output streams hold back a whole blob.
    fn decodes(&self, scope: Scope) -> bool {
        self.decode_blobs && scope.target != Some(Target::Output)
    }

    /// Bytes of stream text to hold back so that no match can still grow past them,
    /// and the markers of longer rules with their lengths.
    pub fn stream_bounds(&self, scope: Scope) -> (usize, Vec<(&'static [u8], usize)>) {
        let mut tail = CONTEXT_BEFORE;
        if self.decodes(scope) {
            tail = blobs::MAX_BLOB + CONTEXT_BEFORE;
        }
        let mut openers = Vec::new();
        for rule in self.rules.iter().filter(|r| r.covers(scope)) {
            let len = match &rule.matcher {
                Matcher::Pattern(p) => match p.opener {
                    Some(o) if p.max_len > LONG_MATCH => {
                        openers.push((o, p.max_len));
                        continue;
                    }
                    _ => p.max_len + CONTEXT_BEFORE + CONTEXT_AFTER,
                },
                // Original spans can be longer than folded ones; allow for it.
                Matcher::Literal { max_len, .. } => max_len * 4,
                Matcher::Injection { .. } => injection::MAX_LEN + injection::WINDOW,
                _ => 0,
            };
            tail = tail.max(len);
        }
        (tail, openers)
    }

    /// Every finding of the rules in `scope` on `text`, sorted by position.
    pub fn scan(&self, text: &str, scope: Scope) -> Vec<Finding> {
        let active: Vec<bool> = self.rules.iter().map(|r| r.covers(scope)).collect();
        let decode = self.decodes(scope);
        let mut findings = self.scan_views(&Views::new(text), &active, decode);
        resolve_overlaps(&mut findings, &self.rules);
        findings
    }

    fn scan_views(&self, views: &Views<'_>, active: &[bool], decode: bool) -> Vec<Finding> {
        let mut out = Vec::new();
        self.scan_patterns(views, active, &mut out);
        for (i, rule) in self.rules.iter().enumerate().filter(|(i, _)| active[*i]) {
            match &rule.matcher {
                Matcher::Literal {
                    automaton,
                    whole_word,
                    ..
                } => {
                    scan_literal(views, i, automaton, *whole_word, &mut out);
                }
                Matcher::Invisible => {
                    out.extend(views.hidden.iter().map(|&(start, end)| Finding {
                        rule: i,
                        start,
                        end,
                        score: 1.0,
                        label: "INVISIBLE".into(),
                    }));
                }
                Matcher::MaxChars(limit) => {
                    if let Some((at, _)) = views.original.char_indices().nth(*limit) {
                        out.push(Finding {
                            rule: i,
                            start: at,
                            end: views.original.len(),
                            score: 1.0,
                            label: "MAX_CHARS".into(),
                        });
                    }
                }
                _ => {}
            }
        }
        self.scan_injection(views, active, &mut out);
        if decode {
            for blob in blobs::find(views.clean.text.as_bytes()) {
                let (start, end) = views
                    .clean
                    .to_original(views.original, blob.start, blob.end);
                let inner = Views::new(&blob.decoded);
                for mut f in self.scan_views(&inner, active, false) {
                    if !matches!(self.rules[f.rule].matcher, Matcher::Invisible) {
                        f.start = start;
                        f.end = end;
                        out.push(f);
                    }
                }
            }
        }
        out
    }

    fn scan_patterns(&self, views: &Views<'_>, active: &[bool], out: &mut Vec<Finding>) {
        if self.clean_members.is_empty() {
            return;
        }
        let clean = views.clean.text.as_bytes();
        for member in self.clean_set.matches(clean).iter() {
            let index = self.clean_members[member];
            if !active[index] {
                continue;
            }
            let Matcher::Pattern(p) = &self.rules[index].matcher else {
                continue;
            };
            for caps in p.regex.captures_iter(clean) {
                let Some(whole) = caps.get(0) else { continue };
                let span = if p.grouped {
                    caps.get(1).unwrap_or(whole)
                } else {
                    whole
                };
                let score = match p.validate {
                    Some(validate) => {
                        match validate(&candidate(clean, whole.range(), span.range())) {
                            Some(s) if s >= MIN_SCORE => s,
                            _ => continue,
                        }
                    }
                    None => 1.0,
                };
                let (start, end) =
                    views
                        .clean
                        .to_original(views.original, span.start(), span.end());
                out.push(Finding {
                    rule: index,
                    start,
                    end,
                    score,
                    label: p.label.clone(),
                });
            }
        }
    }

    fn scan_injection(&self, views: &Views<'_>, active: &[bool], out: &mut Vec<Finding>) {
        let thresholds: Vec<(usize, f64)> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(i, _)| active[*i])
            .filter_map(|(i, r)| match r.matcher {
                Matcher::Injection { threshold } => Some((i, threshold)),
                _ => None,
            })
            .collect();
        if thresholds.is_empty() {
            return;
        }
        let folded = views.folded.text.as_bytes();
        let mut matches: Vec<(usize, usize, usize)> = Vec::new();
        for phrase in self.injection_set.matches(folded).iter() {
            for m in self.injection_regexes[phrase].find_iter(folded) {
                matches.push((m.start(), m.end(), phrase));
            }
        }
        for (start, end, score, phrase) in injection::score_phrases(&mut matches) {
            let (s, e) = views.folded.to_original(views.original, start, end);
            for &(rule, threshold) in &thresholds {
                if score >= threshold {
                    let label = PHRASES[phrase].family.to_owned();
                    out.push(Finding {
                        rule,
                        start: s,
                        end: e,
                        score,
                        label,
                    });
                }
            }
        }
    }
}

fn candidate(
    text: &[u8],
    whole: std::ops::Range<usize>,
    span: std::ops::Range<usize>,
) -> Candidate<'_> {
    let mut from = whole.start.saturating_sub(CONTEXT_BEFORE);
    while from < whole.start && (text[from] & 0xC0) == 0x80 {
        from += 1;
    }
    Candidate {
        text: &text[span],
        before: &text[from..whole.start],
        after: &text[whole.end..(whole.end + CONTEXT_AFTER).min(text.len())],
        prev: whole.start.checked_sub(1).map(|i| text[i]),
    }
}

fn scan_literal(
    views: &Views<'_>,
    rule: usize,
    automaton: &AhoCorasick,
    whole_word: bool,
    out: &mut Vec<Finding>,
) {
    let folded = views.folded.text.as_bytes();
    for m in automaton.find_iter(folded) {
        let before = m.start().checked_sub(1).map(|i| folded[i]);
        let after = folded.get(m.end()).copied();
        let bounded = |b: Option<u8>| b.is_none_or(|b| !b.is_ascii_alphanumeric());
        if whole_word && !(bounded(before) && bounded(after)) {
            continue;
        }
        let (start, end) = views.folded.to_original(views.original, m.start(), m.end());
        out.push(Finding {
            rule,
            start,
            end,
            score: 1.0,
            label: "LITERAL".into(),
        });
    }
}
