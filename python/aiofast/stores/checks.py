"""What one admission asks of the shared limits, and what it gets back.

An admission is a list of checks, one per limit of every scope that applies to the
request, each with the amount this request needs. The Redis script and the
in-process fallback decide the same list the same way: a request is admitted only
if every enforced check admits it, and then every admitting check reserves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = [
    "NANO_USD",
    "Admission",
    "BudgetCheck",
    "CalendarPeriod",
    "Check",
    "CheckResult",
    "ConcurrencyCheck",
    "Feature",
    "RateCheck",
    "Reservation",
    "RollingPeriod",
    "Source",
    "usd_to_nano",
]

NANO_USD = 1_000_000_000
"""Money is counted in integer nano-dollars in Redis: exact sums, no float drift."""

Feature = Literal["requests", "tokens", "concurrency", "budgets"]
Source = Literal["redis", "local", "open", "closed"]


def usd_to_nano(usd: float) -> int:
    return round(usd * NANO_USD)


@dataclass(frozen=True, slots=True)
class RateCheck:
    """Requests or tokens per period, by GCRA: ``burst`` units back to back, then one
    unit every ``period_s / limit``."""

    scope: str
    limit: int
    period_s: float
    burst: int
    amount: int
    unit: Literal["requests", "tokens"] = "requests"
    shadow: bool = False

    @property
    def feature(self) -> Feature:
        return self.unit

    @property
    def interval_ms(self) -> float:
        return self.period_s * 1000 / self.limit


@dataclass(frozen=True, slots=True)
class ConcurrencyCheck:
    """At most ``limit`` requests in flight; a holder that never settles leaves after
    ``lease_s``."""

    scope: str
    limit: int
    lease_s: float = 600.0
    shadow: bool = False

    @property
    def feature(self) -> Feature:
        return "concurrency"


@dataclass(frozen=True, slots=True)
class CalendarPeriod:
    """A calendar day or month in a time zone; the period's label is part of the key,
    so a new period starts from zero without a reset job."""

    unit: Literal["day", "month"]
    tz: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def window(self, now: datetime) -> tuple[tuple[str, str, str], int, int]:
        """Labels of the previous, current and next period, and the current period's
        start and end in epoch milliseconds. Redis picks among the three by its own
        clock, so a gateway whose clock is a little off still charges the right one."""
        zone = self.zone
        today = now.astimezone(zone).date()
        if self.unit == "day":
            first = today
            previous = today - timedelta(days=1)
            following = today + timedelta(days=1)
            labels = (f"{previous:%Y-%m-%d}", f"{first:%Y-%m-%d}", f"{following:%Y-%m-%d}")
        else:
            first = today.replace(day=1)
            previous = (first - timedelta(days=1)).replace(day=1)
            following = (first + timedelta(days=31)).replace(day=1)
            labels = (f"{previous:%Y-%m}", f"{first:%Y-%m}", f"{following:%Y-%m}")
        return labels, _midnight_ms(first, zone), _midnight_ms(following, zone)


@dataclass(frozen=True, slots=True)
class RollingPeriod:
    """The last ``window_s`` seconds, counted in ``buckets`` slices (a slice counts
    in full until it has wholly left the window, so spend is never under-counted)."""

    window_s: float
    buckets: int = 60

    @property
    def bucket_ms(self) -> int:
        return max(1, int(self.window_s * 1000 / self.buckets))


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """Spend per period; ``cost_usd`` is reserved now and replaced by the real cost
    at settle. A hold not settled within ``hold_s`` is charged at its reserved amount."""

    scope: str
    limit_usd: float
    cost_usd: float
    period: CalendarPeriod | RollingPeriod
    hold_s: float = 900.0
    shadow: bool = False

    @property
    def feature(self) -> Feature:
        return "budgets"

    @property
    def limit_nano(self) -> int:
        return usd_to_nano(self.limit_usd)

    @property
    def cost_nano(self) -> int:
        # Reserve the worst case: round up to the next nano-dollar.
        return -(-round(self.cost_usd * NANO_USD * 1000) // 1000)


Check = RateCheck | ConcurrencyCheck | BudgetCheck


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The decision of one check. ``remaining`` is in the check's unit (requests,
    tokens, slots, or dollars for budgets); ``retry_after_s`` is None when waiting
    would not help (an exhausted calendar budget, a request larger than the burst)."""

    scope: str
    limit: Feature
    admitted: bool
    remaining: float
    reset_s: float
    retry_after_s: float | None
    shadow: bool = False


@dataclass(slots=True)
class Reservation:
    """What an admitted request holds until it settles.

    ``checks`` are the checks that reserved something; ``places`` says, per check,
    where the backend keeps it (Redis keys of the chosen budget period, say).
    """

    id: str
    source: Source
    checks: tuple[Check, ...]
    places: tuple[tuple[str, ...], ...]
    settled: bool = False
    mirror: Reservation | None = None
    """The same request recorded in the in-process fallback (see SharedLimiter)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to one admission: admitted or not, every check's decision, the
    first enforced refusal, and where the decision was taken."""

    admitted: bool
    results: tuple[CheckResult, ...]
    source: Source
    reservation: Reservation | None = None
    refusal: CheckResult | None = None

    @classmethod
    def of(
        cls, results: tuple[CheckResult, ...], source: Source, reservation: Reservation | None
    ) -> Admission:
        refusal = next((r for r in results if not r.admitted and not r.shadow), None)
        return cls(
            refusal is None, results, source, reservation if refusal is None else None, refusal
        )


def _midnight_ms(day: date, zone: ZoneInfo) -> int:
    """Epoch milliseconds of the start of ``day`` in ``zone`` (DST-aware)."""
    return int(datetime.combine(day, time(0), tzinfo=zone).timestamp() * 1000)
