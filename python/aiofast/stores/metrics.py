"""Prometheus metrics of the shared stores.

They belong to no registry at import: a gateway adds them to its own registry with
:func:`register`, next to its other metrics, so several gateways (or tests) in one
process each expose them.
"""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["CACHE_LOOKUPS", "FALLBACK_DECISIONS", "REDIS_DEGRADED", "REDIS_OUTAGES", "register"]

REDIS_DEGRADED = Gauge(
    "aiofast_redis_degraded",
    "1 while Redis is unreachable and shared features run on their on_failure policy.",
    ["namespace"],
    registry=None,
)
REDIS_OUTAGES = Counter(
    "aiofast_redis_outages",
    "Times Redis became unreachable.",
    ["namespace"],
    registry=None,
)
FALLBACK_DECISIONS = Counter(
    "aiofast_redis_fallback_decisions",
    "Limit meters decided without Redis, by meter kind and failure mode.",
    ["feature", "mode"],
    registry=None,
)
CACHE_LOOKUPS = Counter(
    "aiofast_cache_lookups",
    "Response cache lookups by result (hit, miss, error).",
    ["backend", "result"],
    registry=None,
)

_ALL = (REDIS_DEGRADED, REDIS_OUTAGES, FALLBACK_DECISIONS, CACHE_LOOKUPS)
_REGISTERED: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


def register(registry: CollectorRegistry) -> None:
    """Expose the store metrics in ``registry`` (once per registry)."""
    if registry in _REGISTERED:
        return
    for metric in _ALL:
        registry.register(metric)
    _REGISTERED.add(registry)
