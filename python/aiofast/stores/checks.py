"""What one admission asks of the shared limits, and what it gets back.

An admission is a list of checks: one per meter (requests, tokens, concurrency,
budget) of every limit that applies to the request, each with the amount this
request needs. Checks of one limit share a ``group``: a limit commits only if all
its meters fit, and a request is admitted only if no enforced limit refuses it. The
decisions are those of the in-process limiter (``aiofast.limits``), including its
refusal codes, so a refusal reads the same whichever backend decided it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = [
    "NANO_USD",
    "ROLLING_SLOTS",
    "Admission",
    "BudgetCheck",
    "CalendarPeriod",
    "Check",
    "CheckResult",
    "Code",
    "ConcurrencyCheck",
    "Feature",
    "RateCheck",
    "Reservation",
    "RollingPeriod",
    "Source",
    "usd_to_nano",
    "usd_to_nano_ceil",
]

NANO_USD = 1_000_000_000
"""Money is counted in integer nano-dollars: exact sums, no float drift."""

ROLLING_SLOTS = 16
"""A rolling window is counted in this many slots (as in the in-process limiter)."""

Feature = Literal["requests", "tokens", "concurrency", "budgets"]
Source = Literal["redis", "local", "open", "closed"]
Code = Literal[
    "ok",
    "rate_limit_exceeded",
    "concurrency_limit_exceeded",
    "budget_exceeded",
    "insufficient_quota",
    "request_too_large",
    "store_unavailable",
]


def usd_to_nano(usd: float) -> int:
    """Dollars to nano-dollars, to nearest: budgets and billed costs."""
    return max(0, round(usd * NANO_USD))


def usd_to_nano_ceil(usd: float) -> int:
    """Dollars to nano-dollars, rounding up: reservations must not under-reserve."""
    return max(0, math.ceil(usd * NANO_USD))


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
    group: int = 0
    hold_s: float = 600.0
    """Tokens only: how long the reservation waits for its settle (then it stands)."""

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
    group: int = 0

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
        # Time-zone arithmetic costs more than the rest of an admission: reuse the
        # window until the period ends.
        now_ms = now.timestamp() * 1000
        cached = _WINDOWS.get(self)
        if cached is not None and cached[1] <= now_ms < cached[2]:
            return cached
        window = self._compute_window(now)
        _WINDOWS[self] = window
        return window

    def _compute_window(self, now: datetime) -> tuple[tuple[str, str, str], int, int]:
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
    """The last ``window_s`` seconds, counted in 16 slots (a slot counts in full until
    it has wholly left the window, so spend is never under-counted)."""

    window_s: float

    @property
    def slot_ms(self) -> int:
        return max(1, math.ceil(self.window_s * 1000 / ROLLING_SLOTS))


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """Spend per period; ``cost_usd`` is reserved now and replaced by the real cost at
    settle. A hold not settled within ``hold_s`` is charged at its reserved amount.
    ``downgrade_at`` (a fraction of the limit) flags an admission that brings spend and
    reservations to that share."""

    scope: str
    limit_usd: float
    cost_usd: float
    period: CalendarPeriod | RollingPeriod
    hold_s: float = 600.0
    shadow: bool = False
    group: int = 0
    downgrade_at: float | None = None

    @property
    def feature(self) -> Feature:
        return "budgets"

    @property
    def limit_nano(self) -> int:
        return usd_to_nano(self.limit_usd)

    @property
    def cost_nano(self) -> int:
        return usd_to_nano_ceil(self.cost_usd)

    @property
    def downgrade_at_nano(self) -> int:
        return 0 if self.downgrade_at is None else round(self.limit_nano * self.downgrade_at)


Check = RateCheck | ConcurrencyCheck | BudgetCheck

_WINDOWS: dict[CalendarPeriod, tuple[tuple[str, str, str], int, int]] = {}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The decision of one check.

    ``remaining`` is in the check's unit (requests, tokens, slots, or dollars for
    budgets) after this request when it was admitted; ``retry_after_s`` is None when
    waiting would not help (a spent monthly budget, a request that can never fit).
    """

    scope: str
    limit: Feature
    admitted: bool
    remaining: float
    reset_s: float
    retry_after_s: float | None
    shadow: bool = False
    code: Code = "ok"
    near_exhaustion: bool = False
    group: int = 0


@dataclass(slots=True)
class Reservation:
    """What an admitted request holds until it settles.

    ``checks`` are the checks that reserved something; ``places`` says, per check, where
    the backend keeps it (Redis keys).
    """

    id: str
    source: Source
    checks: tuple[Check, ...]
    places: tuple[tuple[str, ...], ...]
    marks: tuple[float, ...] = ()
    """Per check, the meter's charge count right after this admission (rate meters)."""
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to one admission: admitted or not, every check's decision, the
    enforced refusal that matters most, and where the decision was taken."""

    admitted: bool
    results: tuple[CheckResult, ...]
    source: Source
    reservation: Reservation | None = None
    refusal: CheckResult | None = None

    @classmethod
    def of(
        cls, results: tuple[CheckResult, ...], source: Source, reservation: Reservation | None
    ) -> Admission:
        refusal = None
        for result in results:
            if not result.admitted and not result.shadow:
                refusal = result if refusal is None else _worse(refusal, result)
        return cls(
            refusal is None, results, source, reservation if refusal is None else None, refusal
        )


def _worse(current: CheckResult, other: CheckResult) -> CheckResult:
    """The refusal to report: one that waiting cannot cure, else the longer wait."""
    if current.retry_after_s is None:
        return current
    if other.retry_after_s is None or other.retry_after_s > current.retry_after_s:
        return other
    return current


def _midnight_ms(day: date, zone: ZoneInfo) -> int:
    """Epoch milliseconds of the start of ``day`` in ``zone`` (DST-aware)."""
    return int(datetime.combine(day, time(0), tzinfo=zone).timestamp() * 1000)
