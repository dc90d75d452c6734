"""aiofast inside an existing aiohttp app: setup, middleware, Client, the shipped example."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import orjson
import pytest
from aiohttp import web

import aiofast
from aiofast.auth import digest
from aiofast.refusals import RequestRefused
from gateway_support import chat, running, simulated_policy, sse_data

EXAMPLE = Path(__file__).parent.parent / "examples" / "aiohttp_app.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aiohttp_app_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_app_answers_and_mounts_the_gateway() -> None:
    app = _example().make_app(simulated_policy())
    async with running(app) as server:
        status, headers, body = await server.post("/ask", {"question": "What is a token?"})
        assert status == 200
        answer = orjson.loads(body)
        assert answer["answer"]
        assert answer["tier"] == "small"
        assert answer["cost_usd"] > 0
        app_request = headers["x-aiofast-request-id"]
        status, _, body = await server.post("/llm/v1/chat/completions", chat(stream=True))
        assert status == 200
        assert sse_data(body)[-1] == "[DONE]"
        await server.post("/llm/aiofast/outcomes", {"request_id": app_request, "success": True})
        status, _, body = await server.get("/llm/aiofast/usage?group_by=api")
        events = server.events()
    rows = {row["api"]: row for row in orjson.loads(body)["rows"]}
    assert status == 200
    assert rows["app"]["requests"] == 1
    assert rows["chat"]["requests"] == 2
    # The outcome of the app request covers the LLM call made for it.
    call = next(e for e in events if e["parent_id"] == app_request)
    assert call["api"] == "chat"
    assert rows["chat"]["successes"] == 1


async def test_middleware_identifies_callers_and_attributes_their_calls() -> None:
    key = "sk-bob-key"
    policy = simulated_policy(
        extra={"keys": [{"digest": digest(key), "name": "bob", "user": "bob", "team": "ml"}]}
    )

    async def handler(request: web.Request) -> web.Response:
        context = request[aiofast.REQUEST_CONTEXT]
        result = await request.app[aiofast.CLIENT].chat([{"role": "user", "content": "hi"}])
        return web.json_response({"user": context.identity.user, "id": result.request_id})

    async def unguarded(request: web.Request) -> web.Response:
        result = await request.app[aiofast.CLIENT].chat([{"role": "user", "content": "hi"}])
        return web.json_response({"id": result.request_id})

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"already sent")
        return response

    app = web.Application()
    app.router.add_get("/who", handler)
    app.router.add_get("/stream", streamed)
    app.router.add_get("/open", unguarded)
    aiofast.setup(app, policy, routes=["/who", "/stream"])
    async with running(app) as server:
        assert (await server.get("/who"))[0] == 401
        status, headers, body = await server.get("/who", {"Authorization": f"Bearer {key}"})
        assert status == 200
        call = server.event(orjson.loads(body)["id"])
        assert (call["user"], call["team"], call["parent_id"]) == (
            "bob",
            "ml",
            headers["x-aiofast-request-id"],
        )
        status, headers, body = await server.get("/stream", {"Authorization": f"Bearer {key}"})
        assert (status, body) == (200, b"already sent")
        assert "x-aiofast-request-id" not in headers
        # A route not chosen is not admitted (no key asked for), though its calls are recorded.
        assert (await server.get("/open"))[0] == 200


async def test_client_chat_stream_and_embeddings() -> None:
    async with aiofast.Client(simulated_policy()) as client:
        result = await client.chat([{"role": "user", "content": "Hello"}], model="medium")
        assert result.text
        assert result.model == "gpt-4o"
        assert result.tier == "medium"
        assert result.output_tokens == result.response["usage"]["completion_tokens"]
        assert result.cost_usd is not None
        assert result.cost_usd > 0
        pieces = [
            chunk["choices"][0]["delta"].get("content") or ""
            async for chunk in client.stream([{"role": "user", "content": "Hello"}], model="medium")
            if chunk["choices"]
        ]
        assert "".join(pieces) == result.text
        vectors = await client.embeddings(["a", "b"])
        assert len(vectors["data"]) == 2
        with pytest.raises(RequestRefused) as refused:
            await client.chat([{"role": "user", "content": "Hello"}], model="nope")
        assert refused.value.status == 404


async def test_client_stream_stopped_early_is_recorded() -> None:
    slow = {"ttft_ms": 0, "inter_token_ms": 20, "min_output_tokens": 100, "max_output_tokens": 100}
    client = aiofast.Client(simulated_policy(simulation=slow))
    await client.start()
    try:
        stream = client.stream([{"role": "user", "content": "Hello"}])
        async for _ in stream:
            break
        await stream.aclose()
        ledger = client.pipeline.ledger
        ledger.flush()
        rows = ledger.summarize(["status"])
    finally:
        await client.close()
    assert [row["status"] for row in rows] == [499]
