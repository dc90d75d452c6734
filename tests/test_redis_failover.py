"""Redis stopped, killed or restarted under a SharedLimiter: bounded waits, the
declared policy per feature, recovery without a restart."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import pytest

from aiofast.stores.checks import BudgetCheck, CalendarPeriod, ConcurrencyCheck, RateCheck
from aiofast.stores.redis import RedisStore
from aiofast.stores.settings import FailurePolicy, RedisSettings
from aiofast.stores.shared_limits import SharedLimiter
from redis_server import RedisServer

MONTH = CalendarPeriod("month")
SETTINGS = RedisSettings(timeout_ms=100, connect_timeout_ms=100, probe_interval_ms=50, instances=2)
# Room for the event loop's own scheduling on a busy 2-core machine, on top of the bound.
SLACK_S = 0.5


async def open_limiter(url: str, settings: RedisSettings = SETTINGS) -> SharedLimiter:
    store = RedisStore.from_settings(settings, url)
    limiter = SharedLimiter(store)
    await store.start()
    return limiter


@pytest.fixture
async def limiter(redis_url: str) -> AsyncIterator[SharedLimiter]:
    limiter = await open_limiter(redis_url)
    yield limiter
    await limiter.store.close()


async def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_stopped_redis_costs_each_request_at_most_the_bound_then_nothing(
    limiter: SharedLimiter, redis_server: RedisServer
) -> None:
    check = RateCheck("team:t", limit=600, period_s=60, burst=100, amount=1)
    assert (await limiter.admit([check])).source == "redis"

    redis_server.pause()
    started = time.monotonic()
    durations = []
    for _ in range(20):
        begin = time.monotonic()
        admission = await limiter.admit([check])
        durations.append(time.monotonic() - begin)
        assert admission.source == "local"
        assert admission.admitted
    assert max(durations) <= SETTINGS.bound_s + SLACK_S
    assert time.monotonic() - started <= SETTINGS.bound_s + SLACK_S
    assert limiter.store.health()["status"] == "degraded"

    redis_server.resume()
    await wait_until(lambda: not limiter.store.degraded)
    assert (await limiter.admit([check])).source == "redis"


async def test_concurrent_requests_during_a_stop_all_finish_within_the_bound(
    limiter: SharedLimiter, redis_server: RedisServer
) -> None:
    check = RateCheck("team:t", limit=6000, period_s=60, burst=1000, amount=1)
    redis_server.pause()

    async def timed() -> float:
        begin = time.monotonic()
        await limiter.admit([check])
        return time.monotonic() - begin

    durations = await asyncio.gather(*(timed() for _ in range(100)))
    assert max(durations) <= SETTINGS.bound_s + SLACK_S


async def test_each_feature_follows_its_declared_failure_mode(
    redis_server: RedisServer,
) -> None:
    policy = FailurePolicy(requests="fail_open", tokens="local", budgets="fail_closed")
    limiter = await open_limiter(
        redis_server.url, SETTINGS.model_copy(update={"on_failure": policy})
    )
    requests = RateCheck("team:t", limit=1, period_s=60, burst=1, amount=1)
    tokens = RateCheck("team:t", limit=100, period_s=60, burst=100, amount=30, unit="tokens")
    budget = BudgetCheck("team:t", limit_usd=1.0, cost_usd=0.1, period=MONTH)
    redis_server.pause()
    try:
        refused = await limiter.admit([requests, budget])
        assert refused.source == "closed"
        assert refused.refusal is not None
        assert refused.refusal.limit == "budgets"

        # Requests fail open (no limit at all); tokens get this process's half: 50.
        admitted = [await limiter.admit([requests, tokens]) for _ in range(3)]
        assert [a.admitted for a in admitted] == [True, False, False]
        assert admitted[1].refusal is not None
        assert admitted[1].refusal.limit == "tokens"
    finally:
        redis_server.resume()
        await limiter.store.close()


async def test_degraded_state_is_logged_once(
    limiter: SharedLimiter, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    check = ConcurrencyCheck("user:u", limit=100)
    redis_server.pause()
    with caplog.at_level(logging.WARNING, logger="aiofast.stores"):
        for _ in range(10):
            await limiter.admit([check])
    redis_server.resume()
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1


async def test_killed_and_restarted_empty_redis_never_admits_more_than_the_local_share(
    limiter: SharedLimiter, redis_server: RedisServer
) -> None:
    check = RateCheck("key:k", limit=10, period_s=60, burst=10, amount=1)
    via_redis = [await limiter.admit([check]) for _ in range(3)]
    assert all(a.admitted and a.source == "redis" for a in via_redis)

    redis_server.kill()
    during = [await limiter.admit([check]) for _ in range(10)]
    # This process's share is 10 / 2 = 5, and it already used 3 of them through Redis.
    assert sum(a.admitted for a in during) == 2
    assert all(a.source == "local" for a in during)

    redis_server.start()
    await wait_until(lambda: not limiter.store.degraded)
    after = await limiter.admit([check])
    assert after.source == "redis"
    assert after.admitted


async def test_spend_recorded_locally_reaches_redis_when_it_returns(
    limiter: SharedLimiter, redis_server: RedisServer
) -> None:
    budget = BudgetCheck("team:t", limit_usd=1.0, cost_usd=0.2, period=MONTH)
    held = await limiter.admit([budget])
    assert held.reservation is not None

    redis_server.pause()
    local = await limiter.admit([budget])
    assert local.source == "local"
    assert local.reservation is not None
    assert await limiter.settle(local.reservation, cost_usd=0.15)
    assert await limiter.settle(held.reservation, cost_usd=0.05)
    redis_server.resume()

    await wait_until(lambda: not limiter.store.degraded)
    await limiter.replay()
    label = MONTH.window(datetime.now(timezone.utc))[0][1]
    client, key = limiter.store.client, limiter.store.key
    assert await client.hget(key("spend", "team:t", label), "spent") == b"200000000"
    assert await client.hget(key("budget", "team:t", "month"), "reserved") == b"0"
