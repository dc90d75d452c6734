"""Limits and budgets shared by every gateway process, decided inside Redis.

One admission is one EVALSHA of ``lua/admit.lua`` (every scope, every meter, the
budget holds: one round trip, atomic); one settle is one EVALSHA of
``lua/settle.lua``. Key layout, all under the ``{namespace}`` hash tag, so one
admission's keys share a Cluster slot:

    rate:<scope>:<unit>              GCRA arrival time and time charged (ms, Redis TIME)
    tokens:<scope>                   sorted set of unsettled token reservations, by expiry
    conc:<scope>                     sorted set of in-flight request ids, by lease end
    budget:<scope>:<period kind>     hash: reserved nano-dollars (rolling: spend per slot)
    holds:<scope>:<period kind>      sorted set of "<request id>:<amount>" by expiry
    spend:<scope>:<period label>     hash: spent nano-dollars of one calendar period

Settle is idempotent without markers: each part acts only if the request's own hold is
still there. Every key carries a TTL: rate keys until the bucket is full again,
holders and holds until the reservation expires, spend keys until their period is over plus a
retention for reports. A new period is a new key: no reset job.
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
    Code,
    ConcurrencyCheck,
    RateCheck,
    Reservation,
    RollingPeriod,
    usd_to_nano,
)
from aiofast.stores.redis import LuaScript, RedisStore

__all__ = ["RETENTION_MS", "RedisLimiter"]

ADMIT = LuaScript.bundled("admit", after="reservation_prelude")
SETTLE = LuaScript.bundled("settle", after="reservation_prelude")

# How long a finished period's spend stays readable (reports, /aiofast/usage).
RETENTION_MS = {"day": 2 * 86_400_000, "month": 35 * 86_400_000}
_REPLY_FIELDS = 7
_WAIT, _TOO_LARGE, _EXHAUSTED = 1, 2, 3
_WAIT_CODES: dict[str, Code] = {
    "requests": "rate_limit_exceeded",
    "tokens": "rate_limit_exceeded",
    "concurrency": "concurrency_limit_exceeded",
    "budgets": "budget_exceeded",
}


class RedisLimiter:
    """Admit and settle checks against state kept in Redis."""

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
        places = [self._encode_admit(check, now, keys, args) for check in checks]

        reply = await self.store.run(ADMIT, keys, args)
        values = [float(v) for v in reply.split()]
        fields = [
            values[2 + i * _REPLY_FIELDS : 2 + (i + 1) * _REPLY_FIELDS] for i in range(len(checks))
        ]
        results = tuple(_result(check, f) for check, f in zip(checks, fields, strict=True))
        reservation = None
        if values[0]:
            committed = _committed(results)
            kept = [i for i, r in enumerate(results) if r.group in committed]
            reservation = Reservation(
                rid,
                "redis",
                tuple(checks[i] for i in kept),
                tuple(places[i] for i in kept),
                marks=tuple(fields[i][6] for i in kept),
            )
        return Admission.of(results, "redis", reservation)

    async def settle(
        self, reservation: Reservation, *, tokens: int | None = None, cost_usd: float = 0.0
    ) -> bool:
        """Release the holds and charge the real use; False when nothing was left to
        release (already settled, expired, or an admission that held nothing).

        ``tokens`` replaces the reserved tokens (None keeps them); ``cost_usd`` replaces
        the reserved cost. Raises StoreUnavailableError when Redis cannot be reached.
        """
        now = datetime.now(timezone.utc)
        keys: list[str] = []
        args: list[Any] = [reservation.id, 0]
        for check, place, mark in zip(
            reservation.checks, reservation.places, reservation.marks, strict=True
        ):
            part = self._settle_part(check, place, tokens, usd_to_nano(cost_usd), now, mark)
            if part is not None:
                keys.extend(part[0])
                args.extend(part[1])
                args[1] += 1

        settled = bool(await self.store.run(SETTLE, keys, args))
        reservation.settled = True
        return settled

    async def void(self, checks: Sequence[Check], request_id: str, at: datetime) -> None:
        """Undo whatever an admission whose reply never came may have reserved.

        A call that timed out may still have run: a stopped Redis reads the request
        from its socket once it resumes. Releasing the holds and slots it could have
        taken is safe either way; its rate counters stay charged, erring on the side
        of the limit.
        """
        keys: list[str] = []
        args: list[Any] = [request_id, 0]
        for check in checks:
            if isinstance(check, RateCheck):
                continue
            place = self._encode_admit(check, at, [], [])
            part = self._settle_part(check, place, None, 0, at, 0.0)
            if part is not None:
                keys.extend(part[0])
                args.extend(part[1])
                args[1] += 1
        await self.store.run(SETTLE, keys, args)

    async def charge(self, check: BudgetCheck, usd: float, at: datetime) -> None:
        """Add spend recorded elsewhere (in this process during an outage) to the budget
        of ``check``, in the period that contains ``at``."""
        nano = usd_to_nano(usd)
        at_ms = int(at.timestamp() * 1000)
        if isinstance(check.period, CalendarPeriod):
            labels, _, end_ms = check.period.window(at)
            ttl = end_ms - at_ms + RETENTION_MS[check.period.unit]
            keys = [self.store.key("spend", check.scope, labels[1])]
            args: list[Any] = ["charge", 1, "charge", nano, ttl]
        else:
            period = check.period
            keys = [self._budget_keys(check)[0]]
            ttl = int(period.window_s * 1000 + check.hold_s * 1000)
            args = ["charge", 1, "charge_rolling", nano, period.slot_ms, at_ms, ttl]
        await self.store.run(SETTLE, keys, args)

    def _settle_part(
        self,
        check: Check,
        place: tuple[str, ...],
        tokens: int | None,
        used_nano: int,
        now: datetime,
        mark: float,
    ) -> tuple[tuple[str, ...], tuple[Any, ...]] | None:
        if isinstance(check, RateCheck):
            if check.unit != "tokens":
                return None
            used = check.amount if tokens is None else tokens
            return place, ("rate", repr(check.interval_ms), check.amount, used, repr(mark))
        if isinstance(check, ConcurrencyCheck):
            return place, ("concurrency",)
        if isinstance(check.period, CalendarPeriod):
            # Spend goes to the period Redis is in at settle: send this moment's candidates.
            labels, start_ms, end_ms = check.period.window(now)
            spend = tuple(self.store.key("spend", check.scope, label) for label in labels)
            retention = RETENTION_MS[check.period.unit]
            return place[:2] + spend, (
                "budget",
                check.cost_nano,
                used_nano,
                start_ms,
                end_ms,
                retention,
            )
        return place, ("rolling", check.cost_nano, used_nano, check.period.slot_ms)

    def _budget_keys(self, check: BudgetCheck) -> tuple[str, str]:
        kind: str = check.period.unit if isinstance(check.period, CalendarPeriod) else ""
        if isinstance(check.period, RollingPeriod):
            kind = f"rolling{int(check.period.window_s)}s"
        return (
            self.store.key("budget", check.scope, kind),
            self.store.key("holds", check.scope, kind),
        )

    def _encode_admit(
        self, check: Check, now: datetime, keys: list[str], args: list[Any]
    ) -> tuple[str, ...]:
        """Append the check's keys and arguments; return the keys it reserves under."""
        shadow = "1" if check.shadow else "0"
        head = (check.group, shadow)
        place: tuple[str, ...]
        if isinstance(check, RateCheck):
            place = (self.store.key("rate", check.scope, check.unit),)
            hold_ms = 0
            if check.unit == "tokens":
                place += (self.store.key("tokens", check.scope),)
                hold_ms = max(1, int(check.hold_s * 1000))
            args.extend(("rate", *head, repr(check.interval_ms), check.burst, check.amount))
            args.append(hold_ms)
        elif isinstance(check, ConcurrencyCheck):
            place = (self.store.key("conc", check.scope),)
            args.extend(("concurrency", *head, check.limit, int(check.lease_s * 1000)))
        elif isinstance(check.period, CalendarPeriod):
            labels, start_ms, end_ms = check.period.window(now)
            spend = tuple(self.store.key("spend", check.scope, label) for label in labels)
            place = self._budget_keys(check) + spend
            args.extend(("budget", *head, check.limit_nano, check.cost_nano))
            args.extend((int(check.hold_s * 1000), start_ms, end_ms))
            args.extend((RETENTION_MS[check.period.unit], check.downgrade_at_nano))
            args.append("1" if check.period.unit == "month" else "0")
        else:
            place = self._budget_keys(check)
            args.extend(("rolling", *head, check.limit_nano, check.cost_nano))
            args.extend((int(check.hold_s * 1000), int(check.period.window_s * 1000)))
            args.extend((check.period.slot_ms, check.downgrade_at_nano))
        keys.extend(place)
        return place


def _result(check: Check, fields: list[float]) -> CheckResult:
    fits, remaining, reset_ms, retry_ms, near, code, _ = fields
    retry_after = None if fits or retry_ms < 0 else retry_ms / 1000
    decided: Code = "ok"
    if code == _WAIT:
        decided = _WAIT_CODES[check.feature]
    elif code == _TOO_LARGE:
        decided = "request_too_large"
    elif code == _EXHAUSTED:
        decided = "insufficient_quota"
    value: float = remaining / NANO_USD if isinstance(check, BudgetCheck) else remaining
    return CheckResult(
        check.scope,
        check.feature,
        bool(fits),
        value,
        reset_ms / 1000,
        retry_after,
        check.shadow,
        decided,
        bool(near),
        check.group,
    )


def _committed(results: Sequence[CheckResult]) -> set[int]:
    """Groups (limits) whose every meter fitted: those reserved."""
    refused = {r.group for r in results if not r.admitted}
    return {r.group for r in results} - refused
