//! Scanning a whole chat request or response: every message part, tool results and
//! tool-call arguments, each with its role, in the OpenAI and Anthropic wire formats.

use serde_json::Value;

use super::engine::Guard;
use super::findings::{redact, Finding};
use super::rules::{Matcher, Scope};
use super::spec::{Action, Role, Target};
use super::to_char_offsets;

/// A finding inside a request, located by JSON pointer (RFC 6901) to its string.
#[derive(Debug, Clone)]
pub struct ChatFinding {
    pub finding: Finding,
    pub path: String,
    pub role: Option<Role>,
}

/// What the rule set decided about one request or response.
#[derive(Debug, Default)]
pub struct ChatVerdict {
    pub findings: Vec<ChatFinding>,
    /// Index into `findings` of the finding that blocks (highest severity first).
    pub blocked: Option<usize>,
    /// Tier named by the highest-severity `route` finding.
    pub route: Option<String>,
    /// The request with redactions applied, when there were any.
    pub redacted: Option<Value>,
}

struct Text {
    path: String,
    role: Option<Role>,
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Collects every scannable string of a request or response with its role.
fn collect(value: &Value) -> (Vec<Text>, usize) {
    let mut texts = Vec::new();
    let mut messages = 0;
    if let Some(list) = value.get("messages").and_then(Value::as_array) {
        messages = list.len();
        for (i, m) in list.iter().enumerate() {
            message(m, &format!("/messages/{i}"), &mut texts);
        }
    }
    if let Some(choices) = value.get("choices").and_then(Value::as_array) {
        for (i, c) in choices.iter().enumerate() {
            for key in ["message", "delta"] {
                if let Some(m) = c.get(key) {
                    message(m, &format!("/choices/{i}/{key}"), &mut texts);
                }
            }
            if c.get("text").is_some() {
                strings(
                    &c["text"],
                    format!("/choices/{i}/text"),
                    Some(Role::Assistant),
                    &mut texts,
                );
            }
        }
    }
    if let Some(system) = value.get("system") {
        content(system, "/system".to_owned(), Some(Role::System), &mut texts);
    }
    for key in ["prompt", "input"] {
        if let Some(v) = value.get(key) {
            strings(v, format!("/{key}"), Some(Role::User), &mut texts);
        }
    }
    // An Anthropic response is itself an assistant message.
    if value.get("type").and_then(Value::as_str) == Some("message") {
        content(
            &value["content"],
            "/content".to_owned(),
            Some(Role::Assistant),
            &mut texts,
        );
    }
    (texts, messages)
}

fn message(m: &Value, path: &str, texts: &mut Vec<Text>) {
    let role = m.get("role").and_then(Value::as_str).and_then(Role::parse);
    if let Some(c) = m.get("content") {
        content(c, format!("{path}/content"), role, texts);
    }
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        for (k, call) in calls.iter().enumerate() {
            if call
                .pointer("/function/arguments")
                .is_some_and(Value::is_string)
            {
                let path = format!("{path}/tool_calls/{k}/function/arguments");
                texts.push(Text {
                    path,
                    role: Some(Role::Assistant),
                });
            }
        }
    }
    if m.pointer("/function_call/arguments")
        .is_some_and(Value::is_string)
    {
        let path = format!("{path}/function_call/arguments");
        texts.push(Text {
            path,
            role: Some(Role::Assistant),
        });
    }
}

/// A message body: a string, or a list of parts (text, tool results, tool inputs).
fn content(c: &Value, path: String, role: Option<Role>, texts: &mut Vec<Text>) {
    match c {
        Value::String(_) => texts.push(Text { path, role }),
        Value::Array(parts) => {
            for (j, part) in parts.iter().enumerate() {
                let at = format!("{path}/{j}");
                match part.get("type").and_then(Value::as_str) {
                    Some("tool_result") => {
                        if let Some(inner) = part.get("content") {
                            content(inner, format!("{at}/content"), Some(Role::Tool), texts);
                        }
                    }
                    Some("tool_use") => {
                        if let Some(input) = part.get("input") {
                            strings(input, format!("{at}/input"), Some(Role::Assistant), texts);
                        }
                    }
                    _ if part.is_string() => texts.push(Text { path: at, role }),
                    _ => {
                        if part.get("text").is_some_and(Value::is_string) {
                            texts.push(Text {
                                path: format!("{at}/text"),
                                role,
                            });
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Every string inside an arbitrary JSON value (tool inputs, prompt lists).
fn strings(v: &Value, path: String, role: Option<Role>, texts: &mut Vec<Text>) {
    match v {
        Value::String(_) => texts.push(Text { path, role }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{path}/{i}"), role, texts);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                strings(item, format!("{path}/{}", escape(k)), role, texts);
            }
        }
        _ => {}
    }
}

impl Guard {
    /// Scans every text of a chat request (`Target::Input`) or response
    /// (`Target::Output`). `input_tokens`, when known, feeds `max_tokens` rules.
    pub fn scan_chat(
        &self,
        request: &Value,
        target: Target,
        input_tokens: Option<usize>,
    ) -> ChatVerdict {
        let (texts, messages) = collect(request);
        let mut verdict = ChatVerdict::default();
        let mut redacted = request.clone();
        let mut changed = false;
        let mut total_chars = 0usize;

        for t in &texts {
            let Some(text) = request.pointer(&t.path).and_then(Value::as_str) else {
                continue;
            };
            total_chars += text.chars().count();
            let mut findings = self.scan(
                text,
                Scope {
                    target: Some(target),
                    role: t.role,
                },
            );
            let masked = redact(text, &findings, &self.rules);
            if masked != text {
                if let Some(slot) = redacted.pointer_mut(&t.path) {
                    *slot = Value::String(masked);
                    changed = true;
                }
            }
            // Length limits apply to the request as a whole, below.
            findings.retain(|f| !matches!(self.rules[f.rule].matcher, Matcher::MaxChars(_)));
            to_char_offsets(text, &mut findings);
            verdict
                .findings
                .extend(findings.into_iter().map(|finding| ChatFinding {
                    finding,
                    path: t.path.clone(),
                    role: t.role,
                }));
        }
        self.check_limits(target, total_chars, messages, input_tokens, &mut verdict);
        self.decide(&mut verdict);
        if changed {
            verdict.redacted = Some(redacted);
        }
        verdict
    }

    fn check_limits(
        &self,
        target: Target,
        chars: usize,
        messages: usize,
        tokens: Option<usize>,
        verdict: &mut ChatVerdict,
    ) {
        let scope = Scope {
            target: Some(target),
            role: None,
        };
        for (i, rule) in self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.covers(scope))
        {
            let (over, label) = match rule.matcher {
                Matcher::MaxChars(limit) => (chars > limit, "MAX_CHARS"),
                Matcher::MaxMessages(limit) => (messages > limit, "MAX_MESSAGES"),
                Matcher::MaxTokens(limit) => (tokens.is_some_and(|t| t > limit), "MAX_TOKENS"),
                _ => continue,
            };
            if over {
                let finding = Finding {
                    rule: i,
                    start: 0,
                    end: 0,
                    score: 1.0,
                    label: label.into(),
                };
                verdict.findings.push(ChatFinding {
                    finding,
                    path: String::new(),
                    role: None,
                });
            }
        }
    }

    fn decide(&self, verdict: &mut ChatVerdict) {
        let live = |f: &ChatFinding, action: Action| {
            let r = &self.rules[f.finding.rule];
            r.action == action && !r.shadow
        };
        verdict.blocked = verdict
            .findings
            .iter()
            .enumerate()
            .filter(|(_, f)| live(f, Action::Block))
            .max_by_key(|(i, f)| (self.rules[f.finding.rule].severity, std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        verdict.route = verdict
            .findings
            .iter()
            .enumerate()
            .filter(|(_, f)| live(f, Action::Route))
            .max_by_key(|(i, f)| (self.rules[f.finding.rule].severity, std::cmp::Reverse(*i)))
            .and_then(|(_, f)| self.rules[f.finding.rule].tier.clone());
    }
}

impl ChatVerdict {
    /// The redacted request as JSON text, when there were redactions.
    pub fn redacted_json(&self) -> Option<String> {
        self.redacted.as_ref().map(Value::to_string)
    }
}

impl Guard {
    /// [`Guard::scan_chat`] on JSON text; malformed or too deeply nested JSON is an
    /// `InvalidInput` error, never a panic.
    pub fn scan_chat_json(
        &self,
        request: &str,
        target: Target,
        input_tokens: Option<usize>,
    ) -> crate::Result<ChatVerdict> {
        let value: Value = serde_json::from_str(request).map_err(|e| {
            crate::Error::InvalidInput(format!(
                "request: not a JSON object the guard can read: {e}"
            ))
        })?;
        Ok(self.scan_chat(&value, target, input_tokens))
    }
}
