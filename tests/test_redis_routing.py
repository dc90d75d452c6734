"""Breakers and experiment counters shared through Redis by several processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiofast.routing import RouteFacts
from aiofast.stores.redis import RedisStore
from aiofast.stores.redis_routing import BreakerSettings, SharedRouter, SharedRouting
from aiofast.stores.settings import RedisSettings
from redis_server import RedisServer

BREAKER = BreakerSettings(
    failure_rate=0.5, min_calls=4, window_seconds=10, cooldown_seconds=0.2, half_open_calls=1
)


@pytest.fixture
async def two(redis_url: str) -> AsyncIterator[tuple[SharedRouting, SharedRouting]]:
    """Two processes' views of the same shared routing state."""
    stores = [RedisStore.from_settings(RedisSettings(timeout_ms=2000), redis_url) for _ in "ab"]
    views = (SharedRouting(stores[0], BREAKER, ["d1"]), SharedRouting(stores[1], BREAKER, ["d1"]))
    for store in stores:
        await store.start()
    yield views
    for store in stores:
        await store.close()


async def test_failures_from_both_processes_trip_the_breaker_for_both(
    two: tuple[SharedRouting, SharedRouting],
) -> None:
    a, b = two
    a.record("d1", ok=False)
    a.record("d1", ok=True)
    await a.sync()
    assert a.allows("d1")

    b.record("d1", ok=False)
    b.record("d1", ok=False)
    await b.sync()
    await a.sync()
    assert not a.allows("d1")
    assert not b.allows("d1")
    assert a.allows("d2")


async def test_after_the_cooldown_the_fleet_sends_the_configured_trials_then_closes(
    two: tuple[SharedRouting, SharedRouting],
) -> None:
    a, b = two
    for _ in range(4):
        a.record("d1", ok=False)
    await a.sync()
    await b.sync()
    await asyncio.sleep(0.25)

    # Both find it cooled and ask for a trial; Redis grants one in all.
    assert not a.allows("d1")
    assert not b.allows("d1")
    await a.sync()
    await b.sync()
    granted = [a.allows("d1"), b.allows("d1")]
    assert granted.count(True) == 1

    winner = a if granted[0] else b
    winner.record("d1", ok=True)
    await winner.sync()
    await a.sync()
    await b.sync()
    assert a.allows("d1")
    assert b.allows("d1")


async def test_a_failed_trial_opens_the_breaker_again(
    two: tuple[SharedRouting, SharedRouting],
) -> None:
    a, _ = two
    for _ in range(4):
        a.record("d1", ok=False)
    await a.sync()
    await asyncio.sleep(0.25)
    assert not a.allows("d1")
    await a.sync()
    assert a.allows("d1")
    a.record("d1", ok=False)
    await a.sync()
    assert not a.allows("d1")


async def test_experiment_counters_add_up_across_processes(
    two: tuple[SharedRouting, SharedRouting],
) -> None:
    a, b = two
    for _ in range(3):
        a.count_assignment("prompt-v2", "control")
    b.count_assignment("prompt-v2", "control")
    b.count_assignment("prompt-v2", "treatment")
    await a.sync()
    await b.sync()
    assert await a.experiment_counts("prompt-v2") == {"control": 4, "treatment": 1}


async def test_without_redis_each_process_falls_back_to_its_own_breaker(
    two: tuple[SharedRouting, SharedRouting], redis_server: RedisServer
) -> None:
    a, _ = two
    for _ in range(4):
        a.record("d1", ok=False)
    await a.sync()
    assert not a.allows("d1")

    redis_server.kill()
    a.count_assignment("e", "v")
    with pytest.raises(ConnectionError):
        await a.sync()
    assert a.allows("d1")

    redis_server.start()
    await asyncio.sleep(0.7)  # the store's probe notices Redis is back
    await a.sync()
    assert await a.experiment_counts("e") == {"v": 1}


async def test_background_sync_spreads_an_open_breaker(
    two: tuple[SharedRouting, SharedRouting],
) -> None:
    a, b = two
    a.sync_interval = b.sync_interval = 0.02
    a.start()
    b.start()
    for _ in range(4):
        a.record("d1", ok=False)
    for _ in range(50):
        await asyncio.sleep(0.02)
        if not b.allows("d1"):
            break
    assert not b.allows("d1")
    await a.close()
    await b.close()


def routing_spec() -> dict[str, Any]:
    return {
        "deployments": [
            {"name": "mid-a", "upstream": "sim", "model": "m-mid"},
            {"name": "mid-b", "upstream": "sim", "model": "m-mid"},
        ],
        "tiers": [{"name": "medium", "deployments": ["mid-a", "mid-b"]}],
        "experiments": [
            {
                "name": "mid-split",
                "variants": [
                    {"name": "a", "weight": 50, "deployment": "mid-a"},
                    {"name": "b", "weight": 50, "deployment": "mid-b"},
                ],
                "tiers": ["medium"],
            }
        ],
        "breaker": {"min_calls": 4, "failure_rate": 0.5, "cooldown_seconds": 30},
    }


async def test_shared_routers_trip_together_and_count_every_process_assignments(
    redis_url: str,
) -> None:
    stores = [RedisStore.from_settings(RedisSettings(timeout_ms=2000), redis_url) for _ in "ab"]
    a, b = (SharedRouter(routing_spec(), store, seed=1) for store in stores)
    for store in stores:
        await store.start()

    # Two failures in each process: neither one's own breaker trips (min_calls 4)...
    for router in (a, b):
        for _ in range(2):
            assert router.start("mid-a")
            router.record("mid-a", ok=False)
    assert a.snapshot()["deployments"]["mid-a"]["breaker"]["phase"]["state"] == "closed"
    # ...but together they do, for both.
    await a.shared.sync()
    await b.shared.sync()
    await a.shared.sync()
    assert not a.start("mid-a")
    assert not b.start("mid-a")
    assert a.start("mid-b")

    for user in range(20):
        a.decide(RouteFacts(model="medium", user=f"u{user}"))
        b.decide(RouteFacts(model="medium", user=f"v{user}"))
    await a.shared.sync()
    await b.shared.sync()
    counts = await a.shared.experiment_counts("mid-split")
    assert sum(counts.values()) == 40
    for store in stores:
        await store.close()
