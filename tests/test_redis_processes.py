"""Two processes sharing limits through one real redis-server, requests alternating."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from redis_server import RedisServer

SERVER = Path(__file__).with_name("shared_limits_server.py")
# Outage tests use short bounds; the others generous ones, so that a busy machine is
# not mistaken for an outage (which would rightly switch to the local shares).
OUTAGE = {"timeout_ms": 100, "connect_timeout_ms": 100, "probe_interval_ms": 50, "instances": 2}
STEADY = {**OUTAGE, "timeout_ms": 3000, "connect_timeout_ms": 3000}
# Room for two busy processes' own scheduling on a 2-core machine, on top of the bound.
SLACK_S = 0.5
BOUND_S = (OUTAGE["timeout_ms"] + OUTAGE["connect_timeout_ms"]) / 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def processes(
    url: str, limits: list[dict[str, Any]], settings: dict[str, int] = STEADY
) -> Iterator[list[str]]:
    env = {
        **os.environ,
        "AIOFAST_REDIS_URL": url,
        "AIOFAST_TEST_REDIS_SETTINGS": json.dumps(settings),
    }
    started = []
    try:
        for _ in range(2):
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, str(SERVER), str(port), json.dumps(limits)],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            started.append(process)
            assert process.stdout is not None
            assert process.stdout.readline().strip() == str(port), "server did not start"
        yield [f"http://127.0.0.1:{p.args[2]}" for p in started]  # type: ignore[index]
        for process in started:
            assert process.poll() is None, "a server process crashed"
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def admit(session: aiohttp.ClientSession, base: str, **ctx: Any) -> dict[str, Any]:
    async with session.post(f"{base}/admit", json=ctx) as response:
        assert response.status == 200
        reply: dict[str, Any] = await response.json()
        return reply


async def settle(
    session: aiohttp.ClientSession, base: str, rid: str, used: tuple[int, int, float]
) -> None:
    body = {"input": used[0], "output": used[1], "cost": used[2]}
    async with session.post(f"{base}/settle/{rid}", json=body) as response:
        assert response.status == 200


def alternate(bases: list[str]) -> Callable[[int], str]:
    return lambda i: bases[i % len(bases)]


async def test_ten_per_minute_admits_exactly_ten_across_both_processes(
    redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    limits = [{"scope": "team", "requests_per_minute": 10, "burst": 10}]
    with processes(redis_server.url, limits) as bases:
        target = alternate(bases)
        replies = [await admit(session, target(i), team="search") for i in range(30)]
    admitted = [r for r in replies if r["admitted"]]
    assert len(admitted) == 10
    assert {r["source"] for r in replies} == {"redis"}
    assert {r["code"] for r in replies if not r["admitted"]} == {"rate_limit_exceeded"}


async def test_a_token_limit_is_never_exceeded_across_both_processes(
    redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    limits = [{"scope": "team", "tokens_per_minute": 2000}]
    sizes = [150, 420, 90, 610, 333, 275, 505, 64, 480, 220] * 2
    with processes(redis_server.url, limits) as bases:
        target = alternate(bases)
        replies = [
            await admit(session, target(i), team="t", input_tokens=n, reserved_output_tokens=50)
            for i, n in enumerate(sizes)
        ]
    used = sum(n + 50 for n, r in zip(sizes, replies, strict=True) if r["admitted"])
    assert used <= 2000
    # Refusals came only once the next request no longer fitted.
    assert used + min(n + 50 for n, r in zip(sizes, replies, strict=True) if not r["admitted"]) > (
        2000 - 30  # a little refill while the test runs: one token every 30 ms
    )


async def test_fifty_concurrent_requests_on_a_budget_for_three_admit_three(
    redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    limits = [{"scope": "team", "budget": {"usd": 0.03, "per": "month"}}]
    with processes(redis_server.url, limits) as bases:
        target = alternate(bases)
        replies = await asyncio.gather(
            *(admit(session, target(i), team="t", cost_usd=0.01) for i in range(50))
        )
        admitted = [(target(i), r) for i, r in enumerate(replies) if r["admitted"]]
        assert len(admitted) == 3
        assert {base for base, _ in admitted} <= set(bases)
        # Settled below the reservation, room appears for exactly what is left.
        for base, reply in admitted:
            await settle(session, base, reply["id"], (10, 10, 0.005))
        again = await asyncio.gather(
            *(admit(session, target(i), team="t", cost_usd=0.01) for i in range(20))
        )
    assert sum(r["admitted"] for r in again) == 1


async def test_stopped_redis_mid_load_bounded_then_recovered_without_restart(
    redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    limits = [
        {"scope": "team", "requests_per_minute": 600, "burst": 100},
        {"name": "spend", "scope": "team", "budget": {"usd": 100.0, "per": "month"}},
    ]
    with processes(redis_server.url, limits, OUTAGE) as bases:
        target = alternate(bases)

        async def timed(i: int) -> tuple[float, dict[str, Any]]:
            begin = time.monotonic()
            reply = await admit(session, target(i), team="t", cost_usd=0.01)
            return time.monotonic() - begin, reply

        before = await asyncio.gather(*(timed(i) for i in range(10)))
        redis_server.pause()
        during = await asyncio.gather(*(timed(i) for i in range(40)))
        redis_server.resume()
        assert max(d for d, _ in during) <= BOUND_S + SLACK_S
        # The declared policy (local by default): admitted on this process's share.
        assert all(r["admitted"] and r["source"] == "local" for _, r in during)

        deadline = time.monotonic() + 10
        while True:
            _, reply = await timed(0)
            _, other = await timed(1)
            if reply["source"] == other["source"] == "redis":
                break
            assert time.monotonic() < deadline, "the processes did not return to Redis"
            await asyncio.sleep(0.05)
    assert all(r["source"] == "redis" for _, r in before)


async def test_killed_and_restarted_empty_redis_stays_within_the_local_shares(
    redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    limits = [{"scope": "team", "requests_per_minute": 10, "burst": 10}]
    with processes(redis_server.url, limits, OUTAGE) as bases:
        target = alternate(bases)
        first = [await admit(session, target(i), team="t") for i in range(4)]
        assert all(r["admitted"] for r in first)

        redis_server.kill()
        during = [await admit(session, target(i), team="t") for i in range(20)]
        # Each process's share is 10 / 2 = 5, of which it already used 2 through Redis.
        assert sum(r["admitted"] for r in during) == 6
        assert {r["source"] for r in during} == {"local"}

        redis_server.start()
        deadline = time.monotonic() + 10
        while {(await admit(session, b, team="other"))["source"] for b in bases} != {"redis"}:
            assert time.monotonic() < deadline, "the processes did not return to Redis"
            await asyncio.sleep(0.05)
