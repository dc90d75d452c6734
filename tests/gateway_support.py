"""Helpers shared by the gateway tests: policies, a running gateway, SSE reading."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from aiofast.gateway import PIPELINE, create_app
from aiofast.pipeline import Pipeline
from aiofast.policy import Policy, policy_from_mapping

WIRE = Path(__file__).parent / "fixtures" / "wire"

FAST_SIMULATION = {
    "ttft_ms": 0,
    "inter_token_ms": 0,
    "min_output_tokens": 12,
    "max_output_tokens": 40,
}


def simulated_policy(
    *,
    faults: Mapping[str, Any] | None = None,
    timeouts: Mapping[str, Any] | None = None,
    ledger_path: str = "",
    extra: Mapping[str, Any] | None = None,
    simulation: Mapping[str, Any] | None = None,
) -> Policy:
    """Three tiers on a fast simulated upstream, plus one faulty tier when asked."""
    settings = dict(simulation or FAST_SIMULATION)
    upstreams: list[dict[str, Any]] = [{"name": "sim", "kind": "simulated", "simulated": settings}]
    deployments = [
        {"name": "small", "upstream": "sim", "model": "gpt-4o-mini"},
        {"name": "medium", "upstream": "sim", "model": "gpt-4o"},
        {"name": "large", "upstream": "sim", "model": "o3"},
    ]
    tiers: dict[str, list[str]] = {"small": ["small"], "medium": ["medium"], "large": ["large"]}
    if faults is not None:
        upstreams.append(
            {
                "name": "faulty",
                "kind": "simulated",
                "simulated": {**settings, "faults": dict(faults)},
                "timeouts": dict(timeouts or {}),
            }
        )
        deployments.append({"name": "faulty", "upstream": "faulty", "model": "gpt-4o-mini"})
        tiers["faulty"] = ["faulty"]
    data: dict[str, Any] = {
        "version": "test-1",
        "upstreams": upstreams,
        "deployments": deployments,
        "tiers": tiers,
        "ledger": {"path": ledger_path},
        "server": {"default_tier": "small", "open_routes": ["health", "metrics"]},
    }
    data.update(extra or {})
    return policy_from_mapping(data)


class RunningGateway:
    """A gateway listening on a loopback port, with an HTTP client session."""

    def __init__(self, app: web.Application, runner: web.AppRunner, port: int) -> None:
        self.app = app
        self.runner = runner
        self.url = f"http://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession()

    @property
    def pipeline(self) -> Pipeline:
        return self.app[PIPELINE]

    async def post(
        self, path: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.session.post(self.url + path, data=data, headers=headers) as response:
            return response.status, response.headers, await response.read()

    async def get(
        self, path: str, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        async with self.session.get(self.url + path, headers=headers) as response:
            return response.status, response.headers, await response.read()

    def events(self) -> list[dict[str, Any]]:
        """Every usage event so far, from the ledger."""
        ledger = self.pipeline.ledger
        ledger.flush()
        connection = ledger.connect()
        connection.row_factory = __import__("sqlite3").Row
        try:
            rows = connection.execute("SELECT * FROM usage_events ORDER BY started_at")
            return [dict(row) for row in rows]
        finally:
            connection.close()

    def event(self, request_id: str) -> dict[str, Any]:
        return next(e for e in self.events() if e["request_id"] == request_id)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port: a stand-in upstream; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running(app_or_policy: web.Application | Policy) -> AsyncIterator[RunningGateway]:
    app = app_or_policy if isinstance(app_or_policy, web.Application) else create_app(app_or_policy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    gateway = RunningGateway(app, runner, runner.addresses[0][1])
    try:
        yield gateway
    finally:
        await gateway.session.close()
        await runner.cleanup()


def sse_data(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [
        line[len("data: ") :] for line in body.decode().splitlines() if line.startswith("data: ")
    ]


def chat(model: str = "small", text: str = "Say hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}
