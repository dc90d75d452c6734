"""The ``[[limits]]`` entries of a policy, validated, and their form for the native limiter.

One entry is one limit on one scope: every value of the scope (each user, each team…)
gets its own meters. An entry may carry any mix of a request rate, a token rate, a
concurrency cap and a budget; a request must fit all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from aiofast.errors import ConfigError

__all__ = [
    "BudgetConfig",
    "LimitConfig",
    "LimiterSettings",
    "default_request_burst",
    "parse_limits",
]

Scope = Literal["key", "user", "team", "model", "tier", "label", "global"]

_REQUEST_PERIODS = {
    "requests_per_second": 1.0,
    "requests_per_minute": 60.0,
    "requests_per_hour": 3600.0,
    "requests_per_day": 86400.0,
}
_TOKEN_PERIODS = {
    "tokens_per_minute": 60.0,
    "tokens_per_hour": 3600.0,
    "tokens_per_day": 86400.0,
}


def default_request_burst(limit: int) -> int:
    """Requests that may arrive back to back when the policy names no burst.

    A tenth of the period's limit, at least 3 and never more than the limit. Defaulting to
    the whole limit, as several limiters do, lets nearly twice the limit through in the
    first period (governor#16, #219).
    """
    return min(limit, max(3, math.ceil(limit / 10)))


class LimiterSettings(BaseModel):
    """``[limiter]``: how the gateway sizes reservations for ``[[limits]]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Output tokens reserved when a request names no max_tokens: the model's maximum output
    # from the price table, but at most this (a 100k-token ceiling would otherwise hold a
    # minute of tokens for a one-line answer).
    default_max_output_tokens: PositiveInt = 4096
    # An admitted request never settled (crashed handler) releases its hold after this long,
    # charged at what it reserved.
    reservation_ttl_seconds: PositiveFloat = 600.0


class BudgetConfig(BaseModel):
    """Dollars per calendar day or month (in ``time_zone``) or per rolling window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usd: PositiveFloat
    per: Literal["day", "month", "window"]
    window_seconds: PositiveFloat | None = None
    time_zone: str = "UTC"

    @model_validator(mode="after")
    def _window_needs_its_length(self) -> BudgetConfig:
        if self.per == "window" and self.window_seconds is None:
            raise ValueError('per = "window" needs window_seconds')
        if self.per != "window" and self.window_seconds is not None:
            raise ValueError('window_seconds is only used with per = "window"')
        return self


class LimitConfig(BaseModel):
    """One ``[[limits]]`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    scope: Scope
    label: str | None = None
    value: str | None = None
    requests_per_second: PositiveInt | None = None
    requests_per_minute: PositiveInt | None = None
    requests_per_hour: PositiveInt | None = None
    requests_per_day: PositiveInt | None = None
    burst: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    tokens_per_hour: PositiveInt | None = None
    tokens_per_day: PositiveInt | None = None
    token_burst: PositiveInt | None = None
    concurrency: PositiveInt | None = None
    budget: BudgetConfig | None = None
    mode: Literal["enforce", "shadow"] = "enforce"
    downgrade_to: str | None = None
    downgrade_at: float = Field(default=0.8, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> LimitConfig:
        for group in (_REQUEST_PERIODS, _TOKEN_PERIODS):
            given = [k for k in group if getattr(self, k) is not None]
            if len(given) > 1:
                raise ValueError(f"give only one of {', '.join(given)}")
        if self.burst is not None and self._rate(_REQUEST_PERIODS) is None:
            raise ValueError("burst applies to a request rate; add requests_per_minute or similar")
        if self.token_burst is not None and self._rate(_TOKEN_PERIODS) is None:
            raise ValueError(
                "token_burst applies to a token rate; add tokens_per_minute or similar"
            )
        if (self.scope == "label") != (self.label is not None):
            raise ValueError(
                'label names the key label, and is needed exactly when scope = "label"'
            )
        if self.downgrade_to is not None and self.budget is None:
            raise ValueError("downgrade_to needs a budget to watch")
        if (
            self._rate(_REQUEST_PERIODS) is None
            and self._rate(_TOKEN_PERIODS) is None
            and self.concurrency is None
            and self.budget is None
        ):
            raise ValueError("sets no limit: give a request or token rate, concurrency or a budget")
        return self

    def _rate(self, periods: Mapping[str, float]) -> tuple[int, float] | None:
        for key, seconds in periods.items():
            limit = getattr(self, key)
            if limit is not None:
                return int(limit), seconds
        return None

    @property
    def display_name(self) -> str:
        """The configured name, else one derived from the scope."""
        if self.name:
            return self.name
        scope = f"label:{self.label}" if self.scope == "label" else self.scope
        return f"{scope}={self.value}" if self.value is not None else scope

    def native(self) -> dict[str, Any]:
        """The normalised form the native limiter takes."""
        requests = self._rate(_REQUEST_PERIODS)
        tokens = self._rate(_TOKEN_PERIODS)
        budget = self.budget
        return {
            "name": self.display_name,
            "scope": self.scope,
            "label": self.label,
            "value": self.value,
            "requests": None
            if requests is None
            else (requests[0], requests[1], self.burst or default_request_burst(requests[0])),
            # A single LLM request can carry a large share of a minute's tokens, so the
            # token bucket holds a whole period unless the policy says otherwise.
            "tokens": None
            if tokens is None
            else (tokens[0], tokens[1], self.token_burst or tokens[0]),
            "concurrency": self.concurrency,
            "budget": None
            if budget is None
            else (budget.usd, budget.per, budget.window_seconds, budget.time_zone),
            "downgrade_to": self.downgrade_to,
            "downgrade_at": self.downgrade_at if self.downgrade_to is not None else None,
            "mode": self.mode,
        }


def parse_limits(entries: Iterable[Mapping[str, Any] | LimitConfig]) -> list[LimitConfig]:
    """Validates policy entries; raises ConfigError naming ``limits[i].key``."""
    configs: list[LimitConfig] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, LimitConfig):
            configs.append(entry)
            continue
        try:
            configs.append(LimitConfig.model_validate(entry))
        except ValidationError as exc:
            raise ConfigError(_describe(i, exc)) from None
    names = [c.display_name for c in configs]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(
                f"limits[{i}]: another limit is already named {name!r}; "
                "give each limit on the same scope a distinct name"
            )
    return configs


def _describe(index: int, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        key = f"limits[{index}].{where}" if where else f"limits[{index}]"
        got = error.get("input")
        suffix = f", got {got!r}" if where and not isinstance(got, Mapping) else ""
        parts.append(f"{key}: {error['msg']}{suffix}")
    return "; ".join(parts)
