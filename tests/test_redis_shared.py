"""SharedState: one Redis connection per process and the features built on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aiofast.cache import CacheSettings
from aiofast.errors import ConfigError
from aiofast.limits import RequestContext
from aiofast.stores import RedisSettings, SharedState
from redis_server import RedisServer

ROUTING = {
    "deployments": [{"name": "d1", "upstream": "sim", "model": "m"}],
    "tiers": [{"name": "small", "deployments": ["d1"]}],
}


async def test_shared_state_builds_starts_reports_health_and_closes(
    redis_server: RedisServer,
) -> None:
    shared = SharedState(RedisSettings(probe_interval_ms=50), url=redis_server.url)
    limiter = shared.limiter([{"scope": "team", "requests_per_minute": 60}])
    router = shared.router(ROUTING)
    cache = shared.cache(CacheSettings(backend="redis", routes={"chat": "always"}))
    registry = CollectorRegistry()
    shared.register_metrics(registry)
    await shared.start()
    try:
        assert shared.health() == {"status": "ok"}
        assert (await limiter.admit(RequestContext(team="t"))).source == "redis"
        assert router.start("d1")
        key = cache.key_for("chat", {"model": "m", "messages": []}, "k", "t")
        assert key is not None
        assert await cache.store(key, 200, b'{"id": "x"}', {})

        redis_server.kill()
        assert (await limiter.admit(RequestContext(team="t"))).source == "local"
        health = shared.health()
        assert health["status"] == "degraded"
        assert "redis://" not in str(health)
        exposed = generate_latest(registry).decode()
        assert 'aiofast_redis_degraded{namespace="aiofast"} 1.0' in exposed
    finally:
        await shared.close()


async def test_the_url_comes_from_the_environment_with_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer(tmp_path, password="s3cret-pw")
    server.start()
    try:
        monkeypatch.setenv("AIOFAST_REDIS_URL", server.url)
        shared = SharedState(RedisSettings())
        limiter = shared.limiter([{"scope": "team", "requests_per_minute": 60}])
        await shared.start()
        assert (await limiter.admit(RequestContext(team="t"))).source == "redis"
        await shared.close()

        monkeypatch.setenv("AIOFAST_REDIS_URL", server.url.replace("s3cret-pw", "wrong"))
        shared = SharedState(RedisSettings())
        await shared.start()
        health = shared.health()
        assert health["status"] == "degraded"
        assert health["error"] == "AuthenticationError"
        assert "wrong" not in str(health)
        await shared.close()
    finally:
        server.stop()


def test_a_missing_url_variable_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIOFAST_REDIS_URL", raising=False)
    with pytest.raises(ConfigError, match="AIOFAST_REDIS_URL"):
        SharedState(RedisSettings())
    monkeypatch.setenv("AIOFAST_REDIS_URL", "http://example.com")
    with pytest.raises(ConfigError, match="rediss://"):
        SharedState(RedisSettings())
