"""Two ``aiofast serve`` processes on one Redis, requests alternating between them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from aiofast.auth import digest
from aiofast.prices import PriceTable
from redis_server import RedisServer
from served_gateway import served_gateway

POLICY = """
version = "two-gateways"

[[upstreams]]
name = "sim"
kind = "simulated"

[upstreams.simulated]
ttft_ms = 0
inter_token_ms = 0
min_output_tokens = 5
max_output_tokens = 20

[[upstreams]]
name = "slow"
kind = "simulated"

[upstreams.simulated]
ttft_ms = 1500
inter_token_ms = 0
min_output_tokens = 5
max_output_tokens = 20

[[deployments]]
name = "small"
upstream = "sim"
model = "gpt-4o-mini"

[[deployments]]
name = "slow"
upstream = "slow"
model = "gpt-4o-mini"

[tiers]
small = ["small"]
slow = ["slow"]
{keys}

[server]
default_tier = "small"
open_routes = ["health", "metrics"]

[redis]
instances = 2
timeout_ms = {timeout_ms}
connect_timeout_ms = {timeout_ms}
probe_interval_ms = 50

{limits}
"""
BOUND_S = 0.2
SLACK_S = 0.5


@contextmanager
def gateway(workdir: Path, policy: str, url: str) -> Iterator[str]:
    workdir.mkdir()
    with served_gateway(workdir, policy, env={"AIOFAST_REDIS_URL": url}) as (base, process):
        yield base
        assert process.poll() is None, "a gateway crashed"


# One team per test, each with its own limit, so one pair of gateways serves them all.
TEAMS = ("rate", "tokens", "budget", "outage", "killed")
KEYS = "".join(
    f'[[keys]]\ndigest = "{digest(f"sk-{team}")}"\nteam = "{team}"\n\n' for team in TEAMS
)


def budget_for_three() -> float:
    """Room for 3.5 worst cases of one test request: 3 fit, the 4th does not."""
    price = PriceTable.default().get("gpt-4o-mini")
    assert price is not None
    assert price.input_cost_per_token is not None
    assert price.output_cost_per_token is not None
    return 3.5 * (40 * price.input_cost_per_token + 100 * price.output_cost_per_token)


STEADY_LIMITS = f"""
[[limits]]
scope = "team"
value = "rate"
requests_per_minute = 10
burst = 10

[[limits]]
scope = "team"
value = "tokens"
tokens_per_day = 1500

[[limits]]
scope = "team"
value = "budget"
budget = {{ usd = {budget_for_three()!r}, per = "month" }}
"""

OUTAGE_LIMITS = """
[[limits]]
scope = "team"
value = "outage"
requests_per_minute = 6000
burst = 1000

[[limits]]
scope = "team"
value = "killed"
requests_per_minute = 10
burst = 10
"""


@contextmanager
def two_gateways(
    workdir: Path, redis: RedisServer, limits: str, timeout_ms: int
) -> Iterator[list[str]]:
    policy = POLICY.format(limits=limits, keys=KEYS, timeout_ms=timeout_ms)
    with ExitStack() as stack:
        yield [stack.enter_context(gateway(workdir / n, policy, redis.url)) for n in "ab"]


@pytest.fixture(scope="module")
def steady(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two gateways on one Redis with generous bounds: a busy machine is no outage."""
    workdir = tmp_path_factory.mktemp("steady")
    redis = RedisServer(workdir)
    redis.start()
    try:
        with two_gateways(workdir, redis, STEADY_LIMITS, timeout_ms=3000) as bases:
            yield bases
    finally:
        redis.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def ask(
    session: aiohttp.ClientSession,
    base: str,
    team: str,
    text: str = "Say hello",
    model: str = "small",
    **extra: Any,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    headers = {"Authorization": f"Bearer sk-{team}"}
    async with session.post(f"{base}/v1/chat/completions", json=body, headers=headers) as response:
        return response.status, dict(response.headers), orjson.loads(await response.read())


async def test_ten_per_minute_admits_exactly_ten_in_total(
    steady: list[str], session: aiohttp.ClientSession
) -> None:
    answers = [await ask(session, steady[i % 2], "rate") for i in range(30)]
    statuses = [status for status, _, _ in answers]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 20
    refused = [body for status, _, body in answers if status == 429]
    assert {b["error"]["code"] for b in refused} == {"rate_limit_exceeded"}
    assert all("Retry-After" in h for s, h, _ in answers if s == 429)


async def test_a_token_limit_is_never_exceeded(
    steady: list[str], session: aiohttp.ClientSession
) -> None:
    texts = ["Say hello " * n for n in (5, 40, 12, 80, 25, 60, 8, 33)] * 3
    answers = [
        await ask(session, steady[i % 2], "tokens", text, max_tokens=100)
        for i, text in enumerate(texts)
    ]
    used = [
        int(h["x-aiofast-input-tokens"]) + int(h["x-aiofast-output-tokens"])
        for status, h, _ in answers
        if status == 200
    ]
    assert any(status == 429 for status, _, _ in answers), "the limit was never reached"
    assert sum(used) <= 1500


async def test_fifty_concurrent_requests_on_a_budget_for_three_admit_three(
    steady: list[str], session: aiohttp.ClientSession
) -> None:
    # The slow tier answers after 1.5 s: nothing settles (and frees room) during the race.
    answers = await asyncio.gather(
        *(
            ask(session, steady[i % 2], "budget", "Say hello", model="slow", max_tokens=100)
            for i in range(50)
        )
    )
    statuses = [status for status, _, _ in answers]
    assert statuses.count(200) == 3
    codes = {body["error"]["code"] for status, _, body in answers if status != 200}
    assert codes == {"insufficient_quota"}


async def test_redis_stopped_then_killed_mid_load(
    tmp_path: Path, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    """SIGSTOP: every request within the bound, on the local shares, back to Redis after
    SIGCONT without a restart. SIGKILL and an empty restart: no crash, back again."""
    with two_gateways(tmp_path, redis_server, OUTAGE_LIMITS, timeout_ms=100) as bases:

        async def timed(i: int) -> tuple[float, int]:
            begin = time.monotonic()
            status, _, _ = await ask(session, bases[i % 2], "outage")
            return time.monotonic() - begin, status

        async def back_on_redis() -> None:
            deadline = time.monotonic() + 10
            while True:
                healths = []
                for base in bases:
                    async with session.get(f"{base}/aiofast/health") as response:
                        healths.append(orjson.loads(await response.read())["redis"]["status"])
                if healths == ["ok", "ok"]:
                    return
                assert time.monotonic() < deadline, "the gateways did not return to Redis"
                await asyncio.sleep(0.05)

        assert {s for _, s in await asyncio.gather(*(timed(i) for i in range(6)))} == {200}
        redis_server.pause()
        during = await asyncio.gather(*(timed(i) for i in range(30)))
        redis_server.resume()
        # The upstream answers at once: anything beyond the bound would be Redis.
        assert max(d for d, _ in during) <= BOUND_S + SLACK_S
        assert {s for _, s in during} == {200}  # the default policy: local limits
        await back_on_redis()

        first = [await ask(session, bases[i % 2], "killed") for i in range(4)]
        assert [status for status, _, _ in first] == [200] * 4
        redis_server.kill()
        killed = [await ask(session, bases[i % 2], "killed") for i in range(20)]
        # Each gateway's share is 10 / 2 = 5, of which it already used 2 through Redis.
        assert [status for status, _, _ in killed].count(200) == 6
        redis_server.start()
        await back_on_redis()
        assert {s for _, s in await asyncio.gather(*(timed(i) for i in range(4)))} == {200}
