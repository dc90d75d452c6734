"""The exception hierarchy of aiofast.

Every error aiofast raises derives from :class:`AiofastError` and also from the
builtin a caller would naturally catch, so ``except ValueError`` keeps working.
Errors raised by the Rust core are mapped to these classes in one place
(``crates/py/src/errors.rs``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AiofastError",
    "ConfigError",
    "InvalidInputError",
    "NotFoundError",
    "RouteExhaustedError",
    "StoreUnavailableError",
    "UpstreamError",
    "UpstreamTimeoutError",
]


class AiofastError(Exception):
    """Root of every aiofast error."""


class InvalidInputError(AiofastError, ValueError):
    """An argument or request that can never be valid."""


class ConfigError(AiofastError, ValueError):
    """A policy or setting that cannot be used; the message names the key."""


class NotFoundError(AiofastError, KeyError):
    """An unknown name: encoding, model, rule, scope.

    KeyError would quote the message; str() here returns it unchanged.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UpstreamError(AiofastError, ConnectionError):
    """A provider failed, refused or returned something unusable."""


class UpstreamTimeoutError(UpstreamError, TimeoutError):
    """A provider did not answer within its timeout."""


class StoreUnavailableError(AiofastError, ConnectionError):
    """A shared store (Redis) did not answer within its bound, or is known to be down."""


class RouteExhaustedError(UpstreamError):
    """No candidate deployment produced an answer within the attempt cap.

    ``reply`` is the last upstream error reply (relay its status when the request itself
    was at fault), ``attempts`` the calls made, ``reason`` a short code for the log.
    """

    def __init__(self, message: str, *, reason: str, attempts: list[Any], reply: Any = None):
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts
        self.reply = reply
