"""The limiter: the native engine, built from validated policy entries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiofast._core import Limiter as _NativeLimiter
from aiofast._core import ManualClock
from aiofast.errors import InvalidInputError
from aiofast.limits.config import LimitConfig, parse_limits

__all__ = ["Limiter", "reserved_output_tokens", "worst_case_cost"]


class Limiter(_NativeLimiter):
    """Rate, token, concurrency and spend limits of one process.

    ``admit(ctx)`` decides a :class:`RequestContext` against every limit whose scope the
    request has, all or nothing, and reserves its tokens, a concurrency slot and its
    worst-case cost; ``settle(handle, actual_input_tokens, actual_output_tokens,
    actual_cost_usd)`` swaps the reservation for what was really used (idempotent). Both
    are single calls into the native engine. A reservation never settled is settled at its
    reserved amount after ``reservation_ttl`` seconds.
    """

    __slots__ = ("configs",)
    configs: Sequence[LimitConfig]

    def __new__(
        cls,
        limits: Iterable[Mapping[str, Any] | LimitConfig],
        *,
        clock: ManualClock | None = None,
        reservation_ttl: float = 600.0,
    ) -> Limiter:
        configs = parse_limits(limits)
        self = super().__new__(
            cls, [c.native() for c in configs], clock=clock, reservation_ttl=reservation_ttl
        )
        self.configs = tuple(configs)
        return self


def reserved_output_tokens(
    max_tokens: int | None, model_max_output: int | None, default_max_output: int
) -> int:
    """Output tokens to reserve for a request.

    ``max_tokens`` (or ``max_completion_tokens``) when the request gives it; else the
    model's largest output from the price table, clamped to the policy's default, because
    a model allowed 100k output tokens would otherwise reserve a whole minute of tokens
    for a one-line answer.
    """
    if max_tokens is not None:
        if max_tokens < 0:
            raise InvalidInputError(f"max_tokens must be a non-negative integer, got {max_tokens}")
        return max_tokens
    if model_max_output is None:
        return default_max_output
    return min(model_max_output, default_max_output)


def worst_case_cost(
    input_tokens: int,
    output_tokens: int,
    prices_per_million: Iterable[tuple[float, float]],
) -> float:
    """The dollars to reserve: the most expensive candidate's (input, output) price per
    million tokens applied to the input and the reserved output."""
    costs = [
        (input_tokens * inp + output_tokens * out) / 1_000_000 for inp, out in prices_per_million
    ]
    if not costs:
        raise InvalidInputError("prices_per_million must name at least one candidate model")
    return max(costs)
