"""Prometheus metrics of the shared stores, on the default registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = ["CACHE_LOOKUPS", "FALLBACK_DECISIONS", "REDIS_DEGRADED", "REDIS_OUTAGES"]

REDIS_DEGRADED = Gauge(
    "aiofast_redis_degraded",
    "1 while Redis is unreachable and shared features run on their on_failure policy.",
    ["namespace"],
)
REDIS_OUTAGES = Counter(
    "aiofast_redis_outages",
    "Times Redis became unreachable.",
    ["namespace"],
)
FALLBACK_DECISIONS = Counter(
    "aiofast_redis_fallback_decisions",
    "Admissions decided without Redis, by feature and failure mode.",
    ["feature", "mode"],
)
CACHE_LOOKUPS = Counter(
    "aiofast_cache_lookups",
    "Response cache lookups by result (hit, miss, skip, error).",
    ["backend", "result"],
)
