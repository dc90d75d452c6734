"""What to do after a failed call: retry here, fall back elsewhere, or stop.

Provider rules (OpenAI, Anthropic): retry connection errors, 408, 409, 429, 5xx and 529,
except a 429 that says the account is out of quota; honour ``retry-after-ms``, then
``retry-after`` (seconds or an HTTP date). Backoff uses full jitter, and a token bucket
bounds retries to a share of requests so an outage does not multiply load.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import orjson

__all__ = ["RetryBudget", "Verdict", "backoff_delay", "classify", "error_code", "retry_after"]

# Error codes that no retry can fix on this deployment, though another may serve.
_ACCOUNT_CODES = frozenset({"insufficient_quota", "credit_balance_exhausted", "billing_hard_limit"})
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})


class Verdict(enum.Enum):
    """The next step after a failed call, and whether the failure is the deployment's."""

    RETRY = "retry"  # a passing fault: try this deployment again
    FALLBACK = "fallback"  # this deployment cannot serve it; try the next candidate
    STOP = "stop"  # the request itself is at fault; no deployment will do better

    @property
    def blames_deployment(self) -> bool:
        return self is not Verdict.STOP


def error_code(body: bytes) -> str | None:
    """The ``error.code`` (or ``error.type``) of an OpenAI or Anthropic error body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code") or error.get("type")
    return code if isinstance(code, str) else None


def classify(status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Verdict:
    """The verdict for an HTTP error reply from an upstream."""
    should_retry = (headers or {}).get("x-should-retry")
    code = error_code(body) if status in (400, 429) else None
    if code in _ACCOUNT_CODES:
        return Verdict.FALLBACK
    if should_retry == "false":
        return Verdict.FALLBACK
    if should_retry == "true" or status in (408, 409, 429) or status >= 500:
        return Verdict.RETRY
    if code in _CONTEXT_CODES or status in (401, 403, 404):
        return Verdict.FALLBACK
    return Verdict.STOP


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the upstream asked to wait, from ``retry-after-ms`` or ``retry-after``."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    wall = time.time() if now is None else now
    return max(0.0, when.timestamp() - wall)


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**retry)] for the retry-th retry (0-based)."""
    ceiling = min(cap, base * 2.0 ** min(retry, 60))
    return rng.uniform(0.0, ceiling)


class RetryBudget:
    """A token bucket of retries: each request adds ``ratio`` tokens (up to ``burst``),
    each retry takes one. With ratio 0.1, retries stay within 10 % of requests once the
    initial burst is spent, however many requests fail."""

    def __init__(self, ratio: float, burst: float) -> None:
        self.ratio = ratio
        self.burst = burst
        self.tokens = burst

    def on_request(self) -> None:
        self.tokens = min(self.burst, self.tokens + self.ratio)

    def try_spend(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
