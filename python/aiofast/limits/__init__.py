"""Rate, token, concurrency and spend limits, decided in the native engine.

Build a :class:`Limiter` from ``[[limits]]`` entries, call ``admit`` with a
:class:`RequestContext` before the upstream call and ``settle`` after it (also after
errors and disconnects). :func:`ratelimit_headers`, :func:`refusal_headers` and
:func:`refusal_body` turn the answer into OpenAI's wire format.
"""

from __future__ import annotations

from aiofast._core import Admission, ManualClock, Refusal, RequestContext
from aiofast.limits.config import BudgetConfig, LimitConfig, default_request_burst, parse_limits
from aiofast.limits.http import format_reset, ratelimit_headers, refusal_body, refusal_headers
from aiofast.limits.limiter import Limiter, reserved_output_tokens, worst_case_cost
from aiofast.limits.metrics import LimitsCollector, usage_report

__all__ = [
    "Admission",
    "BudgetConfig",
    "LimitConfig",
    "Limiter",
    "LimitsCollector",
    "ManualClock",
    "Refusal",
    "RequestContext",
    "default_request_burst",
    "format_reset",
    "parse_limits",
    "ratelimit_headers",
    "refusal_body",
    "refusal_headers",
    "reserved_output_tokens",
    "usage_report",
    "worst_case_cost",
]
