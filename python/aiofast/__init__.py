"""aiofast: the operations layer for LLM traffic from Python.

The public API is re-exported here; the native engine lives in ``aiofast._core``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from aiofast._core import __version__
from aiofast.errors import (
    AiofastError,
    ConfigError,
    InvalidInputError,
    NotFoundError,
    RouteExhaustedError,
    StoreUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from aiofast.guard import (
    ChatFinding,
    ChatVerdict,
    Finding,
    Guard,
    GuardStream,
    JsonSchema,
)
from aiofast.limits import (
    Admission,
    Limiter,
    ManualClock,
    Refusal,
    RequestContext,
)
from aiofast.prices import Cost, ModelPrice, PriceTable, cost
from aiofast.routing import (
    RouteDecision,
    RouteFacts,
    Router,
    RoutingSpec,
)
from aiofast.stores.settings import RedisSettings
from aiofast.tokens import (
    ChatTokens,
    ModelEncoding,
    TokenCounter,
    count_chat,
    count_tokens,
    count_tokens_batch,
    encoding_for_model,
)

if TYPE_CHECKING:
    from aiofast.client import ChatResult, Client
    from aiofast.gateway import create_app
    from aiofast.middleware import CLIENT, REQUEST_CONTEXT, middleware, setup
    from aiofast.pipeline import Pipeline
    from aiofast.policy import Policy, default_policy, load_policy
    from aiofast.refusals import RequestRefused

# The gateway layer (policy models, Prometheus registry, ledger) loads on first use.
_LAZY = {
    "ChatResult": "aiofast.client",
    "Client": "aiofast.client",
    "create_app": "aiofast.gateway",
    "CLIENT": "aiofast.middleware",
    "REQUEST_CONTEXT": "aiofast.middleware",
    "middleware": "aiofast.middleware",
    "setup": "aiofast.middleware",
    "Pipeline": "aiofast.pipeline",
    "Policy": "aiofast.policy",
    "default_policy": "aiofast.policy",
    "load_policy": "aiofast.policy",
    "RequestRefused": "aiofast.refusals",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiofast' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CLIENT",
    "REQUEST_CONTEXT",
    "Admission",
    "AiofastError",
    "ChatFinding",
    "ChatResult",
    "ChatTokens",
    "ChatVerdict",
    "Client",
    "ConfigError",
    "Cost",
    "Finding",
    "Guard",
    "GuardStream",
    "InvalidInputError",
    "JsonSchema",
    "Limiter",
    "ManualClock",
    "ModelEncoding",
    "ModelPrice",
    "NotFoundError",
    "Pipeline",
    "Policy",
    "PriceTable",
    "RedisSettings",
    "Refusal",
    "RequestContext",
    "RequestRefused",
    "RouteDecision",
    "RouteExhaustedError",
    "RouteFacts",
    "Router",
    "RoutingSpec",
    "StoreUnavailableError",
    "TokenCounter",
    "UpstreamError",
    "UpstreamTimeoutError",
    "__version__",
    "cost",
    "count_chat",
    "count_tokens",
    "count_tokens_batch",
    "create_app",
    "default_policy",
    "encoding_for_model",
    "load_policy",
    "middleware",
    "setup",
]
