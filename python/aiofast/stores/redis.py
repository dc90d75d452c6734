"""The Redis connection shared by every Redis-backed feature.

Three promises, kept here once for all features:

- **Bounded**: every call is bounded by the policy's timeouts and never retried
  inside redis-py, so a stopped Redis (SIGSTOP keeps the socket open) costs a
  request at most ``connect_timeout + timeout``.
- **Degrade once, recover by itself**: the first failure marks the store degraded
  (one log line, a metric); from then on calls fail at once without touching the
  network, and a background probe pings Redis until it answers, reloads the
  scripts (a restarted Redis has none) and runs the recovery hooks, such as
  pushing spend recorded locally during the outage.
- **One round trip per script call**: scripts are loaded with SCRIPT LOAD and run
  with EVALSHA; a NOSCRIPT reply (Redis restarted or flushed) reloads and retries once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from hashlib import sha1
from importlib import resources
from typing import Any, TypeVar

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aiofast.errors import StoreUnavailableError
from aiofast.stores import metrics
from aiofast.stores.settings import RedisSettings

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:
    from async_timeout import timeout

__all__ = ["LuaScript", "RedisClient", "RedisStore"]

logger = logging.getLogger("aiofast.stores.redis")

# Errors that mean "Redis cannot be reached", as opposed to a bug in a script.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)

RecoveryHook = Callable[[], Awaitable[None]]
# One endpoint, or a Cluster client that sends each command to the node owning its slot.
RedisClient = Redis | RedisCluster
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A Lua script shipped in ``aiofast/stores/lua/``, addressed by its SHA1."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", sha1(self.source.encode()).hexdigest())

    @classmethod
    def bundled(cls, name: str, *, after: str | None = None) -> LuaScript:
        """The script ``name``.lua, with the shared start ``after``.lua in front of it."""
        folder = resources.files("aiofast.stores").joinpath("lua")
        parts = [after, name] if after else [name]
        source = "\n".join(folder.joinpath(f"{part}.lua").read_text() for part in parts)
        return cls(name, source)


class RedisStore:
    """A pooled asyncio Redis client with bounded calls and a degraded mode."""

    def __init__(self, client: RedisClient, settings: RedisSettings) -> None:
        self.client = client
        self.settings = settings
        self._scripts: dict[str, LuaScript] = {}
        self._degraded_since: float | None = None
        self._last_error = ""
        self._probe: asyncio.Task[None] | None = None
        self._recovery_hooks: list[RecoveryHook] = []

    @classmethod
    def from_settings(cls, settings: RedisSettings, url: str | None = None) -> RedisStore:
        """A store for ``url`` (default: the URL in the ``url_env`` variable); no I/O yet."""
        # No retries inside redis-py: the bound on every call is ours, and a retry
        # would stretch it; the degraded mode and its probe take over instead.
        no_retry = Retry(NoBackoff(), 0)
        options: dict[str, Any] = {
            "max_connections": settings.max_connections,
            "socket_timeout": settings.timeout_s,
            "socket_connect_timeout": settings.connect_timeout_s,
            "retry": no_retry,
            "client_name": "aiofast",
        }
        if settings.cluster:
            # The URL names any one node; the client discovers the others and the slot map.
            return cls(RedisCluster.from_url(url or settings.url(), **options), settings)
        pool = ConnectionPool.from_url(url or settings.url(), **options)
        return cls(Redis(connection_pool=pool, retry=no_retry), settings)

    def key(self, *parts: str) -> str:
        """A key in this store's namespace; the ``{namespace}`` hash tag puts every
        key of one admission in the same Cluster slot."""
        return ":".join((f"{{{self.settings.namespace}}}", *parts))

    @property
    def degraded(self) -> bool:
        return self._degraded_since is not None

    def health(self) -> dict[str, Any]:
        """What ``/aiofast/health`` shows about Redis (never the URL: it may hold a password)."""
        if self._degraded_since is None:
            return {"status": "ok"}
        return {
            "status": "degraded",
            "degraded_for_s": round(time.monotonic() - self._degraded_since, 3),
            "error": self._last_error,
        }

    def on_recovery(self, hook: RecoveryHook) -> None:
        """Run ``hook`` each time Redis answers again after an outage."""
        self._recovery_hooks.append(hook)

    def register(self, script: LuaScript) -> None:
        self._scripts[script.sha] = script

    async def start(self) -> None:
        """Check Redis and load the scripts; if it cannot be reached (or refuses the
        password), start degraded instead of failing: the health route says why."""
        try:
            async with timeout(self.settings.bound_s):
                await self.client.ping()
                await self._load_scripts()
        except _UNREACHABLE as exc:
            self._mark_degraded(exc)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None
        await self.client.aclose()
        if isinstance(self.client, Redis):
            await self.client.connection_pool.disconnect()

    async def run(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA ``script``: one round trip, or StoreUnavailableError within the bound."""

        async def evalsha(client: RedisClient) -> Any:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                await client.script_load(script.source)
                return await client.evalsha(script.sha, len(keys), *keys, *args)

        return await self.command(evalsha)

    async def command(self, call: Callable[[RedisClient], Awaitable[T]]) -> T:
        """Run ``call(client)`` within the bound; StoreUnavailableError when Redis is
        unreachable or already known to be down (then without touching the network)."""
        if self._degraded_since is not None:
            raise StoreUnavailableError(f"Redis is unreachable ({self._last_error})")
        try:
            # The socket timeouts bound each step; this bounds the whole call, connection
            # handshake included, so a stopped Redis costs at most `bound_s`.
            async with timeout(self.settings.bound_s):
                return await call(self.client)
        except _UNREACHABLE as exc:
            self._mark_degraded(exc)
            raise StoreUnavailableError(f"Redis is unreachable ({self._last_error})") from exc

    async def _load_scripts(self) -> None:
        for script in self._scripts.values():
            await self.client.script_load(script.source)

    def _mark_degraded(self, exc: BaseException) -> None:
        self._last_error = type(exc).__name__
        if self._degraded_since is not None:
            return
        self._degraded_since = time.monotonic()
        metrics.REDIS_DEGRADED.labels(self.settings.namespace).set(1)
        metrics.REDIS_OUTAGES.labels(self.settings.namespace).inc()
        logger.warning(
            "Redis unreachable (%s): shared limits degrade to their on_failure policy "
            "until it answers again; probing every %.0f ms",
            self._last_error,
            self.settings.probe_interval_ms,
        )
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        while True:
            await asyncio.sleep(self.settings.probe_interval_ms / 1000)
            try:
                async with timeout(self.settings.bound_s):
                    await self.client.ping()
                    await self._load_scripts()
            except _UNREACHABLE as exc:
                self._last_error = type(exc).__name__
                continue
            break

        outage_s = time.monotonic() - (self._degraded_since or time.monotonic())
        self._degraded_since = None
        self._probe = None
        metrics.REDIS_DEGRADED.labels(self.settings.namespace).set(0)
        logger.warning("Redis answers again after %.1f s; shared limits resume", outage_s)
        for hook in self._recovery_hooks:
            try:
                await hook()
            except StoreUnavailableError:
                # Redis went away again: this marked the store degraded, and the hook
                # keeps what it has not pushed yet for the next recovery.
                return
