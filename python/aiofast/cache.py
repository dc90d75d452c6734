"""Exact response cache: the same normalised request gets the same answer, at no cost.

Opt-in per API route in the ``[cache]`` section of the policy:

```toml
[cache]
backend = "redis"        # or "memory" (per process); redis needs the [redis] section
ttl_s = 600
max_entries = 10000      # memory backend bounds; redis relies on the TTL and maxmemory
max_bytes = 67108864
max_entry_bytes = 1048576
shared = "key"           # who may get an answer cached for someone else: key | team | all

[cache.routes]
chat = "deterministic"   # only temperature 0 (and n = 1)
embeddings = "always"    # explicit opt-in: every request of this route
```

Only whole successful answers are stored (status 200 with a JSON object that is not
an error); streams are neither served from nor stored in the cache. A hit returns the
stored body unchanged with ``x-aiofast-cache: hit`` and costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field

from aiofast.errors import ConfigError, StoreUnavailableError
from aiofast.stores import metrics

if TYPE_CHECKING:
    # Only a policy with [redis] loads redis-py (several MiB of a gateway's memory).
    from aiofast.stores.redis import RedisStore

__all__ = [
    "CACHE_HEADER",
    "CacheSettings",
    "CachedResponse",
    "MemoryCache",
    "RedisCache",
    "ResponseCache",
    "request_key",
]

logger = logging.getLogger("aiofast.cache")

CACHE_HEADER = "x-aiofast-cache"
CacheMode = Literal["off", "deterministic", "always"]
CachedApi = Literal["chat", "embeddings", "messages"]

# Fields that change how an answer is delivered or attributed, not what it says.
_NOT_PART_OF_THE_ANSWER = frozenset({"stream", "stream_options", "user", "metadata", "store"})


class CacheSettings(BaseModel):
    """Validated ``[cache]`` section; every route is off unless listed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["memory", "redis"] = "memory"
    ttl_s: float = Field(default=600.0, gt=0, le=30 * 86_400)
    max_entries: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_entry_bytes: int = Field(default=1024 * 1024, ge=1)
    shared: Literal["key", "team", "all"] = "key"
    routes: dict[CachedApi, CacheMode] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CachedResponse:
    body: bytes
    headers: dict[str, str]


def request_key(api: str, body: dict[str, Any], mode: CacheMode, audience: str) -> str | None:
    """The cache key of a request, or None when it must not be cached.

    ``audience`` is who may share the answer (a key digest, a team, or "" for all).
    """
    if mode == "off" or body.get("stream") is True:
        return None
    if mode == "deterministic" and not _deterministic(body):
        return None
    answer_fields = {k: v for k, v in body.items() if k not in _NOT_PART_OF_THE_ANSWER}
    try:
        canonical = orjson.dumps(answer_fields, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    digest = hashlib.sha256(canonical)
    digest.update(b"\0" + api.encode() + b"\0" + audience.encode())
    return digest.hexdigest()


def _deterministic(body: dict[str, Any]) -> bool:
    temperature = body.get("temperature")
    n = body.get("n", 1)
    return (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and temperature == 0
        and n in (1, None)
    )


class CacheBackend(Protocol):
    name: str

    async def get(self, key: str) -> CachedResponse | None: ...

    async def set(self, key: str, response: CachedResponse, ttl_s: float) -> None: ...


class MemoryCache:
    """LRU in this process, bounded by entry count and total body bytes."""

    name = "memory"

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[float, CachedResponse]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    async def get(self, key: str) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, response = entry
        if expires <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return response

    async def set(self, key: str, response: CachedResponse, ttl_s: float) -> None:
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + ttl_s, response)
        self._bytes += len(response.body)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, response = self._entries.pop(key)
        self._bytes -= len(response.body)


class RedisCache:
    """Entries shared by every process, each a string with a TTL.

    Cache keys carry no hash tag on purpose: unlike an admission's keys they need no
    common slot, so on a Cluster they spread over every node.
    """

    name = "redis"

    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def _key(self, key: str) -> str:
        return f"{self.store.settings.namespace}:cache:{key}"

    async def get(self, key: str) -> CachedResponse | None:
        raw = await self.store.command(lambda client: client.get(self._key(key)))
        if not isinstance(raw, bytes):
            return None
        header_line, _, body = raw.partition(b"\n")
        return CachedResponse(body, orjson.loads(header_line))

    async def set(self, key: str, response: CachedResponse, ttl_s: float) -> None:
        value = orjson.dumps(response.headers) + b"\n" + response.body
        px = max(1, int(ttl_s * 1000))
        await self.store.command(lambda client: client.set(self._key(key), value, px=px))


class ResponseCache:
    """Looks requests up and stores successful answers; Redis errors count as misses."""

    def __init__(self, settings: CacheSettings, backend: CacheBackend) -> None:
        self.settings = settings
        self.backend = backend

    @classmethod
    def from_settings(cls, settings: CacheSettings, store: RedisStore | None) -> ResponseCache:
        if settings.backend == "redis":
            if store is None:
                raise ConfigError(
                    'cache.backend = "redis" needs a [redis] section with a reachable URL; '
                    'add one or set cache.backend = "memory"'
                )
            return cls(settings, RedisCache(store))
        return cls(settings, MemoryCache(settings.max_entries, settings.max_bytes))

    def key_for(self, api: str, body: dict[str, Any], key: str, team: str) -> str | None:
        """The cache key of this request for this caller, or None when not cacheable."""
        mode: CacheMode = "off"
        for route, route_mode in self.settings.routes.items():
            if route == api:
                mode = route_mode
        audience = {"key": f"key:{key}", "team": f"team:{team}", "all": ""}[self.settings.shared]
        return request_key(api, body, mode, audience)

    async def lookup(self, cache_key: str) -> CachedResponse | None:
        try:
            hit = await self.backend.get(cache_key)
        except StoreUnavailableError:
            metrics.CACHE_LOOKUPS.labels(self.backend.name, "error").inc()
            return None
        metrics.CACHE_LOOKUPS.labels(self.backend.name, "hit" if hit else "miss").inc()
        return hit

    async def store(
        self, cache_key: str, status: int, body: bytes, headers: dict[str, str]
    ) -> bool:
        """Store a successful answer; errors and oversized bodies are never stored."""
        if status != 200 or len(body) > self.settings.max_entry_bytes or not _success(body):
            return False
        try:
            await self.backend.set(cache_key, CachedResponse(body, headers), self.settings.ttl_s)
        except StoreUnavailableError:
            return False
        return True


def _success(body: bytes) -> bool:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and "error" not in parsed
