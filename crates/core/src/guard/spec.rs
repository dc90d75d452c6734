//! The rule set as a caller writes it: plain data, deserialised from JSON (the Python
//! side passes a dict, the policy file a TOML table). Compilation lives in `engine.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};

/// What happens when a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse the request (or stop the stream) and name the rule.
    Block,
    /// Replace the matched span with the rule's placeholder.
    Redact,
    /// Record and count only.
    Flag,
    /// Hand the rule's tier name to routing.
    Route,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Redact => "redact",
            Action::Flag => "flag",
            Action::Route => "route",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Which side of the exchange a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppliesTo {
    Input,
    Output,
    Both,
}

/// The side of the exchange a text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Input,
    Output,
}

impl AppliesTo {
    pub fn covers(self, target: Target) -> bool {
        matches!(
            (self, target),
            (AppliesTo::Both, _)
                | (AppliesTo::Input, Target::Input)
                | (AppliesTo::Output, Target::Output)
        )
    }
}

/// The author of a chat message part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// Maps a wire role name; `function` is the legacy name of `tool`.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" => Some(Role::System),
            "developer" => Some(Role::Developer),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" | "function" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// The built-in validated detectors a `detector` rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorName {
    Email,
    Phone,
    Card,
    Iban,
    Ssn,
    Ipv4,
    Ipv6,
    OpenaiKey,
    AnthropicKey,
    AwsAccessKey,
    GithubToken,
    SlackToken,
    StripeKey,
    GoogleApiKey,
    PrivateKey,
    Jwt,
    GenericSecret,
}

/// The matching part of a rule; `kind` selects the variant.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// A list of words or phrases, matched case-, width- and confusable-insensitively.
    Literal {
        words: Vec<String>,
        #[serde(default = "yes")]
        whole_word: bool,
    },
    /// Regular expressions (Rust `regex` syntax, linear time). Capture group 1, when
    /// present, is the span reported and redacted.
    Regex {
        patterns: Vec<String>,
        #[serde(default)]
        case_insensitive: bool,
    },
    /// A built-in detector with validation (checksums, ranges, context words).
    Detector { detector: DetectorName },
    /// Prompt-injection and jailbreak phrase families, scored; fires at `threshold`.
    Injection {
        #[serde(default = "default_threshold")]
        threshold: f64,
    },
    /// Zero-width, bidi-control, tag and filler characters.
    Invisible,
    /// More than `limit` characters in one text (or in all of a request's texts).
    MaxChars { limit: usize },
    /// More than `limit` messages in a chat request.
    MaxMessages { limit: usize },
    /// More than `limit` input tokens; the caller supplies the count.
    MaxTokens { limit: usize },
}

fn yes() -> bool {
    true
}

fn default_threshold() -> f64 {
    0.45
}

/// One rule as written by the user.
#[derive(Debug, Clone, Deserialize)]
pub struct RuleSpec {
    pub id: String,
    #[serde(flatten)]
    pub kind: Kind,
    pub category: Option<String>,
    pub severity: Option<Severity>,
    pub action: Option<Action>,
    pub tier: Option<String>,
    #[serde(default)]
    pub shadow: bool,
    pub applies_to: Option<AppliesTo>,
    #[serde(default)]
    pub roles: Vec<Role>,
    pub placeholder: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// Changes to a rule that came from a pack, keyed by rule id.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    pub enabled: Option<bool>,
    pub action: Option<Action>,
    pub tier: Option<String>,
    pub shadow: Option<bool>,
    pub severity: Option<Severity>,
    pub applies_to: Option<AppliesTo>,
    pub roles: Option<Vec<Role>>,
    pub placeholder: Option<String>,
    pub threshold: Option<f64>,
}

/// A whole rule set: named packs, extra rules, and overrides of pack rules.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSetSpec {
    #[serde(default)]
    pub packs: Vec<String>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    #[serde(default)]
    pub overrides: BTreeMap<String, RuleOverride>,
    /// Also scan text decoded from base64 and hex blobs.
    #[serde(default = "yes")]
    pub decode_blobs: bool,
}

const COMMON_KEYS: &[&str] = &[
    "id",
    "kind",
    "category",
    "severity",
    "action",
    "tier",
    "shadow",
    "applies_to",
    "roles",
    "placeholder",
    "enabled",
];

fn kind_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "literal" => &["words", "whole_word"],
        "regex" => &["patterns", "case_insensitive"],
        "detector" => &["detector"],
        "injection" => &["threshold"],
        "max_chars" | "max_messages" | "max_tokens" => &["limit"],
        _ => &[],
    }
}

impl RuleSetSpec {
    /// Parses a rule set from JSON, refusing unknown keys with a message naming them
    /// (serde cannot deny unknown fields next to a flattened enum).
    pub fn from_json(text: &str) -> Result<RuleSetSpec> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("guard rules are not valid JSON: {e}")))?;
        if let Some(rules) = value.get("rules").and_then(|r| r.as_array()) {
            for (index, rule) in rules.iter().enumerate() {
                check_rule_keys(index, rule)?;
            }
        }
        serde_json::from_value(value)
            .map_err(|e| Error::Config(format!("guard rules: {e}; see the rule reference")))
    }
}

fn check_rule_keys(index: usize, rule: &serde_json::Value) -> Result<()> {
    let Some(object) = rule.as_object() else {
        return Err(Error::Config(format!(
            "guard.rules[{index}] must be a table/object"
        )));
    };
    let kind = object.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    for key in object.keys() {
        if !COMMON_KEYS.contains(&key.as_str()) && !kind_keys(kind).contains(&key.as_str()) {
            return Err(Error::Config(format!(
                "guard.rules[{index}] has unknown key {key:?} for kind {kind:?}; \
                 check the spelling or the rule kind"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_literal_rule_with_defaults() {
        let spec = RuleSetSpec::from_json(
            r#"{"rules": [{"id": "c", "kind": "literal", "words": ["acme"], "action": "redact"}]}"#,
        )
        .unwrap();
        let rule = &spec.rules[0];
        assert!(matches!(
            &rule.kind,
            Kind::Literal {
                whole_word: true,
                ..
            }
        ));
        assert_eq!(rule.action, Some(Action::Redact));
        assert!(spec.decode_blobs);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = RuleSetSpec::from_json(
            r#"{"rules": [{"id": "c", "kind": "literal", "words": [], "wholeword": true}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("wholeword"), "{err}");
    }

    #[test]
    fn unknown_kind_is_an_error() {
        assert!(RuleSetSpec::from_json(r#"{"rules": [{"id": "c", "kind": "nope"}]}"#).is_err());
    }
}
