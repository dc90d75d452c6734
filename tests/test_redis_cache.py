"""The exact response cache: keys, bounds, both backends, never an error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from aiofast.cache import (
    CachedResponse,
    CacheSettings,
    MemoryCache,
    RedisCache,
    ResponseCache,
    request_key,
)
from aiofast.errors import ConfigError
from aiofast.stores.redis import RedisStore
from aiofast.stores.settings import RedisSettings
from redis_server import RedisServer

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Name three primes."}],
    "temperature": 0,
}
ANSWER = orjson.dumps({"id": "c1", "choices": [{"message": {"content": "2, 3, 5"}}]})


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_settings(RedisSettings(timeout_ms=2000), redis_url)
    await store.start()
    yield store
    await store.close()


def test_the_same_request_in_another_key_order_has_the_same_key() -> None:
    reordered = {"temperature": 0, "messages": CHAT["messages"], "model": "gpt-4o-mini"}
    assert request_key("chat", CHAT, "deterministic", "") == request_key(
        "chat", reordered, "deterministic", ""
    )


def test_delivery_fields_do_not_change_the_key_but_content_does() -> None:
    base = request_key("chat", CHAT, "deterministic", "")
    assert request_key("chat", {**CHAT, "user": "bob", "store": False}, "deterministic", "") == base
    assert request_key("chat", {**CHAT, "max_tokens": 10}, "deterministic", "") != base
    assert request_key("embeddings", CHAT, "deterministic", "") != base
    assert request_key("chat", CHAT, "deterministic", "key:other") != base


@pytest.mark.parametrize(
    ("body", "mode"),
    [
        ({**CHAT, "temperature": 0.7}, "deterministic"),
        ({k: v for k, v in CHAT.items() if k != "temperature"}, "deterministic"),
        ({**CHAT, "n": 3}, "deterministic"),
        ({**CHAT, "stream": True}, "always"),
        (CHAT, "off"),
    ],
)
def test_requests_that_may_answer_differently_are_not_cached(body: dict, mode: str) -> None:
    assert request_key("chat", body, mode, "") is None  # type: ignore[arg-type]


def test_always_mode_caches_any_temperature() -> None:
    assert request_key("chat", {**CHAT, "temperature": 1.2}, "always", "") is not None


async def test_memory_cache_is_bounded_by_entries_and_bytes() -> None:
    cache = MemoryCache(max_entries=3, max_bytes=100)
    for i in range(5):
        await cache.set(f"k{i}", CachedResponse(b"x" * 10, {}), ttl_s=60)
    assert len(cache) == 3
    assert await cache.get("k0") is None
    assert await cache.get("k4") is not None

    await cache.set("big", CachedResponse(b"y" * 95, {}), ttl_s=60)
    assert cache.size_bytes <= 100
    assert await cache.get("big") is not None


async def test_memory_cache_entries_expire() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=1000)
    await cache.set("k", CachedResponse(b"x", {}), ttl_s=0.001)
    await asyncio.sleep(0.01)
    assert await cache.get("k") is None
    assert len(cache) == 0


async def test_redis_cache_round_trips_body_and_headers_with_a_ttl(store: RedisStore) -> None:
    cache = RedisCache(store)
    await cache.set("abc", CachedResponse(ANSWER, {"x-aiofast-model": "m"}), ttl_s=30)
    hit = await cache.get("abc")
    assert hit == CachedResponse(ANSWER, {"x-aiofast-model": "m"})
    ttl = await store.client.pttl("aiofast:cache:abc")
    assert 0 < ttl <= 30_000


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, ANSWER),
        (429, orjson.dumps({"error": {"message": "slow down"}})),
        (200, orjson.dumps({"error": {"message": "provider error in a 200"}})),
        (200, b"not json"),
    ],
)
async def test_errors_are_never_stored(status: int, body: bytes) -> None:
    cache = ResponseCache(CacheSettings(routes={"chat": "always"}), MemoryCache(10, 10_000))
    key = cache.key_for("chat", CHAT, "k", "t")
    assert key is not None
    assert not await cache.store(key, status, body, {})
    assert await cache.lookup(key) is None


async def test_oversized_answers_are_not_stored() -> None:
    settings = CacheSettings(routes={"chat": "always"}, max_entry_bytes=10)
    cache = ResponseCache(settings, MemoryCache(10, 10_000))
    key = cache.key_for("chat", CHAT, "k", "t")
    assert key is not None
    assert not await cache.store(key, 200, ANSWER, {})


async def test_sharing_follows_the_audience_setting() -> None:
    per_key = ResponseCache(CacheSettings(routes={"chat": "always"}), MemoryCache(10, 10_000))
    per_team = ResponseCache(
        CacheSettings(routes={"chat": "always"}, shared="team"), MemoryCache(10, 10_000)
    )
    assert per_key.key_for("chat", CHAT, "k1", "t") != per_key.key_for("chat", CHAT, "k2", "t")
    assert per_team.key_for("chat", CHAT, "k1", "t") == per_team.key_for("chat", CHAT, "k2", "t")


async def test_a_stopped_redis_is_a_miss_not_an_error(
    store: RedisStore, redis_server: RedisServer
) -> None:
    settings = CacheSettings(backend="redis", routes={"chat": "always"})
    cache = ResponseCache.from_settings(settings, store)
    key = cache.key_for("chat", CHAT, "k", "t")
    assert key is not None
    assert await cache.store(key, 200, ANSWER, {})
    redis_server.kill()
    assert await cache.lookup(key) is None
    assert not await cache.store(key, 200, ANSWER, {})


def test_redis_backend_without_redis_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"cache\.backend"):
        ResponseCache.from_settings(CacheSettings(backend="redis"), None)
