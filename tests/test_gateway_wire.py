"""The gateway in front of a replay upstream that serves real recorded provider traffic.

The replay upstream answers with the recording named by the request's ``model`` (the
deployment's model is the file name), byte for byte, and streams ``.sse`` recordings in
small uneven pieces so lines and UTF-8 characters arrive split. The recordings are the
shared ``wire/`` folder, copied under tests/fixtures/wire (source noted there).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from aiofast.policy import Policy, policy_from_mapping
from aiofast.prices import PriceTable, cost
from aiofast.upstream import USER_AGENT
from gateway_support import WIRE, running, serving, sse_data

OPENAI = WIRE / "openai"
ANTHROPIC = WIRE / "anthropic"


def _recording(provider: str, name: str) -> Path:
    folder = OPENAI if provider == "openai" else ANTHROPIC
    return next(p for p in folder.iterdir() if p.stem == name or p.name.startswith(name + "."))


SEEN: list[tuple[dict[str, str], dict[str, Any]]] = []


async def _replay(request: web.Request) -> web.StreamResponse:
    provider = request.match_info["provider"]
    body = orjson.loads(await request.read())
    SEEN.append((dict(request.headers), body))
    path = _recording(provider, body["model"])
    payload = path.read_bytes()
    if path.name.startswith("error_"):
        status = int(path.name.split("_")[1])
        headers = {"Retry-After": "3"} if status == 429 else {}
        return web.Response(
            status=status, body=payload, content_type="application/json", headers=headers
        )
    if path.suffix != ".sse":
        return web.Response(body=payload, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    sizes = (7, 1, 13, 2, 31)
    offset = index = 0
    while offset < len(payload):
        size = sizes[index % len(sizes)]
        await response.write(payload[offset : offset + size])
        offset, index = offset + size, index + 1
        await asyncio.sleep(0)
    await response.write_eof()
    return response


@contextlib.asynccontextmanager
async def replay_upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/{provider}/v1/{tail:.*}", _replay)
    async with serving(app) as base:
        yield base


def wire_policy(base: str) -> Policy:
    names = {
        "openai": sorted({p.name.split(".")[0] for p in OPENAI.iterdir() if p.suffix != ".md"}),
        "anthropic": sorted(
            {p.name.split(".")[0] for p in ANTHROPIC.iterdir() if p.suffix != ".md"}
        ),
    }
    deployments = [
        {"name": f"{provider}/{name}", "upstream": provider, "model": name}
        for provider, files in names.items()
        for name in files
    ]
    return policy_from_mapping(
        {
            "version": "wire",
            "upstreams": [
                {
                    "name": "openai",
                    "kind": "openai",
                    "base_url": f"{base}/openai/v1",
                    "api_key_env": "AIOFAST_TEST_OPENAI_KEY",
                },
                {
                    "name": "anthropic",
                    "kind": "anthropic",
                    "base_url": f"{base}/anthropic/v1",
                    "api_key_env": "AIOFAST_TEST_ANTHROPIC_KEY",
                },
            ],
            "deployments": deployments,
            "ledger": {"path": ""},
        }
    )


def _messages(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "What's the weather?"}],
        **extra,
    }


@pytest.fixture
async def gateway(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    monkeypatch.setenv("AIOFAST_TEST_OPENAI_KEY", "sk-openai-secret")
    monkeypatch.setenv("AIOFAST_TEST_ANTHROPIC_KEY", "sk-ant-secret")
    SEEN.clear()
    async with replay_upstream() as base, running(wire_policy(base)) as running_gateway:
        yield running_gateway


NONSTREAM_OPENAI = [
    "chat_nonstream_text",
    "chat_nonstream_usage_details",
    "chat_nonstream_reasoning_tokens",
    "chat_nonstream_cached_tokens",
    "chat_nonstream_parallel_tool_calls",
]


@pytest.mark.parametrize("name", NONSTREAM_OPENAI)
async def test_openai_answers_are_relayed_byte_for_byte_and_priced(gateway: Any, name: str) -> None:
    status, headers, body = await gateway.post("/v1/chat/completions", _messages(f"openai/{name}"))
    recorded = _recording("openai", name).read_bytes()
    assert status == 200
    assert body == recorded
    answer = orjson.loads(recorded)
    expected = cost(answer["model"], answer["usage"], table=PriceTable.default())
    event = gateway.event(headers["x-aiofast-request-id"])
    assert event["model"] == answer["model"]
    assert event["input_tokens"] == expected.prompt_tokens == answer["usage"]["prompt_tokens"]
    assert event["output_tokens"] == answer["usage"]["completion_tokens"]
    assert event["cached_tokens"] == expected.cached_tokens
    assert event["reasoning_tokens"] == expected.reasoning_tokens
    assert event["cost_usd"] == pytest.approx(expected.usd)


async def test_reasoning_and_cached_tokens_are_read(gateway: Any) -> None:
    _, reasoning, _ = await gateway.post(
        "/v1/chat/completions", _messages("openai/chat_nonstream_reasoning_tokens")
    )
    _, cached, _ = await gateway.post(
        "/v1/chat/completions", _messages("openai/chat_nonstream_cached_tokens")
    )
    assert gateway.event(reasoning["x-aiofast-request-id"])["reasoning_tokens"] == 64
    assert gateway.event(reasoning["x-aiofast-request-id"])["output_tokens"] == 87
    assert gateway.event(cached["x-aiofast-request-id"])["cached_tokens"] == 1920


STREAM_USAGE = {
    "chat_stream_text_usage_chunk": (14, 30),
    "chat_stream_text_include_usage": (78, 9),
    "chat_stream_tool_call_include_usage": (53, 15),
    "chat_stream_tool_call": (76, 24),
    "chat_stream_parallel_tool_calls": (149, 60),
}


@pytest.mark.parametrize("name", sorted(STREAM_USAGE))
async def test_openai_streams_relay_every_event_and_read_usage(gateway: Any, name: str) -> None:
    request = _messages(f"openai/{name}", stream=True, stream_options={"include_usage": True})
    status, headers, body = await gateway.post("/v1/chat/completions", request)
    assert status == 200
    recorded = sse_data(_recording("openai", name).read_bytes())
    relayed = sse_data(body)
    assert len(relayed) == len(recorded)
    for original, sent in zip(recorded, relayed, strict=True):
        if original == sent:
            continue
        # Only the usage chunk differs: it gained the gateway's facts.
        extended = orjson.loads(sent)
        facts = extended.pop("aiofast")
        assert extended == orjson.loads(original)
        assert facts["request_id"] == headers["x-aiofast-request-id"]
    event = gateway.event(headers["x-aiofast-request-id"])
    assert (event["input_tokens"], event["output_tokens"]) == STREAM_USAGE[name]
    assert event["usage_source"] == "provider"


async def test_openai_stream_without_usage_request_drops_only_the_usage_chunk(
    gateway: Any,
) -> None:
    request = _messages("openai/chat_stream_text_usage_chunk", stream=True)
    _, headers, body = await gateway.post("/v1/chat/completions", request)
    recorded = sse_data(_recording("openai", "chat_stream_text_usage_chunk").read_bytes())
    without_usage = [p for p in recorded if p == "[DONE]" or orjson.loads(p)["choices"]]
    assert sse_data(body) == without_usage
    assert gateway.event(headers["x-aiofast-request-id"])["output_tokens"] == 30


async def test_streamed_tool_calls_cost_the_same_as_the_whole_answer(gateway: Any) -> None:
    _, whole, _ = await gateway.post(
        "/v1/chat/completions", _messages("openai/chat_nonstream_parallel_tool_calls")
    )
    _, streamed, _ = await gateway.post(
        "/v1/chat/completions",
        _messages("openai/chat_stream_parallel_tool_calls", stream=True),
    )
    a = gateway.event(whole["x-aiofast-request-id"])
    b = gateway.event(streamed["x-aiofast-request-id"])
    assert (a["input_tokens"], a["output_tokens"]) == (b["input_tokens"], b["output_tokens"])
    assert a["cost_usd"] == pytest.approx(b["cost_usd"])
    assert a["tool_call_count"] == b["tool_call_count"] == 2


async def test_anthropic_answers_with_cache_usage(gateway: Any) -> None:
    name = "message_nonstream_cache_usage"
    status, headers, body = await gateway.post("/v1/messages", _messages(f"anthropic/{name}"))
    recorded = _recording("anthropic", name).read_bytes()
    assert status == 200
    assert body == recorded
    answer = orjson.loads(recorded)
    expected = cost(answer["model"], answer["usage"], table=PriceTable.default())
    event = gateway.event(headers["x-aiofast-request-id"])
    assert event["input_tokens"] == expected.prompt_tokens == 3 + 418 + 1111
    assert event["cached_tokens"] == 1111
    assert event["output_tokens"] == 33
    if expected.usd is None:
        assert event["cost_usd"] is None
    else:
        assert event["cost_usd"] == pytest.approx(expected.usd)


ANTHROPIC_STREAMS = {
    "message_stream_basic": 6,
    "message_stream_delta_cumulative_usage": 8,
    "message_stream_text_padded": None,
    "message_stream_tool_use": 65,
}


@pytest.mark.parametrize("name", sorted(ANTHROPIC_STREAMS))
async def test_anthropic_streams_are_relayed_and_usage_superseded(gateway: Any, name: str) -> None:
    status, headers, body = await gateway.post(
        "/v1/messages", _messages(f"anthropic/{name}", stream=True)
    )
    recorded = _recording("anthropic", name).read_bytes()
    assert status == 200
    assert sse_data(body) == sse_data(recorded)
    event = gateway.event(headers["x-aiofast-request-id"])
    assert event["error_type"] == ""
    final = ANTHROPIC_STREAMS[name]
    if final is not None:
        assert event["output_tokens"] == final
    if name == "message_stream_tool_use":
        assert event["tool_call_count"] == 1
    if name == "message_stream_delta_cumulative_usage":
        # message_delta's 40/12/7 supersede message_start's 25/10/5.
        assert event["cached_tokens"] == 7
        assert event["cache_write_tokens"] == 12


async def test_anthropic_stream_error_event_is_passed_on_and_recorded(gateway: Any) -> None:
    status, headers, body = await gateway.post(
        "/v1/messages", _messages("anthropic/message_stream_error_event", stream=True)
    )
    assert status == 200
    assert b"event: error" in body
    assert b"overloaded_error" in body
    event = gateway.event(headers["x-aiofast-request-id"])
    assert event["error_type"] == "upstream_stream_error"
    assert event["status"] == 502


async def test_openai_errors_keep_their_message_and_retry_after(gateway: Any) -> None:
    status, _, body = await gateway.post(
        "/v1/chat/completions", _messages("openai/error_400_invalid_value")
    )
    recorded = orjson.loads(_recording("openai", "error_400_invalid_value").read_bytes())
    assert status == 400
    assert orjson.loads(body)["error"]["message"] == recorded["error"]["message"]
    status, headers, _ = await gateway.post(
        "/v1/chat/completions", _messages("openai/error_429_rate_limit_tokens")
    )
    assert status == 429
    assert headers["Retry-After"] == "3"


async def test_anthropic_overload_is_a_502_in_anthropic_format(gateway: Any) -> None:
    status, _, body = await gateway.post(
        "/v1/messages", _messages("anthropic/error_529_overloaded")
    )
    error = orjson.loads(body)
    assert status == 502
    assert error["type"] == "error"
    assert "529" in error["error"]["message"]


async def test_chat_api_refuses_an_anthropic_deployment(gateway: Any) -> None:
    status, _, body = await gateway.post(
        "/v1/chat/completions", _messages("anthropic/message_nonstream_basic")
    )
    assert status == 400
    assert orjson.loads(body)["error"]["param"] == "model"


async def test_upstreams_get_their_own_keys_and_the_deployment_model(gateway: Any) -> None:
    caller = {"Authorization": "Bearer client-key-not-forwarded"}
    await gateway.post(
        "/v1/chat/completions",
        _messages("openai/chat_stream_tool_call", stream=True),
        caller,
    )
    await gateway.post("/v1/messages", _messages("anthropic/message_nonstream_basic"), caller)
    (openai_headers, openai_body), (anthropic_headers, anthropic_body) = SEEN
    assert openai_headers["Authorization"] == "Bearer sk-openai-secret"
    assert openai_body["model"] == "chat_stream_tool_call"
    assert openai_body["stream_options"] == {"include_usage": True}
    assert anthropic_headers["x-api-key"] == "sk-ant-secret"
    assert anthropic_headers["anthropic-version"]
    assert "Authorization" not in anthropic_headers
    assert anthropic_body["model"] == "message_nonstream_basic"
    # The gateway names itself to providers, and never passes on the client's agent.
    assert openai_headers["User-Agent"] == anthropic_headers["User-Agent"] == USER_AGENT
