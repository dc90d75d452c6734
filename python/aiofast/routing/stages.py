"""The routing engine in the request pipeline: the ``route`` and ``call upstream`` stages.

:class:`PolicyRouter` turns a request context into facts, asks the Rust router for an
ordered candidate list and keeps the decision on the context. :class:`ResilientCaller`
carries the decision out with the :class:`~aiofast.routing.Executor`: timeouts, retries
within the budget, fallbacks, breakers, stream commitment and cascades. The answer's
``x-aiofast-route`` header (and the usage event's ``route``) is the decision's
explanation plus what happened: ``tier=small; by=default; exp=canary:new;
served_by=mini; attempts=2``.

Facts other stages may leave on the context, by key of ``ctx.state``:

- ``"guard.routes"``: names from guardrail ``route`` verdicts (list of str);
- ``"limits.budget_remaining_usd"``: smallest remaining budget of the request (float);
- ``"limits.downgrade"``: a budget is nearly spent (bool), a fact rules can match;
- ``"limits.downgrade_to"``: the tier that budget asks for (str); taken unless a rule
  claimed the request;
- ``"limits.over_limit"``: deployments over their own rate limits (list of str).

What this module leaves there: ``"routing.routed"``, the :class:`~aiofast.routing.Routed`
of the answer (attempts, experiments, cascade); after a cascade, each answer that failed
its constraints also goes to ``ctx.state[aiofast.stages.SUPERSEDED]``, which the pipeline
bills to the model that produced it.

Labels of the caller's key become tags (``name=value``), followed by the request's own
tags (``ctx.tags``, from the ``x-aiofast-tags`` header; :mod:`aiofast.routing.tags`);
``user_tier`` among the key's labels (never a request tag) fills the user-tier fact.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from aiofast._core import RouteFacts
from aiofast.context import Candidate, RequestContext
from aiofast.errors import RouteExhaustedError, UpstreamError, UpstreamTimeoutError
from aiofast.parsing import API_CHAT, API_MESSAGES
from aiofast.policy import Policy
from aiofast.prices import PriceTable
from aiofast.refusals import (
    RequestRefused,
    bad_request,
    upstream_failed,
    upstream_timeout,
)
from aiofast.routing.constraints import OutputCheck
from aiofast.routing.executor import Attempt, Decision, Executor, Plan, Reply, Routed
from aiofast.routing.policy import build_spec
from aiofast.routing.router import Router
from aiofast.routing.spec import DeploymentSpec, Timeouts
from aiofast.routing.tags import route_tags
from aiofast.stages import SUPERSEDED, SupersededAnswer, TierRouter
from aiofast.upstream import UpstreamCall

__all__ = ["PolicyRouter", "ResilientCaller", "downgrade_to", "engine_for", "facts_of"]

logger = logging.getLogger("aiofast.routing")

STATE = "routing.decision"
ROUTED = "routing.routed"
_KINDS_BY_API = {API_MESSAGES: ("anthropic",)}
_OPENAI_KINDS = ("openai", "simulated")


def engine_for(policy: Policy, prices: PriceTable | None = None) -> Router:
    """The router of a policy's ``[[deployments]]``, ``[tiers]`` and routing sections."""
    spec = build_spec(
        upstreams=policy.upstreams,
        deployments=policy.deployments,
        tiers=policy.tiers,
        routes=policy.routes,
        experiments=policy.experiments,
        settings=policy.routing,
        default_tier=policy.server.default_tier,
        prices=prices or PriceTable.default(),
    )
    return Router(spec)


def facts_of(ctx: RequestContext) -> RouteFacts:
    body, identity, state = ctx.body, ctx.identity, ctx.state
    labels = identity.labels
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    fmt = body.get("response_format")
    return RouteFacts(
        input_tokens=ctx.input_tokens,
        max_output_tokens=cap if isinstance(cap, int) and cap > 0 else None,
        model=ctx.requested_model or None,
        tags=route_tags(labels, ctx.tags),
        user=identity.user or None,
        key=identity.key or None,
        user_tier=labels.get("user_tier"),
        has_tools=bool(body.get("tools") or body.get("functions")),
        has_images=_has_images(body.get("messages")),
        has_json_schema=isinstance(fmt, Mapping) and fmt.get("type") == "json_schema",
        guard_routes=list(state.get("guard.routes", ())),
        budget_remaining_usd=state.get("limits.budget_remaining_usd"),
        downgrade=bool(state.get("limits.downgrade")) or downgrade_to(ctx) is not None,
        over_limit=list(state.get("limits.over_limit", ())),
        request_id=ctx.request_id,
    )


def downgrade_to(ctx: RequestContext) -> str | None:
    """The tier the limits stage asks to downgrade to, if any."""
    tier = ctx.state.get("limits.downgrade_to")
    return tier if isinstance(tier, str) else None


def _has_images(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(part, dict) and part.get("type") in ("image_url", "image", "input_image")
            for part in content
        ):
            return True
    return False


class PolicyRouter(TierRouter):
    """The ``route`` stage: rules, aliases, experiments and strategies of the policy.

    A request naming a tier (or alias) goes by the rules first, then that tier. A request
    naming one deployment or concrete model, when no rule claims it, goes where the
    gateway's :class:`~aiofast.stages.TierRouter` sends it: the deployments serving
    exactly that (still with retries, fallbacks among them and breakers).
    """

    def __init__(self, policy: Policy, engine: Router) -> None:
        super().__init__(policy)
        self.policy = policy
        self.engine = engine
        self._kind = {u.name: u.kind for u in policy.upstreams}
        self._tier_names = set(policy.tiers) | {
            alias for t in engine.spec.tiers for alias in t.aliases
        }

    def route(self, ctx: RequestContext) -> list[Candidate]:
        facts = facts_of(ctx)
        native = self.engine.decide(facts)
        decision: Decision = native
        requested = ctx.requested_model
        claimed = native.matched_by in ("rule", "alias")
        cheaper = downgrade_to(ctx)
        if native.matched_by != "rule" and cheaper in self.policy.tiers:
            decision = self._usable(ctx, self._downgraded(facts, str(cheaper)))
        elif not claimed and requested and requested not in self._tier_names:
            decision = self._pinned(ctx)
        else:
            decision = self._usable(ctx, decision)
        ctx.state[STATE] = (decision, facts)
        route = decision.explain()
        return [
            Candidate(self.policy.deployment(name), decision.tier, route)
            for name in decision.candidates
        ]

    def _downgraded(self, facts: RouteFacts, tier: str) -> Plan:
        """The tier the limits layer asked for; never escalated by a cascade."""
        decided = self.engine.decide_tier(facts, tier)
        dropped = ",".join(f"{d}:{why}" for d, why, _ in decided.dropped)
        explanation = f"tier={tier}; by=downgrade" + (f"; dropped={dropped}" if dropped else "")
        return Plan(decided.candidates, tier, explanation)

    def _pinned(self, ctx: RequestContext) -> Plan:
        chosen = super().route(ctx)
        tier = chosen[0].tier
        names = [c.deployment.name for c in chosen]
        return Plan(names, tier, f"tier={tier}; by=model:{ctx.requested_model}")

    def _usable(self, ctx: RequestContext, decision: Decision) -> Decision:
        """Only deployments that speak the client's wire format."""
        kinds = _KINDS_BY_API.get(ctx.api, _OPENAI_KINDS)
        usable = [
            name
            for name in decision.candidates
            if self._kind[self.policy.deployment(name).upstream] in kinds
        ]
        if len(usable) == len(decision.candidates):
            return decision
        if not usable:
            raise bad_request(
                f"The model {ctx.requested_model!r} is not served through this API "
                f"({ctx.api}); its upstream speaks another wire format",
                param="model",
            )
        return Plan(
            usable,
            decision.tier,
            decision.explain(),
            decision.escalation_tier,
            decision.assignments,
        )


class ResilientCaller:
    """The ``call upstream`` stage: the executor over the pipeline's single attempts."""

    def __init__(self, policy: Policy, engine: Router) -> None:
        self.policy = policy
        self.engine = engine
        self.executor = Executor(engine, stream_failures="raise")

    async def call(self, ctx: RequestContext, attempt: Any) -> UpstreamCall:
        decision, facts = ctx.state[STATE]
        # Each reply handed to the executor (by identity), with the call behind it.
        calls: dict[int, tuple[UpstreamCall, Reply]] = {}

        async def send(deployment: DeploymentSpec, timeouts: Timeouts) -> Reply:
            candidate = Candidate(self.policy.deployment(deployment.name), "", "")
            try:
                call: UpstreamCall = await attempt(candidate)
                if call.status >= 400:
                    reply = Reply(call.status, call.headers, await call.read())
                elif not ctx.stream:
                    # Parsed once here: the cascade's check and the pipeline both read it.
                    body = await call.read()
                    reply = Reply(call.status, call.headers, body, data=_json_object(body))
                else:
                    reply = Reply(
                        call.status, call.headers, chunks=_chunks(call), release=_closer(call)
                    )
            except RequestRefused as refusal:
                raise _transport_error(refusal) from refusal
            calls[id(reply)] = (call, reply)
            return reply

        check = None
        if not ctx.stream and ctx.api == API_CHAT:
            check = OutputCheck.for_request(self.engine.spec.cascade, ctx.body)
        try:
            routed = await self.executor.run(
                decision, send, facts=facts, stream=ctx.stream, check=check
            )
        except RouteExhaustedError as exhausted:
            return self._exhausted(ctx, decision, exhausted, calls)
        ctx.state[ROUTED] = routed
        ctx.attempts = len(routed.calls())
        if routed.superseded:
            ctx.state[SUPERSEDED] = _superseded(routed)
        ctx.served = Candidate(
            self.policy.deployment(routed.deployment.name), routed.tier, routed.route_header()
        )
        served, reply = calls[id(routed.reply)]
        return _Answered(served, reply.body, routed.stream, reply.data)

    def _exhausted(
        self,
        ctx: RequestContext,
        decision: Decision,
        exhausted: RouteExhaustedError,
        calls: Mapping[int, tuple[UpstreamCall, Reply]],
    ) -> UpstreamCall:
        made: list[Attempt] = [a for a in exhausted.attempts if a.next_step != "skipped"]
        ctx.attempts = len(made)
        route = f"{decision.explain()}; attempts={len(made)}; failed={exhausted.reason}"
        last = made[-1].deployment if made else None
        if last is not None:
            ctx.served = Candidate(self.policy.deployment(last), decision.tier, route)
        answered = calls.get(id(exhausted.reply))
        if answered is not None:
            # The pipeline turns the upstream's own error reply into the client's error.
            call, reply = answered
            return _Answered(call, reply.body, None)
        ctx.error_type = f"no_route_{exhausted.reason}"
        if exhausted.reason == "timeout":
            raise upstream_timeout(str(exhausted))
        if not made:
            # Every candidate was skipped (breakers open, limits): nothing to wait for here.
            raise upstream_failed(str(exhausted), status=503)
        raise upstream_failed(str(exhausted))


def _superseded(routed: Routed) -> list[SupersededAnswer]:
    """The answers a cascade replaced, for the pipeline to bill; each with the time of
    its own attempt (the last call on its deployment before the cascade)."""
    escalated = [a for a in routed.attempts if a.next_step == "cascade"]
    answers = []
    for index, (deployment, reply) in enumerate(routed.superseded):
        attempt = escalated[index] if index < len(escalated) else None
        answers.append(
            SupersededAnswer(
                deployment.name,
                attempt.tier if attempt else "",
                reply.body,
                attempt.elapsed if attempt else 0.0,
                routed.cascade or "",
            )
        )
    return answers


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _transport_error(refusal: RequestRefused) -> UpstreamError:
    if refusal.status == 504:
        return UpstreamTimeoutError(refusal.message)
    return UpstreamError(refusal.message)


async def _chunks(call: UpstreamCall) -> AsyncIterator[bytes]:
    try:
        async for chunk in call.chunks():
            yield chunk
    except RequestRefused as refusal:
        raise _transport_error(refusal) from refusal


def _closer(call: UpstreamCall) -> Any:
    async def close() -> None:
        call.close()

    return close


class _Answered(UpstreamCall):
    """The call that answered, as the pipeline reads it: a whole body that was already
    read (and checked), or a stream after its first chunk, relayed by the executor (which
    reports the outcome to the router). A stream failure reaches the pipeline as a
    RequestRefused, so it writes the error event in the client's wire format."""

    __slots__ = ("_body", "_data", "_stream")

    def __init__(
        self,
        served: UpstreamCall,
        body: bytes,
        stream: AsyncIterator[bytes] | None,
        data: dict[str, Any] | None = None,
    ) -> None:
        # Same response, deployment and upstream as the call that answered.
        super().__init__(served._response, served.deployment, served.upstream)
        self._body = body
        self._data = data
        self._stream = stream

    async def read(self) -> bytes:
        return self._body

    def parsed(self) -> dict[str, Any] | None:
        return self._data

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._stream is None:
            return
        try:
            async for chunk in self._stream:
                yield chunk
        except UpstreamError as exc:
            raise upstream_failed(str(exc)) from exc
