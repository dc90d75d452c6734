"""The ``limit`` stage of the gateway pipeline: the policy's ``[[limits]]`` per request.

Admission builds the limiter's request context from the caller's identity (key, user,
team, key labels), the requested model and tier, the counted input tokens, the output
tokens to reserve and the worst-case cost, then admits in one call. A refusal becomes a
429 in the client's wire format naming the limit and the scope, with ``Retry-After`` when
waiting helps (``x-should-retry: false`` when it cannot); every answer carries the
``x-ratelimit-*`` headers of the tightest enforced limit. A budget near exhaustion leaves
``ctx.state["limits.downgrade"]`` (and the tier in ``"limits.downgrade_to"``) for the
routing stage, and the smallest remaining budget in ``"limits.budget_remaining_usd"``.

Settlement runs once per admitted request, also after upstream errors and client
disconnects, at the cost the provider reported (or the gateway counted); a failed call
with no usage settles at zero cost. An admission that reserved nothing (handle 0: only
request rates applied) has nothing to settle and is not passed to the limiter again.

While the gateway runs, a background task settles reservations that outlived the
limiter's ``reservation_ttl`` (a handler that crashed, a stream nobody finished) at their
reserved amount within about a second, logs how many, and once a minute forgets idle scope
values off the event loop, so neither waits for a later request of the same scope.

With ``[redis]`` the decisions are made by the shared limiter of
:mod:`aiofast.stores.shared_limits`; otherwise by one in-process :class:`Limiter`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiofast._core import RequestContext as LimitRequest
from aiofast.context import RequestContext
from aiofast.limits.http import ratelimit_headers
from aiofast.limits.limiter import Limiter
from aiofast.limits.metrics import LimitsCollector, usage_report
from aiofast.policy import DeploymentPolicy, Policy
from aiofast.prices import PriceTable
from aiofast.refusals import RequestRefused, rate_limited

if TYPE_CHECKING:
    # Only a policy with [redis] loads redis-py (several MiB of a gateway's memory).
    from aiofast.stores.shared import SharedState
    from aiofast.stores.shared_limits import SharedLimiter

__all__ = ["LimitsStage", "limits_stage"]

logger = logging.getLogger("aiofast.limits")

_HANDLE = "limits.handle"
# How often overdue reservations are expired (cheap: only overdue ones are visited), and
# how often idle scope values are evicted (visits every value, so in a thread).
EXPIRE_EVERY_S = 1.0
EVICT_EVERY_S = 60.0
DOWNGRADE = "limits.downgrade"
DOWNGRADE_TO = "limits.downgrade_to"
BUDGET_REMAINING = "limits.budget_remaining_usd"


class LimitsStage:
    """Admits and settles requests against the policy's ``[[limits]]``."""

    def __init__(
        self, policy: Policy, prices: PriceTable, shared: SharedState | None = None
    ) -> None:
        settings = policy.limiter
        ttl = settings.reservation_ttl_seconds
        self.limiter: Limiter | SharedLimiter = (
            shared.limiter(policy.limits, reservation_ttl=ttl)
            if shared is not None
            else Limiter(policy.limits, reservation_ttl=ttl)
        )
        self._default_output = settings.default_max_output_tokens
        self._candidates = _CandidatePrices(policy, prices)
        self._tiers = policy.tiers
        self._default_tier = policy.server.default_tier
        # Settles through Redis run as tasks (settle is synchronous); kept until done.
        self._pending: set[asyncio.Task[bool]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts the background expiry of overdue reservations (in-process limiter only;
        the Redis store expires its reservations itself). Call from the running loop."""
        if self._sweeper is None and isinstance(self.limiter, Limiter):
            self._sweeper = asyncio.create_task(_sweep_forever(self.limiter))

    async def close(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)

    async def admit(self, ctx: RequestContext) -> None:
        request = self.request_of(ctx)
        engine = self.limiter
        admission: Any
        if isinstance(engine, Limiter):
            admission = engine.admit(request)
        else:  # the shared limiter, through Redis
            admission = await engine.admit(request)
        headers = ratelimit_headers(admission)
        ctx.response_headers.update(headers)
        for shadow in admission.shadow_refusals:
            logger.info(
                "request %s: shadow limit %s (%s %s) would refuse: %s",
                ctx.request_id,
                shadow.limit,
                shadow.scope,
                shadow.scope_value,
                shadow.code,
            )
        refusal = admission.refusal
        if refusal is not None:
            raise _refused(refusal, headers)
        ctx.state[_HANDLE] = admission.handle
        if admission.downgrade_to is not None:
            ctx.state[DOWNGRADE] = True
            ctx.state[DOWNGRADE_TO] = admission.downgrade_to
        remaining = getattr(admission, "budget_remaining_usd", None)
        if remaining is not None:
            # What this request may spend: the routing stage drops deployments whose
            # estimate exceeds it, so its own reservation counts as available to it.
            ctx.state[BUDGET_REMAINING] = remaining + request.cost_usd

    def settle(self, ctx: RequestContext) -> None:
        handle = ctx.state.pop(_HANDLE, None)
        if not handle:
            return
        # Every answer the request billed, a cascade's superseded one included.
        charge = ctx.total_cost
        if charge is not None:
            input_tokens, output_tokens = charge.prompt_tokens, charge.output_tokens
            usd = charge.usd or 0.0
        else:
            # No usage (the call failed before an answer): the provider bills no dollars,
            # but the tokens sent count against token limits, as providers count them.
            input_tokens, output_tokens, usd = ctx.input_tokens, ctx.output_tokens_counted, 0.0
        engine = self.limiter
        if isinstance(engine, Limiter):
            engine.settle(handle, input_tokens, output_tokens, usd)
        else:  # the shared limiter, through Redis
            task = asyncio.ensure_future(engine.settle(handle, input_tokens, output_tokens, usd))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def report(self, max_entries: int = 1000) -> dict[str, Any] | None:
        """The limits part of ``/aiofast/usage``; None when Redis holds the state."""
        if not isinstance(self.limiter, Limiter):  # the shared limiter keeps it in Redis
            return None
        return usage_report(self.limiter, max_entries=max_entries)

    def collector(self) -> LimitsCollector | None:
        """Prometheus series of the in-process limiter (the Redis store has its own)."""
        if not isinstance(self.limiter, Limiter):
            return None
        return LimitsCollector(self.limiter)

    def request_of(self, ctx: RequestContext) -> LimitRequest:
        """The limiter's view of a request: scope values, tokens and worst-case cost."""
        identity = ctx.identity
        requested = ctx.requested_model
        candidates = self._candidates.of(requested)
        reserved_output = _max_tokens(ctx.body)
        if reserved_output is None:
            ceilings = [c[2] for c in candidates if c[2] is not None]
            model_max = max(ceilings) if ceilings else None
            reserved_output = min(model_max or self._default_output, self._default_output)
        worst = max(
            (ctx.input_tokens * inp + reserved_output * out for inp, out, _ in candidates),
            default=0.0,
        )
        tier = requested if requested in self._tiers else self._default_tier
        return LimitRequest(
            key=identity.key or None,
            user=identity.user or None,
            team=identity.team or None,
            model=requested or None,
            tier=tier,
            labels=list(identity.labels.items()),
            input_tokens=ctx.input_tokens,
            reserved_output_tokens=reserved_output,
            cost_usd=worst,
        )


def limits_stage(
    policy: Policy, prices: PriceTable, shared: SharedState | None = None
) -> LimitsStage | None:
    """The stage for ``policy.limits`` (shared through Redis when ``shared`` is given), or
    None when the policy has no limits."""
    return LimitsStage(policy, prices, shared) if policy.limits else None


async def _sweep_forever(limiter: Limiter) -> None:
    """Expires overdue reservations every second and evicts idle values every minute."""
    loop = asyncio.get_running_loop()
    next_eviction = loop.time() + EVICT_EVERY_S
    while True:
        await asyncio.sleep(EXPIRE_EVERY_S)
        try:
            expired = limiter.expire_overdue()
            if expired:
                logger.warning(
                    "%d reservations were never settled and expired at their reserved amount "
                    "(handlers that failed or streams left unfinished)",
                    expired,
                )
            if loop.time() >= next_eviction:
                next_eviction = loop.time() + EVICT_EVERY_S
                await asyncio.to_thread(limiter.sweep)
        except Exception:
            # A sweep that fails must not stop the next one; admissions expire and evict
            # on their own meanwhile.
            logger.exception("limits: background sweep failed")


def _max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _refused(refusal: Any, headers: dict[str, str]) -> RequestRefused:
    if refusal.code == "store_unavailable":
        # The shared limiter could not reach Redis and its policy is to fail closed.
        return RequestRefused(
            503, refusal.message, type="server_error", code=refusal.code, headers=headers
        )
    merged = dict(headers)
    if refusal.retry_after is None:
        merged["x-should-retry"] = "false"
    return rate_limited(
        refusal.message,
        retry_after=refusal.retry_after,
        headers=merged,
        code=refusal.code,
    )


class _CandidatePrices:
    """Per requested model: (input, output) USD per token and max output tokens of every
    deployment that could serve it, so the worst case is known before routing."""

    def __init__(self, policy: Policy, prices: PriceTable) -> None:
        self._policy = policy
        self._prices = prices
        self._everything = self._priced(policy.deployments)
        self._cache: dict[str, list[tuple[float, float, int | None]]] = {}

    def of(self, requested: str) -> list[tuple[float, float, int | None]]:
        found = self._cache.get(requested)
        if found is None:
            found = self._priced(self._deployments(requested)) or self._everything
            if len(self._cache) < 4096:
                self._cache[requested] = found
        return found

    def _deployments(self, requested: str) -> Iterable[DeploymentPolicy]:
        policy = self._policy
        names = set(policy.tiers.get(requested, ()))
        return [d for d in policy.deployments if d.name in names or requested in (d.name, d.model)]

    def _priced(
        self, deployments: Iterable[DeploymentPolicy]
    ) -> list[tuple[float, float, int | None]]:
        priced = []
        for deployment in deployments:
            price = self._prices.get(deployment.price_as or deployment.model)
            if price is None:
                logger.warning(
                    "deployment %s: model %s has no price; budgets reserve nothing for it",
                    deployment.name,
                    deployment.price_as or deployment.model,
                )
                continue
            priced.append(
                (
                    price.input_cost_per_token or 0.0,
                    price.output_cost_per_token or 0.0,
                    price.max_output_tokens,
                )
            )
        return priced
