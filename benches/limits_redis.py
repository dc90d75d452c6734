"""Limits over Redis: admissions per second and round trips per admission.

One admission checks a request against requests/min, tokens/min and a daily
budget of one scope (one ``[[limits]]`` entry). aiofast's SharedLimiter decides all
three in one EVALSHA (atomic, all or nothing, time from Redis), and records the
request in its in-process fallback as it does in production. The nearest equivalent
with the ``limits`` library (redis-py bridge, same Redis) is three ``hit`` calls:
requests, tokens (cost = tokens) and a budget counted in micro-dollars over a day;
they are not atomic together and take the time from the client.

Both sides run in this process on the same redis-server (pinned to the other
core), interleaved A B A B; the figure is the median of rounds. Round trips are
counted in the client: every request written to a Redis connection (neither side
pipelines, so each write waits for its own answer).

    python benches/limits_redis.py [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# benches/limits.py has the name of the library measured here: drop this folder from the
# import path, or ``import limits`` would import that script.
sys.path.remove(str(Path(__file__).resolve().parent))

from limits import RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from aiofast.limits import RequestContext
from aiofast.stores.redis import RedisStore
from aiofast.stores.settings import RedisSettings
from aiofast.stores.shared_limits import SharedLimiter

BENCHES = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHES.parent / "tests"))
from redis_server import RedisServer  # noqa: E402

RESULTS = BENCHES / "results"
BIG = 10**8  # limits so large that nothing is refused while timing
Admit = Callable[[int], Awaitable[bool]]


def aiofast_limiter(store: RedisStore, rpm: int, tpm: int, budget_usd: float) -> SharedLimiter:
    entry = {
        "scope": "user",
        "requests_per_minute": rpm,
        "burst": rpm,
        "tokens_per_minute": tpm,
        "budget": {"usd": budget_usd, "per": "day"},
    }
    return SharedLimiter([entry], store)


def request(i: int) -> RequestContext:
    return RequestContext(
        user=f"user:{i % 100}", input_tokens=400, reserved_output_tokens=100, cost_usd=0.001
    )


def aiofast_admit(limiter: SharedLimiter) -> Admit:
    async def admit(i: int) -> bool:
        return (await limiter.admit(request(i))).admitted

    return admit


def aiofast_admit_settle(limiter: SharedLimiter) -> Admit:
    async def admit(i: int) -> bool:
        admission = await limiter.admit(request(i))
        await limiter.settle(admission.handle, 400, 200, 0.0006)
        return admission.admitted

    return admit


def limits_admit(
    strategy: RateLimiter, rpm: int, tpm: int, budget_micro_usd: int, name: str
) -> Admit:
    requests = RateLimitItemPerMinute(rpm)
    tokens = RateLimitItemPerMinute(tpm)
    budget = RateLimitItemPerDay(budget_micro_usd)

    async def admit(i: int) -> bool:
        scope = f"{name}:user:{i % 100}"
        return (
            await strategy.hit(requests, scope, "requests")
            and await strategy.hit(tokens, scope, "tokens", cost=500)
            and await strategy.hit(budget, scope, "budget", cost=1000)
        )

    return admit


class RoundTrips:
    """Counts requests written to any redis-py asyncio connection (both sides use it)."""

    count = 0

    @classmethod
    def install(cls) -> None:
        send = Connection.send_packed_command

        async def counting(self: Connection, command: object, check_health: bool = True) -> None:
            cls.count += 1
            await send(self, command, check_health)  # type: ignore[arg-type]

        Connection.send_packed_command = counting  # type: ignore[method-assign]


async def timed_round(admit: Admit, count: int, concurrency: int) -> float:
    """Admissions per second for ``count`` admissions, ``concurrency`` at a time."""
    per_task = count // concurrency

    async def worker(offset: int) -> None:
        for i in range(per_task):
            await admit(offset * per_task + i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return per_task * concurrency / (time.perf_counter() - start)


async def round_trips(admit: Admit, count: int = 200) -> float:
    before = RoundTrips.count
    for i in range(count):
        await admit(i)
    return (RoundTrips.count - before) / count


async def equal_decisions(sides: dict[str, Callable[[int, int, float], Admit]]) -> None:
    """Before timing: with 10 requests per minute, every side admits exactly 10 of 25."""
    for name, make in sides.items():
        admit = make(10, BIG, 1e6)
        admitted = 0
        for _ in range(25):
            admitted += await admit(0)
        if admitted != 10:
            raise SystemExit(f"{name} admitted {admitted} of 25 with a limit of 10/min")


async def run(url: str, smoke: bool) -> dict[str, object]:
    RoundTrips.install()
    client = Redis.from_url(url)
    store = RedisStore.from_settings(RedisSettings(timeout_ms=2000, connect_timeout_ms=2000), url)
    await store.start()
    moving = MovingWindowRateLimiter(RedisStorage(f"async+{url}", implementation="redispy"))
    fixed = FixedWindowRateLimiter(RedisStorage(f"async+{url}", implementation="redispy"))

    builders: dict[str, Callable[[int, int, float], Admit]] = {
        "aiofast (1 script)": lambda r, t, b: aiofast_admit(aiofast_limiter(store, r, t, b)),
        "limits moving window": lambda r, t, b: limits_admit(moving, r, t, int(b * 1e6), "mw"),
        "limits fixed window": lambda r, t, b: limits_admit(fixed, r, t, int(b * 1e6), "fw"),
    }
    await client.flushall()
    await equal_decisions(builders)
    await client.flushall()

    sides = {name: make(BIG, BIG, 1e6) for name, make in builders.items()}
    sides["aiofast admit+settle"] = aiofast_admit_settle(aiofast_limiter(store, BIG, BIG, 1e6))
    count = 480 if smoke else 2000
    rounds = 3 if smoke else 5
    rows: dict[str, dict[str, float]] = {}
    for name, admit in sides.items():
        await timed_round(admit, 200, 1)  # warm up: connections, scripts, keys
        rows[name] = {"round_trips": await round_trips(admit)}

    for concurrency in (1, 16):
        samples: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(rounds):
            for name, admit in sides.items():
                samples[name].append(await timed_round(admit, count, concurrency))
        for name in sides:
            rows[name][f"per_s_c{concurrency}"] = statistics.median(samples[name])

    await store.close()
    await client.aclose()
    return rows


def report(rows: dict[str, dict[str, float]]) -> float:
    ours = rows["aiofast (1 script)"]
    print(
        f"{'admission (RPM+TPM+budget)':<28}{'round trips':>12}{'adm/s c=1':>12}"
        f"{'adm/s c=16':>12}{'ratio c=1':>11}{'ratio c=16':>11}"
    )
    for name, row in rows.items():
        print(
            f"{name:<28}{row['round_trips']:>12.2f}{row['per_s_c1']:>12.0f}"
            f"{row['per_s_c16']:>12.0f}{ours['per_s_c1'] / row['per_s_c1']:>10.2f}x"
            f"{ours['per_s_c16'] / row['per_s_c16']:>10.2f}x"
        )
    best_peer = max(
        rows["limits moving window"]["per_s_c1"], rows["limits fixed window"]["per_s_c1"]
    )
    return ours["per_s_c1"] / best_peer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to keep it working")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(Path(workdir))
        server.start()
        try:
            if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
                os.sched_setaffinity(server.pid, {1})
                os.sched_setaffinity(0, {0})
            rows = asyncio.run(run(server.url, args.smoke))
        finally:
            server.stop()

    ratio = report(rows)
    RESULTS.mkdir(exist_ok=True)
    result = {
        "bench": "limits_redis",
        "smoke": args.smoke,
        "rows": rows,
        "ratio_vs_best_limits_c1": ratio,
        "versions": {
            "aiofast": importlib.metadata.version("aiofast"),
            "limits": importlib.metadata.version("limits"),
            "redis-py": importlib.metadata.version("redis"),
            "python": platform.python_version(),
        },
    }
    (RESULTS / "limits_redis.json").write_text(json.dumps(result, indent=2))
    print(f"ratio: {ratio:.2f}x vs limits (best of moving/fixed window, Redis storage)")


if __name__ == "__main__":
    main()
