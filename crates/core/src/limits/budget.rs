//! Spend budgets: dollars per calendar day, per calendar month, or per rolling window.
//!
//! Amounts are integer nano-dollars so that millions of settlements add up exactly. A
//! budget's state is `spent + reserved` for the current period: admission reserves the
//! worst-case cost and refuses when it would not fit, settlement swaps the reservation for
//! the real cost. Calendar periods are identified by their start (Unix seconds in the
//! configured time zone), so a new day resets the spend without any timer, the same way a
//! Redis key named after the period would. Spend is charged to the period in which it
//! settles; a reservation made before midnight still holds its room after it.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use parking_lot::RwLock;

use crate::{Error, Result};

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANO_USD_PER_USD: f64 = 1e9;

/// A rolling window is tracked in this many slots; spend is counted for whole slots, so
/// the window is enforced conservatively with a granularity of window / SLOTS.
pub const SLOTS: usize = 16;

/// Shortest rolling window: below it, slots would be shorter than a millisecond.
const MIN_WINDOW_NS: u64 = NANOS_PER_SECOND as u64;

/// Dollars to nano-dollars, rounding up: used for reservations, which must not under-reserve.
pub fn usd_to_nano_ceil(usd: f64) -> u64 {
    if usd.is_nan() || usd <= 0.0 {
        return 0;
    }
    // The float-to-int `as` cast saturates, which is the wanted behaviour for huge values.
    (usd * NANO_USD_PER_USD).ceil() as u64
}

/// Dollars to nano-dollars, rounding to nearest: used for budgets and billed costs.
pub fn usd_to_nano(usd: f64) -> u64 {
    if usd.is_nan() || usd <= 0.0 {
        return 0;
    }
    (usd * NANO_USD_PER_USD).round() as u64
}

pub fn nano_to_usd(nano: u64) -> f64 {
    nano as f64 / NANO_USD_PER_USD
}

/// How a budget's periods are cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetPeriod {
    Day,
    Month,
    Window { window_ns: u64 },
}

/// Where "now" falls for one budget, resolved once per decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetNow {
    /// The current calendar period starts at `start` (Unix seconds) and ends in `ends_in_ns`.
    Calendar { start: i64, ends_in_ns: u64 },
    /// The current rolling-window slot, and the monotonic time it was taken from.
    Rolling {
        slot: u64,
        slot_ns: u64,
        now_ns: u64,
    },
}

/// The outcome of checking a cost against a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetDecision {
    /// Fits; `near_exhaustion` when spend + reservations reach the downgrade threshold.
    Admit { near_exhaustion: bool },
    /// Does not fit now; room comes back after `retry_after_ns` (next day, window slides).
    Wait { retry_after_ns: u64 },
    /// Does not fit until the next calendar month: waiting is no answer.
    Exhausted,
    /// The request alone costs more than the whole budget.
    TooLarge,
}

/// One configured budget (shared by every scope value of its limit).
#[derive(Debug)]
pub struct Budget {
    limit_nano: u64,
    downgrade_at_nano: Option<u64>,
    period: BudgetPeriod,
    time_zone: TimeZone,
    /// The calendar period last computed, as (start, end) in wall nanoseconds: converting a
    /// timestamp to a local date costs far more than the rest of a decision.
    calendar_cache: RwLock<(i64, i64)>,
}

impl Budget {
    /// `downgrade_at` is the fraction of the budget at which requests get the downgrade signal.
    pub fn new(
        usd: f64,
        period: BudgetPeriod,
        time_zone: &str,
        downgrade_at: Option<f64>,
        what: &str,
    ) -> Result<Self> {
        if !(usd.is_finite() && usd > 0.0) {
            return Err(Error::Config(format!(
                "{what}.usd must be a positive number of dollars, got {usd}"
            )));
        }
        if let BudgetPeriod::Window { window_ns } = period {
            if window_ns < MIN_WINDOW_NS {
                return Err(Error::Config(format!(
                    "{what}.window_seconds must be at least 1 second, got {} ns",
                    window_ns
                )));
            }
        }
        let time_zone = TimeZone::get(time_zone).map_err(|e| {
            Error::Config(format!(
                "{what}.time_zone {time_zone:?} is not a known IANA time zone ({e}); \
                 use a name such as \"UTC\" or \"Europe/Berlin\""
            ))
        })?;
        let limit_nano = usd_to_nano(usd);
        let downgrade_at_nano = match downgrade_at {
            None => None,
            Some(f) if f.is_finite() && f > 0.0 && f <= 1.0 => {
                Some((limit_nano as f64 * f).round() as u64)
            }
            Some(f) => {
                return Err(Error::Config(format!(
                    "{what} downgrade_at must be a fraction in (0, 1], got {f}"
                )))
            }
        };
        Ok(Self {
            limit_nano,
            downgrade_at_nano,
            period,
            time_zone,
            calendar_cache: RwLock::new((0, 0)),
        })
    }

    pub fn limit_nano(&self) -> u64 {
        self.limit_nano
    }

    pub fn period(&self) -> &BudgetPeriod {
        &self.period
    }

    /// Resolves the current period from the two clocks.
    pub fn now(&self, monotonic_ns: u64, wall_ns: i64) -> Result<BudgetNow> {
        match self.period {
            BudgetPeriod::Window { window_ns } => {
                let slot_ns = window_ns.div_ceil(SLOTS as u64);
                Ok(BudgetNow::Rolling {
                    slot: monotonic_ns / slot_ns,
                    slot_ns,
                    now_ns: monotonic_ns,
                })
            }
            BudgetPeriod::Day | BudgetPeriod::Month => {
                let (start, end) = self.calendar_window(wall_ns)?;
                Ok(BudgetNow::Calendar {
                    start: start.div_euclid(NANOS_PER_SECOND),
                    ends_in_ns: u64::try_from(end.saturating_sub(wall_ns)).unwrap_or(0),
                })
            }
        }
    }

    fn calendar_window(&self, wall_ns: i64) -> Result<(i64, i64)> {
        let cached = *self.calendar_cache.read();
        if cached.0 <= wall_ns && wall_ns < cached.1 {
            return Ok(cached);
        }
        let fresh = calendar_bounds(&self.time_zone, &self.period, wall_ns)?;
        *self.calendar_cache.write() = fresh;
        Ok(fresh)
    }

    /// Decides whether `cost` fits in `state` (already rolled to `now`).
    pub fn check(&self, state: &BudgetState, now: &BudgetNow, cost: u64) -> BudgetDecision {
        if cost > self.limit_nano {
            return BudgetDecision::TooLarge;
        }
        let committed = state.spent().saturating_add(state.reserved());
        let after = committed.saturating_add(cost);
        if after <= self.limit_nano {
            let near_exhaustion = self.downgrade_at_nano.is_some_and(|at| after >= at);
            return BudgetDecision::Admit { near_exhaustion };
        }
        match (&self.period, now) {
            (BudgetPeriod::Month, _) => BudgetDecision::Exhausted,
            (_, BudgetNow::Calendar { ends_in_ns, .. }) => BudgetDecision::Wait {
                retry_after_ns: *ends_in_ns,
            },
            (_, BudgetNow::Rolling { .. }) => BudgetDecision::Wait {
                retry_after_ns: state.rolling_retry_after(now, after - self.limit_nano),
            },
        }
    }
}

/// Start and end (wall nanoseconds) of the calendar day or month containing `wall_ns`.
fn calendar_bounds(tz: &TimeZone, period: &BudgetPeriod, wall_ns: i64) -> Result<(i64, i64)> {
    let failed = |e: jiff::Error| Error::InvalidInput(format!("calendar period: {e}"));
    let ts = Timestamp::from_nanosecond(i128::from(wall_ns)).map_err(failed)?;
    let today = ts.to_zoned(tz.clone()).date();
    let (first, next): (Date, Date) = match period {
        BudgetPeriod::Month => {
            let first = today.first_of_month();
            (first, today.last_of_month().tomorrow().map_err(failed)?)
        }
        _ => (today, today.tomorrow().map_err(failed)?),
    };
    // `to_zoned` on a date gives its first instant, also on days whose midnight is skipped
    // by a daylight-saving change.
    let start = first.to_zoned(tz.clone()).map_err(failed)?.timestamp();
    let end = next.to_zoned(tz.clone()).map_err(failed)?.timestamp();
    let nanos = |t: Timestamp| i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX);
    Ok((nanos(start), nanos(end)))
}

/// The spend of one scope value under one budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetState {
    Calendar {
        /// Start of the period `spent` belongs to, in Unix seconds.
        period_start: i64,
        spent: u64,
        reserved: u64,
    },
    Rolling(Box<RollingState>),
}

/// Spend per slot of a rolling window; `slots[i % SLOTS]` holds slot `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollingState {
    newest_slot: u64,
    slots: [u64; SLOTS],
    reserved: u64,
}

impl BudgetState {
    pub fn new(now: &BudgetNow) -> Self {
        match *now {
            BudgetNow::Calendar { start, .. } => BudgetState::Calendar {
                period_start: start,
                spent: 0,
                reserved: 0,
            },
            BudgetNow::Rolling { slot, .. } => BudgetState::Rolling(Box::new(RollingState {
                newest_slot: slot,
                slots: [0; SLOTS],
                reserved: 0,
            })),
        }
    }

    /// Brings the state to the current period: a new calendar period starts from zero
    /// spend, and rolling-window slots that left the window are cleared.
    pub fn roll(&mut self, now: &BudgetNow) {
        match (self, *now) {
            (
                BudgetState::Calendar {
                    period_start,
                    spent,
                    ..
                },
                BudgetNow::Calendar { start, .. },
            ) if *period_start != start => {
                *period_start = start;
                *spent = 0;
            }
            (BudgetState::Rolling(state), BudgetNow::Rolling { slot, .. })
                if slot > state.newest_slot =>
            {
                let stale = (slot - state.newest_slot).min(SLOTS as u64);
                for i in 1..=stale {
                    state.slots[((state.newest_slot + i) % SLOTS as u64) as usize] = 0;
                }
                state.newest_slot = slot;
            }
            // Same period, or (never the case) a state of another period kind.
            _ => {}
        }
    }

    pub fn spent(&self) -> u64 {
        match self {
            BudgetState::Calendar { spent, .. } => *spent,
            BudgetState::Rolling(state) => state.slots.iter().sum(),
        }
    }

    pub fn reserved(&self) -> u64 {
        match self {
            BudgetState::Calendar { reserved, .. } => *reserved,
            BudgetState::Rolling(state) => state.reserved,
        }
    }

    pub fn reserve(&mut self, cost: u64) {
        match self {
            BudgetState::Calendar { reserved, .. } => *reserved = reserved.saturating_add(cost),
            BudgetState::Rolling(state) => state.reserved = state.reserved.saturating_add(cost),
        }
    }

    /// Replaces a reservation of `reserved_cost` by the real `cost` (state rolled to now).
    pub fn settle(&mut self, reserved_cost: u64, cost: u64) {
        match self {
            BudgetState::Calendar {
                spent, reserved, ..
            } => {
                *reserved = reserved.saturating_sub(reserved_cost);
                *spent = spent.saturating_add(cost);
            }
            BudgetState::Rolling(state) => {
                state.reserved = state.reserved.saturating_sub(reserved_cost);
                let newest = (state.newest_slot % SLOTS as u64) as usize;
                state.slots[newest] = state.slots[newest].saturating_add(cost);
            }
        }
    }

    /// No spend and nothing reserved in the current period: the state can be forgotten.
    pub fn is_idle(&self) -> bool {
        self.reserved() == 0 && self.spent() == 0
    }

    /// Time until enough old spend leaves the window to free `excess` nano-dollars.
    fn rolling_retry_after(&self, now: &BudgetNow, excess: u64) -> u64 {
        let (
            BudgetState::Rolling(state),
            BudgetNow::Rolling {
                slot_ns, now_ns, ..
            },
        ) = (self, *now)
        else {
            return 0;
        };
        let oldest = state.newest_slot.saturating_sub(SLOTS as u64 - 1);
        let mut freed = 0u64;
        for slot in oldest..=state.newest_slot {
            freed = freed.saturating_add(state.slots[(slot % SLOTS as u64) as usize]);
            if freed >= excess {
                let leaves_at = (slot + SLOTS as u64).saturating_mul(slot_ns);
                return leaves_at.saturating_sub(now_ns).max(1);
            }
        }
        // Reservations in flight hold the rest; by the time a whole window has passed they
        // are settled or expired.
        slot_ns.saturating_mul(SLOTS as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_NS: i64 = 3600 * NANOS_PER_SECOND;

    fn wall(s: &str) -> i64 {
        let ts: Timestamp = s.parse().unwrap();
        i64::try_from(ts.as_nanosecond()).unwrap()
    }

    #[test]
    fn day_rolls_over_at_local_midnight_not_utc() {
        let budget = Budget::new(1.0, BudgetPeriod::Day, "America/New_York", None, "b").unwrap();
        // 23:30 in New York on 2026-03-14 is 03:30 UTC on the 15th.
        let before = budget.now(0, wall("2026-03-15T03:30:00Z")).unwrap();
        let after = budget.now(0, wall("2026-03-15T04:00:01Z")).unwrap();
        let BudgetNow::Calendar { start, ends_in_ns } = before else {
            panic!("calendar")
        };
        assert_eq!(ends_in_ns, (HOUR_NS / 2) as u64);
        assert_ne!(before, after);
        let mut state = BudgetState::new(&before);
        state.reserve(400_000_000);
        state.settle(400_000_000, 300_000_000);
        assert_eq!(state.spent(), 300_000_000);
        state.roll(&after);
        assert_eq!(state.spent(), 0);
        let BudgetNow::Calendar { start: next, .. } = after else {
            panic!("calendar")
        };
        assert_eq!(next - start, 24 * 3600);
    }

    #[test]
    fn month_ends_at_local_month_end_and_refuses_without_retry() {
        let budget = Budget::new(1.0, BudgetPeriod::Month, "Asia/Tokyo", None, "b").unwrap();
        // 2026-01-31T23:59:59 in Tokyo is 14:59:59 UTC.
        let jan = budget.now(0, wall("2026-01-31T14:59:59Z")).unwrap();
        let feb = budget.now(0, wall("2026-01-31T15:00:00Z")).unwrap();
        assert_ne!(jan, feb);
        let mut state = BudgetState::new(&jan);
        state.settle(0, 1_000_000_000);
        assert_eq!(budget.check(&state, &jan, 1), BudgetDecision::Exhausted);
        state.roll(&feb);
        assert_eq!(
            budget.check(&state, &feb, 1),
            BudgetDecision::Admit {
                near_exhaustion: false
            }
        );
    }

    #[test]
    fn rolling_window_forgets_spend_slot_by_slot() {
        let window_ns = 16 * NANOS_PER_SECOND as u64;
        let budget =
            Budget::new(1.0, BudgetPeriod::Window { window_ns }, "UTC", None, "b").unwrap();
        let t0 = budget.now(0, 0).unwrap();
        let mut state = BudgetState::new(&t0);
        state.settle(0, 1_000_000_000);
        let BudgetDecision::Wait { retry_after_ns } = budget.check(&state, &t0, 1) else {
            panic!("should wait")
        };
        assert_eq!(retry_after_ns, window_ns);
        let later = budget.now(window_ns, 0).unwrap();
        state.roll(&later);
        assert_eq!(state.spent(), 0);
    }

    #[test]
    fn near_exhaustion_is_signalled_from_the_threshold() {
        let budget = Budget::new(10.0, BudgetPeriod::Day, "UTC", Some(0.8), "b").unwrap();
        let now = budget.now(0, 0).unwrap();
        let mut state = BudgetState::new(&now);
        state.settle(0, usd_to_nano(7.0));
        assert_eq!(
            budget.check(&state, &now, usd_to_nano(0.5)),
            BudgetDecision::Admit {
                near_exhaustion: false
            }
        );
        assert_eq!(
            budget.check(&state, &now, usd_to_nano(1.0)),
            BudgetDecision::Admit {
                near_exhaustion: true
            }
        );
        assert_eq!(
            budget.check(&state, &now, usd_to_nano(11.0)),
            BudgetDecision::TooLarge
        );
    }

    #[test]
    fn rejects_unknown_time_zones_naming_the_key() {
        let err = Budget::new(
            1.0,
            BudgetPeriod::Day,
            "Mars/Olympus",
            None,
            "limits[2].budget",
        )
        .unwrap_err();
        assert!(err.to_string().contains("limits[2].budget.time_zone"));
    }
}
