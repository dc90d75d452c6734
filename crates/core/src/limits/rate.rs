//! Requests and tokens per period, decided by GCRA (the generic cell rate algorithm).
//!
//! The state of one meter is a single number, the theoretical arrival time (TAT): the
//! moment at which the bucket would be full again. Admitting `n` units moves it forward by
//! `n * T`, where T is the emission interval (period / limit); a request is admitted when
//! the moved TAT is at most `burst * T` ahead of now. From that follows the guarantee the
//! tests check: in any window of length W, at most `burst + W / T` units are admitted.
//!
//! Everything here is a pure function of (rate, TAT, now, units), so the same decision can
//! run in a Redis script with the TAT stored under the scope's key.

use crate::{Error, Result};

/// Emission intervals below this many nanoseconds would make the rounding of T to whole
/// nanoseconds change the rate by more than 1%.
const MIN_EMISSION_NS: u64 = 100;

/// `limit` units per `period_ns`, of which `burst` may arrive back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    limit: u64,
    burst: u64,
    /// Nanoseconds per unit, rounded up so the effective rate never exceeds the configured one.
    emission_ns: u64,
    /// How far ahead of now the TAT may run: `burst * emission_ns`.
    tolerance_ns: u64,
}

/// The outcome of checking `units` against a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Admit; store `new_tat` if the request as a whole is admitted.
    Admit { new_tat: u64 },
    /// Refuse now; the same request would pass after `retry_after_ns`.
    Wait { retry_after_ns: u64 },
    /// Refuse: the request alone needs more than the burst, so waiting cannot help.
    TooLarge,
}

impl Rate {
    /// `what` names the setting in error messages (e.g. `limits[0].requests_per_minute`).
    pub fn new(limit: u64, period_ns: u64, burst: u64, what: &str) -> Result<Self> {
        if limit == 0 || period_ns == 0 {
            return Err(Error::Config(format!(
                "{what} must be a positive number per a positive period, got {limit} per {period_ns} ns"
            )));
        }
        if burst == 0 {
            return Err(Error::Config(format!(
                "the burst of {what} must be at least 1, got 0"
            )));
        }
        let emission_ns = period_ns.div_ceil(limit);
        if emission_ns < MIN_EMISSION_NS {
            return Err(Error::Config(format!(
                "{what} is too fast: {limit} per {period_ns} ns leaves less than {MIN_EMISSION_NS} ns \
                 per unit; use a rate below 10 million per second"
            )));
        }
        let tolerance_ns = burst
            .checked_mul(emission_ns)
            .ok_or_else(|| Error::Config(format!("the burst of {what} is too large: {burst}")))?;
        Ok(Self {
            limit,
            burst,
            emission_ns,
            tolerance_ns,
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    pub fn emission_ns(&self) -> u64 {
        self.emission_ns
    }

    fn cost_ns(&self, units: u64) -> u64 {
        units.saturating_mul(self.emission_ns)
    }

    /// Decides whether `units` may pass at `now` given the stored `tat`.
    pub fn check(&self, tat: u64, now: u64, units: u64) -> RateDecision {
        if units > self.burst {
            return RateDecision::TooLarge;
        }
        let new_tat = tat.max(now).saturating_add(self.cost_ns(units));
        let allowed_until = now.saturating_add(self.tolerance_ns);
        if new_tat <= allowed_until {
            RateDecision::Admit { new_tat }
        } else {
            RateDecision::Wait {
                retry_after_ns: new_tat - allowed_until,
            }
        }
    }

    /// Units that would still pass right now.
    pub fn remaining(&self, tat: u64, now: u64) -> u64 {
        let used_ns = tat.saturating_sub(now);
        self.tolerance_ns.saturating_sub(used_ns) / self.emission_ns
    }

    /// Nanoseconds until the meter is back to its initial (full) state.
    pub fn reset_ns(&self, tat: u64, now: u64) -> u64 {
        tat.saturating_sub(now)
    }

    /// The TAT after a reservation of `reserved` units turned out to use `used` units.
    ///
    /// `charged_since_ns` is what requests admitted after this one added to the TAT. Giving
    /// the unused units back must not undercut what those requests rely on: each of them
    /// arrived at most at `now` and added its share, so the TAT never drops below
    /// `now + charged_since_ns` (while it was above it). That keeps the bound "burst plus
    /// rate over any window" true for the tokens really used, also when settlements arrive
    /// out of order. Extra units are charged even though that can run past the limit,
    /// because they were already consumed upstream.
    pub fn reconcile(
        &self,
        tat: u64,
        now: u64,
        reserved: u64,
        used: u64,
        charged_since_ns: u64,
    ) -> u64 {
        if used >= reserved {
            return tat.max(now).saturating_add(self.cost_ns(used - reserved));
        }
        let floor = now.saturating_add(charged_since_ns);
        if tat <= floor {
            return tat;
        }
        tat.saturating_sub(self.cost_ns(reserved - used)).max(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn per_second(limit: u64, burst: u64) -> Rate {
        Rate::new(limit, SECOND, burst, "test").unwrap()
    }

    #[test]
    fn admits_the_burst_back_to_back_then_one_per_interval() {
        let rate = per_second(10, 3);
        let mut tat = 0;
        for _ in 0..3 {
            match rate.check(tat, 0, 1) {
                RateDecision::Admit { new_tat } => tat = new_tat,
                other => panic!("expected admit, got {other:?}"),
            }
        }
        assert_eq!(
            rate.check(tat, 0, 1),
            RateDecision::Wait {
                retry_after_ns: SECOND / 10
            }
        );
        assert!(matches!(
            rate.check(tat, SECOND / 10, 1),
            RateDecision::Admit { .. }
        ));
    }

    #[test]
    fn more_than_the_burst_at_once_can_never_pass() {
        // governor#11: per_second(10) with 11 units at once must be refused for good.
        let rate = per_second(10, 10);
        assert_eq!(rate.check(0, 0, 11), RateDecision::TooLarge);
        assert!(matches!(rate.check(0, 0, 10), RateDecision::Admit { .. }));
    }

    #[test]
    fn remaining_and_reset_follow_the_tat() {
        let rate = per_second(10, 5);
        assert_eq!(rate.remaining(0, 0), 5);
        let tat = 2 * SECOND / 10;
        assert_eq!(rate.remaining(tat, 0), 3);
        assert_eq!(rate.reset_ns(tat, 0), 2 * SECOND / 10);
        assert_eq!(rate.remaining(tat, SECOND), 5);
    }

    #[test]
    fn reconcile_refunds_unused_units_but_never_past_full() {
        let rate = per_second(10, 10);
        let tat = 5 * SECOND / 10;
        assert_eq!(rate.reconcile(tat, 0, 5, 2, 0), 2 * SECOND / 10);
        assert_eq!(rate.reconcile(tat, SECOND / 10, 5, 0, 0), SECOND / 10);
        assert_eq!(rate.reconcile(tat, 0, 5, 7, 0), 7 * SECOND / 10);
        // Three units admitted after this request stay charged.
        assert_eq!(
            rate.reconcile(tat, 0, 2, 0, 3 * SECOND / 10),
            3 * SECOND / 10
        );
    }

    #[test]
    fn rejects_rates_it_cannot_represent() {
        assert!(Rate::new(0, SECOND, 1, "x").is_err());
        assert!(Rate::new(1, SECOND, 0, "x").is_err());
        assert!(Rate::new(100_000_000, SECOND, 1, "x").is_err());
    }
}
