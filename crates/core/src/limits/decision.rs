//! The state of one scope value under one limit, and the pure decision over it.
//!
//! `decide` reads the state and says what admitting would change; `commit` applies that;
//! `release` undoes a reservation at settlement. The limiter wraps these in locks; a Redis
//! backend can run the same steps inside one script over the same four fields.

use std::sync::Arc;

use super::budget::{BudgetDecision, BudgetNow, BudgetState};
use super::rate::RateDecision;
use super::spec::{LimitKind, LimitSpec};

/// Per scope value: two GCRA arrival times, requests in flight, and budget spend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeState {
    pub requests_tat: u64,
    pub tokens_tat: u64,
    /// Nanoseconds of token TAT ever charged at admission; a reservation remembers the
    /// value after its own charge, so settlement knows what later requests added.
    pub tokens_charged_ns: u64,
    pub in_flight: u32,
    pub budget: Option<BudgetState>,
}

impl ScopeState {
    /// True when forgetting this state changes no future decision.
    pub fn is_idle(&mut self, now: u64, budget_now: Option<&BudgetNow>) -> bool {
        if self.requests_tat > now || self.tokens_tat > now || self.in_flight > 0 {
            return false;
        }
        match (&mut self.budget, budget_now) {
            (Some(budget), Some(budget_now)) => {
                budget.roll(budget_now);
                budget.is_idle()
            }
            (Some(budget), None) => budget.is_idle(),
            (None, _) => true,
        }
    }
}

/// Why a request was or would have been refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// Requests or tokens per period; waiting helps.
    RateLimitExceeded,
    /// Too many requests in flight; waiting helps.
    ConcurrencyLimitExceeded,
    /// Daily or rolling budget spent; it comes back at the next period or as the window slides.
    BudgetExceeded,
    /// Monthly budget spent: OpenAI's code for "no retry will help".
    InsufficientQuota,
    /// The request alone is larger than the burst or the whole budget.
    RequestTooLarge,
}

impl RefusalCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::RateLimitExceeded => "rate_limit_exceeded",
            RefusalCode::ConcurrencyLimitExceeded => "concurrency_limit_exceeded",
            RefusalCode::BudgetExceeded => "budget_exceeded",
            RefusalCode::InsufficientQuota => "insufficient_quota",
            RefusalCode::RequestTooLarge => "request_too_large",
        }
    }
}

/// The wait suggested to a request refused for concurrency before any request of its limit
/// has finished to learn a duration from: one second, the shortest `Retry-After` there is.
pub const CONCURRENCY_RETRY_FALLBACK_NS: u64 = 1_000_000_000;

/// The expected wait for a free slot. With `in_flight` requests that last `mean_hold_ns` on
/// average and started at unrelated moments, one of them ends every `mean_hold_ns /
/// in_flight` on average; that is when a retry can expect to find room.
pub fn concurrency_wait_ns(mean_hold_ns: Option<u64>, in_flight: u32) -> u64 {
    match mean_hold_ns {
        Some(mean) => (mean / u64::from(in_flight.max(1))).max(1),
        None => CONCURRENCY_RETRY_FALLBACK_NS,
    }
}

/// A refusal by one meter of one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub kind: LimitKind,
    pub code: RefusalCode,
    pub retry_after_ns: Option<u64>,
}

impl Verdict {
    /// The more useful of two refusals to report: one that waiting cannot cure, else the
    /// longer wait.
    pub fn worse(self, other: Verdict) -> Verdict {
        match (self.retry_after_ns, other.retry_after_ns) {
            (None, _) => self,
            (_, None) => other,
            (Some(a), Some(b)) if b > a => other,
            _ => self,
        }
    }
}

/// What admitting one request would do to one scope value's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// `None` when every meter admits.
    pub refusal: Option<Verdict>,
    pub requests_tat: u64,
    pub tokens_tat: u64,
    pub near_exhaustion: bool,
}

/// The request being decided: tokens and worst-case cost to reserve, and the clocks.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub now: u64,
    pub tokens: u64,
    pub cost: u64,
    pub budget_now: Option<&'a BudgetNow>,
    /// How long requests of this limit have stayed in flight on average, once one has
    /// settled; sizes the wait suggested on a concurrency refusal.
    pub mean_hold_ns: Option<u64>,
}

/// Decides one limit for one scope value; `state` is only rolled to the current period.
pub fn decide(spec: &LimitSpec, state: &mut ScopeState, ask: &Ask<'_>) -> Decision {
    let mut decision = Decision {
        refusal: None,
        requests_tat: state.requests_tat,
        tokens_tat: state.tokens_tat,
        near_exhaustion: false,
    };
    let mut refuse = |verdict: Verdict| {
        decision.refusal = Some(match decision.refusal {
            Some(previous) => previous.worse(verdict),
            None => verdict,
        });
    };
    if let Some(rate) = &spec.requests {
        match rate.check(state.requests_tat, ask.now, 1) {
            RateDecision::Admit { new_tat } => decision.requests_tat = new_tat,
            other => refuse(rate_verdict(LimitKind::Requests, other)),
        }
    }
    if let Some(rate) = &spec.tokens {
        match rate.check(state.tokens_tat, ask.now, ask.tokens) {
            RateDecision::Admit { new_tat } => decision.tokens_tat = new_tat,
            other => refuse(rate_verdict(LimitKind::Tokens, other)),
        }
    }
    if let Some(cap) = spec.concurrency {
        if state.in_flight >= cap {
            refuse(Verdict {
                kind: LimitKind::Concurrency,
                code: RefusalCode::ConcurrencyLimitExceeded,
                retry_after_ns: Some(concurrency_wait_ns(ask.mean_hold_ns, state.in_flight)),
            });
        }
    }
    if let (Some(budget), Some(budget_now)) = (&spec.budget, ask.budget_now) {
        let budget_state = state
            .budget
            .get_or_insert_with(|| BudgetState::new(budget_now));
        budget_state.roll(budget_now);
        match budget.check(budget_state, budget_now, ask.cost) {
            BudgetDecision::Admit { near_exhaustion } => {
                decision.near_exhaustion = near_exhaustion;
            }
            other => refuse(budget_verdict(other)),
        }
    }
    decision
}

fn rate_verdict(kind: LimitKind, decision: RateDecision) -> Verdict {
    let (code, retry_after_ns) = match decision {
        RateDecision::Wait { retry_after_ns } => {
            (RefusalCode::RateLimitExceeded, Some(retry_after_ns))
        }
        _ => (RefusalCode::RequestTooLarge, None),
    };
    Verdict {
        kind,
        code,
        retry_after_ns,
    }
}

fn budget_verdict(decision: BudgetDecision) -> Verdict {
    let (code, retry_after_ns) = match decision {
        BudgetDecision::Wait { retry_after_ns } => {
            (RefusalCode::BudgetExceeded, Some(retry_after_ns))
        }
        BudgetDecision::Exhausted => (RefusalCode::InsufficientQuota, None),
        _ => (RefusalCode::RequestTooLarge, None),
    };
    Verdict {
        kind: LimitKind::Budget,
        code,
        retry_after_ns,
    }
}

/// Applies an admitting decision: the request now holds its share of every meter.
pub fn commit(spec: &LimitSpec, state: &mut ScopeState, decision: &Decision, now: u64, cost: u64) {
    let charged = decision
        .tokens_tat
        .saturating_sub(state.tokens_tat.max(now));
    state.tokens_charged_ns = state.tokens_charged_ns.saturating_add(charged);
    state.requests_tat = decision.requests_tat;
    state.tokens_tat = decision.tokens_tat;
    if spec.concurrency.is_some() {
        state.in_flight = state.in_flight.saturating_add(1);
    }
    if let Some(budget) = &mut state.budget {
        if spec.budget.is_some() {
            budget.reserve(cost);
        }
    }
}

/// What one admitted request holds under one limit, kept until it is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub spec: u32,
    pub key: Arc<str>,
    /// `tokens_charged_ns` of the state right after this request was admitted.
    pub tokens_mark: u64,
}

/// What a request turned out to use, or what it reserved when it expires unsettled.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub reserved_tokens: u64,
    pub tokens: u64,
    pub reserved_cost: u64,
    pub cost: u64,
}

/// Gives back what a request held: its slot in flight, unused tokens, unspent reservation.
pub fn release(
    spec: &LimitSpec,
    state: &mut ScopeState,
    held: &Held,
    usage: &Usage,
    now: u64,
    budget_now: Option<&BudgetNow>,
) {
    if let Some(rate) = &spec.tokens {
        // A state evicted and created anew starts its counter at zero: nothing since.
        let since = state.tokens_charged_ns.saturating_sub(held.tokens_mark);
        let before = state.tokens_tat.max(now);
        state.tokens_tat = rate.reconcile(
            state.tokens_tat,
            now,
            usage.reserved_tokens,
            usage.tokens,
            since,
        );
        let extra = state.tokens_tat.saturating_sub(before);
        state.tokens_charged_ns = state.tokens_charged_ns.saturating_add(extra);
    }
    if spec.concurrency.is_some() {
        state.in_flight = state.in_flight.saturating_sub(1);
    }
    if let (Some(_), Some(budget_now)) = (&spec.budget, budget_now) {
        let budget = state
            .budget
            .get_or_insert_with(|| BudgetState::new(budget_now));
        budget.roll(budget_now);
        budget.settle(usage.reserved_cost, usage.cost);
    }
}
