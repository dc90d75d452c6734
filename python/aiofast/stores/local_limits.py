"""The in-process fallback used while Redis is unreachable.

It decides the same checks the same way as ``lua/admit.lua`` (GCRA, in-flight
holders, budget holds that expire into spend), on this process's share of each
limit: the limit divided by the number of instances that share Redis, rounded
down so that the instances together never exceed it. It is kept warm: requests
admitted through Redis are recorded here too, so when Redis goes away a process
that has already used its share cannot start over from zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from aiofast.stores.checks import (
    NANO_USD,
    Admission,
    BudgetCheck,
    CalendarPeriod,
    Check,
    CheckResult,
    Code,
    ConcurrencyCheck,
    RateCheck,
    Reservation,
    RollingPeriod,
    usd_to_nano,
)

__all__ = ["LocalLimiter", "share_of"]

_SWEEP_EVERY = 4096
_REFUSAL_CODES: dict[str, Code] = {
    "requests": "rate_limit_exceeded",
    "tokens": "rate_limit_exceeded",
    "concurrency": "concurrency_limit_exceeded",
    "budgets": "budget_exceeded",
}


def share_of(check: Check, instances: int) -> Check:
    """``check`` with its limit divided among ``instances`` processes (rounded down)."""
    if instances == 1:
        return check
    if isinstance(check, RateCheck):
        return replace(check, limit=check.limit // instances, burst=check.burst // instances)
    if isinstance(check, ConcurrencyCheck):
        return replace(check, limit=check.limit // instances)
    return replace(check, limit_usd=check.limit_usd / instances)


@dataclass(slots=True)
class _Spend:
    """Spend of one budget period (calendar) or window (rolling), in nano-dollars."""

    spent: int = 0
    reserved: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)
    buckets: dict[int, int] = field(default_factory=dict)
    expires_ms: float = 0.0


class LocalLimiter:
    """Admit and settle in this process, with each limit cut to this process's share."""

    def __init__(
        self,
        instances: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.instances = instances
        self._clock = clock
        self._wall = wall_clock
        self._tats: dict[str, float] = {}
        self._holders: dict[str, dict[str, float]] = {}
        self._spend: dict[str, _Spend] = {}
        self._admissions = 0

    def admit(
        self, checks: Sequence[Check], request_id: str, *, record_only: bool = False
    ) -> Admission:
        """Decide ``checks`` on this process's share; with ``record_only`` take what they
        ask without refusing (a request Redis already admitted)."""
        self._admissions += 1
        if self._admissions % _SWEEP_EVERY == 0:
            self._sweep()

        now = self._clock() * 1000
        wall = self._wall() * 1000
        shares = [share_of(check, self.instances) for check in checks]
        decisions = [self._decide(check, now, wall) for check in shares]
        admitted = record_only or all(
            ok or check.shadow for check, (ok, *_) in zip(shares, decisions, strict=True)
        )

        results: list[CheckResult] = []
        reserved: list[Check] = []
        places: list[tuple[str, ...]] = []
        for check, (ok, remaining, reset_ms, retry_ms, place) in zip(
            shares, decisions, strict=True
        ):
            take = admitted and (ok or record_only)
            if take:
                self._commit(check, place, request_id, now, wall)
                reserved.append(check)
                places.append((place,))
            results.append(_result(check, ok, remaining, reset_ms, retry_ms, take))
        reservation = Reservation(request_id, "local", tuple(reserved), tuple(places))
        return Admission.of(tuple(results), "local", reservation if admitted else None)

    def settle(
        self, reservation: Reservation, *, tokens: int | None = None, cost_usd: float = 0.0
    ) -> list[tuple[BudgetCheck, int]]:
        """Release the holds and charge the real use. Returns the budget charges made,
        so the caller can replay them into Redis once it is back."""
        if reservation.settled:
            return []
        reservation.settled = True
        now = self._clock() * 1000
        wall = self._wall() * 1000
        used = usd_to_nano(cost_usd)
        charges: list[tuple[BudgetCheck, int]] = []
        for check, (place,) in zip(reservation.checks, reservation.places, strict=True):
            if isinstance(check, RateCheck):
                if check.unit == "tokens" and tokens is not None and check.limit > 0:
                    self._adjust_tat(place, (tokens - check.amount) * check.interval_ms, now)
            elif isinstance(check, ConcurrencyCheck):
                self._holders.get(place, {}).pop(reservation.id, None)
            elif self._release(check, place, reservation.id, used, wall):
                charges.append((check, used))
        return charges

    def _decide(
        self, check: Check, now: float, wall: float
    ) -> tuple[bool, float, float, float, str]:
        if isinstance(check, RateCheck):
            return self._decide_rate(check, now)
        if isinstance(check, ConcurrencyCheck):
            place = f"conc:{check.scope}"
            holders = self._holders.get(place, {})
            for rid in [rid for rid, until in holders.items() if until <= now]:
                del holders[rid]
            return len(holders) < check.limit, check.limit - len(holders), 0, -1, place
        return self._decide_budget(check, wall)

    def _decide_rate(self, check: RateCheck, now: float) -> tuple[bool, float, float, float, str]:
        place = f"rate:{check.scope}:{check.unit}"
        if check.limit <= 0:
            return False, 0, 0, -1, place
        interval = check.interval_ms
        tat = max(self._tats.get(place, now), now)
        span = check.burst * interval
        allow_at = tat + check.amount * interval - span
        before = min((now + span - tat) // interval, check.burst)
        if allow_at <= now:
            return True, before, tat - now, 0, place
        retry = -1.0 if check.amount > check.burst else allow_at - now
        return False, before, tat - now, retry, place

    def _decide_budget(
        self, check: BudgetCheck, wall: float
    ) -> tuple[bool, float, float, float, str]:
        place, reset_ms = _budget_place(check, wall)
        spend = self._spend.get(place) or _Spend()
        self._expire_holds(check, spend, wall)
        spent = spend.spent
        if isinstance(check.period, RollingPeriod):
            first_live = (wall - check.period.window_s * 1000) // check.period.slot_ms + 1
            spent = sum(v for index, v in spend.buckets.items() if index >= first_live)
        left = check.limit_nano - spent - spend.reserved
        retry = reset_ms if isinstance(check.period, CalendarPeriod) else -1
        return check.cost_nano <= left, max(left, 0), reset_ms, retry, place

    def _commit(self, check: Check, place: str, rid: str, now: float, wall: float) -> None:
        if isinstance(check, RateCheck):
            if check.limit > 0:
                self._adjust_tat(place, check.amount * check.interval_ms, now)
        elif isinstance(check, ConcurrencyCheck):
            self._holders.setdefault(place, {})[rid] = now + check.lease_s * 1000
        else:
            spend = self._spend.setdefault(place, _Spend())
            spend.reserved += check.cost_nano
            spend.holds[rid] = (check.cost_nano, wall + check.hold_s * 1000)
            spend.expires_ms = max(spend.expires_ms, wall + _keep_ms(check))

    def _adjust_tat(self, place: str, delta_ms: float, now: float) -> None:
        tat = max(self._tats.get(place, now), now) + delta_ms
        if tat > now:
            self._tats[place] = tat
        else:
            self._tats.pop(place, None)

    def _release(self, check: BudgetCheck, place: str, rid: str, used: int, wall: float) -> bool:
        spend = self._spend.get(place)
        if spend is None or rid not in spend.holds:
            return False
        amount, _ = spend.holds.pop(rid)
        spend.reserved -= amount
        self._charge(check, spend, used, wall)
        return True

    def _expire_holds(self, check: BudgetCheck, spend: _Spend, wall: float) -> None:
        for rid in [rid for rid, (_, until) in spend.holds.items() if until <= wall]:
            amount, _ = spend.holds.pop(rid)
            spend.reserved -= amount
            self._charge(check, spend, amount, wall)

    @staticmethod
    def _charge(check: BudgetCheck, spend: _Spend, amount: int, wall: float) -> None:
        if isinstance(check.period, RollingPeriod):
            index = int(wall // check.period.slot_ms)
            spend.buckets[index] = spend.buckets.get(index, 0) + amount
        else:
            spend.spent += amount

    def _sweep(self) -> None:
        """Forget idle state so memory stays bounded under many distinct scopes."""
        now = self._clock() * 1000
        wall = self._wall() * 1000
        self._tats = {place: tat for place, tat in self._tats.items() if tat > now}
        self._holders = {place: h for place, h in self._holders.items() if h}
        self._spend = {
            place: s for place, s in self._spend.items() if s.holds or s.expires_ms > wall
        }


def _budget_place(check: BudgetCheck, wall: float) -> tuple[str, float]:
    if isinstance(check.period, CalendarPeriod):
        labels, _, end_ms = check.period.window(datetime.fromtimestamp(wall / 1000, timezone.utc))
        return f"spend:{check.scope}:{labels[1]}", end_ms - wall
    return f"spend:{check.scope}:rolling{int(check.period.window_s)}s", 0.0


def _keep_ms(check: BudgetCheck) -> float:
    if isinstance(check.period, RollingPeriod):
        return check.period.window_s * 1000 + check.hold_s * 1000
    return (2 if check.period.unit == "day" else 35) * 86_400_000


def _result(
    check: Check, ok: bool, remaining: float, reset_ms: float, retry_ms: float, taken: bool
) -> CheckResult:
    if taken and not isinstance(check, ConcurrencyCheck):
        remaining -= check.amount if isinstance(check, RateCheck) else check.cost_nano
    elif taken:
        remaining -= 1
    retry_after = None if ok or retry_ms < 0 else retry_ms / 1000
    code: Code = "ok" if ok else _REFUSAL_CODES[check.feature]
    if isinstance(check, BudgetCheck):
        remaining /= NANO_USD
        monthly = isinstance(check.period, CalendarPeriod) and check.period.unit == "month"
        if monthly:
            retry_after = None
    return CheckResult(
        check.scope,
        check.feature,
        ok,
        max(remaining, 0),
        max(reset_ms, 0) / 1000,
        retry_after,
        check.shadow,
        code,
        group=check.group,
    )
