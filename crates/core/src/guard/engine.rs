//! The compiled rule set and the scan of one text.
//!
//! Compilation happens once per policy. A scan builds the two normalised views, asks
//! one regex set per view which patterns occur at all (a single linear pass), runs only
//! those patterns and their validators, then the literal automaton, the injection
//! phrases, hidden characters and limits. Findings carry byte offsets into the original
//! text here; the public API converts them to character offsets.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::blobs;
use super::detectors::{self, Candidate, CONTEXT_AFTER, CONTEXT_BEFORE, MIN_SCORE};
use super::injection::{self, PHRASES};
use super::packs;
use super::spec::{
    Action, AppliesTo, Kind, Role, RuleOverride, RuleSetSpec, RuleSpec, Severity, Target,
};
use super::text::Views;
use crate::error::{Error, Result};

/// Hold-back used for patterns whose longest match cannot be computed.
const UNBOUNDED_MATCH_LEN: usize = 1024;
/// Matches longer than this are held back from their opening marker instead of by
/// a fixed tail, so a 4 KB private-key rule does not delay every streamed token.
const LONG_MATCH: usize = 600;
/// Regex compilation budget per pattern (bytes of compiled program).
const REGEX_SIZE_LIMIT: usize = 8 << 20;

/// One compiled rule.
pub struct Rule {
    pub id: String,
    pub category: String,
    pub severity: Severity,
    pub action: Action,
    pub tier: Option<String>,
    pub shadow: bool,
    pub applies_to: AppliesTo,
    pub roles: Vec<Role>,
    pub placeholder: String,
    pub(super) matcher: Matcher,
}

pub(super) enum Matcher {
    Pattern(Pattern),
    Literal {
        automaton: AhoCorasick,
        whole_word: bool,
        max_len: usize,
    },
    Injection {
        threshold: f64,
    },
    Invisible,
    MaxChars(usize),
    MaxMessages(usize),
    MaxTokens(usize),
}

pub(super) struct Pattern {
    regex: Regex,
    /// Capture group 1 is the reported span.
    grouped: bool,
    validate: Option<fn(&Candidate<'_>) -> Option<f64>>,
    label: String,
    max_len: usize,
    /// A literal every match starts with, for rules longer than `LONG_MATCH`.
    opener: Option<&'static [u8]>,
}

/// Which rules take part in a scan.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope {
    pub target: Option<Target>,
    pub role: Option<Role>,
}

impl Rule {
    pub fn covers(&self, scope: Scope) -> bool {
        scope.target.is_none_or(|t| self.applies_to.covers(t))
            && scope
                .role
                .is_none_or(|r| self.roles.is_empty() || self.roles.contains(&r))
    }
}

/// A match, with byte offsets into the scanned text.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: usize,
    pub start: usize,
    pub end: usize,
    pub score: f64,
    /// Entity type for detectors, phrase family for injection, rule label otherwise.
    pub label: String,
}

pub struct Guard {
    pub rules: Vec<Rule>,
    clean_set: RegexSet,
    /// Rule index of each member of `clean_set`.
    clean_members: Vec<usize>,
    injection_set: RegexSet,
    injection_regexes: Vec<Regex>,
    decode_blobs: bool,
}

fn compile_regex(pattern: &str, case_insensitive: bool, what: &str) -> Result<Regex> {
    RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| Error::Config(format!("{what}: invalid pattern {pattern:?}: {e}")))
}

fn max_match_len(pattern: &str) -> usize {
    regex_syntax::parse(pattern)
        .ok()
        .and_then(|hir| hir.properties().maximum_len())
        .unwrap_or(UNBOUNDED_MATCH_LEN)
        .min(UNBOUNDED_MATCH_LEN)
}

fn apply_override(spec: &mut RuleSpec, o: &RuleOverride) -> Result<()> {
    if let Some(v) = o.enabled {
        spec.enabled = v;
    }
    if let Some(v) = o.action {
        spec.action = Some(v);
    }
    if let Some(v) = &o.tier {
        spec.tier = Some(v.clone());
    }
    if let Some(v) = o.shadow {
        spec.shadow = v;
    }
    if let Some(v) = o.severity {
        spec.severity = Some(v);
    }
    if let Some(v) = o.applies_to {
        spec.applies_to = Some(v);
    }
    if let Some(v) = &o.roles {
        spec.roles = v.clone();
    }
    if let Some(v) = &o.placeholder {
        spec.placeholder = Some(v.clone());
    }
    if let Some(v) = o.threshold {
        match &mut spec.kind {
            Kind::Injection { threshold } => *threshold = v,
            _ => {
                return Err(Error::Config(format!(
                    "guard.overrides.{}.threshold only applies to injection rules",
                    spec.id
                )))
            }
        }
    }
    Ok(())
}

/// All rule specs of a rule set: packs first, then the user's rules, overrides applied.
fn expand(spec: &RuleSetSpec) -> Result<Vec<RuleSpec>> {
    let mut rules = Vec::new();
    for name in &spec.packs {
        rules.extend(packs::pack(name)?);
    }
    for rule in &spec.rules {
        if rules.iter().any(|r: &RuleSpec| r.id == rule.id) {
            return Err(Error::Config(format!(
                "guard.rules: duplicate rule id {:?}; use guard.overrides to change a pack rule",
                rule.id
            )));
        }
        rules.push(rule.clone());
    }
    for (id, o) in &spec.overrides {
        let Some(rule) = rules.iter_mut().find(|r| &r.id == id) else {
            return Err(Error::Config(format!(
                "guard.overrides.{id}: no such rule; enabled rule ids come from guard.packs \
                 and guard.rules"
            )));
        };
        apply_override(rule, o)?;
    }
    rules.retain(|r| r.enabled);
    Ok(rules)
}

fn default_category(kind: &Kind) -> &'static str {
    match kind {
        Kind::Literal { .. } => "banned",
        Kind::Regex { .. } => "pattern",
        Kind::Detector { detector } => detectors::find(*detector).map_or("pii", |d| d.category),
        Kind::Injection { .. } => "injection",
        Kind::Invisible => "invisible",
        Kind::MaxChars { .. } | Kind::MaxMessages { .. } | Kind::MaxTokens { .. } => "limit",
    }
}

fn compile_matcher(spec: &RuleSpec) -> Result<(Matcher, String)> {
    let what = format!("guard rule {:?}", spec.id);
    let placeholder_for = |label: &str| format!("[{label}]");
    Ok(match &spec.kind {
        Kind::Literal { words, whole_word } => {
            let folded: Vec<String> = words
                .iter()
                .map(|w| Views::new(w).folded.text.into_owned())
                .filter(|w| !w.is_empty())
                .collect();
            if folded.is_empty() {
                return Err(Error::Config(format!("{what}: words must not be empty")));
            }
            let max_len = folded.iter().map(String::len).max().unwrap_or(0);
            let automaton = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&folded)
                .map_err(|e| Error::Config(format!("{what}: {e}")))?;
            let m = Matcher::Literal {
                automaton,
                whole_word: *whole_word,
                max_len,
            };
            (m, placeholder_for("REDACTED"))
        }
        Kind::Regex {
            patterns,
            case_insensitive,
        } => {
            if patterns.len() != 1 {
                return Err(Error::Config(format!(
                    "{what}: a regex rule takes exactly one pattern here (got {}); \
                     write alternatives as a|b or use several rules",
                    patterns.len()
                )));
            }
            let regex = compile_regex(&patterns[0], *case_insensitive, &what)?;
            let pattern = Pattern {
                grouped: regex.captures_len() > 1,
                max_len: max_match_len(&patterns[0]),
                regex,
                validate: None,
                label: "REDACTED".to_owned(),
                opener: None,
            };
            (Matcher::Pattern(pattern), placeholder_for("REDACTED"))
        }
        Kind::Detector { detector } => {
            let def = detectors::find(*detector)
                .ok_or_else(|| Error::Config(format!("{what}: unknown detector")))?;
            let regex = compile_regex(&format!("(?-u){}", def.pattern), false, &what)?;
            let pattern = Pattern {
                grouped: regex.captures_len() > 1,
                regex,
                validate: Some(def.validate),
                label: def.label.to_owned(),
                max_len: def.max_len,
                opener: def.opener.map(str::as_bytes),
            };
            (Matcher::Pattern(pattern), placeholder_for(def.label))
        }
        Kind::Injection { threshold } => {
            if !(0.0..=1.0).contains(threshold) {
                return Err(Error::Config(format!(
                    "{what}: threshold must be between 0 and 1, got {threshold}"
                )));
            }
            (
                Matcher::Injection {
                    threshold: *threshold,
                },
                placeholder_for("REDACTED"),
            )
        }
        Kind::Invisible => (Matcher::Invisible, String::new()),
        Kind::MaxChars { limit } => (Matcher::MaxChars(*limit), placeholder_for("TRUNCATED")),
        Kind::MaxMessages { limit } => (Matcher::MaxMessages(*limit), String::new()),
        Kind::MaxTokens { limit } => (Matcher::MaxTokens(*limit), String::new()),
    })
}

fn compile_rule(spec: &RuleSpec) -> Result<Rule> {
    let (matcher, default_placeholder) = compile_matcher(spec)?;
    let action = spec.action.unwrap_or(Action::Flag);
    if action == Action::Route && spec.tier.is_none() {
        return Err(Error::Config(format!(
            "guard rule {:?}: action \"route\" needs a tier name (tier = \"...\")",
            spec.id
        )));
    }
    Ok(Rule {
        id: spec.id.clone(),
        category: spec
            .category
            .clone()
            .unwrap_or_else(|| default_category(&spec.kind).into()),
        severity: spec.severity.unwrap_or(Severity::Medium),
        action,
        tier: spec.tier.clone(),
        shadow: spec.shadow,
        applies_to: spec.applies_to.unwrap_or(AppliesTo::Both),
        roles: spec.roles.clone(),
        placeholder: spec.placeholder.clone().unwrap_or(default_placeholder),
        matcher,
    })
}

impl Guard {
    pub fn compile(spec: &RuleSetSpec) -> Result<Guard> {
        let rules = expand(spec)?
            .iter()
            .map(compile_rule)
            .collect::<Result<Vec<_>>>()?;
        let mut members = Vec::new();
        let mut patterns = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if let Matcher::Pattern(p) = &rule.matcher {
                members.push(i);
                patterns.push(p.regex.as_str().to_owned());
            }
        }
        let clean_set = build_set(&patterns)?;
        let phrase_patterns: Vec<String> = PHRASES
            .iter()
            .map(|p| format!("(?-u){}", p.pattern))
            .collect();
        let injection_regexes = phrase_patterns
            .iter()
            .map(|p| compile_regex(p, false, "injection phrase"))
            .collect::<Result<Vec<_>>>()?;
        Ok(Guard {
            rules,
            clean_set,
            clean_members: members,
            injection_set: build_set(&phrase_patterns)?,
            injection_regexes,
            decode_blobs: spec.decode_blobs,
        })
    }

    pub fn from_json(text: &str) -> Result<Guard> {
        Guard::compile(&RuleSetSpec::from_json(text)?)
    }

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
        for (start, end, score, phrase) in score_phrases(&mut matches) {
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

fn build_set(patterns: &[String]) -> Result<RegexSet> {
    RegexSetBuilder::new(patterns)
        .size_limit(REGEX_SIZE_LIMIT * 4)
        .build()
        .map_err(|e| Error::Config(format!("guard rules: cannot combine patterns: {e}")))
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

/// Scores each non-overlapping phrase match by the noisy-OR of the strongest match of
/// every family within `WINDOW` bytes; overlapping matches keep the strongest.
fn score_phrases(matches: &mut [(usize, usize, usize)]) -> Vec<(usize, usize, f64, usize)> {
    matches.sort_unstable_by_key(|&(s, e, p)| (s, e, p));
    let mut scored = Vec::new();
    for &(start, end, phrase) in matches.iter() {
        let near = matches
            .iter()
            .filter(|&&(s, e, _)| s < end + injection::WINDOW && e + injection::WINDOW > start);
        let mut best: Vec<(&str, f64)> = Vec::new();
        for &(_, _, p) in near {
            let (family, weight) = (PHRASES[p].family, PHRASES[p].weight);
            match best.iter_mut().find(|(f, _)| *f == family) {
                Some(slot) => slot.1 = slot.1.max(weight),
                None => best.push((family, weight)),
            }
        }
        let score = injection::combine(best.iter().map(|&(_, w)| w)).max(PHRASES[phrase].weight);
        scored.push((start, end, score, phrase));
    }
    // Of overlapping matches keep the strongest phrase, then the earliest.
    scored.sort_by(|a, b| {
        PHRASES[b.3]
            .weight
            .total_cmp(&PHRASES[a.3].weight)
            .then(a.0.cmp(&b.0))
    });
    let mut kept: Vec<(usize, usize, f64, usize)> = Vec::new();
    for m in scored {
        if !kept.iter().any(|k| k.0 < m.1 && m.0 < k.1) {
            kept.push(m);
        }
    }
    kept.sort_unstable_by_key(|m| (m.0, m.1));
    kept
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

/// Detector findings that overlap (a number read as both a phone and a card) keep
/// the best-scored one; findings of other kinds are left alone.
fn resolve_overlaps(findings: &mut Vec<Finding>, rules: &[Rule]) {
    let is_detector =
        |f: &Finding| matches!(&rules[f.rule].matcher, Matcher::Pattern(p) if p.validate.is_some());
    findings.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.rule.cmp(&b.rule))
    });
    let mut kept: Vec<Finding> = Vec::with_capacity(findings.len());
    for f in findings.drain(..) {
        let duplicate = kept.iter().any(|k| {
            let overlap = k.start < f.end && f.start < k.end;
            (k.rule == f.rule && overlap) || (overlap && is_detector(k) && is_detector(&f))
        });
        if !duplicate {
            kept.push(f);
        }
    }
    kept.sort_by_key(|f| (f.start, f.end, f.rule));
    *findings = kept;
}

/// The text with every non-shadow `redact` finding replaced by its rule's placeholder.
/// Overlapping findings are merged; the earliest one names the placeholder.
pub fn redact(text: &str, findings: &[Finding], rules: &[Rule]) -> String {
    let mut spans: Vec<(usize, usize, &str)> = findings
        .iter()
        .filter(|f| {
            let r = &rules[f.rule];
            r.action == Action::Redact && !r.shadow
        })
        .map(|f| (f.start, f.end, rules[f.rule].placeholder.as_str()))
        .collect();
    spans.sort_by_key(|s| (s.0, std::cmp::Reverse(s.1)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, placeholder) in spans {
        if end <= at {
            continue;
        }
        if start >= at {
            out.push_str(&text[at..start]);
            out.push_str(placeholder);
        }
        at = end;
    }
    out.push_str(&text[at.min(text.len())..]);
    out
}
