"""Limits and budgets shared by every gateway process, decided inside Redis.

One admission is one EVALSHA of ``lua/admit.lua`` (every scope, every limit, the
budget holds: one round trip, atomic); one settle is one EVALSHA of
``lua/settle.lua``. Key layout, all under the ``{namespace}`` hash tag:

    rate:<scope>:<unit>              GCRA theoretical arrival time (ms, from Redis TIME)
    conc:<scope>                     sorted set of in-flight request ids, scored by lease end
    spend:<scope>:<period label>     hash: spent, reserved (nano-dollars); rolling: per bucket
    holds:<scope>:<period label>     sorted set of "<request id>:<amount>" by hold expiry
    settled:<request id>             marker that makes settle idempotent

Every key carries a TTL: rate keys until the bucket is full again, holders until
their lease ends, spend keys until their period is over plus a retention for reports.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from aiofast.stores.checks import (
    NANO_USD,
    Admission,
    BudgetCheck,
    CalendarPeriod,
    Check,
    CheckResult,
    ConcurrencyCheck,
    RateCheck,
    Reservation,
    RollingPeriod,
    usd_to_nano,
)
from aiofast.stores.redis import LuaScript, RedisStore

__all__ = ["RedisLimiter"]

ADMIT = LuaScript.bundled("admit")
SETTLE = LuaScript.bundled("settle")

# How long a finished period's spend stays readable (reports, /aiofast/usage).
_RETENTION_MS = {"day": 2 * 86_400_000, "month": 35 * 86_400_000}
_REPLY_FIELDS = 5


class RedisLimiter:
    """Admit and settle against limits kept in Redis."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        store.register(ADMIT)
        store.register(SETTLE)

    async def admit(self, checks: Sequence[Check], request_id: str | None = None) -> Admission:
        """Decide every check in one round trip; raises StoreUnavailableError within
        the store's bound when Redis cannot be reached."""
        rid = request_id or uuid.uuid4().hex
        now = datetime.now(timezone.utc)
        keys: list[str] = []
        args: list[Any] = [rid, len(checks)]
        candidates: list[tuple[tuple[str, ...], ...]] = []
        for check in checks:
            candidates.append(self._encode_admit(check, now, keys, args))

        reply = await self.store.run(ADMIT, keys, args)
        return self._decode_admit(rid, checks, candidates, [int(v) for v in reply.split()])

    async def settle(
        self, reservation: Reservation, *, tokens: int | None = None, cost_usd: float = 0.0
    ) -> bool:
        """Release the holds and charge the real use; False if already settled.

        ``tokens`` replaces the reserved tokens (None keeps them); ``cost_usd`` replaces
        the reserved cost. Raises StoreUnavailableError when Redis cannot be reached.
        """
        keys = [self.store.key("settled", reservation.id)]
        args: list[Any] = [reservation.id, _marker_ttl_ms(reservation.checks), 0]
        parts = 0
        for check, place in zip(reservation.checks, reservation.places, strict=True):
            part = _settle_part(check, place, tokens, usd_to_nano(cost_usd))
            if part is not None:
                keys.extend(part[0])
                args.extend(part[1])
                parts += 1
        args[2] = parts

        settled = bool(await self.store.run(SETTLE, keys, args))
        reservation.settled = True
        return settled

    async def void(self, checks: Sequence[Check], request_id: str, at: datetime) -> None:
        """Undo whatever an admission whose reply never came may have reserved.

        A call that timed out may still have run: a stopped Redis reads the request
        from its socket once it resumes. Releasing the holds it could have made (in
        every candidate budget period) and its concurrency slots is safe either way;
        its rate counters stay charged, erring on the side of the limit.
        """
        keys = [self.store.key("settled", request_id)]
        args: list[Any] = [request_id, _marker_ttl_ms(checks), 0]
        parts = 0
        for check in checks:
            if isinstance(check, RateCheck):
                continue
            for place in self._encode_admit(check, at, [], []):
                part = _settle_part(check, place, None, 0)
                if part is not None:
                    keys.extend(part[0])
                    args.extend(part[1])
                    parts += 1
        args[2] = parts
        await self.store.run(SETTLE, keys, args)

    async def charge(
        self, scope: str, period: CalendarPeriod | RollingPeriod, usd: float, at: datetime
    ) -> None:
        """Add spend recorded elsewhere (locally during an outage) to a budget."""
        marker = self.store.key("settled", uuid.uuid4().hex)
        nano = usd_to_nano(usd)
        if isinstance(period, CalendarPeriod):
            labels, _, end_ms = period.window(at)
            ttl = end_ms - int(at.timestamp() * 1000) + _RETENTION_MS[period.unit]
            keys = [marker, self.store.key("spend", scope, labels[1])]
            args: list[Any] = ["charge", 60_000, 1, "charge", nano, max(ttl, 1)]
        else:
            keys = [marker, self.store.key("spend", scope, _rolling_label(period))]
            at_ms = int(at.timestamp() * 1000)
            window_ms = int(period.window_s * 1000)
            args = ["charge", 60_000, 1, "charge_rolling", nano, window_ms, period.bucket_ms, at_ms]
        await self.store.run(SETTLE, keys, args)

    def _encode_admit(
        self, check: Check, now: datetime, keys: list[str], args: list[Any]
    ) -> tuple[tuple[str, ...], ...]:
        """Append the check's keys and arguments; return where it may be kept (one place,
        or three candidate periods for a calendar budget)."""
        shadow = "1" if check.shadow else "0"
        key = self.store.key
        place: tuple[str, ...]
        if isinstance(check, RateCheck):
            place = (key("rate", check.scope, check.unit),)
            args.extend(("rate", shadow, repr(check.interval_ms), check.burst, check.amount))
            keys.extend(place)
            return (place,)
        if isinstance(check, ConcurrencyCheck):
            place = (key("conc", check.scope),)
            args.extend(("concurrency", shadow, check.limit, int(check.lease_s * 1000)))
            keys.extend(place)
            return (place,)
        hold_ms = int(check.hold_s * 1000)
        if isinstance(check.period, CalendarPeriod):
            labels, start_ms, end_ms = check.period.window(now)
            periods = tuple(
                (key("spend", check.scope, label), key("holds", check.scope, label))
                for label in labels
            )
            retention = _RETENTION_MS[check.period.unit]
            args.extend(("budget", shadow, check.limit_nano, check.cost_nano, hold_ms))
            args.extend((start_ms, end_ms, retention))
            for place in periods:
                keys.extend(place)
            return periods
        label = _rolling_label(check.period)
        place = (key("spend", check.scope, label), key("holds", check.scope, label))
        window_ms = int(check.period.window_s * 1000)
        args.extend(("rolling", shadow, check.limit_nano, check.cost_nano, hold_ms))
        args.extend((window_ms, check.period.bucket_ms))
        keys.extend(place)
        return (place,)

    def _decode_admit(
        self,
        rid: str,
        checks: Sequence[Check],
        candidates: list[tuple[tuple[str, ...], ...]],
        reply: list[int],
    ) -> Admission:
        results: list[CheckResult] = []
        reserved: list[Check] = []
        places: list[tuple[str, ...]] = []
        for index, check in enumerate(checks):
            ok, remaining, reset_ms, retry_ms, slot = reply[2 + index * _REPLY_FIELDS :][
                :_REPLY_FIELDS
            ]
            results.append(_result(check, bool(ok), remaining, reset_ms, retry_ms))
            if ok:
                reserved.append(check)
                options = candidates[index]
                places.append(options[slot] if len(options) == 3 else options[0])

        admitted = bool(reply[0])
        reservation = (
            Reservation(rid, "redis", tuple(reserved), tuple(places)) if admitted else None
        )
        return Admission.of(tuple(results), "redis", reservation)


def _result(check: Check, ok: bool, remaining: int, reset_ms: int, retry_ms: int) -> CheckResult:
    reset_s = max(reset_ms, 0) / 1000
    retry_after: float | None = None if retry_ms < 0 else retry_ms / 1000
    value: float = remaining
    if isinstance(check, BudgetCheck):
        value = remaining / NANO_USD
        if isinstance(check.period, CalendarPeriod) and not ok:
            # A daily budget frees up at midnight; a monthly one is an exhausted quota,
            # not something to retry (a distinct error for the caller).
            retry_after = reset_s if check.period.unit == "day" and reset_ms > 0 else None
    if ok:
        retry_after = None
    return CheckResult(check.scope, check.feature, ok, value, reset_s, retry_after, check.shadow)


def _settle_part(
    check: Check, place: tuple[str, ...], tokens: int | None, used_nano: int
) -> tuple[tuple[str, ...], tuple[Any, ...]] | None:
    if isinstance(check, RateCheck):
        if check.unit != "tokens" or tokens is None or tokens == check.amount:
            return None
        return place, ("rate", repr(check.interval_ms), tokens - check.amount)
    if isinstance(check, ConcurrencyCheck):
        return place, ("concurrency",)
    if isinstance(check.period, CalendarPeriod):
        return place, ("budget", check.cost_nano, used_nano)
    return place, ("rolling", check.cost_nano, used_nano, check.period.bucket_ms)


def _rolling_label(period: RollingPeriod) -> str:
    return f"rolling{int(period.window_s)}s"


def _marker_ttl_ms(checks: Sequence[Check]) -> int:
    """The settle marker outlives every hold of the reservation, so a late duplicate
    settle is still recognised."""
    longest = 60.0
    for check in checks:
        if isinstance(check, BudgetCheck):
            longest = max(longest, check.hold_s)
        elif isinstance(check, ConcurrencyCheck):
            longest = max(longest, check.lease_s)
    return int(longest * 2000)
