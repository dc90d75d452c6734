//! What a limit is: a scope, the meters it applies to each value of that scope, and a mode.

use std::fmt;
use std::sync::Arc;

use super::budget::Budget;
use super::rate::Rate;
use crate::{Error, Result};

/// Which value of a request a limit is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeKind {
    Key,
    User,
    Team,
    Model,
    Tier,
    /// A label attached to the API key, by label name (`label:env`).
    Label(Box<str>),
    /// One counter for all traffic.
    Global,
}

/// The value every request has under the global scope.
pub const GLOBAL_VALUE: &str = "*";

impl ScopeKind {
    /// `label` names the key label for `scope = "label"`; `what` names the setting in errors.
    pub fn parse(scope: &str, label: Option<&str>, what: &str) -> Result<Self> {
        let kind = match scope {
            "key" => ScopeKind::Key,
            "user" => ScopeKind::User,
            "team" => ScopeKind::Team,
            "model" => ScopeKind::Model,
            "tier" => ScopeKind::Tier,
            "global" => ScopeKind::Global,
            "label" => match label {
                Some(name) if !name.is_empty() => ScopeKind::Label(name.into()),
                _ => {
                    return Err(Error::Config(format!(
                        "{what}.label must name the key label when scope is \"label\""
                    )))
                }
            },
            other => {
                return Err(Error::Config(format!(
                    "{what}.scope must be one of key, user, team, model, tier, label, global; \
                     got {other:?}"
                )))
            }
        };
        if label.is_some() && !matches!(kind, ScopeKind::Label(_)) {
            return Err(Error::Config(format!(
                "{what}.label is only allowed with scope = \"label\""
            )));
        }
        Ok(kind)
    }

    /// The value this scope takes for `request`, if the request has one.
    pub fn value_in<'a>(&self, request: &RequestScopes<'a>) -> Option<&'a str> {
        match self {
            ScopeKind::Key => request.key,
            ScopeKind::User => request.user,
            ScopeKind::Team => request.team,
            ScopeKind::Model => request.model,
            ScopeKind::Tier => request.tier,
            ScopeKind::Label(name) => request
                .labels
                .iter()
                .find(|(k, _)| k.as_str() == &**name)
                .map(|(_, v)| v.as_str()),
            ScopeKind::Global => Some(GLOBAL_VALUE),
        }
    }
}

impl fmt::Display for ScopeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeKind::Key => f.write_str("key"),
            ScopeKind::User => f.write_str("user"),
            ScopeKind::Team => f.write_str("team"),
            ScopeKind::Model => f.write_str("model"),
            ScopeKind::Tier => f.write_str("tier"),
            ScopeKind::Label(name) => write!(f, "label:{name}"),
            ScopeKind::Global => f.write_str("global"),
        }
    }
}

/// The scope values of one request; `None` where the request has no such value.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestScopes<'a> {
    pub key: Option<&'a str>,
    pub user: Option<&'a str>,
    pub team: Option<&'a str>,
    pub model: Option<&'a str>,
    pub tier: Option<&'a str>,
    pub labels: &'a [(String, String)],
}

/// `Enforce` refuses; `Shadow` decides, records what it would have refused, and admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Shadow,
}

impl Mode {
    pub fn parse(mode: &str, what: &str) -> Result<Self> {
        match mode {
            "enforce" => Ok(Mode::Enforce),
            "shadow" => Ok(Mode::Shadow),
            other => Err(Error::Config(format!(
                "{what}.mode must be \"enforce\" or \"shadow\", got {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// The four meters a limit can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Concurrency,
    Budget,
}

impl LimitKind {
    pub const ALL: [LimitKind; 4] = [
        LimitKind::Requests,
        LimitKind::Tokens,
        LimitKind::Concurrency,
        LimitKind::Budget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::Concurrency => "concurrency",
            LimitKind::Budget => "budget",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One configured limit. Each value of its scope gets its own meters.
#[derive(Debug)]
pub struct LimitSpec {
    pub name: Arc<str>,
    pub scope: ScopeKind,
    /// When set, the limit applies only to requests whose scope value equals it.
    pub only_value: Option<String>,
    pub requests: Option<Rate>,
    pub tokens: Option<Rate>,
    pub concurrency: Option<u32>,
    pub budget: Option<Budget>,
    pub mode: Mode,
    /// Tier to route to once the budget reaches its downgrade threshold.
    pub downgrade_to: Option<Arc<str>>,
}

impl LimitSpec {
    /// Checks the combination of settings; `what` names the limit in messages.
    pub fn validate(&self, what: &str) -> Result<()> {
        if self.requests.is_none()
            && self.tokens.is_none()
            && self.concurrency.is_none()
            && self.budget.is_none()
        {
            return Err(Error::Config(format!(
                "{what} sets no limit: give requests, tokens, concurrency or a budget"
            )));
        }
        if self.concurrency == Some(0) {
            return Err(Error::Config(format!(
                "{what}.concurrency must be at least 1, got 0"
            )));
        }
        if self.downgrade_to.is_some() && self.budget.is_none() {
            return Err(Error::Config(format!(
                "{what}.downgrade_to needs a budget to watch; add budget = {{ usd = ..., per = ... }}"
            )));
        }
        Ok(())
    }

    /// The value this limit is keyed by for `request`, or `None` if it does not apply.
    pub fn applies_to<'a>(&self, request: &RequestScopes<'a>) -> Option<&'a str> {
        let value = self.scope.value_in(request)?;
        match &self.only_value {
            Some(only) if only != value => None,
            _ => Some(value),
        }
    }
}
