"""The routing sections of the policy file, and their merge with the gateway's sections.

``[[routes]]`` are the rules (first acting match picks a tier), ``[[experiments]]`` the
sticky splits, and ``[routing]`` everything else: breaker, retries, cascade, and per tier
(``[routing.tiers.NAME]``) or per deployment (``[routing.deployments.NAME]``) settings
that the gateway's ``[tiers]`` and ``[[deployments]]`` do not carry::

    [[routes]]
    name = "long-context"
    when = { input_tokens_over = 8000 }
    tier = "large"

    [routing.tiers.medium]
    strategy = "lowest_latency"
    fallbacks = ["large"]

    [routing.deployments.mini]
    context_window = 128000

    [routing.retry]
    max_attempts = 4
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from aiofast.errors import ConfigError
from aiofast.routing.spec import (
    BreakerSpec,
    CascadeSpec,
    DeploymentSpec,
    ExperimentSpec,
    RetrySpec,
    RoutingSpec,
    RuleSpec,
    Strategy,
    TierSpec,
    Timeouts,
)

__all__ = ["DeploymentSettings", "RoutingSettings", "TierSettings", "build_spec"]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierSettings(_Settings):
    strategy: Strategy = "weighted_random"
    aliases: list[str] = Field(default_factory=list)
    fallbacks: list[str] = Field(default_factory=list)
    escalate_to: str | None = None


class DeploymentSettings(_Settings):
    context_window: int | None = Field(default=None, gt=0)
    max_in_flight: int | None = Field(default=None, gt=0)
    # Prices per million tokens for cost-aware routing; the price table's when absent.
    input_usd_per_mtok: float | None = Field(default=None, ge=0)
    output_usd_per_mtok: float | None = Field(default=None, ge=0)


class RoutingSettings(_Settings):
    default_tier: str | None = None
    # Tiers from smallest to largest: a cascade climbs this ladder; tiers off it (and its
    # top) never escalate. Without it, the order of [tiers] is the ladder.
    ladder: list[str] | None = None
    latency_alpha: float = Field(default=0.3, gt=0, le=1)
    assumed_output_tokens: int = Field(default=256, ge=0)
    breaker: BreakerSpec = BreakerSpec()
    retry: RetrySpec = RetrySpec()
    cascade: CascadeSpec = CascadeSpec()
    tiers: dict[str, TierSettings] = Field(default_factory=dict)
    deployments: dict[str, DeploymentSettings] = Field(default_factory=dict)


class _Timeouts(Protocol):
    connect: float
    first_byte: float
    total: float


class _Upstream(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def timeouts(self) -> _Timeouts: ...


class _Deployment(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def upstream(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def weight(self) -> float: ...
    @property
    def price_as(self) -> str | None: ...


class _ModelPrice(Protocol):
    @property
    def input_cost_per_token(self) -> float | None: ...
    @property
    def output_cost_per_token(self) -> float | None: ...
    @property
    def max_input_tokens(self) -> int | None: ...


class _Prices(Protocol):
    def get(self, model: str) -> _ModelPrice | None: ...


def build_spec(
    *,
    upstreams: Sequence[_Upstream],
    deployments: Sequence[_Deployment],
    tiers: Mapping[str, Sequence[str]],
    routes: Sequence[RuleSpec],
    experiments: Sequence[ExperimentSpec],
    settings: RoutingSettings,
    default_tier: str | None,
    prices: _Prices,
) -> RoutingSpec:
    """One routing spec from the gateway's deployments and tiers and the routing sections.

    Timeouts come from each deployment's upstream (``first_byte`` bounds the first
    token); prices and the context window from ``[routing.deployments.NAME]`` or else the
    price table (its ``max_input_tokens``).
    """
    _check_names("routing.tiers", settings.tiers, tiers)
    _check_names("routing.deployments", settings.deployments, [d.name for d in deployments])
    timeouts = {u.name: u.timeouts for u in upstreams}
    specs = []
    for d in deployments:
        extra = settings.deployments.get(d.name, DeploymentSettings())
        price = prices.get(d.price_as or d.model)
        t = timeouts[d.upstream]
        specs.append(
            DeploymentSpec(
                name=d.name,
                upstream=d.upstream,
                model=d.model,
                weight=d.weight,
                context_window=extra.context_window or _window(price),
                max_in_flight=extra.max_in_flight,
                input_usd_per_mtok=_per_mtok(extra.input_usd_per_mtok, price, "input"),
                output_usd_per_mtok=_per_mtok(extra.output_usd_per_mtok, price, "output"),
                timeouts=Timeouts(connect=t.connect, first_token=t.first_byte, total=t.total),
            )
        )
    if settings.ladder is not None:
        _check_names("routing.ladder", dict.fromkeys(settings.ladder), tiers)
    tier_specs = []
    for name, members in tiers.items():
        own = settings.tiers.get(name, TierSettings())
        escalate_to, escalates = _climb(name, own, settings.ladder)
        tier_specs.append(
            TierSpec(
                name=name,
                deployments=list(members),
                strategy=own.strategy,
                aliases=own.aliases,
                fallbacks=own.fallbacks,
                escalate_to=escalate_to,
                escalates=escalates,
            )
        )
    return RoutingSpec(
        deployments=specs,
        tiers=tier_specs,
        rules=list(routes),
        default_tier=settings.default_tier or default_tier,
        experiments=list(experiments),
        breaker=settings.breaker,
        latency_alpha=settings.latency_alpha,
        assumed_output_tokens=settings.assumed_output_tokens,
        retry=settings.retry,
        cascade=settings.cascade,
    )


def _check_names(key: str, given: Mapping[str, object], known: Collection[str]) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"{key}: unknown names {unknown}; known: {sorted(known)}")


def _climb(tier: str, own: TierSettings, ladder: list[str] | None) -> tuple[str | None, bool]:
    """Where a cascade goes from ``tier``: its own setting, else the ladder's next rung
    (nowhere from the top or from off the ladder), else the next tier of ``[tiers]``."""
    if own.escalate_to is not None or ladder is None:
        return own.escalate_to, True
    if tier in ladder and ladder.index(tier) + 1 < len(ladder):
        return ladder[ladder.index(tier) + 1], True
    return None, False


def _window(price: _ModelPrice | None) -> int | None:
    return None if price is None else price.max_input_tokens


def _per_mtok(given: float | None, price: _ModelPrice | None, side: str) -> float:
    if given is not None:
        return given
    if price is None:
        return 0.0
    per_token = price.input_cost_per_token if side == "input" else price.output_cost_per_token
    return (per_token or 0.0) * 1_000_000
