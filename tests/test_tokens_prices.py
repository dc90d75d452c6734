"""Price table and cost of usage, on every usage body of the recorded wire payloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aiofast.errors import ConfigError, InvalidInputError
from aiofast.prices import Cost, ModelPrice, PriceTable, cost
from shared_data import require_shared_data

# Prices of the bundled table (USD per token) used in the expected figures below.
GPT_4O = {"in": 2.5e-6, "out": 1e-5, "read": 1.25e-6}
GPT_4O_MINI = {"in": 1.5e-7, "out": 6e-7, "read": 7.5e-8}
GPT_51_CHAT = {"in": 1.25e-6, "out": 1e-5}
O3_MINI = {"in": 1.1e-6, "out": 4.4e-6}
SONNET_45 = {"in": 3e-6, "out": 1.5e-5, "read": 3e-7, "write": 3.75e-6}


def _sse_usage(path: Path) -> tuple[str, dict[str, Any]]:
    """The model and final usage of a recorded stream: OpenAI's last usage chunk, or
    Anthropic's message_start usage updated by message_delta."""
    model, usage = "", {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("data:") or line.strip() == "data: [DONE]":
            continue
        event = json.loads(line[5:])
        message = event.get("message", event)
        model = message.get("model") or model
        usage.update(message.get("usage") or {})
    return model, usage


def _body_usage(path: Path) -> tuple[str, dict[str, Any]]:
    if path.suffix == ".sse":
        return _sse_usage(path)
    body = json.loads(path.read_text(encoding="utf-8"))
    return body["model"], body["usage"]


WIRE_COSTS = {
    "openai/chat_nonstream_text.json": 14 * GPT_4O["in"] + 37 * GPT_4O["out"],
    "openai/chat_nonstream_usage_details.json": 20 * GPT_51_CHAT["in"] + 18 * GPT_51_CHAT["out"],
    # Reasoning tokens are inside completion_tokens: 87 output tokens, not 87 + 64.
    "openai/chat_nonstream_reasoning_tokens.json": 7 * O3_MINI["in"] + 87 * O3_MINI["out"],
    # 1,920 of the 2,006 prompt tokens were cached.
    "openai/chat_nonstream_cached_tokens.CONSTRUCTED.json": 86 * GPT_4O["in"]
    + 1920 * GPT_4O["read"]
    + 300 * GPT_4O["out"],
    "openai/chat_nonstream_parallel_tool_calls.json": 149 * GPT_4O["in"] + 60 * GPT_4O["out"],
    "openai/chat_stream_text_usage_chunk.sse": 14 * GPT_4O["in"] + 30 * GPT_4O["out"],
    "openai/chat_stream_text_include_usage.sse": 78 * GPT_4O_MINI["in"] + 9 * GPT_4O_MINI["out"],
    "openai/chat_stream_tool_call_include_usage.sse": 53 * GPT_4O_MINI["in"]
    + 15 * GPT_4O_MINI["out"],
    "openai/chat_stream_tool_call.sse": 76 * GPT_4O["in"] + 24 * GPT_4O["out"],
    "openai/chat_stream_parallel_tool_calls.sse": 149 * GPT_4O["in"] + 60 * GPT_4O["out"],
    # input_tokens excludes the 418 written to and 1,111 read from the cache.
    "anthropic/message_nonstream_cache_usage.json": 3 * SONNET_45["in"]
    + 418 * SONNET_45["write"]
    + 1111 * SONNET_45["read"]
    + 33 * SONNET_45["out"],
    "anthropic/message_stream_text_padded.sse": 20 * SONNET_45["in"] + 5 * SONNET_45["out"],
    # message_delta's cumulative usage (40 / 12 written / 7 read / 8 out) supersedes the start.
    "anthropic/message_stream_delta_cumulative_usage.sse": 40 * SONNET_45["in"]
    + 12 * SONNET_45["write"]
    + 7 * SONNET_45["read"]
    + 8 * SONNET_45["out"],
    "anthropic/message_stream_error_event.CONSTRUCTED.sse": 12 * SONNET_45["in"]
    + 1 * SONNET_45["out"],
}
# Models these recordings name that the table does not list: the cost is unknown.
WIRE_UNKNOWN = [
    "anthropic/message_nonstream_basic.json",
    "anthropic/message_stream_basic.sse",
    "anthropic/message_stream_tool_use.sse",
]


@pytest.mark.parametrize("name", WIRE_COSTS)
def test_cost_of_every_recorded_usage(name: str) -> None:
    model, usage = _body_usage(require_shared_data("wire", name))
    result = cost(model, usage)
    assert result.known
    assert result.usd == pytest.approx(WIRE_COSTS[name], rel=1e-12)


@pytest.mark.parametrize("name", WIRE_UNKNOWN)
def test_unknown_models_have_unknown_cost(name: str) -> None:
    model, usage = _body_usage(require_shared_data("wire", name))
    result = cost(model, usage)
    assert result.usd is None
    assert not result.known
    assert result.output_tokens > 0


def test_every_usage_body_is_covered() -> None:
    wire = require_shared_data("wire")
    with_usage = {
        str(path.relative_to(wire))
        for path in wire.rglob("*")
        if path.suffix in (".json", ".sse")
        and '"usage"' in path.read_text(encoding="utf-8")
        and "request" not in path.name
    }
    assert with_usage == set(WIRE_COSTS) | set(WIRE_UNKNOWN)


def test_openai_usage_normalised() -> None:
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1920},
        "completion_tokens_details": {"reasoning_tokens": 120},
    }
    result = cost("gpt-4o-2024-08-06", usage)
    assert result == Cost(
        usd=pytest.approx(86 * 2.5e-6 + 1920 * 1.25e-6 + 300 * 1e-5),  # type: ignore[arg-type]
        known=True,
        input_tokens=86,
        cached_tokens=1920,
        cache_write_tokens=0,
        output_tokens=300,
        reasoning_tokens=120,
    )
    assert result.prompt_tokens == 2006


def test_responses_api_usage() -> None:
    usage = {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 40},
        "output_tokens": 10,
        "output_tokens_details": {"reasoning_tokens": 4},
    }
    result = cost("gpt-4o-mini", usage)
    assert (result.input_tokens, result.cached_tokens, result.reasoning_tokens) == (60, 40, 4)
    assert result.usd == pytest.approx(60 * 1.5e-7 + 40 * 7.5e-8 + 10 * 6e-7)


def test_anthropic_one_hour_cache_writes() -> None:
    usage = {
        "input_tokens": 1,
        "cache_creation_input_tokens": 100,
        "cache_creation": {"ephemeral_5m_input_tokens": 60, "ephemeral_1h_input_tokens": 40},
        "output_tokens": 2,
    }
    result = cost("claude-sonnet-4-5", usage)
    assert result.usd == pytest.approx(1 * 3e-6 + 60 * 3.75e-6 + 40 * 6e-6 + 2 * 1.5e-5)


def test_unknown_model_is_never_a_silent_zero() -> None:
    result = cost("no-such-model", {"prompt_tokens": 10, "completion_tokens": 1})
    assert result.usd is None
    assert not result.known
    assert result.input_tokens == 10


def test_bad_usage_names_the_key() -> None:
    with pytest.raises(InvalidInputError, match=r"usage\.prompt_tokens"):
        cost("gpt-4o", {"prompt_tokens": -1})
    with pytest.raises(InvalidInputError, match="usage must be"):
        cost("gpt-4o", [1, 2])  # type: ignore[arg-type]


def test_lookup_resolves_prefixes_and_dates() -> None:
    table = PriceTable.default()
    base = table.get("gpt-4o")
    assert base is not None
    assert base.max_input_tokens == 128_000
    assert table.get("openai/gpt-4o") == base
    assert table.get("OpenAI/GPT-4o-2031-01-01") == base  # unlisted date: the undated entry
    assert table.get("azure/gpt-4o") is not None
    assert table.get("claude-3-opus-latest") is None
    assert "gpt-4o-mini" in table
    assert len(table) > 3000


def test_extended_overrides_and_adds_models() -> None:
    table = PriceTable.default().extended(
        {
            "gpt-4o": {"input_cost_per_token": 1e-6},
            "my-model": {"input_cost_per_token": 2e-6, "output_cost_per_token": 4e-6},
        }
    )
    assert table.get("gpt-4o") == ModelPrice(
        input_cost_per_token=1e-6,
        output_cost_per_token=1e-5,
        cache_read_input_token_cost=1.25e-6,
        max_input_tokens=128_000,
        max_output_tokens=16_384,
    )
    result = cost("my-model", {"input_tokens": 10, "output_tokens": 5}, table=table)
    assert result.usd == pytest.approx(10 * 2e-6 + 5 * 4e-6)
    assert PriceTable.default().get("my-model") is None
    assert table.entries()["my-model"]["output_cost_per_token"] == 4e-6


def test_missing_cache_price_bills_plain_input() -> None:
    table = PriceTable({"m": {"input_cost_per_token": 1.0, "output_cost_per_token": 2.0}})
    usage = {"input_tokens": 1, "cache_read_input_tokens": 2, "output_tokens": 3}
    assert cost("m", usage, table=table).usd == 1 + 2 + 6
    no_output = PriceTable({"m": {"input_cost_per_token": 1.0}})
    assert cost("m", usage, table=no_output).usd is None


def test_from_file_and_bad_tables(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"sample_spec": {"max_input_tokens": "doc"}, "x": {}}))
    assert len(PriceTable.from_file(path)) == 1
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        PriceTable.from_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        PriceTable.from_file(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match=r"prices\['x'\]\.input_cost_per_token"):
        PriceTable({"x": {"input_cost_per_token": "cheap"}})


def test_shared_table_loads_like_the_bundled_one() -> None:
    shared = PriceTable.from_file(
        require_shared_data("prices", "model_prices_and_context_window.json")
    )
    for model in ("gpt-4o-mini", "claude-sonnet-4-5-20250929", "o3-mini-2025-01-31"):
        assert shared.get(model) == PriceTable.default().get(model)
