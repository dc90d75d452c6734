"""The pipeline's limit stage: ``[[limits]]`` applied to every gateway request.

Works with the in-process :class:`~aiofast.limits.Limiter` (one process) and with
:class:`~aiofast.stores.shared_limits.SharedLimiter` (several processes sharing Redis):
both take the same request context and answer with the same fields, the shared one
asynchronously. Admission reserves the request's input tokens plus its reserved output
(``max_tokens`` / ``max_completion_tokens``, else the model's largest output clamped by
``default_max_output``) and its worst-case cost over the deployments it may be sent to;
settlement swaps them for what the response used.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from aiofast._core import RequestContext as LimitContext
from aiofast.context import RequestContext
from aiofast.limits.http import ratelimit_headers
from aiofast.limits.limiter import Limiter, reserved_output_tokens, worst_case_cost
from aiofast.policy import Policy
from aiofast.prices import PriceTable
from aiofast.refusals import RequestRefused, rate_limited

__all__ = ["LimitsStage"]

logger = logging.getLogger("aiofast.limits")

STATE = "limits"
DEFAULT_MAX_OUTPUT = 4096


class LimitsStage:
    """Admit and settle every request against the policy's limits."""

    def __init__(
        self,
        limiter: Any,
        policy: Policy,
        prices: PriceTable,
        *,
        default_max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> None:
        self.limiter = limiter
        self.policy = policy
        self.prices = prices
        self.default_max_output = default_max_output
        self._settling: set[asyncio.Task[Any]] = set()

    async def admit(self, ctx: RequestContext) -> None:
        asked = self._context(ctx)
        admission = self.limiter.admit(asked)
        if inspect.isawaitable(admission):
            admission = await admission
        ctx.state[STATE] = (admission, asked)
        headers = ratelimit_headers(admission)
        ctx.response_headers.update(headers)
        refusal = admission.refusal
        if refusal is None:
            return
        if refusal.code == "store_unavailable":
            raise RequestRefused(
                503, refusal.message, type="server_error", code=refusal.code, headers=headers
            )
        raise rate_limited(
            refusal.message, retry_after=refusal.retry_after, headers=headers, code=refusal.code
        )

    def settle(self, ctx: RequestContext) -> None:
        held = ctx.state.get(STATE)
        if held is None or held[0].handle is None:
            return
        admission, _ = held
        charge = ctx.cost
        used_input = charge.prompt_tokens if charge else ctx.input_tokens
        used_output = charge.output_tokens if charge else ctx.output_tokens_counted
        used_usd = (charge.usd or 0.0) if charge else 0.0
        settled = self.limiter.settle(admission.handle, used_input, used_output, used_usd)
        if inspect.isawaitable(settled):
            # Settling the shared limiter is one Redis round trip: off the response path.
            task = asyncio.ensure_future(settled)
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    def _context(self, ctx: RequestContext) -> LimitContext:
        identity = ctx.identity
        models = self._candidate_models(ctx.requested_model)
        prices = [self.prices.get(model) for model in models]
        model_max = max((p.max_output_tokens or 0 for p in prices if p), default=0) or None
        asked = ctx.body.get("max_completion_tokens", ctx.body.get("max_tokens"))
        output = reserved_output_tokens(
            asked if isinstance(asked, int) else None, model_max, self.default_max_output
        )
        per_million = [
            ((p.input_cost_per_token or 0.0) * 1e6, (p.output_cost_per_token or 0.0) * 1e6)
            for p in prices
            if p is not None
        ]
        cost = worst_case_cost(ctx.input_tokens, output, per_million) if per_million else 0.0
        return LimitContext(
            key=identity.key or None,
            user=identity.user or None,
            team=identity.team or None,
            model=ctx.requested_model or None,
            tier=ctx.requested_model if ctx.requested_model in self.policy.tiers else None,
            labels=list(identity.labels.items()),
            input_tokens=ctx.input_tokens,
            reserved_output_tokens=output,
            cost_usd=cost,
        )

    def _candidate_models(self, requested: str) -> list[str]:
        """The models a request for ``requested`` (tier, deployment or model) may reach."""
        deployments = {d.name: d for d in self.policy.deployments}
        names = self.policy.tiers.get(requested) or (
            (requested,) if requested in deployments else ()
        )
        models = [deployments[name].model for name in names if name in deployments]
        return models or [requested]


def limits_stage(policy: Policy, prices: PriceTable, shared: Any = None) -> LimitsStage | None:
    """The stage for ``policy.limits``: shared through Redis when ``shared`` is given."""
    if not policy.limits:
        return None
    limiter = shared.limiter(policy.limits) if shared is not None else Limiter(policy.limits)
    return LimitsStage(limiter, policy, prices)
