"""How an admission shows on the wire: OpenAI's rate-limit headers and 429 error body."""

from __future__ import annotations

import math
from typing import Any

from aiofast._core import Admission, Refusal

__all__ = ["format_reset", "ratelimit_headers", "refusal_body", "refusal_headers"]


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI's ``x-ratelimit-reset-*`` headers write it.

    Millisecond precision: ``12ms``, ``1s``, ``1.5s``, ``6m0s``, ``23h47m36s``; zero is ``0s``.
    """
    ms = max(0, round(seconds * 1000))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def ratelimit_headers(admission: Admission) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for every response.

    Each set comes from the tightest enforced limit of its kind that applied; a kind with
    no limit gets no headers.
    """
    headers: dict[str, str] = {}
    if admission.limit_requests is not None:
        headers["x-ratelimit-limit-requests"] = str(admission.limit_requests)
        headers["x-ratelimit-remaining-requests"] = str(admission.remaining_requests)
        headers["x-ratelimit-reset-requests"] = format_reset(admission.reset_requests or 0.0)
    if admission.limit_tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(admission.limit_tokens)
        headers["x-ratelimit-remaining-tokens"] = str(admission.remaining_tokens)
        headers["x-ratelimit-reset-tokens"] = format_reset(admission.reset_tokens or 0.0)
    return headers


def refusal_headers(refusal: Refusal) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up) when waiting helps, else a no-retry hint.

    OpenAI's and Anthropic's SDKs read ``retry-after-ms`` first and obey ``x-should-retry``.
    """
    if refusal.retry_after is None:
        return {"x-should-retry": "false"}
    return {
        "retry-after": str(max(1, math.ceil(refusal.retry_after))),
        "retry-after-ms": str(max(1, math.ceil(refusal.retry_after * 1000))),
    }


def refusal_body(refusal: Refusal) -> dict[str, Any]:
    """The OpenAI error body of a 429, naming the limit and the scope that refused."""
    return {
        "error": {
            "message": refusal.message,
            "type": refusal.kind,
            "param": None,
            "code": refusal.code,
            "limit": refusal.limit,
            "scope": f"{refusal.scope}:{refusal.scope_value}",
        }
    }
