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
from aiofast.routing import (
    RouteDecision,
    RouteFacts,
    Router,
    RoutingSpec,
)

__all__ = [
    "Admission",
    "AiofastError",
    "ConfigError",
    "InvalidInputError",
    "Limiter",
    "ManualClock",
    "NotFoundError",
    "Refusal",
    "RequestContext",
    "RouteDecision",
    "RouteExhaustedError",
    "RouteFacts",
    "Router",
    "RoutingSpec",
    "StoreUnavailableError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "__version__",
]
