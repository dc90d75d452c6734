"""Model prices and the cost of a response's usage.

The default table is a trimmed copy of LiteLLM's community price table (MIT), bundled in
``aiofast/data``; it can be replaced from a file in the same format, or extended with
overrides. Prices are USD per token.

Usage comes in two shapes, normalised into disjoint buckets (so that the prompt is
``input_tokens + cached_tokens + cache_write_tokens``):

- OpenAI Chat Completions: ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens``,
  and ``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``. The
  Responses API is the same with ``input_tokens`` / ``input_tokens_details`` names.
- Anthropic Messages: ``input_tokens`` excludes ``cache_creation_input_tokens`` and
  ``cache_read_input_tokens``, which are priced separately.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiofast.errors import ConfigError, InvalidInputError

__all__ = ["Cost", "ModelPrice", "PriceTable", "cost"]

logger = logging.getLogger("aiofast.prices")

_PRICE_FIELDS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr",
    "output_cost_per_reasoning_token",
)
_LIMIT_FIELDS = ("max_input_tokens", "max_output_tokens")
# Dated snapshots: gpt-4o-2024-08-06, claude-sonnet-4-5-20250929, gpt-4-0613.
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


@dataclass(frozen=True)
class ModelPrice:
    """Prices (USD per token) and limits of one model; None where the table has no value."""

    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    cache_read_input_token_cost: float | None = None
    cache_creation_input_token_cost: float | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    cache_creation_input_token_cost_above_1hr: float | None = None
    output_cost_per_reasoning_token: float | None = None


def _price(model: str, entry: Mapping[str, Any]) -> ModelPrice:
    values: dict[str, Any] = {}
    for field in _PRICE_FIELDS + _LIMIT_FIELDS:
        value = entry.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(
                f"prices[{model!r}].{field} must be a non-negative number, got {value!r}"
            )
        values[field] = int(value) if field in _LIMIT_FIELDS else float(value)
    return ModelPrice(**values)


class PriceTable:
    """Model id to :class:`ModelPrice`, in LiteLLM's JSON format.

    ``get`` resolves provider prefixes (``openai/gpt-4o``) and dated ids
    (``gpt-4o-2024-08-06`` falls back to ``gpt-4o`` when only that is listed).
    """

    def __init__(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._prices: dict[str, ModelPrice] = {}
        for model, entry in entries.items():
            if model == "sample_spec":
                continue
            if not isinstance(entry, Mapping):
                raise ConfigError(f"prices[{model!r}] must be an object of price fields")
            self._prices[model.lower()] = _price(model, entry)
            self._entries[model] = dict(entry)

    @classmethod
    @functools.cache
    def default(cls) -> PriceTable:
        """The bundled table (LiteLLM's, trimmed to text models)."""
        data = resources.files("aiofast.data").joinpath("model_prices.json").read_bytes()
        return cls(json.loads(data))

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        """A table read from a JSON file in LiteLLM's format."""
        try:
            with open(path, encoding="utf-8") as f:
                entries = json.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read price table {str(path)!r}: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"price table {str(path)!r} is not valid JSON: {exc}") from None
        if not isinstance(entries, Mapping):
            raise ConfigError(f"price table {str(path)!r} must be a JSON object of models")
        return cls(entries)

    def extended(self, overrides: Mapping[str, Mapping[str, Any]]) -> PriceTable:
        """A new table where ``overrides`` add models or replace fields of listed ones."""
        merged = {model: dict(entry) for model, entry in self._entries.items()}
        for model, fields in overrides.items():
            if not isinstance(fields, Mapping):
                raise ConfigError(f"overrides[{model!r}] must be an object of price fields")
            merged.setdefault(model, {}).update(fields)
        return PriceTable(merged)

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every entry as plain JSON-ready dicts, e.g. to hand the table to another engine."""
        return {model: dict(entry) for model, entry in self._entries.items()}

    def __len__(self) -> int:
        return len(self._prices)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.get(model) is not None

    def get(self, model: str) -> ModelPrice | None:
        """The price of ``model``, or None when the table does not know it."""
        name = model.strip().lower()
        candidates = [name]
        while "/" in name:
            name = name.split("/", 1)[1]
            candidates.append(name)
        for candidate in list(candidates):
            undated = _DATE_SUFFIX.sub("", candidate)
            if undated != candidate:
                candidates.append(undated)
        for candidate in candidates:
            price = self._prices.get(candidate)
            if price is not None:
                return price
        return None


@dataclass(frozen=True)
class Cost:
    """The cost of one response. ``usd`` is None when it cannot be known (unknown model
    or a missing price), never a silent zero.

    Token buckets are disjoint: ``input_tokens`` are uncached prompt tokens, ``cached_tokens``
    were read from the prompt cache, ``cache_write_tokens`` written to it; ``output_tokens``
    include ``reasoning_tokens``.
    """

    usd: float | None
    known: bool
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cache_write_1h_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Every prompt token, whatever its price."""
        return self.input_tokens + self.cached_tokens + self.cache_write_tokens


def _count(usage: Mapping[str, Any], *path: str) -> int:
    value: Any = usage
    for key in path:
        if not isinstance(value, Mapping):
            return 0
        value = value.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(
            f"usage.{'.'.join(path)} must be a non-negative integer, got {value!r}"
        )
    return value


def _openai(usage: Mapping[str, Any], prefix: str, output: str) -> Cost:
    prompt = _count(usage, f"{prefix}_tokens")
    cached = min(_count(usage, f"{prefix}_tokens_details", "cached_tokens"), prompt)
    return Cost(
        usd=None,
        known=False,
        input_tokens=prompt - cached,
        cached_tokens=cached,
        cache_write_tokens=0,
        output_tokens=_count(usage, f"{output}_tokens"),
        reasoning_tokens=_count(usage, f"{output}_tokens_details", "reasoning_tokens"),
    )


def _anthropic(usage: Mapping[str, Any]) -> Cost:
    writes = _count(usage, "cache_creation_input_tokens")
    return Cost(
        usd=None,
        known=False,
        input_tokens=_count(usage, "input_tokens"),
        cached_tokens=_count(usage, "cache_read_input_tokens"),
        cache_write_tokens=writes,
        output_tokens=_count(usage, "output_tokens"),
        reasoning_tokens=_count(usage, "output_tokens_details", "thinking_tokens"),
        cache_write_1h_tokens=min(
            _count(usage, "cache_creation", "ephemeral_1h_input_tokens"), writes
        ),
    )


def _normalise(usage: Mapping[str, Any]) -> Cost:
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return _openai(usage, "prompt", "completion")
    anthropic = "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage
    if not anthropic and ("input_tokens_details" in usage or "output_tokens_details" in usage):
        return _openai(usage, "input", "output")
    return _anthropic(usage)


def _usd(price: ModelPrice, counts: Cost) -> float | None:
    input_price, output_price = price.input_cost_per_token, price.output_cost_per_token
    if input_price is None or output_price is None:
        return None
    # A model without a cache price bills cached and written tokens as plain input.
    read_price = _first(price.cache_read_input_token_cost, input_price)
    write_price = _first(price.cache_creation_input_token_cost, input_price)
    write_1h_price = _first(price.cache_creation_input_token_cost_above_1hr, write_price)
    reasoning_price = _first(price.output_cost_per_reasoning_token, output_price)
    writes_5m = counts.cache_write_tokens - counts.cache_write_1h_tokens
    reasoning = min(counts.reasoning_tokens, counts.output_tokens)
    return (
        counts.input_tokens * input_price
        + counts.cached_tokens * read_price
        + writes_5m * write_price
        + counts.cache_write_1h_tokens * write_1h_price
        + (counts.output_tokens - reasoning) * output_price
        + reasoning * reasoning_price
    )


def _first(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


def cost(model: str, usage: Mapping[str, Any], *, table: PriceTable | None = None) -> Cost:
    """The cost of ``usage`` (an OpenAI or Anthropic usage object) for ``model``."""
    if not isinstance(usage, Mapping):
        raise InvalidInputError("usage must be a usage object (a mapping of token counts)")
    counts = _normalise(usage)
    price = (table or PriceTable.default()).get(model)
    usd = None if price is None else _usd(price, counts)
    if usd is None:
        logger.debug("no price for model %s; cost unknown", model)
        return counts
    return Cost(
        usd=usd,
        known=True,
        input_tokens=counts.input_tokens,
        cached_tokens=counts.cached_tokens,
        cache_write_tokens=counts.cache_write_tokens,
        output_tokens=counts.output_tokens,
        reasoning_tokens=counts.reasoning_tokens,
        cache_write_1h_tokens=counts.cache_write_1h_tokens,
    )
