"""The response cache through the gateway: a hit is the same body, marked, at no cost."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from aiofast.cache import MemoryCache
from aiofast.errors import ConfigError
from aiofast.limits.stage import LimitsStage
from aiofast.pipeline import Pipeline
from aiofast.routing.stages import ResilientCaller
from aiofast.stores.redis_routing import SharedRouter
from aiofast.stores.shared_limits import SharedLimiter
from gateway_support import chat, running, simulated_policy
from redis_server import RedisServer


def cached_policy(cache: dict[str, Any], **extra: Any) -> Any:
    return simulated_policy(extra={"cache": cache, **extra})


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_hit_returns_the_same_body_with_a_cache_header_and_zero_cost(
    backend: str, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOFAST_REDIS_URL", redis_server.url)
    extra = {"redis": {}} if backend == "redis" else {}
    policy = cached_policy({"backend": backend, "routes": {"chat": "deterministic"}}, **extra)
    request = chat("medium", "Name three primes.", temperature=0)
    async with running(policy) as gateway:
        status, first_headers, first = await gateway.post("/v1/chat/completions", request)
        assert status == 200
        assert first_headers["x-aiofast-cache"] == "miss"
        assert float(first_headers["x-aiofast-cost-usd"]) > 0

        status, headers, again = await gateway.post("/v1/chat/completions", request)
        assert status == 200
        assert again == first
        assert headers["x-aiofast-cache"] == "hit"
        assert float(headers["x-aiofast-cost-usd"]) == 0
        assert headers["x-aiofast-model"] == "gpt-4o"
        event = gateway.event(headers["x-aiofast-request-id"])
    assert event["cost_usd"] == 0
    assert event["usage_source"] == "cache"
    assert event["status"] == 200


async def test_requests_that_may_differ_are_neither_served_nor_stored() -> None:
    policy = cached_policy({"routes": {"chat": "deterministic"}})
    async with running(policy) as gateway:
        warm = chat("small", "Hi", temperature=0.7)
        await gateway.post("/v1/chat/completions", warm)
        _, headers, _ = await gateway.post("/v1/chat/completions", warm)
        assert "x-aiofast-cache" not in headers

        streamed = chat("small", "Hi", temperature=0, stream=True)
        _, headers, _ = await gateway.post("/v1/chat/completions", streamed)
        assert "x-aiofast-cache" not in headers


async def test_an_error_is_never_cached() -> None:
    policy = simulated_policy(
        faults={"error_rate": 1.0, "kinds": ["500"]},
        extra={"cache": {"routes": {"chat": "always"}}},
    )
    async with running(policy) as gateway:
        for _ in range(2):
            status, headers, _ = await gateway.post("/v1/chat/completions", chat("faulty"))
            assert status == 502
            assert headers.get("x-aiofast-cache") in (None, "miss")
        cache = gateway.pipeline.cache
        assert cache is not None
        assert isinstance(cache.backend, MemoryCache)
        assert len(cache.backend) == 0


def test_a_redis_cache_without_a_redis_section_fails_at_start() -> None:
    policy = cached_policy({"backend": "redis", "routes": {"chat": "always"}})
    with pytest.raises(ConfigError, match=r"cache\.backend"):
        Pipeline(policy)


async def test_health_shows_redis_and_metrics_show_its_state(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOFAST_REDIS_URL", redis_server.url)
    async with running(simulated_policy(extra={"redis": {"probe_interval_ms": 50}})) as gateway:
        _, _, body = await gateway.get("/aiofast/health")
        assert orjson.loads(body)["redis"] == {"status": "ok"}

        redis_server.kill()
        assert gateway.pipeline.shared is not None
        await gateway.pipeline.shared.store.start()  # any Redis call notices the outage
        _, _, body = await gateway.get("/aiofast/health")
        assert orjson.loads(body)["redis"]["status"] == "degraded"
        _, _, metrics = await gateway.get("/aiofast/metrics")
        assert b'aiofast_redis_degraded{namespace="aiofast"} 1.0' in metrics


async def test_with_redis_the_gateway_shares_limits_and_breakers(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOFAST_REDIS_URL", redis_server.url)
    limits = [{"scope": "global", "requests_per_minute": 60}]
    async with running(simulated_policy(extra={"redis": {}, "limits": limits})) as gateway:
        stages = gateway.pipeline.stages
        assert isinstance(stages.limiter, LimitsStage)
        assert isinstance(stages.limiter.limiter, SharedLimiter)
        assert isinstance(stages.caller, ResilientCaller)
        assert isinstance(stages.caller.engine, SharedRouter)
        status, headers, _ = await gateway.post("/v1/chat/completions", chat("small"))
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "60"
        await stages.caller.engine.shared.sync()
    breakers = await redis_server_keys(redis_server.url, "{aiofast}:breaker:*")
    assert breakers
    assert await redis_server_keys(redis_server.url, "{aiofast}:rate:*")


async def redis_server_keys(url: str, pattern: str) -> list[bytes]:
    client = Redis.from_url(url)
    try:
        return list(await client.keys(pattern))
    finally:
        await client.aclose()
