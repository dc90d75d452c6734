"""A tiny OpenAI-style upstream on loopback with scripted faults, and a call seam for it.

Each deployment has a queue of scripted actions consumed one per request (``ok`` once the
queue is empty); every arrival time is kept so tests can check waits and attempt counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from aiofast.routing import Call, DeploymentSpec, Reply, Timeouts

Action = tuple[Any, ...]


def completion(content: str) -> bytes:
    message = {"role": "assistant", "content": content}
    return orjson.dumps({"choices": [{"index": 0, "message": message}], "usage": {}})


def chunk(text: str) -> bytes:
    return b"data: " + orjson.dumps({"choices": [{"delta": {"content": text}}]}) + b"\n\n"


@dataclass
class FaultyUpstream:
    scripts: dict[str, deque[Action]] = field(default_factory=lambda: defaultdict(deque))
    arrivals: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    url: str = ""

    def script(self, deployment: str, *actions: Action) -> None:
        self.scripts[deployment].extend(actions)

    def calls(self, deployment: str | None = None) -> int:
        if deployment is None:
            return sum(len(v) for v in self.arrivals.values())
        return len(self.arrivals[deployment])

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["deployment"]
        self.arrivals[name].append(time.monotonic())
        body = await request.json()
        queue = self.scripts[name]
        action = queue.popleft() if queue else ("ok",)
        kind = action[0]
        if kind == "status":
            _, status, headers, payload = action
            return web.Response(status=status, headers=headers, body=payload)
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "text":
            return web.Response(body=completion(action[1]), content_type="application/json")
        if body.get("stream"):
            return await self.stream(request, name, action)
        return web.Response(body=completion(f"hello from {name}"), content_type="application/json")

    async def stream(self, request: web.Request, name: str, action: Action) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        if action[0] == "error_event":
            await response.write(b'data: {"error": {"type": "overloaded_error"}}\n\n')
            return response
        parts = [chunk(f"{name}-{i} ") for i in range(4)]
        if action[0] == "stall":
            # Some chunks, then silence with the connection open, as a stuck upstream.
            for part in parts[: action[1]]:
                await response.write(part)
            await asyncio.sleep(3600)
        if action[0] == "cut":
            for part in parts[: action[1]]:
                await response.write(part)
                await asyncio.sleep(0.01)
            # Drop the connection mid-body, as a crashing upstream would.
            assert request.transport is not None
            request.transport.close()
            return response
        for part in parts:
            await response.write(part)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def start(upstream: FaultyUpstream) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/{deployment}/chat/completions", upstream.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    upstream.url = f"http://127.0.0.1:{port}"
    return runner


def aiohttp_call(session: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> Call:
    """The call seam over a real aiohttp client: error replies and plain answers are read
    whole; a streamed answer is handed over unread."""
    payload = orjson.dumps(body)

    async def call(deployment: DeploymentSpec, timeouts: Timeouts) -> Reply:
        timeout = aiohttp.ClientTimeout(sock_connect=timeouts.connect)
        response = await session.post(
            f"{base}/{deployment.name}/chat/completions",
            data=payload,
            headers={"content-type": "application/json"},
            timeout=timeout,
        )
        if response.status >= 400 or not body.get("stream"):
            async with response:
                data = await response.read()
            return Reply(response.status, response.headers, data)

        async def chunks() -> AsyncIterator[bytes]:
            async for piece in response.content.iter_any():
                yield piece

        async def release() -> None:
            response.release()

        return Reply(response.status, response.headers, chunks=chunks(), release=release)

    return call
