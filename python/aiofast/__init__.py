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
from aiofast.routing import (
    RouteDecision,
    RouteFacts,
    Router,
    RoutingSpec,
)

__all__ = [
    "AiofastError",
    "ConfigError",
    "InvalidInputError",
    "NotFoundError",
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
