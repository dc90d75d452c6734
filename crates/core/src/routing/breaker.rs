//! Circuit breaker per deployment: closed → open → half-open → closed.
//!
//! Closed counts calls and failures over a sliding time window (ten buckets); once the
//! window holds `min_calls` calls and the failure share reaches `failure_rate`, it opens.
//! Open skips the deployment until the cool-down has passed, then half-open lets
//! `half_open_calls` trial calls through: as many successes close it, one failure opens
//! it again. All state is plain data so it can be stored elsewhere (for example Redis).

use serde::{Deserialize, Serialize};

use super::spec::BreakerSpec;

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    Closed,
    Open { until: f64 },
    HalfOpen { trials: u32, successes: u32 },
}

/// Calls and failures in one slice of the window; `slot` is the slice's index since the
/// clock's origin, so a stale bucket is recognised and reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub slot: i64,
    pub calls: u32,
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    pub phase: Phase,
    pub buckets: [Bucket; BUCKETS],
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            phase: Phase::Closed,
            buckets: [Bucket::default(); BUCKETS],
        }
    }
}

impl Breaker {
    /// Whether a call may start now, without reserving anything.
    pub fn allows(&self, spec: &BreakerSpec, now: f64) -> bool {
        match self.phase {
            Phase::Closed => true,
            Phase::Open { until } => now >= until,
            Phase::HalfOpen { trials, .. } => trials < spec.half_open_calls,
        }
    }

    /// Reserves the right to call: moves a cooled breaker to half-open and takes a trial
    /// slot there. Returns false when the call must not go out.
    pub fn try_start(&mut self, spec: &BreakerSpec, now: f64) -> bool {
        if let Phase::Open { until } = self.phase {
            if now < until {
                return false;
            }
            self.phase = Phase::HalfOpen {
                trials: 0,
                successes: 0,
            };
        }
        match &mut self.phase {
            Phase::Closed => true,
            Phase::Open { .. } => false,
            Phase::HalfOpen { trials, .. } => {
                if *trials >= spec.half_open_calls {
                    return false;
                }
                *trials += 1;
                true
            }
        }
    }

    /// Gives back a trial slot of a call that ended without an outcome (cancelled).
    pub fn abandon(&mut self) {
        if let Phase::HalfOpen { trials, .. } = &mut self.phase {
            *trials = trials.saturating_sub(1);
        }
    }

    pub fn record(&mut self, spec: &BreakerSpec, ok: bool, now: f64) {
        match &mut self.phase {
            Phase::Closed => {
                self.count(spec, ok, now);
                if self.tripped(spec, now) {
                    self.open(spec, now);
                }
            }
            Phase::HalfOpen { successes, .. } => {
                if !ok {
                    self.open(spec, now);
                    return;
                }
                *successes += 1;
                if *successes >= spec.half_open_calls {
                    *self = Breaker::default();
                }
            }
            // Outcomes of calls that started before the breaker opened change nothing.
            Phase::Open { .. } => {}
        }
    }

    fn open(&mut self, spec: &BreakerSpec, now: f64) {
        self.phase = Phase::Open {
            until: now + spec.cooldown_seconds,
        };
        self.buckets = [Bucket::default(); BUCKETS];
    }

    fn slot(spec: &BreakerSpec, now: f64) -> i64 {
        (now / (spec.window_seconds / BUCKETS as f64)).floor() as i64
    }

    fn count(&mut self, spec: &BreakerSpec, ok: bool, now: f64) {
        let slot = Self::slot(spec, now);
        let bucket = &mut self.buckets[slot.rem_euclid(BUCKETS as i64) as usize];
        if bucket.slot != slot {
            *bucket = Bucket {
                slot,
                calls: 0,
                failures: 0,
            };
        }
        bucket.calls += 1;
        if !ok {
            bucket.failures += 1;
        }
    }

    /// Calls and failures in the window ending now.
    pub fn window(&self, spec: &BreakerSpec, now: f64) -> (u32, u32) {
        let newest = Self::slot(spec, now);
        let live = |b: &&Bucket| b.slot > newest - BUCKETS as i64 && b.slot <= newest;
        self.buckets
            .iter()
            .filter(live)
            .fold((0, 0), |(calls, failures), b| {
                (calls + b.calls, failures + b.failures)
            })
    }

    fn tripped(&self, spec: &BreakerSpec, now: f64) -> bool {
        let (calls, failures) = self.window(spec, now);
        calls >= spec.min_calls.max(1)
            && f64::from(failures) >= spec.failure_rate * f64::from(calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BreakerSpec {
        BreakerSpec {
            failure_rate: 0.5,
            min_calls: 4,
            window_seconds: 10.0,
            cooldown_seconds: 5.0,
            half_open_calls: 2,
            shadow: false,
        }
    }

    fn run(breaker: &mut Breaker, spec: &BreakerSpec, ok: bool, now: f64) {
        assert!(breaker.try_start(spec, now));
        breaker.record(spec, ok, now);
    }

    #[test]
    fn stays_closed_below_the_minimum_number_of_calls() {
        let (spec, mut b) = (spec(), Breaker::default());
        for t in 0..3 {
            run(&mut b, &spec, false, f64::from(t));
        }
        assert_eq!(b.phase, Phase::Closed);
    }

    #[test]
    fn opens_at_the_failure_rate_and_blocks_until_cooled() {
        let (spec, mut b) = (spec(), Breaker::default());
        run(&mut b, &spec, true, 0.0);
        run(&mut b, &spec, true, 0.1);
        run(&mut b, &spec, false, 0.2);
        assert_eq!(b.phase, Phase::Closed);
        run(&mut b, &spec, false, 0.3);
        assert_eq!(b.phase, Phase::Open { until: 5.3 });
        assert!(!b.allows(&spec, 5.2));
        assert!(!b.try_start(&spec, 5.2));
        assert!(b.allows(&spec, 5.3));
    }

    #[test]
    fn half_open_allows_only_the_trial_calls_and_closes_on_their_success() {
        let (spec, mut b) = (spec(), Breaker::default());
        b.phase = Phase::Open { until: 1.0 };
        assert!(b.try_start(&spec, 1.0));
        assert!(b.try_start(&spec, 1.0));
        assert!(!b.try_start(&spec, 1.0));
        assert!(!b.allows(&spec, 1.0));
        b.record(&spec, true, 1.1);
        assert_eq!(
            b.phase,
            Phase::HalfOpen {
                trials: 2,
                successes: 1
            }
        );
        b.record(&spec, true, 1.2);
        assert_eq!(b, Breaker::default());
    }

    #[test]
    fn a_failed_trial_reopens_for_another_cool_down() {
        let (spec, mut b) = (spec(), Breaker::default());
        b.phase = Phase::Open { until: 1.0 };
        assert!(b.try_start(&spec, 2.0));
        b.record(&spec, false, 2.5);
        assert_eq!(b.phase, Phase::Open { until: 7.5 });
    }

    #[test]
    fn an_abandoned_trial_frees_its_slot() {
        let (spec, mut b) = (spec(), Breaker::default());
        b.phase = Phase::HalfOpen {
            trials: 2,
            successes: 0,
        };
        assert!(!b.try_start(&spec, 0.0));
        b.abandon();
        assert!(b.try_start(&spec, 0.0));
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let (spec, mut b) = (spec(), Breaker::default());
        for t in 0..3 {
            run(&mut b, &spec, false, f64::from(t));
        }
        assert_eq!(b.window(&spec, 2.0), (3, 3));
        // Eleven seconds later the three failures are out of the ten-second window.
        assert_eq!(b.window(&spec, 13.0), (0, 0));
        run(&mut b, &spec, false, 13.0);
        assert_eq!(b.phase, Phase::Closed);
    }

    #[test]
    fn late_outcomes_while_open_change_nothing() {
        let (spec, mut b) = (spec(), Breaker::default());
        b.phase = Phase::Open { until: 9.0 };
        b.record(&spec, true, 1.0);
        assert_eq!(b.phase, Phase::Open { until: 9.0 });
    }
}
