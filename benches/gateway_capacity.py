"""Gateway capacity: the highest constant arrival rate each gateway sustains on one core.

Open loop (requests leave on schedule whatever the answers do, latency counted from the
scheduled time) against a mock upstream that answers after 20 ms. For each target the rate
climbs by half again per step until a step fails, then bisects between the last pass and
the first failure. A step passes when its p99 latency is under 50 ms and fewer than 0.1 % of
its requests fail. ``direct`` (no gateway) measures the ceiling of the load generator and
mock themselves: a gateway that reaches it is limited by them, not by itself.

    python benches/gateway_capacity.py [--smoke] [--step-seconds S] [--max-rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os

import _harness as h
from _loadgen import Exchange, Pool, open_loop

P99_BOUND_MS = 50.0
ERROR_BOUND = 0.001
MOCK_DELAY_MS = 20.0
TARGET_VS_BARE = 0.8
TARGET_VS_LITELLM = 10.0
START_RATE = {"litellm": 25.0}
DEFAULT_START_RATE = 100.0


def cpu_snapshot(target: h.Target, mock: h.Service) -> dict[str, float]:
    """CPU seconds used so far by the gateway, the mock and this load generator."""
    times = os.times()
    snapshot = {"mock": mock.cpu_seconds(), "generator": times.user + times.system}
    if target.service is not None:
        snapshot["gateway"] = target.service.cpu_seconds()
    return snapshot


def summarise(rate: float, exchanges: list[Exchange]) -> dict[str, object]:
    latencies = [e.latency * 1000 for e in exchanges if e.ok]
    lags = [(e.sent - e.start) * 1000 for e in exchanges if e.sent]
    failed = sum(1 for e in exchanges if not e.ok)
    p99 = h.percentile(latencies, 99) if latencies else float("inf")
    error_share = failed / len(exchanges)
    return {
        "rate": rate,
        "requests": len(exchanges),
        "p50_ms": h.median(latencies),
        "p99_ms": p99,
        "error_share": error_share,
        "errors": h.error_summary(exchanges),
        "generator_lag_p99_ms": h.percentile(lags, 99),
        "passed": p99 < P99_BOUND_MS and error_share < ERROR_BOUND,
    }


async def step(
    target: h.Target,
    mock: h.Service,
    pool: Pool,
    requests: list[bytes],
    rate: float,
    seconds: float,
    warmup: float,
) -> dict[str, object]:
    await open_loop(pool, requests, rate, warmup)
    gc.collect()
    gc.disable()
    before = cpu_snapshot(target, mock)
    try:
        exchanges = await open_loop(pool, requests, rate, seconds)
    finally:
        gc.enable()
    after = cpu_snapshot(target, mock)
    result = summarise(rate, exchanges)
    # CPU per request does not depend on what else the machine is doing, unlike latency.
    result["cpu_us_per_request"] = {
        name: (after[name] - before[name]) / len(exchanges) * 1e6 for name in before
    }
    cpu = " ".join(f"{k} {v:.0f}" for k, v in result["cpu_us_per_request"].items())
    print(
        f"  {rate:8.0f} rps  p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:8.2f} ms  "
        f"errors {result['error_share']:.2%}  lag p99 {result['generator_lag_p99_ms']:.1f} ms  "
        f"cpu us/req: {cpu}  {'pass' if result['passed'] else 'fail'}",
        flush=True,
    )
    if not result["passed"]:
        await asyncio.sleep(2)  # let the gateway drain what it queued
    return result


async def confirmed_step(
    target: h.Target,
    mock: h.Service,
    pool: Pool,
    requests: list[bytes],
    rate: float,
    args: argparse.Namespace,
) -> dict[str, object]:
    """A step; a failure counts only if a second try fails too (the machine is shared)."""
    seconds, warmup = (1.0, 0.5) if args.smoke else (args.step_seconds, 1.0)
    result = await step(target, mock, pool, requests, rate, seconds, warmup)
    if result["passed"] or args.smoke:
        return result
    return await step(target, mock, pool, requests, rate, seconds, warmup)


async def search(
    target: h.Target, mock: h.Service, requests: list[bytes], args: argparse.Namespace
) -> tuple[float, list[dict[str, object]]]:
    """The highest passing rate, and every step measured on the way."""
    pool = Pool("127.0.0.1", target.port)
    steps: list[dict[str, object]] = []
    rate = START_RATE.get(target.name, DEFAULT_START_RATE)
    passed, failed = 0.0, None
    print(f"{target.label}:", flush=True)
    try:
        climbs = 2 if args.smoke else 64
        for _ in range(climbs):
            result = await confirmed_step(target, mock, pool, requests, rate, args)
            steps.append(result)
            if not result["passed"]:
                failed = rate
                break
            passed = rate
            if rate >= args.max_rate:
                break
            rate = min(rate * 1.5, args.max_rate)
        bisections = 0 if args.smoke or failed is None else 4
        for _ in range(bisections):
            assert failed is not None
            rate = (passed + failed) / 2 if passed else failed / 2
            result = await confirmed_step(target, mock, pool, requests, rate, args)
            steps.append(result)
            if result["passed"]:
                passed = rate
            else:
                failed = rate
    finally:
        pool.close()
    return passed, steps


async def bench(args: argparse.Namespace, loop_name: str) -> None:
    mock = h.mock_service(delay_ms=MOCK_DELAY_MS)
    bodies = [h.chat_body(prompt) for prompt in h.sample_prompts()]
    capacities: dict[str, float] = {}
    steps: dict[str, list[dict[str, object]]] = {}
    with h.start_cast(h.selected_targets(args.targets), mock) as cast:
        for target in cast.targets:
            requests = [target.request(body) for body in bodies]
            found = await search(target, cast.mock, requests, args)
            capacities[target.name], steps[target.name] = found
    report(cast, capacities, steps, args, loop_name)


def report(
    cast: h.Cast,
    capacities: dict[str, float],
    steps: dict[str, list[dict[str, object]]],
    args: argparse.Namespace,
    loop_name: str,
) -> None:
    ceiling = capacities.get("direct")
    rows = []
    for target in cast.targets:
        capacity = capacities[target.name]
        at = next((s for s in steps[target.name] if s["rate"] == capacity), None)
        bound = ""
        if args.smoke:
            bound = "smoke run, not searched"
        elif ceiling and target.name != "direct" and capacity >= 0.9 * ceiling:
            bound = "load generator"
        rows.append(
            [
                target.label,
                capacity,
                at["p50_ms"] if at else None,
                at["p99_ms"] if at else None,
                bound or ("max rate" if capacity >= args.max_rate else ""),
            ]
        )
    print(f"\ngateway capacity, open loop, mock delay {MOCK_DELAY_MS:.0f} ms, p99 < 50 ms")
    h.print_table(["target", "max rps", "p50 ms", "p99 ms", "limited by"], rows)

    aiofast, bare, litellm = (capacities.get(n) for n in ("aiofast", "bare", "litellm"))
    ratio, peer = None, "litellm"
    if aiofast and bare:
        print(f"aiofast / bare aiohttp: {aiofast / bare:.2f} (target >= {TARGET_VS_BARE})")
    if aiofast and litellm:
        ratio = aiofast / litellm
        print(f"aiofast / litellm: {ratio:.1f}x (target >= {TARGET_VS_LITELLM:.0f}x)")
    elif aiofast and bare:
        ratio, peer = aiofast / bare, "bare aiohttp"
    settings = {
        "mock_delay_ms": MOCK_DELAY_MS,
        "p99_bound_ms": P99_BOUND_MS,
        "error_bound": ERROR_BOUND,
        "step_seconds": 1.0 if args.smoke else args.step_seconds,
        "max_rate": args.max_rate,
        "generator": "open loop, own HTTP/1.1 client, keep-alive pool",
    }
    path = h.write_result(
        "gateway_capacity",
        {
            "environment": h.environment(loop_name),
            "settings": settings,
            "skipped": cast.skipped,
            "capacity_rps": capacities,
            "steps": steps,
        },
    )
    print(f"result: {path}")
    h.print_ratio(ratio, peer)


def main() -> None:
    parser = h.common_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--step-seconds", type=float, default=5.0, help="length of each step")
    parser.add_argument("--max-rate", type=float, default=20000.0, help="stop climbing here")
    args = parser.parse_args()
    loop_name = h.prepare()
    asyncio.run(bench(args, loop_name))


if __name__ == "__main__":
    main()
