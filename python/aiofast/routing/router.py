"""The Python face of the Rust router: decisions, and reports of calls back to it."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from aiofast._core import RouteDecision, RouteFacts
from aiofast._core import Router as _NativeRouter
from aiofast.errors import ConfigError
from aiofast.routing.spec import DeploymentSpec, RoutingSpec, Timeouts

__all__ = ["Router", "load_spec"]


def load_spec(spec: RoutingSpec | Mapping[str, Any]) -> RoutingSpec:
    """Validates a routing spec given as a mapping (for example a parsed TOML table)."""
    if isinstance(spec, RoutingSpec):
        return spec
    try:
        return RoutingSpec.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"routing.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid routing spec: {problems}") from None


class Router:
    """Decides ordered candidate lists and learns from call outcomes.

    ``clock`` returns seconds on a monotonic clock; tests pass their own to drive the
    breaker's cool-down. ``seed`` fixes the weighted-random order for reproducible runs.
    """

    def __init__(
        self,
        spec: RoutingSpec | Mapping[str, Any],
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = load_spec(spec)
        self.clock = clock
        if seed is None:
            seed = random.getrandbits(64)
        self._native = _NativeRouter(self.spec.core_json(), seed)
        self._deployments = {d.name: d for d in self.spec.deployments}

    def decide(self, facts: RouteFacts) -> RouteDecision:
        return self._native.decide(facts, self.clock())

    def decide_tier(self, facts: RouteFacts, tier: str) -> RouteDecision:
        """Candidates of one tier, for a cascade escalating to it."""
        return self._native.decide_tier(facts, tier, self.clock())

    def start(self, deployment: str) -> bool:
        """Reserves a call; False when the deployment's breaker refuses it right now."""
        return self._native.start(deployment, self.clock())

    def record(self, deployment: str, ok: bool, latency: float | None = None) -> None:
        """Reports the outcome of a started call (latency in seconds, successes only)."""
        self._native.record(deployment, ok, latency, self.clock())

    def abandon(self, deployment: str) -> None:
        """Ends a started call that has no outcome, such as a client disconnect."""
        self._native.abandon(deployment)

    def snapshot(self) -> dict[str, Any]:
        """Plain data: per deployment in-flight, latency average, breaker state; per
        experiment the number of assignments of each variant."""
        snapshot: dict[str, Any] = orjson.loads(self._native.snapshot_json())
        return snapshot

    def deployment(self, name: str) -> DeploymentSpec:
        return self._deployments[name]

    def timeouts(self, name: str) -> Timeouts:
        return self._deployments[name].timeouts or self.spec.timeouts
