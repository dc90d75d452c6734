"""The policy's ``[[limits]]`` shared by every gateway process through Redis.

:class:`SharedLimiter` is the multi-process twin of :class:`aiofast.limits.Limiter`:
the same ``[[limits]]`` entries, the same request context, the same decisions, refusal
codes, messages and ``x-ratelimit-*`` figures, but the state lives in Redis, so a
limit of 10 per minute admits 10 per minute across all processes and machines. One
admission is one Redis round trip; one settle is another.

While Redis does not answer, each meter follows its feature's ``[redis.on_failure]``
mode: ``fail_open`` skips it, ``fail_closed`` refuses the request (code
``store_unavailable``, HTTP 503), ``local`` decides it in this process with the
in-process limiter on this process's share (the limit divided by ``instances``). The
in-process limiter is kept warm with every request Redis admits, so a process that
already used its share cannot start over when Redis goes away. No request waits more
than the store's bound, and once Redis is known to be down none touches the network.
When Redis answers again, the spend recorded locally and the settles that could not
reach it are replayed, so the shared budgets end up charged for what was spent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiofast.errors import StoreUnavailableError
from aiofast.limits import LimitConfig, Limiter, RequestContext, parse_limits
from aiofast.stores import metrics
from aiofast.stores.checks import (
    Admission,
    BudgetCheck,
    CalendarPeriod,
    Check,
    CheckResult,
    ConcurrencyCheck,
    RateCheck,
    Reservation,
    RollingPeriod,
)
from aiofast.stores.redis import RedisStore
from aiofast.stores.redis_limits import RedisLimiter
from aiofast.stores.settings import FailureMode

__all__ = ["SharedAdmission", "SharedHandle", "SharedLimiter", "SharedRefusal"]

logger = logging.getLogger("aiofast.stores.limits")

# Replays kept for when Redis returns; beyond this the oldest are dropped (their holds
# then expire in Redis and are charged at the reserved amount).
_MAX_PENDING = 100_000


@dataclass(frozen=True, slots=True)
class SharedRefusal:
    """The same fields as :class:`aiofast.limits.Refusal`."""

    limit: str
    kind: str
    scope: str
    scope_value: str
    code: str
    message: str
    retry_after: float | None
    mode: str


@dataclass(slots=True)
class SharedHandle:
    """What an admitted request settles with."""

    id: str
    budgets: tuple[BudgetCheck, ...]
    reservation: Reservation | None = None
    local: int = 0
    settled: bool = False


@dataclass(frozen=True, slots=True)
class SharedAdmission:
    """The same fields as :class:`aiofast.limits.Admission`, plus where it was decided
    (``redis``, ``local``, ``open`` or ``closed``)."""

    admitted: bool
    handle: SharedHandle | None
    refusal: SharedRefusal | None
    source: str
    shadow_refusals: tuple[SharedRefusal, ...] = ()
    downgrade_to: str | None = None
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None


@dataclass(frozen=True, slots=True)
class _Applied:
    """One ``[[limits]]`` entry that applies to a request, with its scope value."""

    index: int
    config: LimitConfig
    value: str
    native: dict[str, Any] = field(hash=False)


class SharedLimiter:
    """Admit and settle ``[[limits]]`` through Redis, degrading per feature."""

    def __init__(
        self,
        limits: Iterable[Mapping[str, Any] | LimitConfig],
        store: RedisStore,
        *,
        reservation_ttl: float = 600.0,
    ) -> None:
        self.configs = tuple(parse_limits(limits))
        self.store = store
        self.redis = RedisLimiter(store)
        self.reservation_ttl = reservation_ttl
        policy = store.settings.on_failure
        self._modes: dict[str, FailureMode] = {
            "requests": policy.requests,
            "tokens": policy.tokens,
            "concurrency": policy.concurrency,
            "budget": policy.budgets,
        }
        self._natives = [config.native() for config in self.configs]
        self.local = Limiter(
            local_shares(self.configs, self._modes, store.settings.instances),
            reservation_ttl=reservation_ttl,
        )
        self._pending_voids: deque[tuple[tuple[Check, ...], str, datetime]] = deque(
            maxlen=_MAX_PENDING
        )
        self._pending_settles: deque[tuple[Reservation, int, float]] = deque(maxlen=_MAX_PENDING)
        self._pending_charges: deque[tuple[BudgetCheck, float, datetime]] = deque(
            maxlen=_MAX_PENDING
        )
        self._replaying = asyncio.Lock()
        store.on_recovery(self.replay)

    async def admit(self, ctx: RequestContext) -> SharedAdmission:
        """One Redis round trip, or the on_failure decision within the store's bound."""
        rid = uuid.uuid4().hex
        applied = self._applicable(ctx)
        checks = [check for a in applied for check in self._checks(a, ctx)]
        budgets = tuple(c for c in checks if isinstance(c, BudgetCheck))
        if not self.store.degraded:
            try:
                admission = await self.redis.admit(checks, rid)
            except StoreUnavailableError:
                self._pending_voids.append((tuple(checks), rid, datetime.now(timezone.utc)))
            else:
                return self._from_redis(admission, applied, checks, SharedHandle(rid, budgets), ctx)
        return self._fallback(applied, ctx, SharedHandle(rid, budgets))

    async def settle(
        self,
        handle: SharedHandle | None,
        actual_input_tokens: int = 0,
        actual_output_tokens: int = 0,
        actual_cost_usd: float = 0.0,
    ) -> bool:
        """Swap the reservation for what was used; False when already settled. Never
        raises for an unreachable Redis: the settle is replayed when it returns."""
        if handle is None or handle.settled:
            return False
        handle.settled = True
        tokens = actual_input_tokens + actual_output_tokens
        if handle.local:
            self.local.settle(
                handle.local, actual_input_tokens, actual_output_tokens, actual_cost_usd
            )
        if handle.reservation is not None:
            try:
                return await self.redis.settle(
                    handle.reservation, tokens=tokens, cost_usd=actual_cost_usd
                )
            except StoreUnavailableError:
                handle.reservation.settled = False
                self._pending_settles.append((handle.reservation, tokens, actual_cost_usd))
                return True
        # Decided without Redis: its spend is real, and every shared budget must see it.
        at = datetime.now(timezone.utc)
        for budget in handle.budgets:
            self._pending_charges.append((budget, actual_cost_usd, at))
        if not self.store.degraded:
            await self.replay()
        return True

    async def replay(self) -> None:
        """Push to Redis what could not reach it (runs on recovery): first undo the
        admissions whose reply never came, then the settles, then local spend."""
        async with self._replaying:
            replayed = 0
            try:
                while self._pending_voids:
                    checks, rid, at = self._pending_voids[0]
                    await self.redis.void(checks, rid, at)
                    self._pending_voids.popleft()
                while self._pending_settles:
                    reservation, tokens, cost = self._pending_settles[0]
                    await self.redis.settle(reservation, tokens=tokens, cost_usd=cost)
                    self._pending_settles.popleft()
                    replayed += 1
                while self._pending_charges:
                    budget, cost, at = self._pending_charges[0]
                    await self.redis.charge(budget, cost, at)
                    self._pending_charges.popleft()
                    replayed += 1
            except StoreUnavailableError:
                return
            if replayed:
                logger.info("replayed %d settles and charges made while Redis was away", replayed)

    def _applicable(self, ctx: RequestContext) -> list[_Applied]:
        labels = dict(ctx.labels)
        values = {
            "key": ctx.key,
            "user": ctx.user,
            "team": ctx.team,
            "model": ctx.model,
            "tier": ctx.tier,
            "global": "*",
        }
        applied = []
        for index, config in enumerate(self.configs):
            value = (
                labels.get(config.label or "") if config.scope == "label" else values[config.scope]
            )
            if value is None or (config.value is not None and config.value != value):
                continue
            applied.append(_Applied(index, config, value, self._natives[index]))
        return applied

    def _checks(self, applied: _Applied, ctx: RequestContext) -> list[Check]:
        native = applied.native
        scope = f"{native['name']}={applied.value}"
        shadow = applied.config.mode == "shadow"
        group = applied.index
        checks: list[Check] = []
        if native["requests"] is not None:
            limit, period, burst = native["requests"]
            checks.append(RateCheck(scope, limit, period, burst, 1, "requests", shadow, group))
        if native["tokens"] is not None:
            limit, period, burst = native["tokens"]
            amount = ctx.input_tokens + ctx.reserved_output_tokens
            checks.append(
                RateCheck(
                    scope,
                    limit,
                    period,
                    burst,
                    amount,
                    "tokens",
                    shadow,
                    group,
                    self.reservation_ttl,
                )
            )
        if native["concurrency"] is not None:
            checks.append(
                ConcurrencyCheck(scope, native["concurrency"], self.reservation_ttl, shadow, group)
            )
        if native["budget"] is not None:
            usd, per, window_seconds, time_zone = native["budget"]
            cut: CalendarPeriod | RollingPeriod = (
                RollingPeriod(window_seconds) if per == "window" else CalendarPeriod(per, time_zone)
            )
            checks.append(
                BudgetCheck(
                    scope,
                    usd,
                    ctx.cost_usd,
                    cut,
                    self.reservation_ttl,
                    shadow,
                    group,
                    native["downgrade_at"],
                )
            )
        return checks

    def _from_redis(
        self,
        admission: Admission,
        applied: list[_Applied],
        checks: list[Check],
        handle: SharedHandle,
        ctx: RequestContext,
    ) -> SharedAdmission:
        by_group = {a.index: a for a in applied}
        results = admission.results
        refusal = None
        if admission.refusal is not None:
            refusal = _refusal(admission.refusal, by_group[admission.refusal.group])
        shadow = tuple(
            _refusal(r, by_group[r.group]) for r in results if r.shadow and not r.admitted
        )
        downgrade = next(
            (by_group[r.group].config.downgrade_to for r in results if r.near_exhaustion), None
        )
        if admission.admitted:
            handle.reservation = admission.reservation
            self._mirror(handle, ctx)
        requests = _tightest(results, checks, "requests")
        tokens = _tightest(results, checks, "tokens")
        return SharedAdmission(
            admission.admitted,
            handle if admission.admitted else None,
            refusal,
            "redis",
            shadow,
            downgrade,
            *requests,
            *tokens,
        )

    def _mirror(self, handle: SharedHandle, ctx: RequestContext) -> None:
        """Record a Redis admission in the in-process fallback, so its shares stay warm."""
        local = self.local.admit(ctx)
        if local.admitted:
            handle.local = local.handle

    def _fallback(
        self, applied: list[_Applied], ctx: RequestContext, handle: SharedHandle
    ) -> SharedAdmission:
        for a in applied:
            for kind in _kinds(a.native):
                metrics.FALLBACK_DECISIONS.labels(kind, self._modes[kind]).inc()
        closed = [
            (a, kind)
            for a in applied
            if a.config.mode == "enforce"
            for kind in _kinds(a.native)
            if self._modes[kind] == "fail_closed"
        ]
        if closed:
            a, kind = closed[0]
            refusal = SharedRefusal(
                a.native["name"],
                kind,
                _scope_name(a.config),
                a.value,
                "store_unavailable",
                f"The shared {kind} limit '{a.native['name']}' cannot be checked: its store "
                "is unreachable and the policy fails closed. Retry shortly.",
                self.store.settings.probe_interval_ms / 1000,
                a.config.mode,
            )
            return SharedAdmission(False, None, refusal, "closed")

        local = self.local.admit(ctx)
        handle.local = local.handle
        source = (
            "local"
            if any(self._modes[k] == "local" for a in applied for k in _kinds(a.native))
            else "open"
        )
        return SharedAdmission(
            local.admitted,
            handle if local.admitted else None,
            _native_refusal(local.refusal),
            source,
            tuple(r for r in (_native_refusal(s) for s in local.shadow_refusals) if r is not None),
            local.downgrade_to,
            local.limit_requests,
            local.remaining_requests,
            local.reset_requests,
            local.limit_tokens,
            local.remaining_tokens,
            local.reset_tokens,
        )


def local_shares(
    configs: Sequence[LimitConfig], modes: Mapping[str, FailureMode], instances: int
) -> list[LimitConfig]:
    """The ``[[limits]]`` the in-process fallback enforces: only the meters whose
    feature falls back to ``local``, each cut to one instance's share (rounded down,
    but at least 1, which the configuration cannot express as 0)."""
    shares = []
    for config in configs:
        native = config.native()
        update: dict[str, Any] = {"name": native["name"]}
        for field_name in (
            "requests_per_second",
            "requests_per_minute",
            "requests_per_hour",
            "requests_per_day",
        ):
            value = getattr(config, field_name)
            if value is not None:
                keep = modes["requests"] == "local"
                update[field_name] = max(1, value // instances) if keep else None
                update["burst"] = max(1, native["requests"][2] // instances) if keep else None
        for field_name in ("tokens_per_minute", "tokens_per_hour", "tokens_per_day"):
            value = getattr(config, field_name)
            if value is not None:
                keep = modes["tokens"] == "local"
                update[field_name] = max(1, value // instances) if keep else None
                update["token_burst"] = max(1, native["tokens"][2] // instances) if keep else None
        if config.concurrency is not None:
            keep = modes["concurrency"] == "local"
            update["concurrency"] = max(1, config.concurrency // instances) if keep else None
        if config.budget is not None:
            if modes["budget"] == "local":
                update["budget"] = config.budget.model_copy(
                    update={"usd": config.budget.usd / instances}
                )
            else:
                update["budget"] = None
                update["downgrade_to"] = None
        share = config.model_copy(update=update)
        if any(
            getattr(share, f) is not None
            for f in (
                "requests_per_second",
                "requests_per_minute",
                "requests_per_hour",
                "requests_per_day",
                "tokens_per_minute",
                "tokens_per_hour",
                "tokens_per_day",
                "concurrency",
                "budget",
            )
        ):
            shares.append(share)
    return shares


def _kinds(native: Mapping[str, Any]) -> list[str]:
    return [k for k in ("requests", "tokens", "concurrency", "budget") if native[k] is not None]


def _scope_name(config: LimitConfig) -> str:
    return f"label:{config.label}" if config.scope == "label" else config.scope


def _refusal(result: CheckResult, applied: _Applied) -> SharedRefusal:
    # The in-process limiter names the budget meter "budget".
    kind = "budget" if result.limit == "budgets" else result.limit
    name = applied.native["name"]
    what = f"{kind} limit '{name}' for {_scope_name(applied.config)} '{applied.value}'"
    if result.code == "request_too_large":
        message = f"Request too large for the {what}: it can never fit; send a smaller request."
    elif result.code == "insufficient_quota":
        message = f"The {what} is spent for this month."
    elif result.retry_after_s is not None:
        message = f"The {what} is reached. Retry after {result.retry_after_s:.3f} s."
    else:
        message = f"The {what} is reached."
    return SharedRefusal(
        name,
        kind,
        _scope_name(applied.config),
        applied.value,
        result.code,
        message,
        result.retry_after_s,
        applied.config.mode,
    )


def _native_refusal(refusal: Any) -> SharedRefusal | None:
    if refusal is None:
        return None
    return SharedRefusal(
        refusal.limit,
        refusal.kind,
        refusal.scope,
        refusal.scope_value,
        refusal.code,
        refusal.message,
        refusal.retry_after,
        refusal.mode,
    )


def _tightest(
    results: Sequence[CheckResult], checks: Sequence[Check], unit: str
) -> tuple[int | None, int | None, float | None]:
    """(limit, remaining, reset) of the enforced meter of ``unit`` with the least left,
    else the one resetting later, as the in-process limiter reports it."""
    best: tuple[int, int, float] | None = None
    for result, check in zip(results, checks, strict=True):
        if result.shadow or not isinstance(check, RateCheck) or check.unit != unit:
            continue
        candidate = (check.limit, int(result.remaining), result.reset_s)
        if best is None or (candidate[1], -candidate[2]) < (best[1], -best[2]):
            best = candidate
    return best if best is not None else (None, None, None)
