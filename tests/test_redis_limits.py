"""Limits and budgets decided by the Lua scripts in a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from redis.asyncio import Redis

from aiofast.stores.checks import (
    BudgetCheck,
    CalendarPeriod,
    ConcurrencyCheck,
    RateCheck,
    RollingPeriod,
)
from aiofast.stores.redis import RedisStore
from aiofast.stores.redis_limits import ADMIT, RedisLimiter
from aiofast.stores.settings import RedisSettings
from redis_server import RedisServer

MONTH = CalendarPeriod("month", "Europe/Paris")


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    # Generous bounds: these tests are about decisions, not outages, on a busy machine.
    settings = RedisSettings(timeout_ms=2000, connect_timeout_ms=2000)
    store = RedisStore.from_settings(settings, redis_url)
    await store.start()
    yield store
    await store.close()


@pytest.fixture
def limiter(store: RedisStore) -> RedisLimiter:
    return RedisLimiter(store)


async def test_requests_per_minute_admit_the_burst_then_refuse_with_retry_after(
    limiter: RedisLimiter,
) -> None:
    check = RateCheck("team:a", limit=10, period_s=60, burst=3, amount=1)
    decisions = [await limiter.admit([check]) for _ in range(5)]

    assert [d.admitted for d in decisions] == [True, True, True, False, False]
    assert [d.results[0].remaining for d in decisions[:3]] == [2, 1, 0]
    refusal = decisions[3].refusal
    assert refusal is not None
    assert refusal.limit == "requests"
    assert refusal.scope == "team:a"
    assert refusal.retry_after_s is not None
    assert 5.9 <= refusal.retry_after_s <= 6.0


async def test_a_request_larger_than_the_burst_is_told_waiting_will_not_help(
    limiter: RedisLimiter,
) -> None:
    check = RateCheck("key:k", limit=1000, period_s=60, burst=1000, amount=1500, unit="tokens")
    admission = await limiter.admit([check])

    assert not admission.admitted
    assert admission.refusal is not None
    assert admission.refusal.code == "request_too_large"
    assert admission.refusal.retry_after_s is None


async def test_a_refusal_by_one_scope_reserves_nothing_in_the_others(
    limiter: RedisLimiter, store: RedisStore
) -> None:
    tokens = RateCheck("user:u", limit=100, period_s=60, burst=100, amount=60, unit="tokens")
    budget = BudgetCheck("team:t", limit_usd=1.0, cost_usd=0.4, period=MONTH)
    team_cap = RateCheck("team:t", limit=60, period_s=60, burst=1, amount=1)

    assert (await limiter.admit([tokens, budget, team_cap])).admitted
    refused = await limiter.admit([tokens, budget])
    assert refused.refusal is not None
    assert refused.refusal.limit == "tokens"

    # The budget still has room for exactly one more 0.4 request: nothing was held.
    budget_only = [await limiter.admit([budget]) for _ in range(2)]
    assert [a.admitted for a in budget_only] == [True, False]
    assert budget_only[1].refusal is not None
    assert budget_only[1].refusal.remaining == pytest.approx(0.2)


async def test_settle_gives_back_unused_tokens_once(limiter: RedisLimiter) -> None:
    check = RateCheck("key:k", limit=1000, period_s=60, burst=1000, amount=800, unit="tokens")
    first = await limiter.admit([check])
    assert first.reservation is not None
    assert not (await limiter.admit([check])).admitted

    assert await limiter.settle(first.reservation, tokens=100)
    assert not await limiter.settle(first.reservation, tokens=100)
    second = await limiter.admit([check])
    assert second.admitted
    assert second.results[0].remaining in (99, 100)


async def test_concurrency_slot_is_released_by_settle(limiter: RedisLimiter) -> None:
    check = ConcurrencyCheck("user:u", limit=2)
    held = [await limiter.admit([check]) for _ in range(3)]
    assert [a.admitted for a in held] == [True, True, False]

    first = held[0].reservation
    assert first is not None
    await limiter.settle(first)
    assert (await limiter.admit([check])).admitted


async def test_a_lease_that_is_never_settled_expires(limiter: RedisLimiter) -> None:
    check = ConcurrencyCheck("user:u", limit=1, lease_s=0.05)
    assert (await limiter.admit([check])).admitted
    assert not (await limiter.admit([check])).admitted
    await asyncio.sleep(0.08)
    assert (await limiter.admit([check])).admitted


async def test_fifty_concurrent_requests_on_a_budget_for_three_admit_three(
    limiter: RedisLimiter, store: RedisStore
) -> None:
    budget = BudgetCheck("team:t", limit_usd=0.03, cost_usd=0.01, period=MONTH)
    admissions = await asyncio.gather(*(limiter.admit([budget]) for _ in range(50)))
    admitted = [a for a in admissions if a.admitted]
    assert len(admitted) == 3

    for admission in admitted:
        assert admission.reservation is not None
        await limiter.settle(admission.reservation, cost_usd=0.004)
    label = MONTH.window(datetime.now(timezone.utc))[0][1]
    assert await store.client.hget(store.key("spend", "team:t", label), "spent") == b"12000000"
    assert await store.client.hget(store.key("budget", "team:t", "month"), "reserved") == b"0"


async def test_settle_charges_the_real_cost_and_frees_the_rest(limiter: RedisLimiter) -> None:
    budget = BudgetCheck("team:t", limit_usd=1.0, cost_usd=0.9, period=MONTH)
    first = await limiter.admit([budget])
    assert first.reservation is not None
    assert not (await limiter.admit([budget])).admitted

    await limiter.settle(first.reservation, cost_usd=0.05)
    again = await limiter.admit([budget])
    assert again.admitted
    assert again.results[0].remaining == pytest.approx(0.05)


async def test_an_unsettled_hold_expires_into_spend_at_its_reserved_amount(
    limiter: RedisLimiter,
) -> None:
    budget = BudgetCheck("team:t", limit_usd=1.0, cost_usd=0.6, period=MONTH, hold_s=0.05)
    first = await limiter.admit([budget])
    assert first.reservation is not None
    await asyncio.sleep(0.08)

    small = BudgetCheck("team:t", limit_usd=1.0, cost_usd=0.3, period=MONTH)
    after = await limiter.admit([small])
    assert after.results[0].remaining == pytest.approx(0.1)
    # The late settle finds its hold gone: it charges nothing more.
    await limiter.settle(first.reservation, cost_usd=0.01)
    refused = await limiter.admit([small])
    assert not refused.admitted
    assert refused.results[0].remaining == pytest.approx(0.1)


async def test_monthly_budget_refusal_has_no_retry_after(limiter: RedisLimiter) -> None:
    budget = BudgetCheck("team:t", limit_usd=0.01, cost_usd=0.02, period=MONTH)
    refusal = (await limiter.admit([budget])).refusal
    assert refusal is not None
    assert refusal.code == "request_too_large"
    assert refusal.retry_after_s is None

    spent = BudgetCheck("team:t", limit_usd=0.01, cost_usd=0.01, period=MONTH)
    assert (await limiter.admit([spent])).admitted
    refusal = (await limiter.admit([spent])).refusal
    assert refusal is not None
    assert refusal.code == "insufficient_quota"
    assert refusal.retry_after_s is None
    assert refusal.reset_s > 0


async def test_daily_budget_refusal_retries_after_midnight(limiter: RedisLimiter) -> None:
    day = CalendarPeriod("day", "America/New_York")
    assert (await limiter.admit([BudgetCheck("team:t", 0.02, 0.015, day)])).admitted
    refusal = (await limiter.admit([BudgetCheck("team:t", 0.02, 0.015, day)])).refusal
    assert refusal is not None
    assert refusal.code == "budget_exceeded"
    assert refusal.retry_after_s is not None
    assert 0 < refusal.retry_after_s <= 25 * 3600


async def test_rolling_budget_counts_settled_spend_in_its_window(limiter: RedisLimiter) -> None:
    window = RollingPeriod(window_s=0.5)
    budget = BudgetCheck("key:k", limit_usd=1.0, cost_usd=0.5, period=window)
    first = await limiter.admit([budget])
    assert first.reservation is not None
    await limiter.settle(first.reservation, cost_usd=0.8)

    refused = await limiter.admit([budget])
    assert refused.refusal is not None
    assert refused.refusal.retry_after_s is not None
    await asyncio.sleep(0.65)
    assert (await limiter.admit([budget])).admitted


async def test_shadow_checks_decide_but_never_refuse(limiter: RedisLimiter) -> None:
    shadow = RateCheck("team:t", limit=1, period_s=60, burst=1, amount=1, shadow=True)
    decisions = [await limiter.admit([shadow]) for _ in range(3)]
    assert all(d.admitted for d in decisions)
    assert [d.results[0].admitted for d in decisions] == [True, False, False]


async def test_every_key_has_a_ttl_and_the_shared_hash_tag(
    limiter: RedisLimiter, store: RedisStore
) -> None:
    checks = [
        RateCheck("team:t", limit=10, period_s=60, burst=2, amount=1),
        RateCheck("team:t", limit=1000, period_s=60, burst=1000, amount=10, unit="tokens"),
        ConcurrencyCheck("team:t", limit=5),
        BudgetCheck("team:t", limit_usd=1.0, cost_usd=0.1, period=MONTH),
        BudgetCheck("team:t", limit_usd=1.0, cost_usd=0.1, period=RollingPeriod(3600)),
    ]
    admission = await limiter.admit(checks)
    assert admission.reservation is not None
    held = await store.client.keys("*")
    await limiter.settle(admission.reservation, tokens=5, cost_usd=0.05)
    settled = await store.client.keys("*")

    # Rate x2, token holds, holders, budget state and holds x2 while held; at settle the
    # holds and holders empty out and the month's spend appears.
    assert len(held) == 8
    assert len(settled) == 5
    for key in set(held) | set(settled):
        assert key.startswith(b"{aiofast}:")
        assert await store.client.pttl(key) > 0 or not await store.client.exists(key), key


async def test_budget_period_label_is_in_the_key(limiter: RedisLimiter, store: RedisStore) -> None:
    admission = await limiter.admit(
        [BudgetCheck("team:t", 1.0, 0.1, CalendarPeriod("day", "Asia/Tokyo"))]
    )
    assert admission.reservation is not None
    await limiter.settle(admission.reservation, cost_usd=0.05)
    today = datetime.now(timezone.utc).astimezone(CalendarPeriod("day", "Asia/Tokyo").zone)
    assert await store.client.exists(store.key("spend", "team:t", f"{today:%Y-%m-%d}"))


async def test_redis_clock_picks_the_period_not_the_gateway_clock(store: RedisStore) -> None:
    """A gateway whose clock runs an hour fast sends tomorrow's window: Redis, still in
    today, charges an expired hold to the previous label of the three it was given."""
    seconds, _ = await store.client.time()
    now_ms = seconds * 1000
    keys = [store.key("state"), store.key("holds")]
    keys += [store.key("spend", label) for label in "abc"]
    window = [now_ms + 3_600_000, now_ms + 7_200_000, 1000, 0, "0"]
    held = ["budget", 0, "0", 100, 10, 1, *window]
    assert (await store.run(ADMIT, keys, ["r1", 1, *held])).split()[0] == b"1"
    await asyncio.sleep(0.01)
    await store.run(ADMIT, keys, ["r2", 1, *held])
    assert await store.client.hget(store.key("spend", "a"), "spent") == b"10"


async def test_scripts_are_reloaded_after_script_flush(
    limiter: RedisLimiter, store: RedisStore
) -> None:
    check = RateCheck("team:t", limit=10, period_s=60, burst=10, amount=1)
    await store.client.script_flush()
    assert (await limiter.admit([check])).admitted
    assert await store.client.script_exists(ADMIT.sha) == [True]


@pytest.mark.parametrize("cluster_client", [False, True], ids=["one-endpoint", "cluster"])
async def test_scripts_run_unchanged_on_redis_cluster(tmp_path: Path, cluster_client: bool) -> None:
    """Cluster mode refuses a script whose keys span slots (CROSSSLOT): the hash tag
    keeps every key of one admission, and of its settle, in one slot. Both clients work:
    one endpoint, and the Cluster client (`cluster = true`) that follows the slot map."""
    server = RedisServer(tmp_path, cluster=True)
    server.start()
    try:
        await _wait_for_cluster(server)
        settings = RedisSettings(timeout_ms=2000, connect_timeout_ms=2000, cluster=cluster_client)
        store = RedisStore.from_settings(settings, server.url)
        await store.start()
        limiter = RedisLimiter(store)
        checks = [
            RateCheck("team:t", limit=10, period_s=60, burst=2, amount=1),
            RateCheck("user:u", limit=1000, period_s=60, burst=1000, amount=10, unit="tokens"),
            ConcurrencyCheck("key:k", limit=5),
            BudgetCheck("team:t", limit_usd=1.0, cost_usd=0.1, period=MONTH),
            BudgetCheck("user:u", limit_usd=1.0, cost_usd=0.1, period=RollingPeriod(3600)),
        ]
        admission = await limiter.admit(checks)
        assert admission.reservation is not None
        assert await limiter.settle(admission.reservation, tokens=5, cost_usd=0.05)
        assert not store.degraded
        await store.close()
    finally:
        server.stop()


async def _wait_for_cluster(server: RedisServer) -> None:
    client = Redis.from_url(server.url)
    try:
        for _ in range(100):
            info = await client.execute_command("CLUSTER", "INFO")
            if b"cluster_state:ok" in info:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the one-node cluster did not become ready")
    finally:
        await client.aclose()
