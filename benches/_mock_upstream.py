"""A stand-in OpenAI-compatible provider for the gateway benchmarks, run as its own process.

It answers ``POST /v1/chat/completions`` with a fixed ~1 KB completion (or, when the request
asks for a stream, a role+content chunk followed by more content chunks at a fixed pace), so
that every gateway under test forwards exactly the same bytes. Optional faults (500, 429 with
``Retry-After``, a connection cut mid-body or mid-stream) are drawn from a seeded generator for
the memory soak. Keeping it this small means it costs the shared load-generator core little.

    python benches/_mock_upstream.py --port 9001 [--delay-ms 20] [--chunks 64 --chunk-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time

import orjson
from aiohttp import web

MODEL = "gpt-4o-mini"
# Roughly 1 KB of JSON once wrapped in the completion envelope, like a short answer.
ANSWER = (
    "Here is a concise overview. Start by measuring what matters: latency at the median and "
    "in the tail, throughput at a bounded error rate, and memory over time. Compare against a "
    "baseline that does the least possible work, so that every microsecond you add is visible. "
    "Run each candidate in the same conditions, interleave the rounds, pin the processes, and "
    "report ratios rather than absolute numbers, because absolute numbers drift between runs "
    "and machines while ratios measured side by side do not. Finally, keep the raw results "
    "with the versions and the settings so anyone can reproduce them. That is all."
)
PROMPT_TOKENS = 42
COMPLETION_TOKENS = 118
FAULT_KINDS = ("status_500", "status_429", "cut")
STAMP_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def stamp(seconds: float) -> str:
    """A monotonic time in microseconds, spelled in letters between tildes.

    Streamed chunks carry the moment the mock wrote them, so a client on the same machine
    (CLOCK_MONOTONIC is shared by all processes) can tell how long each chunk took to cross
    a gateway. Letters rather than digits, so that no guardrail takes it for a card number.
    """
    value = int(seconds * 1_000_000)
    letters = [STAMP_ALPHABET[value % 26]]
    while value >= 26:
        value //= 26
        letters.append(STAMP_ALPHABET[value % 26])
    return "~" + "".join(reversed(letters)) + "~"


def unstamp(text: str) -> float:
    """The inverse of :func:`stamp`, from the letters between the tildes."""
    value = 0
    for letter in text:
        value = value * 26 + STAMP_ALPHABET.index(letter)
    return value / 1_000_000


def completion_body() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench0000000000000000000000",
            "object": "chat.completion",
            "created": 1764720000,
            "model": MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
        }
    )


def sse_event(delta: dict[str, object], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion.chunk",
        "created": 1764720000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def usage_event(chunks: int) -> bytes:
    chunk = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion.chunk",
        "created": 1764720000,
        "model": MODEL,
        "choices": [],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": chunks,
            "total_tokens": PROMPT_TOKENS + chunks,
        },
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class MockUpstream:
    def __init__(self, args: argparse.Namespace) -> None:
        self.delay = args.delay_ms / 1000
        self.chunks = args.chunks
        self.chunk_interval = args.chunk_ms / 1000
        self.stamped = args.stamp
        self.fault_rate = args.fault_rate
        self.random = random.Random(args.seed)
        self.body = completion_body()
        self.served = 0
        self.faults = dict.fromkeys(FAULT_KINDS, 0)

    def draw_fault(self) -> str | None:
        if self.fault_rate <= 0 or self.random.random() >= self.fault_rate:
            return None
        kind = self.random.choice(FAULT_KINDS)
        self.faults[kind] += 1
        return kind

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error_response(400, "invalid_request_error", "the body is not JSON")
        self.served += 1
        fault = self.draw_fault()
        if self.delay:
            await asyncio.sleep(self.delay)
        if fault == "status_500":
            return error_response(500, "server_error", "injected fault")
        if fault == "status_429":
            response = error_response(429, "rate_limit_exceeded", "injected rate limit")
            response.headers["Retry-After"] = "1"
            return response
        if payload.get("stream"):
            include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
            return await self.stream(request, include_usage, cut=fault == "cut")
        if fault == "cut":
            return await self.cut_body(request)
        return web.Response(body=self.body, content_type="application/json")

    async def stream(
        self, request: web.Request, include_usage: bool, cut: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        # A client that walks away mid-stream is part of the soak, not an error.
        with contextlib.suppress(ConnectionResetError):
            await self.write_chunks(request, response, include_usage, cut)
        return response

    async def write_chunks(
        self, request: web.Request, response: web.StreamResponse, include_usage: bool, cut: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        words = ANSWER.split(" ")
        for index in range(self.chunks):
            # An absolute schedule, so the pace does not drift with the time spent writing.
            await asyncio.sleep(max(0.0, start + index * self.chunk_interval - loop.time()))
            if cut and index == self.chunks // 2:
                abort(request)
                return
            text = ("" if index == 0 else " ") + words[index % len(words)]
            if self.stamped:
                text += " " + stamp(time.perf_counter())
            delta = {"role": "assistant", "content": text} if index == 0 else {"content": text}
            await response.write(sse_event(delta))
        await response.write(sse_event({}, finish="stop"))
        if include_usage:
            await response.write(usage_event(self.chunks))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()

    async def cut_body(self, request: web.Request) -> web.StreamResponse:
        """Promise the whole body, send half of it, then drop the connection."""
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Length": str(len(self.body))}
        )
        await response.prepare(request)
        await response.write(self.body[: len(self.body) // 2])
        abort(request)
        return response

    async def models(self, request: web.Request) -> web.Response:
        data = {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}
        return web.json_response(data)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"served": self.served, "faults": self.faults})

    async def set_faults(self, request: web.Request) -> web.Response:
        """Change the fault rate of a running mock (the memory soak turns faults on)."""
        self.fault_rate = float(request.query["rate"])
        return web.json_response({"fault_rate": self.fault_rate})


def abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def error_response(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"message": message, "type": code, "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def build_app(args: argparse.Namespace) -> web.Application:
    mock = MockUpstream(args)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", mock.chat)
    app.router.add_get("/v1/models", mock.models)
    app.router.add_get("/stats", mock.stats)
    app.router.add_post("/faults", mock.set_faults)
    return app


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="wait before answering")
    parser.add_argument("--chunks", type=int, default=64, help="content chunks per stream")
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="gap between chunks")
    parser.add_argument(
        "--stamp", action="store_true", help="put the send time in every streamed chunk"
    )
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of faulty answers")
    parser.add_argument("--seed", type=int, default=8)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    web.run_app(
        build_app(args),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        loop=loop_factory() if loop_factory else None,
    )


if __name__ == "__main__":
    main()
