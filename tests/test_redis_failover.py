"""A SharedLimiter while Redis is stopped, killed or restarted empty: bounded waits,
the declared policy per feature, recovery without a restart."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import pytest

from aiofast.limits import RequestContext
from aiofast.stores.checks import CalendarPeriod
from aiofast.stores.redis import RedisStore
from aiofast.stores.settings import FailurePolicy, RedisSettings
from aiofast.stores.shared_limits import SharedLimiter
from redis_server import RedisServer

SETTINGS = RedisSettings(timeout_ms=100, connect_timeout_ms=100, probe_interval_ms=50, instances=2)
# Room for the event loop's own scheduling on a busy 2-core machine, on top of the bound;
# still far below what a hang, or 100 requests waiting for Redis in turn (20 s), would take.
SLACK_S = 1.0
TEAM = RequestContext(team="search", input_tokens=20, reserved_output_tokens=10, cost_usd=0.2)


async def open_limiter(
    url: str, limits: Sequence[dict[str, Any]], settings: RedisSettings = SETTINGS
) -> SharedLimiter:
    store = RedisStore.from_settings(settings, url)
    limiter = SharedLimiter(limits, store)
    await store.start()
    return limiter


@pytest.fixture
async def per_minute(redis_url: str) -> AsyncIterator[SharedLimiter]:
    limiter = await open_limiter(
        redis_url, [{"scope": "team", "requests_per_minute": 10, "burst": 10}]
    )
    yield limiter
    await limiter.store.close()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_stopped_redis_costs_each_request_at_most_the_bound_then_recovers(
    redis_server: RedisServer,
) -> None:
    limiter = await open_limiter(redis_server.url, [{"scope": "team", "requests_per_minute": 6000}])
    assert (await limiter.admit(TEAM)).source == "redis"

    redis_server.pause()
    durations = []
    for _ in range(20):
        begin = time.monotonic()
        admission = await limiter.admit(TEAM)
        durations.append(time.monotonic() - begin)
        assert admission.source == "local"
        assert admission.admitted
    assert max(durations) <= SETTINGS.bound_s + SLACK_S
    # Only the first request paid the bound: the store knew Redis was down after it.
    assert sorted(durations)[-2] < 0.05
    assert limiter.store.health()["status"] == "degraded"

    redis_server.resume()
    await wait_until(lambda: not limiter.store.degraded)
    assert (await limiter.admit(TEAM)).source == "redis"
    await limiter.store.close()


async def test_concurrent_requests_during_a_stop_all_finish_within_the_bound(
    redis_server: RedisServer,
) -> None:
    limiter = await open_limiter(redis_server.url, [{"scope": "team", "requests_per_minute": 6000}])
    redis_server.pause()

    async def timed() -> float:
        begin = time.monotonic()
        await limiter.admit(TEAM)
        return time.monotonic() - begin

    durations = await asyncio.gather(*(timed() for _ in range(100)))
    assert max(durations) <= SETTINGS.bound_s + SLACK_S
    redis_server.resume()
    await limiter.store.close()


async def test_each_feature_follows_its_declared_failure_mode(redis_server: RedisServer) -> None:
    policy = FailurePolicy(requests="fail_open", tokens="local", budgets="fail_closed")
    settings = SETTINGS.model_copy(update={"on_failure": policy})
    limits = [
        {"scope": "team", "requests_per_minute": 1, "burst": 1, "tokens_per_minute": 100},
        {"name": "spend", "scope": "user", "budget": {"usd": 1.0, "per": "month"}},
    ]
    limiter = await open_limiter(redis_server.url, limits, settings)
    redis_server.pause()
    try:
        refused = await limiter.admit(RequestContext(team="t", user="u", cost_usd=0.1))
        assert refused.source == "closed"
        assert refused.refusal is not None
        assert refused.refusal.code == "store_unavailable"
        assert refused.refusal.kind == "budget"

        # Requests fail open (no limit at all); tokens get this process's half: 50.
        ask = RequestContext(team="t", input_tokens=20, reserved_output_tokens=10)
        admitted = [await limiter.admit(ask) for _ in range(3)]
        assert [a.admitted for a in admitted] == [True, False, False]
        assert admitted[1].refusal is not None
        assert admitted[1].refusal.kind == "tokens"
    finally:
        redis_server.resume()
        await limiter.store.close()


async def test_degraded_state_is_logged_once(
    per_minute: SharedLimiter, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server.pause()
    with caplog.at_level(logging.WARNING, logger="aiofast.stores"):
        for _ in range(10):
            await per_minute.admit(TEAM)
    redis_server.resume()
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1


async def test_killed_and_restarted_empty_redis_never_admits_more_than_the_local_share(
    per_minute: SharedLimiter, redis_server: RedisServer
) -> None:
    via_redis = [await per_minute.admit(TEAM) for _ in range(3)]
    assert all(a.admitted and a.source == "redis" for a in via_redis)

    redis_server.kill()
    during = [await per_minute.admit(TEAM) for _ in range(10)]
    # This process's share is 10 / 2 = 5, and it already used 3 of them through Redis.
    assert sum(a.admitted for a in during) == 2
    assert all(a.source == "local" for a in during)

    redis_server.start()
    await wait_until(lambda: not per_minute.store.degraded)
    after = await per_minute.admit(TEAM)
    assert after.source == "redis"
    assert after.admitted


async def test_spend_recorded_locally_reaches_redis_when_it_returns(
    redis_server: RedisServer,
) -> None:
    limiter = await open_limiter(
        redis_server.url, [{"scope": "team", "budget": {"usd": 1.0, "per": "month"}}]
    )
    held = await limiter.admit(TEAM)
    assert held.handle is not None

    redis_server.pause()
    local = await limiter.admit(TEAM)
    assert local.source == "local"
    assert local.handle is not None
    assert await limiter.settle(local.handle, 10, 5, 0.15)
    assert await limiter.settle(held.handle, 10, 5, 0.05)
    redis_server.resume()

    await wait_until(lambda: not limiter.store.degraded)
    await limiter.replay()
    label = CalendarPeriod("month").window(datetime.now(timezone.utc))[0][1]
    client, key = limiter.store.client, limiter.store.key
    assert await client.hget(key("spend", "team=search", label), "spent") == b"200000000"
    assert await client.hget(key("budget", "team=search", "month"), "reserved") == b"0"
    await limiter.store.close()
