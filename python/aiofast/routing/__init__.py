"""Routing and resilience: which deployment answers a request, and what happens when
one fails.

The Rust core decides (rules, tiers, strategies, sticky experiments, breakers) and
explains itself; :class:`Executor` carries a decision out with timeouts, retries within
a budget, fallbacks, stream commitment and cascades.
"""

from __future__ import annotations

from aiofast._core import RouteDecision, RouteFacts, route_bucket
from aiofast.routing.constraints import OutputCheck
from aiofast.routing.executor import Attempt, Call, Decision, Executor, Plan, Reply, Routed
from aiofast.routing.retry import RetryBudget, Verdict, backoff_delay, classify, retry_after
from aiofast.routing.router import Router, load_spec
from aiofast.routing.spec import (
    BreakerSpec,
    CascadeSpec,
    Conditions,
    DeploymentSpec,
    ExperimentSpec,
    RetrySpec,
    RoutingSpec,
    RuleSpec,
    TierSpec,
    Timeouts,
    VariantSpec,
)

__all__ = [
    "Attempt",
    "BreakerSpec",
    "Call",
    "CascadeSpec",
    "Conditions",
    "Decision",
    "DeploymentSpec",
    "Executor",
    "ExperimentSpec",
    "OutputCheck",
    "Plan",
    "Reply",
    "RetryBudget",
    "RetrySpec",
    "RouteDecision",
    "RouteFacts",
    "Routed",
    "Router",
    "RoutingSpec",
    "RuleSpec",
    "TierSpec",
    "Timeouts",
    "VariantSpec",
    "Verdict",
    "backoff_delay",
    "classify",
    "load_spec",
    "retry_after",
    "route_bucket",
]
