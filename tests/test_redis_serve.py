"""``aiofast serve --workers N``: one port, N processes, limits shared through Redis."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import orjson

from aiofast.policy import DEFAULT_POLICY_TOML
from redis_server import RedisServer
from served_gateway import served_gateway


async def answers(url: str, count: int) -> list[int]:
    body = {"model": "small", "messages": [{"role": "user", "content": "Say hello"}]}
    async with aiohttp.ClientSession() as session:
        for _ in range(100):  # the workers may still be importing
            try:
                async with session.get(f"{url}/aiofast/health") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)

        async def one() -> int:
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                await response.read()
                return response.status

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def health(url: str) -> dict[str, object]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/aiofast/health") as response,
    ):
        parsed: dict[str, object] = orjson.loads(await response.read())
        return parsed


async def test_two_workers_without_redis_serve_and_warn_how_to_share_limits(
    tmp_path: Path,
) -> None:
    with served_gateway(
        tmp_path, DEFAULT_POLICY_TOML, workers=2, log_level="warning", capture_log=True
    ) as (url, process):
        assert await answers(url, 6) == [200] * 6
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == 0
        assert process.stderr is not None
        log = process.stderr.read()
    assert "2 workers without Redis" in log
    assert "[redis]" in log


async def test_two_workers_with_redis_share_it_and_report_it_in_health(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    policy = DEFAULT_POLICY_TOML + "\n[redis]\ninstances = 2\n"
    env = {"AIOFAST_REDIS_URL": redis_server.url}
    with served_gateway(
        tmp_path, policy, env=env, workers=2, log_level="warning", capture_log=True
    ) as (url, process):
        assert await answers(url, 6) == [200] * 6
        assert (await health(url))["redis"] == {"status": "ok"}
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == 0
        assert process.stderr is not None
        assert "without Redis" not in process.stderr.read()
