"""aiofast: the operations layer for LLM traffic from Python.

The public API is re-exported here; the native engine lives in ``aiofast._core``.
"""

from __future__ import annotations

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

__all__ = [
    "Admission",
    "AiofastError",
    "ChatTokens",
    "ConfigError",
    "Cost",
    "InvalidInputError",
    "Limiter",
    "ManualClock",
    "ModelEncoding",
    "ModelPrice",
    "NotFoundError",
    "PriceTable",
    "RedisSettings",
    "Refusal",
    "RequestContext",
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
    "encoding_for_model",
]
