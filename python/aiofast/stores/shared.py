"""Everything one gateway process shares with the others through Redis.

Built once per process from the policy's ``[redis]`` section; the pipeline asks it for
the shared limiter, router and response cache, starts it with the application and
closes it on shutdown::

    shared = SharedState(policy.redis)
    limiter = shared.limiter(policy.limits)          # async admit / settle
    router = shared.router(policy.routing)           # the routing Router, shared breakers
    cache = shared.cache(policy.cache)               # ResponseCache on Redis or memory
    await shared.start()
    ...
    health["redis"] = shared.health()
    await shared.close()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from aiofast.cache import CacheSettings, ResponseCache
from aiofast.limits import LimitConfig
from aiofast.routing import RoutingSpec
from aiofast.stores import metrics
from aiofast.stores.redis import RedisStore
from aiofast.stores.redis_routing import SharedRouter
from aiofast.stores.settings import RedisSettings
from aiofast.stores.shared_limits import SharedLimiter

__all__ = ["SharedState"]


class SharedState:
    """The Redis connection of one process and the shared features built on it."""

    def __init__(self, settings: RedisSettings, *, url: str | None = None) -> None:
        self.settings = settings
        self.store = RedisStore.from_settings(settings, url)
        self._routers: list[SharedRouter] = []

    def limiter(
        self,
        limits: Iterable[Mapping[str, Any] | LimitConfig],
        *,
        reservation_ttl: float = 600.0,
    ) -> SharedLimiter:
        return SharedLimiter(limits, self.store, reservation_ttl=reservation_ttl)

    def router(
        self, spec: RoutingSpec | Mapping[str, Any], *, sync_interval: float = 0.25
    ) -> SharedRouter:
        router = SharedRouter(spec, self.store, sync_interval=sync_interval)
        self._routers.append(router)
        return router

    def cache(self, settings: CacheSettings) -> ResponseCache:
        return ResponseCache.from_settings(settings, self.store)

    def register_metrics(self, registry: CollectorRegistry) -> None:
        metrics.register(registry)

    async def start(self) -> None:
        """Load the scripts (or start degraded if Redis is down) and start syncing."""
        await self.store.start()
        for router in self._routers:
            router.shared.start()

    async def close(self) -> None:
        for router in self._routers:
            await router.shared.close()
        await self.store.close()

    def health(self) -> dict[str, Any]:
        """For ``/aiofast/health``: ``{"status": "ok"}`` or degraded with how long and why."""
        return self.store.health()
