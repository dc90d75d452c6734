"""The output guard on streamed answers, through the real gateway.

A scripted upstream on loopback streams chosen text in chosen deltas, in the OpenAI
Chat Completions and Anthropic Messages wire formats (event shapes as in the recordings
under tests/fixtures/wire), so a secret can be split across deltas on purpose.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
from aiohttp import web

from aiofast.policy import Policy, policy_from_mapping
from gateway_support import chat, running, serving, simulated_policy, sse_data

SECRET = "sk-proj-" + "Zq7Xc9Vb2Nm4Lk8Jh6Gf3Ds1Ap0Ow5Ie"
EMAIL = "ada.lovelace@example.org"
BLOCK_SECRETS = {"overrides": {"secret.openai": {"action": "block"}}}


def _openai_events(
    model: str, pieces: Sequence[str], *, usage: bool, finish_with_text: bool
) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [choice],
            "usage": None,
        }

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in pieces]
    if finish_with_text:
        # Some providers put the last text in the chunk that carries the finish reason.
        events[-1]["choices"][0]["finish_reason"] = "stop"
    else:
        events.append(chunk({}, "stop"))
    if usage:
        events.append(
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
            }
        )
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def _anthropic_events(model: str, blocks: Sequence[Sequence[str]]) -> list[bytes]:
    def event(kind: str, data: dict[str, Any]) -> bytes:
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    message = {
        "id": "msg_scripted",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 1},
    }
    out = [event("message_start", {"type": "message_start", "message": message})]
    for index, pieces in enumerate(blocks):
        start = {"type": "content_block_start", "index": index, "content_block": {"type": "text"}}
        out.append(event("content_block_start", start))
        out.append(event("ping", {"type": "ping"}))
        for piece in pieces:
            delta = {"type": "text_delta", "text": piece}
            out.append(
                event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    end = {"stop_reason": "end_turn", "stop_sequence": None}
    out.append(
        event(
            "message_delta", {"type": "message_delta", "delta": end, "usage": {"output_tokens": 6}}
        )
    )
    out.append(event("message_stop", {"type": "message_stop"}))
    return out


@contextlib.asynccontextmanager
async def scripted_upstream(blocks: Sequence[Sequence[str]]) -> AsyncIterator[str]:
    """Streams ``blocks`` (lists of deltas; OpenAI joins them into one answer) in the
    wire format of the path it is called on, each event in its own network write."""

    async def stream(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if request.path.endswith("/messages"):
            events = _anthropic_events(body["model"], blocks)
        else:
            events = _openai_events(
                body["model"],
                [piece for pieces in blocks for piece in pieces],
                usage=bool((body.get("stream_options") or {}).get("include_usage")),
                finish_with_text=body.get("user") == "finish-with-text",
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for raw in events:
            await response.write(raw)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", stream)
    app.router.add_post("/v1/messages", stream)
    async with serving(app) as base:
        yield f"{base}/v1"


def scripted_policy(base: str, guard: dict[str, Any]) -> Policy:
    return policy_from_mapping(
        {
            "version": "guard-stream-test",
            "upstreams": [
                {"name": "oai", "kind": "openai", "base_url": base},
                {"name": "ant", "kind": "anthropic", "base_url": base},
            ],
            "deployments": [
                {"name": "mini", "upstream": "oai", "model": "gpt-4o-mini"},
                {"name": "claude", "upstream": "ant", "model": "claude-3-5-haiku-latest"},
            ],
            "ledger": {"path": ""},
            "server": {"open_routes": ["health", "metrics"]},
            "guard": guard,
        }
    )


async def _stream(
    blocks: Sequence[Sequence[str]], guard: dict[str, Any], path: str = "/v1/chat/completions",
    **extra: Any,
) -> tuple[int, list[str]]:  # fmt: skip
    request = chat("mini" if path.endswith("completions") else "claude", "hi", stream=True)
    if path.endswith("messages"):
        request["max_tokens"] = 64
    request.update(extra)
    async with (
        scripted_upstream(blocks) as base,
        running(scripted_policy(base, guard)) as gateway,
    ):
        status, _, body = await gateway.post(path, request)
    return status, sse_data(body)


def _openai_text(events: Sequence[str]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for data in events
        if data != "[DONE]"
        for choice in orjson.loads(data).get("choices", ())
    )


def _halves(text: str, at: int) -> list[str]:
    return [text[:at], text[at:]]


@pytest.mark.parametrize("split", [1, 9, 20, len(SECRET) - 1])
async def test_secret_split_across_deltas_is_redacted(split: int) -> None:
    before, after = _halves(SECRET, split)
    status, events = await _stream([["Use ", before, after, " to deploy."]], {})
    assert status == 200
    assert _openai_text(events) == "Use [SECRET] to deploy."
    assert not any(SECRET[:8] in data or SECRET[-8:] in data for data in events)
    assert events[-1] == "[DONE]"


async def test_held_back_text_goes_out_before_finish_usage_and_done() -> None:
    pieces = ["Mail ", EMAIL[:6], EMAIL[6:], " or call later, ", "thanks"]
    status, events = await _stream([pieces], {}, stream_options={"include_usage": True})
    assert status == 200
    assert _openai_text(events) == "Mail [EMAIL] or call later, thanks"
    decoded = [orjson.loads(data) for data in events[:-1]]
    finish = next(
        i for i, d in enumerate(decoded) if d["choices"] and d["choices"][0]["finish_reason"]
    )
    last_text = max(
        i for i, d in enumerate(decoded) if d["choices"] and d["choices"][0]["delta"].get("content")
    )
    assert last_text < finish
    assert decoded[finish + 1]["usage"]["completion_tokens"] == 12
    assert events[-1] == "[DONE]"
    assert "thanks" in decoded[last_text]["choices"][0]["delta"]["content"]


async def test_text_in_the_finishing_chunk_is_checked_with_the_held_back_text() -> None:
    status, events = await _stream(
        [["Write to ", EMAIL[:10], EMAIL[10:]]], {}, user="finish-with-text"
    )
    assert status == 200
    assert _openai_text(events) == "Write to [EMAIL]"
    assert events[-1] == "[DONE]"


@pytest.mark.parametrize("split", [3, 15])
async def test_blocked_secret_ends_the_stream_with_an_error_event(split: int) -> None:
    before, after = _halves(SECRET, split)
    pieces = ["Here: ", before, after, " and more text after it."]
    status, events = await _stream([pieces], BLOCK_SECRETS)
    assert status == 200
    error = orjson.loads(events[-1])["error"]
    assert error["code"] == "guard_output_blocked"
    assert error["type"] == "api_error"
    assert "secret.openai" in error["message"]
    assert "[DONE]" not in events
    assert not any(before in data or after in data for data in events)
    assert "more text" not in _openai_text(events[:-1])


async def test_anthropic_stream_is_redacted_per_text_block() -> None:
    blocks = [["Mail ", EMAIL[:4], EMAIL[4:], " now."], ["Key ", SECRET[:12], SECRET[12:]]]
    async with (
        scripted_upstream(blocks) as base,
        running(scripted_policy(base, {})) as gateway,
    ):
        request = chat("claude", "hi", stream=True, max_tokens=64)
        status, _, body = await gateway.post("/v1/messages", request)
    assert status == 200
    events = sse_data(body)
    decoded = [orjson.loads(data) for data in events]
    texts: dict[int, str] = {}
    for data in decoded:
        if data["type"] == "content_block_delta":
            texts[data["index"]] = texts.get(data["index"], "") + data["delta"]["text"]
        if data["type"] == "content_block_stop":
            # Every block's text is complete before its stop event.
            assert data["index"] in texts
    assert texts == {0: "Mail [EMAIL] now.", 1: "Key [SECRET]"}
    assert decoded[-1]["type"] == "message_stop"
    assert SECRET[:12] not in body.decode()


async def test_anthropic_block_uses_the_anthropic_error_event() -> None:
    async with (
        scripted_upstream([["Key ", SECRET[:12], SECRET[12:], " end"]]) as base,
        running(scripted_policy(base, BLOCK_SECRETS)) as gateway,
    ):
        request = chat("claude", "hi", stream=True, max_tokens=64)
        status, _, body = await gateway.post("/v1/messages", request)
    assert status == 200
    text = body.decode()
    assert text.rstrip().split("\n\n")[-1].startswith("event: error\n")
    last = orjson.loads(sse_data(body)[-1])
    assert last["type"] == "error"
    assert "secret.openai" in last["error"]["message"]
    assert "message_stop" not in text
    assert SECRET[:12] not in text


async def test_stream_findings_reach_metrics_and_the_log_without_the_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiofast")
    async with (
        scripted_upstream([["Mail ", EMAIL[:5], EMAIL[5:], " and ", SECRET]]) as base,
        running(scripted_policy(base, {})) as gateway,
    ):
        status, _, _ = await gateway.post("/v1/chat/completions", chat("mini", "hi", stream=True))
        _, _, metrics = await gateway.get("/aiofast/metrics")
    assert status == 200
    text = metrics.decode()
    assert 'aiofast_guard_findings_total{action="redact",rule="pii.email"} 1.0' in text
    assert 'aiofast_guard_findings_total{action="redact",rule="secret.openai"} 1.0' in text
    lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "aiofast.request"]
    assert {"rule": "pii.email", "action": "redact"} in lines[-1]["guard"]
    assert EMAIL not in caplog.text
    assert SECRET[:12] not in caplog.text


async def test_simulated_stream_passes_unchanged_or_is_blocked_by_a_literal_rule() -> None:
    request = chat("small", "Say hello", stream=True)
    async with running(simulated_policy(extra={"guard": {}})) as gateway:
        _, _, plain = await gateway.post("/v1/chat/completions", chat("small", "Say hello"))
        status, _, streamed = await gateway.post("/v1/chat/completions", request)
    answer = orjson.loads(plain)["choices"][0]["message"]["content"]
    assert status == 200
    assert _openai_text(sse_data(streamed)) == answer
    assert sse_data(streamed)[-1] == "[DONE]"

    # A word from the middle of the (deterministic) answer, banned.
    word = answer.split()[len(answer.split()) // 2]
    rule = {"id": "banned", "kind": "literal", "words": [word], "action": "block"}
    async with running(simulated_policy(extra={"guard": {"packs": [], "rules": [rule]}})) as gw:
        status, _, blocked = await gw.post("/v1/chat/completions", request)
    events = sse_data(blocked)
    assert status == 200
    assert orjson.loads(events[-1])["error"]["code"] == "guard_output_blocked"
    assert f" {word} " not in f" {_openai_text(events[:-1])} "
