"""A small admission server for the multi-process tests: one process, one SharedLimiter.

    python tests/shared_limits_server.py PORT LIMITS_JSON

Redis comes from ``AIOFAST_REDIS_URL``; the ``[redis]`` settings from
``AIOFAST_TEST_REDIS_SETTINGS`` (JSON). ``POST /admit`` takes the request context as
JSON and answers ``{"admitted", "code", "source", "id"}``; ``POST /settle/{id}`` takes
``{"input", "output", "cost"}``. The port is printed once the server listens.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from aiohttp import web

from aiofast.limits import RequestContext
from aiofast.stores.redis import RedisStore
from aiofast.stores.settings import RedisSettings
from aiofast.stores.shared_limits import SharedHandle, SharedLimiter

LIMITER = web.AppKey("limiter", SharedLimiter)
HANDLES = web.AppKey("handles", dict[str, SharedHandle])


async def admit(request: web.Request) -> web.Response:
    body: dict[str, Any] = await request.json()
    admission = await request.app[LIMITER].admit(RequestContext(**body))
    reply: dict[str, Any] = {
        "admitted": admission.admitted,
        "code": admission.refusal.code if admission.refusal else None,
        "source": admission.source,
        "id": None,
    }
    if admission.handle is not None:
        request.app[HANDLES][admission.handle.id] = admission.handle
        reply["id"] = admission.handle.id
    return web.json_response(reply)


async def settle(request: web.Request) -> web.Response:
    used = await request.json()
    handle = request.app[HANDLES].pop(request.match_info["id"])
    settled = await request.app[LIMITER].settle(handle, used["input"], used["output"], used["cost"])
    return web.json_response({"settled": settled})


async def main(port: int, limits: list[dict[str, Any]]) -> None:
    settings = RedisSettings.model_validate(
        json.loads(os.environ.get("AIOFAST_TEST_REDIS_SETTINGS", "{}"))
    )
    store = RedisStore.from_settings(settings)
    limiter = SharedLimiter(limits, store)
    await store.start()
    app = web.Application()
    app[LIMITER] = limiter
    app[HANDLES] = {}
    app.router.add_post("/admit", admit)
    app.router.add_post("/settle/{id}", settle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(port, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), json.loads(sys.argv[2])))
