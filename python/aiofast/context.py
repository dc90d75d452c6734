"""The per-request context every pipeline stage reads and writes.

One :class:`RequestContext` is made per request by the gateway, the middleware or the
Client, passed to each stage in order, and turned into one usage event at settle.
Stages added by later parts of aiofast keep their own per-request state in
``ctx.state`` under their own name (``ctx.state["limits"] = reservation``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiofast.auth import ANONYMOUS, Identity
from aiofast.policy import DeploymentPolicy
from aiofast.prices import Cost

__all__ = ["Candidate", "RequestContext", "Superseded"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A deployment the request may go to, the tier it came from and the rule that chose it."""

    deployment: DeploymentPolicy
    tier: str
    route: str


@dataclass(frozen=True, slots=True)
class Superseded:
    """An answer that was billed but not served: a cascade replaced it with the answer of
    a larger tier. It is charged to the model that produced it."""

    deployment: DeploymentPolicy
    tier: str
    model: str
    usage_source: str
    cost: Cost
    elapsed: float
    reason: str


@dataclass(slots=True, eq=False)
class RequestContext:
    """Everything known about one request, filled in stage by stage."""

    request_id: str
    api: str
    body: dict[str, Any]
    raw: bytes = b""
    identity: Identity = ANONYMOUS
    parent_id: str = ""
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)

    # Parse: what the client asked for.
    requested_model: str = ""
    stream: bool = False
    wants_usage: bool = False
    # Tags the client gave the request (``x-aiofast-tags``): ``name`` or ``name=value``.
    tags: list[str] = field(default_factory=list)

    # Count: input tokens as the provider will count them (estimated: no exact tokenizer).
    input_tokens: int = 0
    input_estimated: bool = False

    # Route: the ordered candidates, then the one that answered.
    candidates: list[Candidate] = field(default_factory=list)
    served: Candidate | None = None
    attempts: int = 0

    # Headers every response of this request carries (limits put x-ratelimit-* here).
    response_headers: dict[str, str] = field(default_factory=dict)
    # Per-stage state of stages added later: guard verdicts, limit reservations, variants.
    state: dict[str, Any] = field(default_factory=dict)

    # Call and settle: what happened.
    status: int = 0
    error_type: str = ""
    served_model: str = ""
    usage: dict[str, Any] | None = None
    usage_source: str = ""
    output_tokens_counted: int = 0
    tool_calls: list[str] = field(default_factory=list)
    response_text: str | None = None
    cost: Cost | None = None
    # Answers billed besides the served one (cascades); ``total_cost`` adds them up.
    superseded: list[Superseded] = field(default_factory=list)
    ttft: float | None = None
    upstream_wait: float = 0.0
    client_wait: float = 0.0
    settled: bool = False

    @property
    def target(self) -> Candidate | None:
        """The candidate that answered, else the first one routing chose."""
        if self.served is not None:
            return self.served
        return self.candidates[0] if self.candidates else None

    @property
    def tier(self) -> str:
        target = self.target
        return target.tier if target else ""

    @property
    def route(self) -> str:
        target = self.target
        return target.route if target else ""

    @property
    def deployment(self) -> DeploymentPolicy | None:
        target = self.target
        return target.deployment if target else None

    @property
    def total_cost(self) -> Cost | None:
        """What the request billed: the served answer's cost plus every superseded one.
        Limits settle and the ``x-aiofast-cost-usd`` header use it; the usage event of the
        served answer keeps ``cost``, each superseded answer gets its own."""
        if not self.superseded:
            return self.cost
        charges = [s.cost for s in self.superseded]
        if self.cost is not None:
            charges.append(self.cost)
        usd = [c.usd for c in charges]
        return Cost(
            usd=None if None in usd else sum(u for u in usd if u is not None),
            known=all(c.known for c in charges),
            input_tokens=sum(c.input_tokens for c in charges),
            cached_tokens=sum(c.cached_tokens for c in charges),
            cache_write_tokens=sum(c.cache_write_tokens for c in charges),
            output_tokens=sum(c.output_tokens for c in charges),
            reasoning_tokens=sum(c.reasoning_tokens for c in charges),
            cache_write_1h_tokens=sum(c.cache_write_1h_tokens for c in charges),
        )
