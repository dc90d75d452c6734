//! Properties of the whole limiter: rate bounds over any window, token and concurrency
//! caps, and no overspend when many threads race for the last room in a budget.

use std::sync::{Arc, Barrier};

use proptest::prelude::*;

use super::*;

const SECOND: u64 = 1_000_000_000;

fn spec(scope: ScopeKind) -> LimitSpec {
    LimitSpec {
        name: Arc::from("test"),
        scope,
        only_value: None,
        requests: None,
        tokens: None,
        concurrency: None,
        budget: None,
        mode: Mode::Enforce,
        downgrade_to: None,
    }
}

fn limiter(specs: Vec<LimitSpec>, clock: &Arc<ManualClock>) -> Limiter {
    Limiter::new(specs, clock.clone(), 600 * SECOND).unwrap()
}

fn request(key: &str, tokens: u64, cost_nano: u64) -> Request<'_> {
    Request {
        scopes: RequestScopes {
            key: Some(key),
            ..RequestScopes::default()
        },
        tokens,
        cost_nano,
    }
}

/// Asserts that no window [t_i, t_j] holds more than `burst + (t_j - t_i) / T` units.
fn assert_window_bound(admitted: &[(u64, u64)], burst: u64, emission_ns: u64) {
    for i in 0..admitted.len() {
        let mut units = 0u64;
        for j in i..admitted.len() {
            units += admitted[j].1;
            let width = admitted[j].0 - admitted[i].0;
            assert!(
                units * emission_ns <= burst * emission_ns + width,
                "{units} units in {width} ns exceed burst {burst} + rate"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_window_admits_more_requests_than_rate_plus_burst(
        limit in 1u64..120,
        burst in 1u64..10,
        gaps in prop::collection::vec(0u64..2 * SECOND, 1..150),
    ) {
        let clock = Arc::new(ManualClock::new(0, 0));
        let mut s = spec(ScopeKind::Key);
        s.requests = Some(Rate::new(limit, 60 * SECOND, burst, "r").unwrap());
        let emission = s.requests.unwrap().emission_ns();
        let limiter = limiter(vec![s], &clock);
        let mut admitted = Vec::new();
        for gap in gaps {
            clock.advance(gap);
            if limiter.admit(&request("k", 0, 0)).unwrap().admitted() {
                admitted.push((clock.monotonic_ns(), 1));
            }
        }
        assert_window_bound(&admitted, burst, emission);
    }

    #[test]
    fn tokens_used_never_exceed_rate_plus_burst(
        limit in 1_000u64..100_000,
        asks in prop::collection::vec((0u64..SECOND, 1u64..5_000, 0u64..=100, 0usize..4), 1..120),
    ) {
        let clock = Arc::new(ManualClock::new(0, 0));
        let mut s = spec(ScopeKind::Key);
        s.tokens = Some(Rate::new(limit, 60 * SECOND, limit, "t").unwrap());
        let emission = s.tokens.unwrap().emission_ns();
        let limiter = limiter(vec![s], &clock);
        // Tokens are counted as used when admitted; a request settles later, after up to
        // three others were admitted, having used only part of its reservation.
        let mut used = Vec::new();
        let mut open = std::collections::VecDeque::new();
        for (gap, reserved, percent_used, keep_open) in asks {
            clock.advance(gap);
            let admission = limiter.admit(&request("k", reserved, 0)).unwrap();
            if admission.admitted() {
                let tokens = reserved * percent_used / 100;
                used.push((clock.monotonic_ns(), tokens));
                open.push_back((admission.handle, tokens));
            }
            while open.len() > keep_open {
                let (handle, tokens) = open.pop_front().unwrap();
                limiter.settle(handle, Actual { tokens, cost_nano: 0 }).unwrap();
            }
        }
        assert_window_bound(&used, limit, emission);
    }

    #[test]
    fn concurrency_never_exceeds_its_cap(
        cap in 1u32..6,
        ops in prop::collection::vec(any::<bool>(), 1..300),
    ) {
        let clock = Arc::new(ManualClock::new(0, 0));
        let mut s = spec(ScopeKind::Key);
        s.concurrency = Some(cap);
        let limiter = limiter(vec![s], &clock);
        let mut in_flight: Vec<u64> = Vec::new();
        for admit in ops {
            if admit {
                let admission = limiter.admit(&request("k", 0, 0)).unwrap();
                prop_assert_eq!(admission.admitted(), in_flight.len() < cap as usize);
                if admission.admitted() {
                    in_flight.push(admission.handle);
                }
            } else if let Some(handle) = in_flight.pop() {
                prop_assert!(limiter.settle(handle, Actual::default()).unwrap());
            }
            prop_assert!(in_flight.len() <= cap as usize);
        }
    }

    #[test]
    fn spend_never_exceeds_a_budget(
        costs in prop::collection::vec((1u64..400, 0u64..=100), 1..100),
    ) {
        let clock = Arc::new(ManualClock::new(0, 0));
        let mut s = spec(ScopeKind::Key);
        s.budget = Some(Budget::new(1e-6, BudgetPeriod::Day, "UTC", None, "b").unwrap());
        let limiter = limiter(vec![s], &clock);
        let mut spent = 0;
        let mut open = Vec::new();
        for (i, (cost, percent)) in costs.into_iter().enumerate() {
            let admission = limiter.admit(&request("k", 0, cost)).unwrap();
            if admission.admitted() {
                open.push((admission.handle, cost * percent / 100));
            }
            // Settle every third request late, so reservations overlap.
            if i % 3 == 2 {
                for (handle, actual) in open.drain(..) {
                    limiter.settle(handle, Actual { tokens: 0, cost_nano: actual }).unwrap();
                    spent += actual;
                }
            }
            prop_assert!(spent <= 1_000);
        }
    }
}

#[test]
fn threads_racing_for_a_budget_with_room_for_three_admit_exactly_three() {
    for threads in [4, 16, 50] {
        for _ in 0..50 {
            let clock = Arc::new(ManualClock::new(0, 0));
            let mut s = spec(ScopeKind::Team);
            s.budget = Some(Budget::new(3.0, BudgetPeriod::Day, "UTC", None, "b").unwrap());
            let limiter = Arc::new(limiter(vec![s], &clock));
            let barrier = Arc::new(Barrier::new(threads));
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (limiter, barrier) = (limiter.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let scopes = RequestScopes {
                            team: Some("t"),
                            ..RequestScopes::default()
                        };
                        barrier.wait();
                        let ask = Request {
                            scopes,
                            tokens: 0,
                            cost_nano: usd_to_nano(1.0),
                        };
                        let admission = limiter.admit(&ask).unwrap();
                        admission.admitted().then_some(admission.handle)
                    })
                })
                .collect();
            let handles: Vec<u64> = workers
                .into_iter()
                .filter_map(|w| w.join().unwrap())
                .collect();
            assert_eq!(handles.len(), 3, "{threads} threads");
            for handle in handles {
                let actual = Actual {
                    tokens: 0,
                    cost_nano: usd_to_nano(1.0),
                };
                assert!(limiter.settle(handle, actual).unwrap());
            }
            let view = &limiter.snapshot(1).unwrap()[0];
            assert!(view.spent_usd <= 3.0 + 1e-9);
        }
    }
}

#[test]
fn a_refusal_leaves_no_reservation_in_any_other_limit() {
    let clock = Arc::new(ManualClock::new(0, 0));
    let mut user = spec(ScopeKind::User);
    user.name = Arc::from("user");
    user.tokens = Some(Rate::new(1_000, 60 * SECOND, 1_000, "t").unwrap());
    user.concurrency = Some(10);
    user.budget = Some(Budget::new(10.0, BudgetPeriod::Day, "UTC", None, "b").unwrap());
    let mut team = spec(ScopeKind::Team);
    team.name = Arc::from("team");
    team.concurrency = Some(1);
    let limiter = limiter(vec![user, team], &clock);
    let ask = |user| Request {
        scopes: RequestScopes {
            user: Some(user),
            team: Some("t"),
            ..RequestScopes::default()
        },
        tokens: 500,
        cost_nano: usd_to_nano(1.0),
    };
    assert!(limiter.admit(&ask("a")).unwrap().admitted());
    let refused = limiter.admit(&ask("b")).unwrap();
    assert_eq!(refused.refusal.unwrap().kind, LimitKind::Concurrency);
    let users = &limiter.snapshot(10).unwrap()[0];
    let b = users.entries.iter().find(|e| e.scope_value == "b").unwrap();
    assert_eq!(b.tokens_remaining, Some(1_000));
    assert_eq!(b.in_flight, Some(0));
    assert_eq!(b.budget.as_ref().unwrap().reserved_usd, 0.0);
}

#[test]
fn unsettled_reservations_expire_at_their_reserved_cost() {
    let clock = Arc::new(ManualClock::new(0, 0));
    let mut s = spec(ScopeKind::Key);
    s.concurrency = Some(1);
    s.budget = Some(Budget::new(1.0, BudgetPeriod::Day, "UTC", None, "b").unwrap());
    let limiter = Limiter::new(vec![s], clock.clone(), 10 * SECOND).unwrap();
    let lost = limiter.admit(&request("k", 0, usd_to_nano(0.4))).unwrap();
    assert!(!limiter.admit(&request("k", 0, 1)).unwrap().admitted());
    clock.advance(10 * SECOND);
    assert_eq!(limiter.sweep().unwrap(), (1, 0));
    assert!(!limiter.settle(lost.handle, Actual::default()).unwrap());
    let entry = &limiter.snapshot(1).unwrap()[0].entries[0];
    assert_eq!(entry.in_flight, Some(0));
    assert!((entry.budget.as_ref().unwrap().spent_usd - 0.4).abs() < 1e-9);
}

#[test]
fn idle_keys_are_evicted_as_shards_grow() {
    let clock = Arc::new(ManualClock::new(0, 0));
    let mut s = spec(ScopeKind::Key);
    s.requests = Some(Rate::new(60, 60 * SECOND, 1, "r").unwrap());
    let limiter = limiter(vec![s], &clock);
    let wave = 50_000;
    for n in 0..10 {
        for i in 0..wave {
            let key = format!("w{n}k{i}");
            limiter.admit(&request(&key, 0, 0)).unwrap();
        }
        clock.advance(SECOND);
        assert!(limiter.key_count() <= 2 * wave + 64 * 256);
    }
    limiter.sweep().unwrap();
    assert_eq!(limiter.key_count(), 0);
}

#[test]
fn a_concurrency_refusal_suggests_the_mean_time_in_flight_over_the_requests_in_flight() {
    let clock = Arc::new(ManualClock::new(0, 0));
    let mut s = spec(ScopeKind::Key);
    s.concurrency = Some(2);
    let limiter = limiter(vec![s], &clock);
    let retry_after = |limiter: &Limiter| {
        let admission = limiter.admit(&request("k", 0, 0)).unwrap();
        admission.refusal.unwrap().retry_after_ns
    };
    let first = limiter.admit(&request("k", 0, 0)).unwrap();
    let second = limiter.admit(&request("k", 0, 0)).unwrap();
    assert_eq!(retry_after(&limiter), Some(SECOND));
    clock.advance(6 * SECOND);
    assert!(limiter.settle(first.handle, Actual::default()).unwrap());
    clock.advance(8 * SECOND);
    assert!(limiter.settle(second.handle, Actual::default()).unwrap());
    // Durations 6 s then 14 s: the running average moves an eighth of the way, to 7 s.
    limiter.admit(&request("k", 0, 0)).unwrap();
    limiter.admit(&request("k", 0, 0)).unwrap();
    assert_eq!(retry_after(&limiter), Some(7 * SECOND / 2));
}

#[test]
fn expiring_overdue_reservations_is_bounded_and_counted() {
    let clock = Arc::new(ManualClock::new(0, 0));
    let mut s = spec(ScopeKind::Key);
    s.concurrency = Some(100);
    let limiter = Limiter::new(vec![s], clock.clone(), 10 * SECOND).unwrap();
    for _ in 0..40 {
        limiter.admit(&request("k", 0, 0)).unwrap();
    }
    assert_eq!(limiter.expire_overdue(usize::MAX).unwrap(), 0);
    clock.advance(10 * SECOND);
    assert_eq!(limiter.expire_overdue(25).unwrap(), 25);
    assert_eq!(limiter.expire_overdue(usize::MAX).unwrap(), 15);
    assert_eq!(limiter.expired_total(), 40);
    assert_eq!(limiter.outstanding(), 0);
    assert_eq!(
        limiter.snapshot(1).unwrap()[0].entries[0].in_flight,
        Some(0)
    );
}
