"""Running an aiohttp application until SIGINT/SIGTERM, with a graceful shutdown.

Shutdown runs the application's cleanup, which drains the usage ledger, so stopping the
gateway loses no usage event. uvloop is used when it is installed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from aiohttp import web

from aiofast.gateway import create_app
from aiofast.policy import Policy

__all__ = ["run_app", "serve_until_stopped"]


def run_app(
    policy: Policy,
    *,
    host: str,
    port: int,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``policy`` on ``host:port`` until interrupted."""
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(serve_until_stopped(create_app(policy), host, port, on_ready))


async def serve_until_stopped(
    app: web.Application,
    host: str,
    port: int,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    app_runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await app_runner.setup()
    try:
        site = web.TCPSite(app_runner, host, port)
        await site.start()
        bound = app_runner.addresses[0][1] if port == 0 else port
        shown = f"[{host}]" if ":" in host else host
        if on_ready is not None:
            on_ready(f"http://{shown}:{bound}")
        await stop.wait()
    finally:
        await app_runner.cleanup()
