"""A simulated LLM provider that speaks the OpenAI wire format.

It answers ``/v1/chat/completions`` (streaming or not), ``/v1/embeddings`` and
``/v1/models`` with deterministic text (the same prompt always gets the same reply),
token-by-token SSE with a configurable time to first token and inter-token delay,
provider-style ``usage`` counted with aiofast's exact tokenizer, and fault injection:
429 with ``Retry-After``, 500, 529, a hang past any timeout, or a stream cut after N
chunks.

The gateway runs it in-process on a loopback port when a policy has an upstream of
``kind = "simulated"``; ``aiofast simulate --port P`` runs it alone, for benchmarks.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from aiofast.policy import SimulatedSettings
from aiofast.tokens import count_chat, count_tokens

__all__ = ["SimulatedProvider", "SimulatedServer"]

# Common English words that are each one token (with their leading space) in the
# cl100k_base and o200k_base vocabularies, so replies read like text and count simply.
_WORD_TEXT = (
    "the of and to in is that for it as with was on be by this are from at or an have not "
    "they which one you were all we can her has there been if more when will would who so "
    "no out up into than them only other new some could time these two may first then do "
    "any like my now over such our man me even most made after also did many before must "
    "through back years where much your way well down should because each just those people "
    "how too little state good very make world still own see men work long here get both "
    "between life being under never day same another know while last might us great old "
    "year off come since against go came right used take three"
)
_WORDS = tuple(_WORD_TEXT.split())


@dataclass(slots=True)
class _Reply:
    model: str
    pieces: list[str]
    prompt_tokens: int
    completion_tokens: int


class SimulatedProvider:
    """The request handlers; :meth:`app` wraps them in an aiohttp application."""

    def __init__(self, settings: SimulatedSettings | None = None, *, seed: int = 0) -> None:
        self.settings = settings or SimulatedSettings()
        self._faults = random.Random(seed)
        self._ids = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        return app

    async def _start(
        self, request: web.Request
    ) -> tuple[dict[str, Any], str | None] | web.Response:
        """The request body and the fault drawn for it, or the error answer to send instead.

        A "cut" fault is returned to the handler: only it knows where to cut its body.
        """
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        fault = self._pick_fault()
        if fault is not None and fault != "cut":
            return await self._fail(fault)
        return body, fault

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        started = await self._start(request)
        if isinstance(started, web.Response):
            return started
        body, fault = started
        reply = self._reply(body)
        if body.get("stream"):
            return await self._stream(request, body, reply, cut=fault == "cut")
        await self._sleep(self.settings.ttft_ms + self.settings.inter_token_ms * len(reply.pieces))
        payload = orjson.dumps(self._completion(reply))
        if fault == "cut":
            return await _cut_body(request, payload)
        return web.Response(body=payload, content_type="application/json")

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        started = await self._start(request)
        if isinstance(started, web.Response):
            return started
        body, _ = started  # embeddings are never cut part-way
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        model = str(body.get("model", "simulated"))
        dims = self.settings.embedding_dimensions
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(str(text), dims)}
            for i, text in enumerate(texts)
        ]
        tokens = sum(count_tokens(str(text), model=model) for text in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        payload = {"object": "list", "data": data, "model": model, "usage": usage}
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    def _pick_fault(self) -> str | None:
        faults = self.settings.faults
        if faults.error_rate <= 0 or self._faults.random() >= faults.error_rate:
            return None
        return self._faults.choice(faults.kinds)

    async def _fail(self, fault: str) -> web.Response:
        faults = self.settings.faults
        if fault == "hang":
            await asyncio.sleep(faults.hang_seconds)
            fault = "500"
        headers: dict[str, str] = {}
        error: tuple[str, str, str | None]
        if fault == "429":
            headers["Retry-After"] = f"{faults.retry_after:g}"
            error = ("Rate limit reached (simulated)", "requests", "rate_limit_exceeded")
        elif fault == "529":
            error = ("Overloaded (simulated)", "overloaded_error", "overloaded")
        else:
            error = ("The server had an error (simulated)", "server_error", None)
        message, kind, code = error
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return web.Response(
            status=int(fault),
            body=orjson.dumps(body),
            content_type="application/json",
            headers=headers,
        )

    def _reply(self, body: dict[str, Any]) -> _Reply:
        model = str(body.get("model") or "simulated")
        seed = hashlib.sha256(orjson.dumps(body.get("messages"))).digest()
        rng = random.Random(int.from_bytes(seed[:8], "big"))
        settings = self.settings
        length = rng.randint(settings.min_output_tokens, settings.max_output_tokens)
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(cap, int) and cap > 0:
            length = min(length, cap)
        words = [rng.choice(_WORDS) for _ in range(length)]
        pieces = [words[0].capitalize()] + [" " + word for word in words[1:]]
        text = "".join(pieces)
        try:
            prompt_tokens = count_chat(body, model=model).prompt_tokens
        except ValueError:
            # Message shapes the counter cannot read still cost what their JSON costs.
            prompt_tokens = count_tokens(orjson.dumps(body.get("messages")).decode(), model=model)
        return _Reply(model, pieces, prompt_tokens, count_tokens(text, model=model))

    def _next_id(self) -> str:
        self._ids += 1
        return f"chatcmpl-sim{self._ids:08d}"

    def _completion(self, reply: _Reply) -> dict[str, Any]:
        return {
            "id": self._next_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(reply.pieces)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(reply),
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: _Reply, *, cut: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk_id, created = self._next_id(), int(time.time())
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            data = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": reply.model,
                "choices": [choice],
            }
            return b"data: " + orjson.dumps(data) + b"\n\n"

        await self._sleep(self.settings.ttft_ms)
        await response.write(chunk({"role": "assistant", "content": ""}))
        for sent, piece in enumerate(reply.pieces):
            if cut and sent >= self.settings.faults.cut_after_chunks:
                # Drop the connection mid-stream, as a crashed provider would.
                if request.transport is not None:
                    request.transport.abort()
                return response
            if sent:
                await self._sleep(self.settings.inter_token_ms)
            await response.write(chunk({"content": piece}))
        await response.write(chunk({}, "stop"))
        if wants_usage:
            usage = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": reply.model,
                "choices": [],
                "usage": _usage(reply),
            }
            await response.write(b"data: " + orjson.dumps(usage) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    async def _sleep(milliseconds: float) -> None:
        if milliseconds > 0:
            await asyncio.sleep(milliseconds / 1000)


class SimulatedServer:
    """A :class:`SimulatedProvider` listening on a TCP port (``port=0`` picks one)."""

    def __init__(self, provider: SimulatedProvider, *, host: str = "127.0.0.1", port: int = 0):
        self.provider = provider
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        # A hanging fault must not hold the gateway's shutdown for its whole duration.
        self._runner = web.AppRunner(self.provider.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        error = {"error": {"message": "body must be a JSON object", "type": "invalid_request"}}
        return web.Response(status=400, body=orjson.dumps(error), content_type="application/json")
    return body


async def _cut_body(request: web.Request, payload: bytes) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "application/json", "Content-Length": str(len(payload))}
    )
    await response.prepare(request)
    await response.write(payload[: len(payload) // 2])
    if request.transport is not None:
        request.transport.abort()
    return response


def _usage(reply: _Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _vector(text: str, dimensions: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return [round(rng.uniform(-1, 1), 6) for _ in range(dimensions)]
