"""Shared state for several gateway processes: Redis-backed limits, budgets,
breakers, experiment counters and the response cache.

Import what you need from the submodules; the names below are the entry points.
"""

from __future__ import annotations

__all__ = [
    "FailurePolicy",
    "RedisSettings",
    "RedisStore",
    "SharedLimiter",
    "SharedRouter",
    "SharedState",
]


def __getattr__(name: str) -> object:
    # Lazy, so that `aiofast.stores.metrics` and the settings import without the rest.
    if name in ("FailurePolicy", "RedisSettings"):
        from aiofast.stores import settings

        return getattr(settings, name)
    if name == "RedisStore":
        from aiofast.stores.redis import RedisStore

        return RedisStore
    if name == "SharedLimiter":
        from aiofast.stores.shared_limits import SharedLimiter

        return SharedLimiter
    if name == "SharedRouter":
        from aiofast.stores.redis_routing import SharedRouter

        return SharedRouter
    if name == "SharedState":
        from aiofast.stores.shared import SharedState

        return SharedState
    raise AttributeError(f"module 'aiofast.stores' has no attribute {name!r}")
