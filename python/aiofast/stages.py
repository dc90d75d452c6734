"""The pluggable stages of the pipeline and their default implementations.

The protocols here are the seams described in :mod:`aiofast.pipeline`: guard input,
limit, route, call, guard output and observe. The defaults: the policy's ``[guard]``
rules when it has them (:mod:`aiofast.guard_stage`), no limits, and the policy's routing
(:mod:`aiofast.routing.stages`) when it has tiers, else the requested deployment or model
with one attempt (:class:`TierRouter`, :class:`SingleAttempt`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

from aiofast.context import Candidate, RequestContext
from aiofast.parsing import API_MESSAGES
from aiofast.policy import Policy
from aiofast.refusals import bad_request, model_not_found
from aiofast.upstream import UpstreamCall

if TYPE_CHECKING:
    from aiofast.guard_stage import PolicyGuard

__all__ = [
    "SUPERSEDED",
    "Attempt",
    "Caller",
    "InputGuard",
    "Limiter",
    "NoGuard",
    "NoLimits",
    "Observer",
    "OutputGuard",
    "Router",
    "SingleAttempt",
    "Stages",
    "StreamChecker",
    "SupersededAnswer",
    "TierRouter",
]


class InputGuard(Protocol):
    """Checks the request before it is admitted.

    May rewrite ``ctx.body`` (redaction; set ``ctx.raw = b""`` so the body is
    re-serialised), record verdicts in ``ctx.state``, or raise a
    :class:`~aiofast.refusals.RequestRefused` to block.
    """

    async def check_input(self, ctx: RequestContext) -> None: ...


class StreamChecker(Protocol):
    """Output checks over one stream, fed text deltas in order."""

    def feed(self, delta: str) -> str:
        """Return the text to forward in place of ``delta`` (itself when clean);
        raise a RequestRefused to end the stream with an error event."""
        ...

    def finish(self) -> str:
        """The text ended (before the finish reason, usage and end events): return the
        text still held back, forwarded ahead of those events ("" when none); raise a
        RequestRefused if the output fails. Feeding may start again after it (a
        later text block of the same answer)."""
        ...


class OutputGuard(Protocol):
    """Checks the answer before the client sees it."""

    def check_output(self, ctx: RequestContext, text: str) -> str | None:
        """Whole answers: replacement text, None when unchanged, or raise RequestRefused."""
        ...

    def stream_checker(self, ctx: RequestContext) -> StreamChecker | None:
        """A checker for one stream, or None to relay without per-chunk checks."""
        ...


class Limiter(Protocol):
    """Admission against rate limits and budgets."""

    async def admit(self, ctx: RequestContext) -> None:
        """Reserve capacity or raise :func:`~aiofast.refusals.rate_limited`; may add
        ``x-ratelimit-*`` headers to ``ctx.response_headers``."""
        ...

    def settle(self, ctx: RequestContext) -> None:
        """Called once for every admitted request, with ``ctx.total_cost`` and usage final
        (also after errors and client disconnects): reconcile and release."""
        ...


class Router(Protocol):
    """Chooses the ordered candidate list for a request."""

    def route(self, ctx: RequestContext) -> list[Candidate]: ...


Attempt = Callable[[Candidate], Awaitable[UpstreamCall]]

# Key of ``ctx.state`` where a caller leaves the answers it read whole but did not serve
# (a cascade's first answer): a list of SupersededAnswer, billed by the pipeline at settle.
SUPERSEDED = "call.superseded"


class SupersededAnswer(NamedTuple):
    """A whole answer the provider billed although the client got another one."""

    deployment: str
    tier: str
    body: bytes
    elapsed: float
    reason: str


class Caller(Protocol):
    """Runs the attempts: which candidate, how many times, with which pauses.

    ``attempt(candidate)`` sends the request and returns once headers are in (any
    status); it raises a RequestRefused on a transport failure or timeout. The caller must
    set ``ctx.served`` and count ``ctx.attempts``, and ``close()`` any call it drops. An
    answer it read but replaced by another goes to ``ctx.state[SUPERSEDED]`` to be billed.
    """

    async def call(self, ctx: RequestContext, attempt: Attempt) -> UpstreamCall: ...


class Observer(Protocol):
    """Sees every settled request (latency EWMA, circuit breakers, experiments)."""

    def observe(self, ctx: RequestContext) -> None: ...


class NoGuard:
    """No guardrails: everything passes unchanged."""

    async def check_input(self, ctx: RequestContext) -> None:
        return None

    def check_output(self, ctx: RequestContext, text: str) -> str | None:
        return None

    def stream_checker(self, ctx: RequestContext) -> StreamChecker | None:
        return None


class NoLimits:
    """No limits: every request is admitted."""

    async def admit(self, ctx: RequestContext) -> None:
        return None

    def settle(self, ctx: RequestContext) -> None:
        return None


class SingleAttempt:
    """One attempt on the first candidate; no retries, no fallback."""

    async def call(self, ctx: RequestContext, attempt: Attempt) -> UpstreamCall:
        candidate = ctx.candidates[0]
        ctx.served = candidate
        ctx.attempts += 1
        return await attempt(candidate)


_KINDS_BY_API = {API_MESSAGES: ("anthropic",)}
_OPENAI_KINDS = ("openai", "simulated")


class TierRouter:
    """The requested tier, deployment or model, mapped to a deployment.

    A tier name gives its deployments in order (route ``tier:NAME``); a deployment
    name gives that deployment; a concrete model gives the deployments serving it.
    """

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        tier_of = {member: tier for tier, members in policy.tiers.items() for member in members}
        self._by_name: dict[str, list[Candidate]] = {}
        for tier, members in policy.tiers.items():
            self._by_name[tier] = [
                Candidate(policy.deployment(member), tier, f"tier:{tier}") for member in members
            ]
        for deployment in policy.deployments:
            tier = tier_of.get(deployment.name, "")
            candidate = Candidate(deployment, tier, "deployment")
            self._by_name.setdefault(deployment.name, [candidate])
            by_model = self._by_name.setdefault(deployment.model, [])
            if all(c.route == "model" for c in by_model):
                by_model.append(Candidate(deployment, tier, "model"))
        self._kind = {u.name: u.kind for u in policy.upstreams}

    def names(self) -> list[str]:
        """What a client may ask for: tier names first, then concrete models."""
        tiers = list(self._policy.tiers)
        return tiers + sorted(name for name in self._by_name if name not in self._policy.tiers)

    def route(self, ctx: RequestContext) -> list[Candidate]:
        candidates = self._by_name.get(ctx.requested_model)
        if candidates is None:
            raise model_not_found(ctx.requested_model, self.names())
        kinds = _KINDS_BY_API.get(ctx.api, _OPENAI_KINDS)
        usable = [c for c in candidates if self._kind[c.deployment.upstream] in kinds]
        if not usable:
            raise bad_request(
                f"The model {ctx.requested_model!r} is not served through this API "
                f"({ctx.api}); its upstream speaks another wire format",
                param="model",
            )
        return usable


@dataclass(slots=True)
class Stages:
    """The stages one pipeline runs; replace any of them to plug in behaviour."""

    router: Router
    input_guard: InputGuard = field(default_factory=NoGuard)
    limiter: Limiter = field(default_factory=NoLimits)
    caller: Caller = field(default_factory=SingleAttempt)
    output_guard: OutputGuard = field(default_factory=NoGuard)
    observers: list[Observer] = field(default_factory=list)

    @classmethod
    def default(cls, policy: Policy) -> Stages:
        guard = _guard_stage(policy)
        if not policy.tiers:
            return cls(router=TierRouter(policy), input_guard=guard, output_guard=guard)
        # Rules, experiments, breakers, retries and fallbacks (aiofast.routing).
        from aiofast.routing.stages import PolicyRouter, ResilientCaller, engine_for

        engine = engine_for(policy)
        return cls(
            router=PolicyRouter(policy, engine),
            caller=ResilientCaller(policy, engine),
            input_guard=guard,
            output_guard=guard,
        )


def _guard_stage(policy: Policy) -> NoGuard | PolicyGuard:
    """The policy's guardrails (aiofast.guard_stage), or none without an enabled [guard]."""
    if policy.guard is None or not policy.guard.enabled:
        return NoGuard()
    from aiofast.guard_stage import PolicyGuard

    return PolicyGuard(policy.guard)
