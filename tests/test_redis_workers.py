"""Several worker processes on one port: spread, replaced when they die, stopped together."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import aiohttp
import pytest

from aiofast.workers import unshared_state_warning

# A tiny app whose handler blocks its worker's loop for a moment, so that while one
# worker is busy the kernel gives the next connection to another.
SERVER = textwrap.dedent(
    """
    import os, sys, time
    from aiohttp import web
    from aiofast.workers import bind, serve_workers

    async def whoami(request):
        time.sleep(0.05)
        return web.Response(text=str(os.getpid()))

    def make_app():
        app = web.Application()
        app.router.add_get("/", whoami)
        return app

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sys.exit(serve_workers(make_app, sock, 2, on_ready=lambda: print(port, flush=True)))
    """
)


@pytest.fixture
def workers() -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    yield process, port
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    process.stdout.close()


async def pids(port: int, requests: int = 12) -> set[int]:
    async def one(session: aiohttp.ClientSession) -> int:
        for _ in range(100):
            try:
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    return int(await response.text())
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)  # the workers are still starting
        raise AssertionError("no worker answered")

    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        return set(await asyncio.gather(*(one(session) for _ in range(requests))))


def children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return {int(child) for child in handle.read().split()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_answer_on_one_port(workers: tuple[subprocess.Popen[str], int]) -> None:
    process, port = workers
    answered = await pids(port)
    assert answered <= children(process.pid)
    assert len(answered) == 2


async def test_a_dead_worker_is_replaced(workers: tuple[subprocess.Popen[str], int]) -> None:
    process, port = workers
    await pids(port, requests=2)
    first = children(process.pid)
    victim = next(iter(first))
    os.kill(victim, signal.SIGKILL)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = children(process.pid)
        if len(now) == 2 and victim not in now:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the dead worker was not replaced")
    assert victim not in await pids(port)


async def test_sigterm_stops_every_worker_gracefully(
    workers: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = workers
    await pids(port, requests=2)
    spawned = children(process.pid)

    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 10) == 0
    for pid in spawned:
        assert not alive(pid)


def test_several_workers_without_redis_are_warned_how_to_share_limits() -> None:
    warning = unshared_state_warning(4, redis_configured=False)
    assert warning is not None
    assert "per worker" in warning
    assert "2400" in warning
    assert "[redis]" in warning
    assert unshared_state_warning(4, redis_configured=True) is None
    assert unshared_state_warning(1, redis_configured=False) is None
