"""The limiter through its Python API: admission, refusal, settlement, budgets, headers."""

from __future__ import annotations

import datetime as dt
import os
import threading
from zoneinfo import ZoneInfo

import pytest

from aiofast import ConfigError, InvalidInputError
from aiofast.limits import (
    Limiter,
    ManualClock,
    RequestContext,
    format_reset,
    ratelimit_headers,
    refusal_body,
    refusal_headers,
    reserved_output_tokens,
    worst_case_cost,
)


def at(text: str, zone: str) -> float:
    """Unix seconds of a local wall time in `zone`."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall=at("2026-06-10T12:00:00", "UTC"))


def test_requests_admit_the_burst_then_refuse_with_retry_after(clock: ManualClock) -> None:
    limiter = Limiter([{"scope": "key", "requests_per_minute": 60, "burst": 3}], clock=clock)
    ctx = RequestContext(key="k1")
    assert [limiter.admit(ctx).admitted for _ in range(4)] == [True, True, True, False]
    refused = limiter.admit(ctx)
    assert refused.refusal is not None
    assert (refused.refusal.limit, refused.refusal.kind) == ("key", "requests")
    assert (refused.refusal.scope, refused.refusal.scope_value) == ("key", "k1")
    assert refused.refusal.code == "rate_limit_exceeded"
    assert refused.refusal.retry_after == pytest.approx(1.0)
    clock.advance(1.0)
    assert limiter.admit(ctx).admitted
    assert limiter.admit(RequestContext(key="k2")).admitted


def test_default_burst_is_small_not_the_whole_minute(clock: ManualClock) -> None:
    limiter = Limiter([{"scope": "global", "requests_per_minute": 600}], clock=clock)
    admitted = sum(limiter.admit(RequestContext()).admitted for _ in range(600))
    assert admitted == 60


def test_a_refusal_by_one_scope_reserves_nothing_in_the_others(clock: ManualClock) -> None:
    limiter = Limiter(
        [
            {"scope": "user", "tokens_per_minute": 1000, "concurrency": 5},
            {"scope": "team", "concurrency": 1, "budget": {"usd": 10, "per": "day"}},
        ],
        clock=clock,
    )
    first = limiter.admit(RequestContext(user="a", team="t", input_tokens=400, cost_usd=1.0))
    assert first.admitted
    refused = limiter.admit(RequestContext(user="b", team="t", input_tokens=400, cost_usd=1.0))
    assert refused.refusal is not None
    assert refused.refusal.kind == "concurrency"
    assert refused.handle == 0
    users = {e["scope_value"]: e for e in limiter.snapshot()[0]["entries"]}
    assert users["b"]["tokens_remaining"] == 1000
    assert users["b"]["in_flight"] == 0
    team = limiter.snapshot()[1]["entries"][0]
    assert team["budget"]["reserved_usd"] == pytest.approx(1.0)


def test_settle_is_idempotent_and_swaps_reservation_for_real_cost(clock: ManualClock) -> None:
    limiter = Limiter(
        [{"scope": "team", "concurrency": 2, "budget": {"usd": 5, "per": "day"}}], clock=clock
    )
    admission = limiter.admit(RequestContext(team="t", cost_usd=2.0))
    assert limiter.outstanding() == 1
    assert limiter.settle(admission.handle, 10, 20, 0.25)
    assert not limiter.settle(admission.handle, 10, 20, 0.25)
    budget = limiter.snapshot()[0]["entries"][0]["budget"]
    assert budget["spent_usd"] == pytest.approx(0.25)
    assert budget["reserved_usd"] == 0
    assert limiter.snapshot()[0]["entries"][0]["in_flight"] == 0
    assert limiter.outstanding() == 0


def test_unused_reserved_tokens_come_back_at_settle(clock: ManualClock) -> None:
    limiter = Limiter([{"scope": "key", "tokens_per_minute": 1000}], clock=clock)
    admission = limiter.admit(RequestContext(key="k", input_tokens=100, reserved_output_tokens=800))
    assert admission.remaining_tokens == 100
    limiter.settle(admission.handle, 100, 50)
    assert limiter.admit(RequestContext(key="k", input_tokens=800)).admitted


def test_a_request_larger_than_the_bucket_is_refused_without_retry(clock: ManualClock) -> None:
    limiter = Limiter([{"scope": "key", "tokens_per_minute": 1000}], clock=clock)
    refused = limiter.admit(RequestContext(key="k", input_tokens=1001))
    assert refused.refusal is not None
    assert refused.refusal.code == "request_too_large"
    assert refused.refusal.retry_after is None
    assert refusal_headers(refused.refusal) == {"x-should-retry": "false"}


def test_monthly_budget_refuses_with_its_own_code_and_no_retry(clock: ManualClock) -> None:
    limiter = Limiter([{"scope": "user", "budget": {"usd": 1, "per": "month"}}], clock=clock)
    admission = limiter.admit(RequestContext(user="u", cost_usd=0.9))
    limiter.settle(admission.handle, actual_cost_usd=0.9)
    refused = limiter.admit(RequestContext(user="u", cost_usd=0.2))
    assert refused.refusal is not None
    assert refused.refusal.code == "insufficient_quota"
    assert refused.refusal.retry_after is None


def test_daily_budget_retries_after_local_midnight() -> None:
    zone = "America/Los_Angeles"
    clock = ManualClock(wall=at("2026-06-10T23:00:00", zone))
    limiter = Limiter(
        [{"scope": "team", "budget": {"usd": 1, "per": "day", "time_zone": zone}}], clock=clock
    )
    limiter.settle(limiter.admit(RequestContext(team="t", cost_usd=1.0)).handle, 0, 0, 1.0)
    refused = limiter.admit(RequestContext(team="t", cost_usd=0.01))
    assert refused.refusal is not None
    assert refused.refusal.code == "budget_exceeded"
    assert refused.refusal.retry_after == pytest.approx(3600.0)
    clock.advance(3599.0)
    assert not limiter.admit(RequestContext(team="t", cost_usd=0.01)).admitted
    clock.advance(1.0)
    assert limiter.admit(RequestContext(team="t", cost_usd=0.01)).admitted


def test_daily_budget_on_a_23_hour_day_resets_at_the_next_local_midnight() -> None:
    # 2026-03-29 in Berlin: clocks jump from 02:00 to 03:00, so the day has 23 hours.
    zone = "Europe/Berlin"
    clock = ManualClock(wall=at("2026-03-29T00:30:00", zone))
    limiter = Limiter(
        [{"scope": "team", "budget": {"usd": 1, "per": "day", "time_zone": zone}}], clock=clock
    )
    limiter.settle(limiter.admit(RequestContext(team="t", cost_usd=1.0)).handle, 0, 0, 1.0)
    refused = limiter.admit(RequestContext(team="t", cost_usd=0.01)).refusal
    assert refused is not None
    until_midnight = at("2026-03-30T00:00:00", zone) - at("2026-03-29T00:30:00", zone)
    assert until_midnight == 22.5 * 3600
    assert refused.retry_after == pytest.approx(until_midnight)
    clock.advance(until_midnight - 1.0)
    assert not limiter.admit(RequestContext(team="t", cost_usd=0.01)).admitted
    clock.advance(1.0)
    assert limiter.admit(RequestContext(team="t", cost_usd=0.01)).admitted


def test_monthly_budget_rolls_over_at_month_end_in_its_time_zone() -> None:
    zone = "Australia/Sydney"
    clock = ManualClock(wall=at("2026-01-31T23:59:00", zone))
    limiter = Limiter(
        [{"scope": "team", "budget": {"usd": 1, "per": "month", "time_zone": zone}}], clock=clock
    )
    limiter.settle(limiter.admit(RequestContext(team="t", cost_usd=1.0)).handle, 0, 0, 1.0)
    # Midnight UTC has long passed in Sydney; only local month end resets the budget.
    assert not limiter.admit(RequestContext(team="t", cost_usd=0.5)).admitted
    clock.advance(59.0)
    assert not limiter.admit(RequestContext(team="t", cost_usd=0.5)).admitted
    clock.advance(1.0)
    assert limiter.admit(RequestContext(team="t", cost_usd=0.5)).admitted


def test_rolling_window_budget_frees_spend_as_it_slides(clock: ManualClock) -> None:
    limiter = Limiter(
        [{"scope": "key", "budget": {"usd": 1, "per": "window", "window_seconds": 160}}],
        clock=clock,
    )
    limiter.settle(limiter.admit(RequestContext(key="k", cost_usd=1.0)).handle, 0, 0, 1.0)
    refused = limiter.admit(RequestContext(key="k", cost_usd=0.5))
    assert refused.refusal is not None
    assert refused.refusal.retry_after == pytest.approx(160.0)
    clock.advance(159.0)
    assert not limiter.admit(RequestContext(key="k", cost_usd=0.5)).admitted
    clock.advance(1.0)
    assert limiter.admit(RequestContext(key="k", cost_usd=0.5)).admitted


def test_unsettled_reservations_expire_at_their_reserved_amount(clock: ManualClock) -> None:
    limiter = Limiter(
        [{"scope": "team", "concurrency": 1, "budget": {"usd": 5, "per": "day"}}],
        clock=clock,
        reservation_ttl=30.0,
    )
    lost = limiter.admit(RequestContext(team="t", cost_usd=2.0))
    assert not limiter.admit(RequestContext(team="t", cost_usd=0.1)).admitted
    clock.advance(30.0)
    assert limiter.sweep() == (1, 0)
    assert not limiter.settle(lost.handle, 0, 0, 0.0)
    entry = limiter.snapshot()[0]["entries"][0]
    assert entry["in_flight"] == 0
    assert entry["budget"]["spent_usd"] == pytest.approx(2.0)
    assert limiter.admit(RequestContext(team="t", cost_usd=0.1)).admitted


def test_expiry_also_happens_during_admissions(clock: ManualClock) -> None:
    limiter = Limiter([{"scope": "key", "concurrency": 1}], clock=clock, reservation_ttl=5.0)
    for i in range(64):
        limiter.admit(RequestContext(key=f"k{i}"))
    clock.advance(5.0)
    for i in range(64):
        limiter.admit(RequestContext(key=f"fresh{i}"))
    assert limiter.outstanding() == 64


def test_expire_overdue_settles_only_overdue_reservations_up_to_a_bound(
    clock: ManualClock,
) -> None:
    limiter = Limiter(
        [{"scope": "key", "concurrency": 10, "budget": {"usd": 100, "per": "day"}}],
        clock=clock,
        reservation_ttl=10.0,
    )
    for i in range(5):
        limiter.admit(RequestContext(key=f"k{i}", cost_usd=1.0))
    clock.advance(5.0)
    fresh = limiter.admit(RequestContext(key="k0", cost_usd=1.0))
    assert limiter.expire_overdue() == 0
    clock.advance(5.0)
    assert limiter.expire_overdue(max_reservations=3) == 3
    assert limiter.expire_overdue() == 2
    assert limiter.expired_total() == 5
    assert limiter.outstanding() == 1
    # The expired ones were charged what they reserved; the fresh one still holds its slot.
    entries = {e["scope_value"]: e for e in limiter.snapshot()[0]["entries"]}
    assert entries["k0"]["in_flight"] == 1
    assert entries["k0"]["budget"]["spent_usd"] == pytest.approx(1.0)
    assert entries["k0"]["budget"]["reserved_usd"] == pytest.approx(1.0)
    assert entries["k4"]["budget"]["spent_usd"] == pytest.approx(1.0)
    assert limiter.settle(fresh.handle, 0, 0, 0.5)


def test_concurrency_refusal_waits_for_the_expected_end_of_a_request(clock: ManualClock) -> None:
    limiter = Limiter([{"scope": "team", "concurrency": 2}], clock=clock)
    first = limiter.admit(RequestContext(team="t"))
    second = limiter.admit(RequestContext(team="t"))
    refused = limiter.admit(RequestContext(team="t")).refusal
    # No request has finished yet: nothing to learn a duration from, so the shortest hint.
    assert refused is not None
    assert refused.code == "concurrency_limit_exceeded"
    assert refused.retry_after == pytest.approx(1.0)
    clock.advance(8.0)
    limiter.settle(first.handle)
    limiter.settle(second.handle)
    held = [limiter.admit(RequestContext(team="t")) for _ in range(2)]
    refused = limiter.admit(RequestContext(team="t")).refusal
    # Requests last 8 s; with two in flight one ends every 4 s on average.
    assert refused is not None
    assert refused.retry_after == pytest.approx(4.0)
    assert "Retry after 4.000 s" in refused.message
    for admission in held:
        limiter.settle(admission.handle)


def test_shadow_limits_record_but_never_refuse(clock: ManualClock) -> None:
    limiter = Limiter(
        [{"scope": "user", "requests_per_minute": 60, "burst": 1, "mode": "shadow"}], clock=clock
    )
    first = limiter.admit(RequestContext(user="u"))
    second = limiter.admit(RequestContext(user="u"))
    assert first.admitted
    assert second.admitted
    assert first.shadow_refusals == ()
    assert [r.code for r in second.shadow_refusals] == ["rate_limit_exceeded"]
    assert second.shadow_refusals[0].mode == "shadow"
    assert second.limit_requests is None
    assert limiter.snapshot()[0]["refusals"]["requests"] == {"enforce": 0, "shadow": 1}


def test_budget_near_exhaustion_signals_downgrade(clock: ManualClock) -> None:
    limiter = Limiter(
        [
            {
                "scope": "team",
                "budget": {"usd": 10, "per": "day"},
                "downgrade_to": "small",
                "downgrade_at": 0.5,
            }
        ],
        clock=clock,
    )
    assert limiter.admit(RequestContext(team="t", cost_usd=3.0)).downgrade_to is None
    assert limiter.admit(RequestContext(team="t", cost_usd=3.0)).downgrade_to == "small"


def test_limits_apply_only_to_requests_having_their_scope(clock: ManualClock) -> None:
    limiter = Limiter(
        [
            {"scope": "label", "label": "env", "concurrency": 1},
            {"scope": "model", "value": "o3", "concurrency": 1},
        ],
        clock=clock,
    )
    prod = RequestContext(labels=[("env", "prod")], model="mini")
    assert limiter.admit(prod).admitted
    assert not limiter.admit(prod).admitted
    assert limiter.admit(RequestContext(model="mini")).admitted
    assert limiter.admit(RequestContext(model="o3")).admitted
    assert not limiter.admit(RequestContext(model="o3")).admitted


def test_headers_report_the_tightest_enforced_limit(clock: ManualClock) -> None:
    limiter = Limiter(
        [
            {"scope": "key", "requests_per_minute": 600, "burst": 100, "tokens_per_minute": 90000},
            {"scope": "team", "requests_per_minute": 60, "burst": 10},
        ],
        clock=clock,
    )
    admission = limiter.admit(RequestContext(key="k", team="t", input_tokens=1500))
    assert ratelimit_headers(admission) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "90000",
        "x-ratelimit-remaining-tokens": "88500",
        "x-ratelimit-reset-tokens": "1s",
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.012, "12ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (360, "6m0s"),
        (23 * 3600 + 47 * 60 + 36, "23h47m36s"),
    ],
)
def test_reset_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_refusal_body_is_openai_shaped_and_names_limit_and_scope(clock: ManualClock) -> None:
    limiter = Limiter(
        [{"name": "team-rpm", "scope": "team", "requests_per_minute": 1}], clock=clock
    )
    limiter.admit(RequestContext(team="search"))
    refusal = limiter.admit(RequestContext(team="search")).refusal
    assert refusal is not None
    body = refusal_body(refusal)
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["type"] == "requests"
    assert body["error"]["limit"] == "team-rpm"
    assert body["error"]["scope"] == "team:search"
    assert "team-rpm" in body["error"]["message"]
    assert refusal_headers(refusal) == {"retry-after": "60", "retry-after-ms": "60000"}


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"scope": "team", "requests_per_minute": -5}, "limits[0].requests_per_minute"),
        ({"scope": "galaxy", "concurrency": 1}, "limits[0].scope"),
        ({"scope": "team"}, "sets no limit"),
        ({"scope": "team", "concurrency": 1, "downgrade_to": "small"}, "downgrade_to"),
        ({"scope": "team", "budget": {"usd": 1, "per": "week"}}, "limits[0].budget.per"),
        ({"scope": "team", "budget": {"usd": 1, "per": "window"}}, "window_seconds"),
        ({"scope": "label", "concurrency": 1}, "label"),
        (
            {"scope": "team", "budget": {"usd": 1, "per": "day", "time_zone": "Mars/Base"}},
            "time_zone",
        ),
        ({"scope": "team", "requests_per_second": 50_000_000}, "too fast"),
    ],
)
def test_bad_entries_raise_config_error_naming_the_key(
    entry: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ConfigError, match="limits\\[0\\]") as info:
        Limiter([entry])
    assert fragment in str(info.value)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="distinct name"):
        Limiter([{"scope": "team", "concurrency": 1}, {"scope": "team", "concurrency": 2}])


def test_bad_settle_arguments_raise_invalid_input() -> None:
    limiter = Limiter([{"scope": "key", "concurrency": 1}])
    with pytest.raises(InvalidInputError, match="actual_output_tokens"):
        limiter.settle(1, 0, -1, 0.0)
    with pytest.raises(InvalidInputError, match="cost_usd"):
        RequestContext(cost_usd=float("nan"))


def test_output_reservation_and_worst_case_cost_helpers() -> None:
    assert reserved_output_tokens(256, 16384, 4096) == 256
    assert reserved_output_tokens(None, 16384, 4096) == 4096
    assert reserved_output_tokens(None, 1024, 4096) == 1024
    assert reserved_output_tokens(None, None, 4096) == 4096
    cost = worst_case_cost(1000, 500, [(0.15, 0.6), (2.5, 10.0)])
    assert cost == pytest.approx((1000 * 2.5 + 500 * 10.0) / 1e6)


def _race_for_budget(threads: int) -> tuple[Limiter, list[int]]:
    """`threads` threads released at once, each asking for $1 of a $3 daily budget."""
    limiter = Limiter([{"scope": "team", "budget": {"usd": 3, "per": "day"}}])
    barrier = threading.Barrier(threads)
    handles: list[int] = []

    def request() -> None:
        barrier.wait()
        admission = limiter.admit(RequestContext(team="t", cost_usd=1.0))
        if admission.admitted:
            handles.append(admission.handle)

    workers = [threading.Thread(target=request) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return limiter, handles


@pytest.mark.parametrize("threads", [2, 8, 50])
def test_threads_racing_for_a_budget_with_room_for_three_get_exactly_three(threads: int) -> None:
    for _ in range(20):
        limiter, handles = _race_for_budget(threads)
        assert len(handles) == min(3, threads)
        for handle in handles:
            limiter.settle(handle, 0, 0, 1.0)
        assert limiter.snapshot()[0]["spent_usd"] <= 3.0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc for RSS")
def test_idle_keys_are_evicted_and_memory_stays_bounded(clock: ManualClock) -> None:
    limiter = Limiter([{"scope": "user", "requests_per_minute": 600, "burst": 10}], clock=clock)
    wave = 100_000
    rss_after: list[int] = []
    for n in range(10):
        for i in range(wave):
            limiter.admit(RequestContext(user=f"w{n}u{i}"))
        # Every key of a wave is idle (its bucket full again) a second later.
        clock.advance(1.0)
        rss_after.append(_rss_bytes())
        # Shards sweep when they double, so at most about two waves are ever held.
        assert limiter.key_count() <= 2 * wave + 64 * 256
    # A million distinct users went through; memory grew no further after the first waves.
    assert rss_after[-1] - rss_after[2] < 16 * 1024 * 1024, rss_after
    limiter.sweep()
    assert limiter.key_count() == 0


def test_prometheus_shows_spend_remaining_budget_and_refusals(clock: ManualClock) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from aiofast.limits import LimitsCollector, usage_report

    limiter = Limiter(
        [
            {"name": "team-day", "scope": "team", "budget": {"usd": 5, "per": "day"}},
            {"name": "user-rpm", "scope": "user", "requests_per_minute": 1},
        ],
        clock=clock,
    )
    admission = limiter.admit(RequestContext(team="search", user="u", cost_usd=1.0))
    limiter.settle(admission.handle, 10, 10, 0.75)
    assert not limiter.admit(RequestContext(team="search", user="u", cost_usd=1.0)).admitted
    registry = CollectorRegistry()
    registry.register(LimitsCollector(limiter))
    text = generate_latest(registry).decode()
    assert (
        'aiofast_limit_spent_usd{limit="team-day",scope="team",scope_value="search"} 0.75' in text
    )
    assert (
        'aiofast_limit_remaining_usd{limit="team-day",scope="team",scope_value="search"} 4.25'
        in text
    )
    assert (
        'aiofast_limit_refusals_total{kind="requests",limit="user-rpm",mode="enforce",scope="user"}'
        " 1.0" in text
    )
    assert "aiofast_limit_reservations_expired_total 0.0" in text
    report = usage_report(limiter)
    assert report["reservations_outstanding"] == 0
    assert report["reservations_expired"] == 0
    assert report["limits"][0]["entries"][0]["budget"]["spent_usd"] == pytest.approx(0.75)
