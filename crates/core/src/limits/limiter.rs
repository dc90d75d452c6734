//! The limiter: admits a request against every limit that applies, all or nothing, and
//! settles it afterwards.
//!
//! Admission locks the one shard each applicable limit keeps the request's scope value
//! in, always in limit order (so two requests can never wait on each other's locks),
//! decides every limit, and commits only when every enforced limit admits. A refusal thus
//! leaves no reservation anywhere, and concurrent requests cannot both take the last room.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::MutexGuard;
use smallvec::SmallVec;

use super::admission::{
    Actual, Admission, BudgetView, EntryView, Headroom, LimitView, Refusal, Request,
};
use super::budget::{nano_to_usd, BudgetNow, BudgetPeriod};
use super::clock::Clock;
use super::decision::{self, Ask, Decision, Held, Usage, Verdict};
use super::reservations::{Reservation, Reservations};
use super::spec::{LimitKind, LimitSpec, Mode};
use super::store::{Hashed, Shard, Slot, Store};
use crate::{Error, Result};

/// At most this many expired reservations are settled inside one admission, so a backlog
/// never lands on a single request; `Limiter::sweep` clears the rest.
const EXPIRE_PER_ADMIT: usize = 4;

/// Weight of the newest duration in the running average of time in flight, as a shift:
/// 1/8, so one slow request moves the estimate but a handful of them are needed to set it.
const HOLD_EWMA_SHIFT: u32 = 3;

/// One limit with its state and counters.
#[derive(Debug)]
struct Compiled {
    spec: LimitSpec,
    store: Store,
    /// Refusals by [mode][kind]; shadow refusals are what enforcing would have refused.
    refusals: [[AtomicU64; 4]; 2],
    /// Running average of how long settled requests stayed in flight (0 until the first),
    /// kept only for limits with a concurrency cap.
    mean_hold_ns: AtomicU64,
}

impl Compiled {
    fn mean_hold_ns(&self) -> Option<u64> {
        match self.mean_hold_ns.load(Ordering::Relaxed) {
            0 => None,
            mean => Some(mean),
        }
    }

    /// Folds one request's time in flight into the average. Two settlements racing may
    /// lose one sample; an estimate does not need every one.
    fn observe_hold(&self, held_ns: u64) {
        let held_ns = held_ns.max(1);
        let mean = match self.mean_hold_ns.load(Ordering::Relaxed) {
            0 => held_ns,
            mean => {
                let mean = i128::from(mean);
                let delta = (i128::from(held_ns) - mean) >> HOLD_EWMA_SHIFT;
                u64::try_from(mean + delta).unwrap_or(1).max(1)
            }
        };
        self.mean_hold_ns.store(mean, Ordering::Relaxed);
    }
}

/// The limiter of one process.
pub struct Limiter {
    limits: Vec<Compiled>,
    clock: Arc<dyn Clock>,
    reservations: Reservations,
    reservation_ttl_ns: u64,
    /// Reservations settled at their reserved amount because nobody settled them in time.
    expired: AtomicU64,
}

/// One limit that applies to the request being admitted.
struct Step<'a> {
    limit: usize,
    key: Hashed<'a>,
    budget_now: Option<BudgetNow>,
}

/// Most requests meet one to four limits; more spill to the heap.
type Steps<'a> = SmallVec<[Step<'a>; 4]>;

impl Limiter {
    /// `reservation_ttl_ns`: how long an unsettled reservation lives before it is settled
    /// at its reserved amount.
    pub fn new(
        specs: Vec<LimitSpec>,
        clock: Arc<dyn Clock>,
        reservation_ttl_ns: u64,
    ) -> Result<Self> {
        if reservation_ttl_ns == 0 {
            return Err(Error::Config(
                "reservation_ttl must be a positive number of seconds".into(),
            ));
        }
        let mut limits = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            spec.validate(&format!("limits[{i}] ({})", spec.name))?;
            limits.push(Compiled {
                spec,
                store: Store::new(),
                refusals: Default::default(),
                mean_hold_ns: AtomicU64::new(0),
            });
        }
        Ok(Self {
            limits,
            clock,
            reservations: Reservations::new(),
            reservation_ttl_ns,
            expired: AtomicU64::new(0),
        })
    }

    pub fn specs(&self) -> impl Iterator<Item = &LimitSpec> {
        self.limits.iter().map(|l| &l.spec)
    }

    /// Decides a request against every limit that applies to it.
    pub fn admit(&self, request: &Request<'_>) -> Result<Admission> {
        let now = self.clock.monotonic_ns();
        // Lock in limit order, then decide everything before changing anything.
        let mut steps: Steps<'_> = SmallVec::new();
        let mut guards: SmallVec<[MutexGuard<'_, Shard>; 4]> = SmallVec::new();
        for (limit, compiled) in self.limits.iter().enumerate() {
            if let Some(value) = compiled.spec.applies_to(&request.scopes) {
                let step = Step {
                    limit,
                    key: compiled.store.hash(value),
                    budget_now: self.budget_now(&compiled.spec, now)?,
                };
                guards.push(compiled.store.lock(step.key));
                steps.push(step);
            }
        }
        // One pass finds each scope value's entry and decides it, so the entries and the
        // decisions are built side by side without a second walk over the steps.
        let mut slots: SmallVec<[&mut Slot; 4]> = SmallVec::new();
        let mut decisions: SmallVec<[Decision; 4]> = SmallVec::new();
        for (shard, step) in guards.iter_mut().zip(&steps) {
            let slot = shard.entry(step.key, |s| s.is_idle(now, step.budget_now.as_ref()));
            let compiled = &self.limits[step.limit];
            let ask = Ask {
                now,
                tokens: request.tokens,
                cost: request.cost_nano,
                budget_now: step.budget_now.as_ref(),
                mean_hold_ns: compiled.mean_hold_ns(),
            };
            decisions.push(decision::decide(&compiled.spec, &mut slot.1, &ask));
            slots.push(slot);
        }

        let mut admission = Admission {
            handle: 0,
            refusal: None,
            shadow_refusals: Vec::new(),
            requests: None,
            tokens: None,
            downgrade_to: None,
            budget_remaining_nano: None,
        };
        let mut worst: Option<(usize, Verdict)> = None;
        for (at, d) in decisions.iter().enumerate() {
            let Some(verdict) = d.refusal else { continue };
            let step = &steps[at];
            let limit = &self.limits[step.limit];
            limit.refusals[mode_index(limit.spec.mode)][verdict.kind.index()]
                .fetch_add(1, Ordering::Relaxed);
            match limit.spec.mode {
                Mode::Shadow => admission.shadow_refusals.push(self.refusal(
                    step.limit,
                    step.key.key(),
                    verdict,
                )),
                Mode::Enforce => {
                    worst = Some(match worst {
                        Some((j, w)) if w.worse(verdict) == w => (j, w),
                        _ => (at, verdict),
                    });
                }
            }
        }
        let admitted = worst.is_none();
        if let Some((at, verdict)) = worst {
            let step = &steps[at];
            admission.refusal = Some(Box::new(self.refusal(step.limit, step.key.key(), verdict)));
        }

        let mut held: SmallVec<[Held; 4]> = SmallVec::new();
        for ((entry, step), d) in slots.iter_mut().zip(&steps).zip(&decisions) {
            let spec = &self.limits[step.limit].spec;
            let (key, state) = (&entry.0, &mut entry.1);
            if admitted && d.refusal.is_none() {
                decision::commit(spec, state, d, now, request.cost_nano);
                if spec.tokens.is_some() || spec.concurrency.is_some() || spec.budget.is_some() {
                    held.push(Held {
                        spec: step.limit as u32,
                        key: Arc::clone(key),
                        tokens_mark: state.tokens_charged_ns,
                    });
                }
                if d.near_exhaustion && admission.downgrade_to.is_none() {
                    admission.downgrade_to = spec.downgrade_to.clone();
                }
            }
            if spec.mode == Mode::Enforce {
                note_budget(&mut admission, spec, state);
                self.note_headroom(
                    &mut admission,
                    spec,
                    state.requests_tat,
                    state.tokens_tat,
                    now,
                );
            }
        }
        drop(slots);
        drop(guards);

        if !held.is_empty() {
            admission.handle = self.reservations.insert(Reservation {
                admitted_ns: now,
                deadline_ns: now.saturating_add(self.reservation_ttl_ns),
                tokens: request.tokens,
                cost: request.cost_nano,
                held,
            });
            let expired =
                self.reservations
                    .take_expired_near(admission.handle, now, EXPIRE_PER_ADMIT);
            self.expire(expired)?;
        }
        Ok(admission)
    }

    /// Settles a request at what it really used. Returns false when the handle was already
    /// settled or expired (settling twice changes nothing).
    pub fn settle(&self, handle: u64, actual: Actual) -> Result<bool> {
        if handle == 0 {
            return Ok(false);
        }
        let Some(reservation) = self.reservations.take(handle) else {
            return Ok(false);
        };
        let now = self.release(&reservation, actual)?;
        let held_ns = now.saturating_sub(reservation.admitted_ns);
        for held in &reservation.held {
            let limit = &self.limits[held.spec as usize];
            if limit.spec.concurrency.is_some() {
                limit.observe_hold(held_ns);
            }
        }
        Ok(true)
    }

    /// Settles up to `max` reservations whose time to live has passed, at their reserved
    /// amount; returns how many. Cheap enough to run every second: the deadlines are kept in
    /// order, so only overdue reservations are visited.
    pub fn expire_overdue(&self, max: usize) -> Result<usize> {
        let now = self.clock.monotonic_ns();
        let expired = self.reservations.take_some_expired(now, max);
        let count = expired.len();
        self.expire(expired)?;
        Ok(count)
    }

    /// Reservations settled at their reserved amount because they outlived their time to
    /// live (a crashed handler, a cancelled stream), since the limiter was built.
    pub fn expired_total(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Expires every overdue reservation and drops idle state; returns (expired, evicted).
    pub fn sweep(&self) -> Result<(usize, usize)> {
        let now = self.clock.monotonic_ns();
        let expired = self.reservations.take_some_expired(now, usize::MAX);
        let count = expired.len();
        self.expire(expired)?;
        let mut evicted = 0;
        for limit in &self.limits {
            let budget_now = self.budget_now(&limit.spec, now)?;
            limit.store.for_each_shard(|shard| {
                evicted += shard.sweep(|s| s.is_idle(now, budget_now.as_ref()));
            });
        }
        Ok((count, evicted))
    }

    /// Scope values held in memory, over all limits.
    pub fn key_count(&self) -> usize {
        self.limits.iter().map(|l| l.store.len()).sum()
    }

    /// Reservations not yet settled or expired.
    pub fn outstanding(&self) -> usize {
        self.reservations.len()
    }

    /// The state of every limit; at most `max_entries` scope values per limit.
    pub fn snapshot(&self, max_entries: usize) -> Result<Vec<LimitView>> {
        let now = self.clock.monotonic_ns();
        let mut views = Vec::with_capacity(self.limits.len());
        for limit in &self.limits {
            let spec = &limit.spec;
            let budget_now = self.budget_now(spec, now)?;
            let mut view = LimitView {
                name: spec.name.to_string(),
                scope: spec.scope.to_string(),
                mode: spec.mode,
                refusals: LimitKind::ALL
                    .iter()
                    .map(|&k| {
                        let load = |m: usize| limit.refusals[m][k.index()].load(Ordering::Relaxed);
                        (k, load(0), load(1))
                    })
                    .collect(),
                keys: 0,
                spent_usd: 0.0,
                entries: Vec::new(),
            };
            let mut spent_nano = 0u64;
            limit.store.for_each_shard(|shard| {
                view.keys += shard.len();
                for (key, state) in shard.iter_mut().map(|slot| (&slot.0, &mut slot.1)) {
                    let entry = entry_view(spec, key, state, now, budget_now.as_ref());
                    if let Some(budget) = &state.budget {
                        spent_nano = spent_nano.saturating_add(budget.spent());
                    }
                    if view.entries.len() < max_entries {
                        view.entries.push(entry);
                    }
                }
            });
            view.spent_usd = nano_to_usd(spent_nano);
            views.push(view);
        }
        Ok(views)
    }

    fn refusal(&self, i: usize, value: &str, verdict: Verdict) -> Refusal {
        let spec = &self.limits[i].spec;
        Refusal {
            limit: Arc::clone(&spec.name),
            kind: verdict.kind,
            scope: spec.scope.to_string(),
            scope_value: value.to_string(),
            code: verdict.code,
            retry_after_ns: verdict.retry_after_ns,
            mode: spec.mode,
        }
    }

    fn note_headroom(
        &self,
        admission: &mut Admission,
        spec: &LimitSpec,
        requests_tat: u64,
        tokens_tat: u64,
        now: u64,
    ) {
        let pairs = [
            (&spec.requests, requests_tat, &mut admission.requests),
            (&spec.tokens, tokens_tat, &mut admission.tokens),
        ];
        for (rate, tat, slot) in pairs {
            let Some(rate) = rate else { continue };
            let here = Headroom {
                limit: rate.limit(),
                remaining: rate.remaining(tat, now),
                reset_ns: rate.reset_ns(tat, now),
            };
            *slot = Some(match *slot {
                Some(other) => other.tighter(here),
                None => here,
            });
        }
    }

    fn budget_now(&self, spec: &LimitSpec, now: u64) -> Result<Option<BudgetNow>> {
        match &spec.budget {
            None => Ok(None),
            Some(budget) => {
                let wall = match budget.period() {
                    BudgetPeriod::Window { .. } => 0,
                    _ => self.clock.wall_ns(),
                };
                budget.now(now, wall).map(Some)
            }
        }
    }

    fn expire(&self, expired: Vec<Reservation>) -> Result<()> {
        self.expired
            .fetch_add(expired.len() as u64, Ordering::Relaxed);
        for reservation in expired {
            let actual = Actual {
                tokens: reservation.tokens,
                cost_nano: reservation.cost,
            };
            self.release(&reservation, actual)?;
        }
        Ok(())
    }

    /// Gives back what `reservation` held; returns the time it did so.
    fn release(&self, reservation: &Reservation, actual: Actual) -> Result<u64> {
        let now = self.clock.monotonic_ns();
        for held in &reservation.held {
            let limit = &self.limits[held.spec as usize];
            let budget_now = self.budget_now(&limit.spec, now)?;
            let usage = Usage {
                reserved_tokens: reservation.tokens,
                tokens: actual.tokens,
                reserved_cost: reservation.cost,
                cost: actual.cost_nano,
            };
            let key = limit.store.hash(&held.key);
            let mut shard = limit.store.lock(key);
            let (_, state) = shard.entry(key, |s| s.is_idle(now, budget_now.as_ref()));
            decision::release(&limit.spec, state, held, &usage, now, budget_now.as_ref());
        }
        Ok(now)
    }
}

/// Lowers the admission's remaining budget to what this limit's budget has left.
fn note_budget(admission: &mut Admission, spec: &LimitSpec, state: &decision::ScopeState) {
    let (Some(budget), Some(held)) = (&spec.budget, &state.budget) else {
        return;
    };
    let left = budget
        .limit_nano()
        .saturating_sub(held.spent().saturating_add(held.reserved()));
    admission.budget_remaining_nano = Some(
        admission
            .budget_remaining_nano
            .map_or(left, |l| l.min(left)),
    );
}

fn mode_index(mode: Mode) -> usize {
    match mode {
        Mode::Enforce => 0,
        Mode::Shadow => 1,
    }
}

fn entry_view(
    spec: &LimitSpec,
    key: &str,
    state: &mut decision::ScopeState,
    now: u64,
    budget_now: Option<&BudgetNow>,
) -> EntryView {
    let budget = match (&spec.budget, &mut state.budget, budget_now) {
        (Some(budget), Some(budget_state), Some(budget_now)) => {
            budget_state.roll(budget_now);
            let spent = budget_state.spent();
            let reserved = budget_state.reserved();
            let resets_in_s = match budget_now {
                BudgetNow::Calendar { ends_in_ns, .. } => Some(*ends_in_ns as f64 / 1e9),
                BudgetNow::Rolling { .. } => None,
            };
            Some(BudgetView {
                limit_usd: nano_to_usd(budget.limit_nano()),
                spent_usd: nano_to_usd(spent),
                reserved_usd: nano_to_usd(reserved),
                remaining_usd: nano_to_usd(
                    budget
                        .limit_nano()
                        .saturating_sub(spent.saturating_add(reserved)),
                ),
                resets_in_s,
            })
        }
        _ => None,
    };
    EntryView {
        scope_value: key.to_string(),
        requests_remaining: spec.requests.map(|r| r.remaining(state.requests_tat, now)),
        tokens_remaining: spec.tokens.map(|r| r.remaining(state.tokens_tat, now)),
        in_flight: spec.concurrency.map(|_| state.in_flight),
        budget,
    }
}
