"""Limits shared through Redis, with the declared behaviour while Redis is away.

Every admission goes to Redis while it answers. When it does not (a timeout, a
refused connection, or the store already known to be down), each check follows
its feature's ``[redis.on_failure]`` mode:

- ``fail_open``: the check is skipped;
- ``fail_closed``: the request is refused as "store unavailable" (503);
- ``local``: the check is decided in this process on its share of the limit.

No request waits longer than the store's bound, and once the store is known to
be down no request touches the network at all. Spend recorded locally during an
outage, and settles that could not reach Redis, are replayed into Redis when it
answers again, so the shared budgets end up charged for what was really spent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timezone

from aiofast.errors import StoreUnavailableError
from aiofast.stores import metrics
from aiofast.stores.checks import (
    Admission,
    BudgetCheck,
    Check,
    CheckResult,
    ConcurrencyCheck,
    RateCheck,
    Reservation,
    Source,
)
from aiofast.stores.local_limits import LocalLimiter
from aiofast.stores.redis import RedisStore
from aiofast.stores.redis_limits import RedisLimiter
from aiofast.stores.settings import FailureMode

__all__ = ["SharedLimiter"]

logger = logging.getLogger("aiofast.stores.limits")

# Replays kept for when Redis returns; beyond this, the oldest are dropped (their
# budget holds then expire in Redis and are charged at the reserved amount).
_MAX_PENDING = 100_000


class SharedLimiter:
    """Admit and settle through Redis, degrading per feature when it is unreachable."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.redis = RedisLimiter(store)
        self.local = LocalLimiter(store.settings.instances)
        self._modes: dict[str, FailureMode] = {
            "requests": store.settings.on_failure.requests,
            "tokens": store.settings.on_failure.tokens,
            "concurrency": store.settings.on_failure.concurrency,
            "budgets": store.settings.on_failure.budgets,
        }
        self._pending_settles: deque[tuple[Reservation, int | None, float]] = deque(
            maxlen=_MAX_PENDING
        )
        self._pending_charges: deque[tuple[BudgetCheck, float, datetime]] = deque(
            maxlen=_MAX_PENDING
        )
        self._pending_voids: deque[tuple[tuple[Check, ...], str, datetime]] = deque(
            maxlen=_MAX_PENDING
        )
        self._replaying = asyncio.Lock()
        store.on_recovery(self.replay)

    def mode(self, check: Check) -> FailureMode:
        return self._modes[check.feature]

    async def admit(self, checks: Sequence[Check], request_id: str | None = None) -> Admission:
        """One Redis round trip, or the on_failure decision within the store's bound."""
        rid = request_id or uuid.uuid4().hex
        if not self.store.degraded:
            try:
                admission = await self.redis.admit(checks, rid)
            except StoreUnavailableError:
                self._pending_voids.append((tuple(checks), rid, datetime.now(timezone.utc)))
                return self._fallback(checks, rid)
            if admission.reservation is not None:
                self._mirror(admission.reservation)
            return admission
        return self._fallback(checks, rid)

    async def settle(
        self, reservation: Reservation, *, tokens: int | None = None, cost_usd: float = 0.0
    ) -> bool:
        """Settle once (later calls return False); never raises when Redis is down."""
        if reservation.settled:
            return False
        if isinstance(reservation.mirror, Reservation):
            self.local.settle(reservation.mirror, tokens=tokens, cost_usd=cost_usd)
        if reservation.source == "redis":
            try:
                return await self.redis.settle(reservation, tokens=tokens, cost_usd=cost_usd)
            except StoreUnavailableError:
                reservation.settled = True
                self._pending_settles.append((reservation, tokens, cost_usd))
                return True

        at = datetime.now(timezone.utc)
        for check, _ in self.local.settle(reservation, tokens=tokens, cost_usd=cost_usd):
            self._pending_charges.append((check, cost_usd, at))
        if not self.store.degraded:
            await self.replay()
        return True

    async def replay(self) -> None:
        """Push to Redis what could not reach it (runs on recovery): first undo the
        admissions whose reply never came, then the settles, then local spend."""
        async with self._replaying:
            await self._replay()

    async def _replay(self) -> None:
        replayed = 0
        try:
            while self._pending_voids:
                checks, rid, at = self._pending_voids[0]
                await self.redis.void(checks, rid, at)
                self._pending_voids.popleft()
            while self._pending_settles:
                reservation, tokens, cost = self._pending_settles[0]
                reservation.settled = False
                await self.redis.settle(reservation, tokens=tokens, cost_usd=cost)
                self._pending_settles.popleft()
                replayed += 1
            while self._pending_charges:
                check, cost, at = self._pending_charges[0]
                await self.redis.charge(check, cost, at)
                self._pending_charges.popleft()
                replayed += 1
        except StoreUnavailableError:
            if self._pending_settles:
                self._pending_settles[0][0].settled = True
            return
        if replayed:
            logger.info("replayed %d settles and charges recorded while Redis was away", replayed)

    def _mirror(self, reservation: Reservation) -> None:
        """Record a Redis admission locally, for the checks that fall back to `local`."""
        local_checks = [c for c in reservation.checks if self.mode(c) == "local"]
        if local_checks:
            mirrored = self.local.admit(local_checks, reservation.id, record_only=True)
            reservation.mirror = mirrored.reservation

    def _fallback(self, checks: Sequence[Check], rid: str) -> Admission:
        by_mode: dict[FailureMode, list[Check]] = {"fail_open": [], "fail_closed": [], "local": []}
        for check in checks:
            mode = self.mode(check)
            by_mode[mode].append(check)
            metrics.FALLBACK_DECISIONS.labels(check.feature, mode).inc()

        closed = [c for c in by_mode["fail_closed"] if not c.shadow]
        if closed:
            retry = self.store.settings.probe_interval_ms / 1000
            refusals = tuple(
                CheckResult(c.scope, c.feature, False, 0, 0.0, retry, c.shadow) for c in closed
            )
            return Admission.of(refusals, "closed", None)

        local = self.local.admit(by_mode["local"], rid)
        open_results = tuple(_unchecked(c) for c in by_mode["fail_open"])
        results = local.results + open_results
        source: Source = "local" if by_mode["local"] else "open"
        return Admission.of(results, source, local.reservation)


def _unchecked(check: Check) -> CheckResult:
    """The result of a check skipped by fail_open: admitted, with nothing known used."""
    if isinstance(check, RateCheck | ConcurrencyCheck):
        remaining: float = check.limit
    else:
        remaining = check.limit_usd
    return CheckResult(check.scope, check.feature, True, remaining, 0.0, None, check.shadow)
