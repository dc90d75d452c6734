"""The routing part of a policy: deployments, tiers, rules, experiments, breaker, retries.

Validated here with messages that name the key; the Rust core re-checks what it compiles
(references between names) and receives only the fields it uses, as JSON.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BreakerSpec",
    "CascadeSpec",
    "Conditions",
    "DeploymentSpec",
    "ExperimentSpec",
    "RetrySpec",
    "RoutingSpec",
    "RuleSpec",
    "TierSpec",
    "Timeouts",
    "VariantSpec",
]

Strategy = Literal["weighted_random", "lowest_latency", "least_busy", "cheapest"]

# Fields that only the asyncio layer reads; they are not sent to the core.
_PYTHON_ONLY = {"timeouts", "retry", "cascade"}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Spec):
    """Seconds a call may take: to connect, to the first byte of the answer, in total."""

    connect: float = Field(default=5.0, gt=0)
    first_token: float = Field(default=30.0, gt=0)
    total: float = Field(default=300.0, gt=0)


class DeploymentSpec(_Spec):
    name: str
    upstream: str
    model: str
    weight: float = Field(default=1.0, ge=0)
    context_window: int | None = Field(default=None, gt=0)
    input_usd_per_mtok: float = Field(default=0.0, ge=0)
    output_usd_per_mtok: float = Field(default=0.0, ge=0)
    max_in_flight: int | None = Field(default=None, gt=0)
    timeouts: Timeouts | None = None


class TierSpec(_Spec):
    name: str
    deployments: list[str] = Field(min_length=1)
    strategy: Strategy = "weighted_random"
    aliases: list[str] = []
    fallbacks: list[str] = []
    escalate_to: str | None = None
    escalates: bool = True


class Conditions(_Spec):
    """Every condition that is set must hold; an empty set of conditions always holds."""

    input_tokens_over: int | None = Field(default=None, ge=0)
    input_tokens_at_most: int | None = Field(default=None, ge=0)
    model_in: list[str] = []
    tags_any: list[str] = []
    tags_all: list[str] = []
    user_tier_in: list[str] = []
    has_tools: bool | None = None
    has_images: bool | None = None
    has_json_schema: bool | None = None
    guard_route_in: list[str] = []
    budget_remaining_usd_under: float | None = Field(default=None, ge=0)
    downgrade: bool | None = None


class RuleSpec(_Spec):
    name: str
    when: Conditions = Conditions()
    tier: str
    shadow: bool = False


class VariantSpec(_Spec):
    name: str
    weight: float = Field(ge=0)
    tier: str | None = None
    deployment: str | None = None
    template: str | None = None


class ExperimentSpec(_Spec):
    name: str
    salt: str | None = None
    subject: Literal["user", "key"] = "user"
    when: Conditions = Conditions()
    tiers: list[str] = []
    variants: list[VariantSpec] = Field(min_length=1)
    shadow: bool = False


class BreakerSpec(_Spec):
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    min_calls: int = Field(default=5, ge=1)
    window_seconds: float = Field(default=30.0, gt=0)
    cooldown_seconds: float = Field(default=15.0, ge=0)
    half_open_calls: int = Field(default=2, ge=1)
    shadow: bool = False


class RetrySpec(_Spec):
    """Retries and fallbacks of one request.

    ``max_attempts`` is the hard cap on calls a request makes over all deployments,
    retries, fallbacks and a cascade together; ``retries_per_deployment`` bounds the
    retries of one deployment before falling back. Retries on the same deployment spend
    the retry budget: a token bucket that every request fills by ``budget_ratio`` (up to
    ``budget_burst``), so that in an outage retries add at most that share of load.
    No retry, fallback or cascade call starts later than ``deadline`` seconds after the
    request's first call.
    """

    max_attempts: int = Field(default=4, ge=1, le=20)
    retries_per_deployment: int = Field(default=2, ge=0)
    base_delay: float = Field(default=0.25, gt=0)
    max_delay: float = Field(default=8.0, gt=0)
    retry_after_cap: float = Field(default=30.0, ge=0)
    budget_ratio: float = Field(default=0.1, ge=0)
    budget_burst: float = Field(default=10.0, ge=0)
    deadline: float = Field(default=300.0, gt=0)


class CascadeSpec(_Spec):
    """When an answer fails an output constraint, ask the next larger tier once."""

    enabled: bool = True
    invalid_json: bool = True
    refusal_patterns: list[str] = [
        r"(?i)^\s*(I'm sorry|I am sorry|I apologi[sz]e),? but I (can(not|'t)|am unable to)",
        r"(?i)^\s*I (can(not|'t)|am unable to|won't) (help|assist|comply) with",
    ]
    guard_verdict: bool = True
    shadow: bool = False


class RoutingSpec(_Spec):
    deployments: list[DeploymentSpec] = Field(min_length=1)
    tiers: list[TierSpec] = Field(min_length=1)
    rules: list[RuleSpec] = []
    default_tier: str | None = None
    experiments: list[ExperimentSpec] = []
    breaker: BreakerSpec = BreakerSpec()
    latency_alpha: float = Field(default=0.3, gt=0, le=1)
    assumed_output_tokens: int = Field(default=256, ge=0)
    timeouts: Timeouts = Timeouts()
    retry: RetrySpec = RetrySpec()
    cascade: CascadeSpec = CascadeSpec()

    @model_validator(mode="after")
    def _retry_delays_ordered(self) -> RoutingSpec:
        if self.retry.base_delay > self.retry.max_delay:
            raise ValueError("retry.base_delay must not exceed retry.max_delay")
        return self

    def core_json(self) -> str:
        """The JSON the Rust core compiles: every field except the Python-only ones."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude=_PYTHON_ONLY)
        for deployment in data["deployments"]:
            deployment.pop("timeouts", None)
        return orjson.dumps(data).decode()
