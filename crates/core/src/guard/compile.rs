//! Compiling a rule set once: packs expanded, overrides applied, every pattern built
//! and combined into the regex sets a scan asks first.

use aho_corasick::{AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::detectors;
use super::engine::Guard;
use super::injection::PHRASES;
use super::packs;
use super::rules::{Matcher, Pattern, Rule};
use super::spec::{Action, AppliesTo, Kind, RuleOverride, RuleSetSpec, RuleSpec, Severity};
use super::text::Views;
use crate::error::{Error, Result};

/// Hold-back used for patterns whose longest match cannot be computed.
const UNBOUNDED_MATCH_LEN: usize = 1024;
/// Regex compilation budget per pattern (bytes of compiled program).
const REGEX_SIZE_LIMIT: usize = 8 << 20;
/// Word lists up to this many bytes get a full DFA (a few MB at most).
const DFA_WORD_BYTES: usize = 64 * 1024;
/// Lazy DFA cache of each regex set, per thread that scans.
const SET_DFA_CACHE: usize = 32 << 20;

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
            // A full DFA is one table lookup per scanned byte, at a memory cost that
            // grows with the list; huge lists keep the crate's own choice.
            let total: usize = folded.iter().map(String::len).sum();
            let kind = (total <= DFA_WORD_BYTES).then_some(AhoCorasickKind::DFA);
            let automaton = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .kind(kind)
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
}

fn build_set(patterns: &[String]) -> Result<RegexSet> {
    RegexSetBuilder::new(patterns)
        .size_limit(REGEX_SIZE_LIMIT * 4)
        // The set's lazy DFA asks for every pattern at every position (overlapping
        // search); with the default cache it keeps throwing states away and rebuilding
        // them, which cost more than the rest of the scan together.
        .dfa_size_limit(SET_DFA_CACHE)
        .build()
        .map_err(|e| Error::Config(format!("guard rules: cannot combine patterns: {e}")))
}
