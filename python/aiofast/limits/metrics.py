"""The limiter as operators see it: Prometheus series and the ``/aiofast/usage`` report.

Both read :meth:`Limiter.snapshot`, which locks one shard at a time, so scraping never
stalls admissions. Series per scope value (spend, remaining budget, requests in flight)
are capped per limit, because a per-user limit can hold millions of values; the totals
per limit are always complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aiofast._core import Limiter

__all__ = ["LimitsCollector", "usage_report"]


class LimitsCollector(Collector):
    """Exports a limiter's refusals, spend and remaining budget to Prometheus.

    Register it once: ``registry.register(LimitsCollector(limiter))``.
    """

    def __init__(self, limiter: Limiter, *, max_series_per_limit: int = 1000) -> None:
        self._limiter = limiter
        self._max_series = max_series_per_limit

    def collect(self) -> Iterator[Metric]:
        refusals = CounterMetricFamily(
            "aiofast_limit_refusals",
            "Requests refused (enforce) or that would have been refused (shadow), "
            "by limit, scope and meter",
            labels=["limit", "scope", "kind", "mode"],
        )
        keys = GaugeMetricFamily(
            "aiofast_limit_keys", "Scope values held in memory", labels=["limit", "scope"]
        )
        spent_total = GaugeMetricFamily(
            "aiofast_limit_spent_usd_total",
            "Spend of all scope values in their current budget period",
            labels=["limit", "scope"],
        )
        value_labels = ["limit", "scope", "scope_value"]
        spent = GaugeMetricFamily(
            "aiofast_limit_spent_usd", "Spend in the current budget period", labels=value_labels
        )
        reserved = GaugeMetricFamily(
            "aiofast_limit_reserved_usd",
            "Worst-case cost held by requests in flight",
            labels=value_labels,
        )
        remaining = GaugeMetricFamily(
            "aiofast_limit_remaining_usd",
            "Budget left in the current period",
            labels=value_labels,
        )
        in_flight = GaugeMetricFamily(
            "aiofast_limit_in_flight", "Requests in flight", labels=value_labels
        )
        expired = CounterMetricFamily(
            "aiofast_limit_reservations_expired",
            "Reservations never settled, settled at their reserved amount after their time to live",
        )
        expired.add_metric([], self._limiter.expired_total())
        for view in self._limiter.snapshot(self._max_series):
            name, scope = view["name"], view["scope"]
            for kind, counts in view["refusals"].items():
                for mode in ("enforce", "shadow"):
                    refusals.add_metric([name, scope, kind, mode], counts[mode])
            keys.add_metric([name, scope], view["keys"])
            if any(e["budget"] is not None for e in view["entries"]):
                spent_total.add_metric([name, scope], view["spent_usd"])
            for entry in view["entries"]:
                labels = [name, scope, entry["scope_value"]]
                if entry["in_flight"] is not None:
                    in_flight.add_metric(labels, entry["in_flight"])
                budget = entry["budget"]
                if budget is not None:
                    spent.add_metric(labels, budget["spent_usd"])
                    reserved.add_metric(labels, budget["reserved_usd"])
                    remaining.add_metric(labels, budget["remaining_usd"])
        yield from (refusals, expired, keys, spent_total, spent, reserved, remaining, in_flight)


def usage_report(limiter: Limiter, *, max_entries: int = 1000) -> dict[str, Any]:
    """The limits part of ``/aiofast/usage``: per limit its refusals, total spend and up to
    ``max_entries`` scope values with their budget and headroom (JSON-ready)."""
    return {
        "limits": limiter.snapshot(max_entries),
        "max_entries_per_limit": max_entries,
        "reservations_expired": limiter.expired_total(),
        "reservations_outstanding": limiter.outstanding(),
    }
