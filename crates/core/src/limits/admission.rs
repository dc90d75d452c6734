//! What the limiter hands back: admissions and refusals, the values a settle reports,
//! and read-only views of limits and their state for usage reports and metrics.

use std::sync::Arc;

use super::decision::RefusalCode;
use super::spec::{LimitKind, Mode, RequestScopes};

/// The headroom one meter has left, for `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    pub limit: u64,
    pub remaining: u64,
    pub reset_ns: u64,
}

impl Headroom {
    /// The tighter of two meters: the one with less left, else the one resetting later.
    pub(super) fn tighter(self, other: Headroom) -> Headroom {
        if (other.remaining, std::cmp::Reverse(other.reset_ns))
            < (self.remaining, std::cmp::Reverse(self.reset_ns))
        {
            other
        } else {
            self
        }
    }
}

/// A refusal, naming the limit, its scope and the scope value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub limit: Arc<str>,
    pub kind: LimitKind,
    pub scope: String,
    pub scope_value: String,
    pub code: RefusalCode,
    pub retry_after_ns: Option<u64>,
    pub mode: Mode,
}

impl Refusal {
    /// A sentence for the caller: what refused, and what to do about it.
    pub fn message(&self) -> String {
        let what = format!(
            "{} limit '{}' for {} '{}'",
            self.kind.as_str(),
            self.limit,
            self.scope,
            self.scope_value
        );
        match (self.code, self.retry_after_ns) {
            (RefusalCode::RequestTooLarge, _) => {
                format!(
                    "Request too large for the {what}: it can never fit; send a smaller request."
                )
            }
            (RefusalCode::InsufficientQuota, _) => {
                format!("The {what} is spent for this month.")
            }
            (_, Some(ns)) => format!(
                "The {what} is reached. Retry after {:.3} s.",
                ns as f64 / 1e9
            ),
            (_, None) => format!("The {what} is reached."),
        }
    }
}

/// The answer to one admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Settle with this; 0 when the request holds nothing that needs settling.
    pub handle: u64,
    /// `None` when admitted.
    pub refusal: Option<Box<Refusal>>,
    /// What shadow limits would have refused (the request was not refused for them).
    pub shadow_refusals: Vec<Refusal>,
    pub requests: Option<Headroom>,
    pub tokens: Option<Headroom>,
    /// The tier a budget near exhaustion asks to downgrade to.
    pub downgrade_to: Option<Arc<str>>,
    /// The least any enforced budget of the request has left, in nano-dollars (after this
    /// request's reservation when admitted).
    pub budget_remaining_nano: Option<u64>,
}

impl Admission {
    pub fn admitted(&self) -> bool {
        self.refusal.is_none()
    }
}

/// What a request asks for: its scope values, tokens and worst-case cost to reserve.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub scopes: RequestScopes<'a>,
    /// Input tokens plus the output tokens reserved for the answer.
    pub tokens: u64,
    /// Worst-case cost in nano-dollars.
    pub cost_nano: u64,
}

/// What a settled request really used.
#[derive(Debug, Clone, Copy, Default)]
pub struct Actual {
    pub tokens: u64,
    pub cost_nano: u64,
}

/// Budget state of one scope value, for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetView {
    pub limit_usd: f64,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    pub remaining_usd: f64,
    /// Seconds until a calendar period ends; `None` for rolling windows.
    pub resets_in_s: Option<f64>,
}

/// One scope value of one limit, for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryView {
    pub scope_value: String,
    pub requests_remaining: Option<u64>,
    pub tokens_remaining: Option<u64>,
    pub in_flight: Option<u32>,
    pub budget: Option<BudgetView>,
}

/// One limit, for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitView {
    pub name: String,
    pub scope: String,
    pub mode: Mode,
    /// Refusals by kind, as (kind, enforced, shadow).
    pub refusals: Vec<(LimitKind, u64, u64)>,
    pub keys: usize,
    /// Spend of every scope value in its current period, summed.
    pub spent_usd: f64,
    /// Up to the requested number of scope values, those with budgets first.
    pub entries: Vec<EntryView>,
}
