"""Refusals: every way aiofast says no to a request, in the provider's error format.

A stage of the pipeline raises :class:`RequestRefused`; the gateway turns it into a response
whose body follows the wire format of the API the client spoke (OpenAI
``{"error": {message, type, param, code}}`` or Anthropic
``{"type": "error", "error": {type, message}}``), with its status and headers
(``Retry-After``, ``x-ratelimit-*``). Nothing else ever reaches a client as an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import orjson

from aiofast.errors import AiofastError

__all__ = [
    "RequestRefused",
    "bad_request",
    "error_body",
    "forbidden",
    "model_not_found",
    "payload_too_large",
    "rate_limited",
    "unauthorized",
    "upstream_failed",
    "upstream_timeout",
]

# Anthropic names its error types by meaning rather than by status; map ours onto them.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class RequestRefused(AiofastError):
    """A request aiofast answers with an error status instead of a completion."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def body(self, api: str = "openai") -> bytes:
        return error_body(self, api)


def error_body(refusal: RequestRefused, api: str = "openai") -> bytes:
    """The JSON error body for ``api`` (``"openai"`` or ``"anthropic"``)."""
    if api == "anthropic":
        kind = _ANTHROPIC_TYPES.get(refusal.status, "api_error")
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": refusal.message}})
    return orjson.dumps(
        {
            "error": {
                "message": refusal.message,
                "type": refusal.type,
                "param": refusal.param,
                "code": refusal.code,
            }
        }
    )


def bad_request(
    message: str, *, param: str | None = None, code: str | None = None
) -> RequestRefused:
    return RequestRefused(400, message, type="invalid_request_error", param=param, code=code)


def unauthorized(message: str) -> RequestRefused:
    return RequestRefused(401, message, type="invalid_request_error", code="invalid_api_key")


def forbidden(message: str) -> RequestRefused:
    return RequestRefused(403, message, type="permission_error", code="forbidden")


def model_not_found(model: str, known: list[str]) -> RequestRefused:
    return RequestRefused(
        404,
        f"The model {model!r} does not exist on this gateway; choose one of {known}",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def payload_too_large(limit: int) -> RequestRefused:
    return RequestRefused(
        413,
        f"Request body is larger than {limit} bytes (server.max_body_bytes)",
        type="invalid_request_error",
        code="request_too_large",
    )


def rate_limited(
    message: str,
    *,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
    code: str = "rate_limit_exceeded",
) -> RequestRefused:
    """A 429; ``retry_after`` seconds become ``Retry-After`` (rounded up) and
    ``retry-after-ms``. ``headers`` carries the ``x-ratelimit-*`` set of the limit."""
    merged = dict(headers or {})
    if retry_after is not None:
        merged["Retry-After"] = str(max(1, math.ceil(retry_after)))
        merged["retry-after-ms"] = str(max(0, round(retry_after * 1000)))
    return RequestRefused(429, message, type="rate_limit_error", code=code, headers=merged)


def upstream_failed(message: str, *, status: int = 502) -> RequestRefused:
    return RequestRefused(status, message, type="upstream_error", code="upstream_error")


def upstream_timeout(message: str) -> RequestRefused:
    return RequestRefused(504, message, type="upstream_error", code="upstream_timeout")
