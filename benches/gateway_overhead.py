"""Gateway overhead: latency each gateway adds over calling the upstream directly.

One client at a time (concurrency 1) against a zero-delay mock upstream with a ~1 KB answer.
Rounds are interleaved (direct, bare aiohttp proxy, aiofast with every policy on, LiteLLM,
in a rotating order) so drift on the shared machine hits every target alike. Added latency
is the target's minus direct's: p50 as the median over rounds of the per-round medians'
difference, p99 over all samples.

    python benches/gateway_overhead.py [--smoke] [--rounds N] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc

import orjson

import _harness as h
from _loadgen import Exchange, Pool, clock, exchange_once
from _mock_upstream import ANSWER

TARGET_P50_MS = 0.1
TARGET_P99_MS = 0.3
TARGET_VS_LITELLM = 15.0


def answer_problem(exchange: Exchange) -> str | None:
    """Why the answer is not the mock's, if it is not: a fast wrong answer is no result."""
    if not exchange.ok:
        return exchange.error or f"status {exchange.status}: {bytes(exchange.body[:200])!r}"
    try:
        content = orjson.loads(exchange.body)["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return f"not a chat completion: {bytes(exchange.body[:200])!r}"
    return None if content == ANSWER else f"content differs: {content[:80]!r}"


async def sequential(pool: Pool, requests: list[bytes], count: int) -> list[Exchange]:
    results = []
    for index in range(count):
        raw = requests[index % len(requests)]
        results.append(await exchange_once(pool, raw, clock(), timeout=30))
    return results


async def bench(args: argparse.Namespace, loop_name: str) -> None:
    smoke = args.smoke
    rounds = args.rounds or (2 if smoke else 15)
    per_round = args.requests or (20 if smoke else 200)
    warmup = 20 if smoke else 400
    bodies = [h.chat_body(prompt) for prompt in h.sample_prompts()]

    with h.start_cast(h.selected_targets(args.targets), h.mock_service()) as cast:
        pools = {t.name: Pool("127.0.0.1", t.port, limit=1) for t in cast.targets}
        requests = {t.name: [t.request(body) for body in bodies] for t in cast.targets}
        for target in cast.targets:
            problem = answer_problem(
                (await sequential(pools[target.name], requests[target.name], 1))[0]
            )
            if problem:
                raise SystemExit(f"{target.label} does not relay the mock's answer: {problem}")
            await sequential(pools[target.name], requests[target.name], warmup)

        samples: dict[str, list[float]] = {t.name: [] for t in cast.targets}
        round_medians: dict[str, list[float]] = {t.name: [] for t in cast.targets}
        errors: dict[str, dict[str, int]] = {t.name: {} for t in cast.targets}
        cpu: dict[str, float] = {t.name: 0.0 for t in cast.targets}
        gc.collect()
        gc.freeze()
        gc.disable()
        for index in range(rounds):
            order = (
                cast.targets[index % len(cast.targets) :]
                + cast.targets[: index % len(cast.targets)]
            )
            for target in order:
                before = target.service.cpu_seconds() if target.service else 0.0
                results = await sequential(pools[target.name], requests[target.name], per_round)
                if target.service:
                    cpu[target.name] += target.service.cpu_seconds() - before
                latencies = [r.latency * 1000 for r in results if r.ok]
                samples[target.name] += latencies
                round_medians[target.name].append(h.median(latencies))
                for key, count in h.error_summary(results).items():
                    errors[target.name][key] = errors[target.name].get(key, 0) + count
        gc.enable()
        for pool in pools.values():
            pool.close()

    cpu_us = {name: seconds / (rounds * per_round) * 1e6 for name, seconds in cpu.items()}
    report(cast, samples, round_medians, errors, cpu_us, rounds, per_round, loop_name)


def report(
    cast: h.Cast,
    samples: dict[str, list[float]],
    round_medians: dict[str, list[float]],
    errors: dict[str, dict[str, int]],
    cpu_us: dict[str, float],
    rounds: int,
    per_round: int,
    loop_name: str,
) -> None:
    direct = "direct" if "direct" in samples else None
    rows, figures = [], {}
    for target in cast.targets:
        name = target.name
        p50 = h.median(round_medians[name])
        p99 = h.percentile(samples[name], 99)
        added_p50 = added_p99 = float("nan")
        if direct:
            added_p50 = h.median(
                [a - b for a, b in zip(round_medians[name], round_medians[direct], strict=True)]
            )
            added_p99 = p99 - h.percentile(samples[direct], 99)
        figures[name] = {
            "p50_ms": p50,
            "p99_ms": p99,
            "added_p50_ms": added_p50,
            "added_p99_ms": added_p99,
            "round_medians_ms": round_medians[name],
            "samples": len(samples[name]),
            "errors": errors[name],
            "gateway_cpu_us_per_request": cpu_us[name] if target.service else None,
        }
        error_count = sum(errors[name].values())
        cpu = cpu_us[name] if target.service else None
        rows.append([target.label, p50, p99, added_p50, added_p99, cpu, error_count])

    print(f"\ngateway overhead, concurrency 1, {rounds} interleaved rounds x {per_round} requests")
    headers = ["target", "p50 ms", "p99 ms", "added p50", "added p99", "cpu us/req"]
    h.print_table([*headers, "errors"], rows)

    verdicts = {}
    aiofast, bare, litellm = (figures.get(n) for n in ("aiofast", "bare", "litellm"))
    if aiofast and bare:
        over_p50 = aiofast["added_p50_ms"] - bare["added_p50_ms"]
        over_p99 = aiofast["added_p99_ms"] - bare["added_p99_ms"]
        verdicts["aiofast_over_bare_p50_ms"] = over_p50
        verdicts["aiofast_over_bare_p99_ms"] = over_p99
        print(
            f"aiofast over bare aiohttp: p50 {over_p50:+.3f} ms (target <= {TARGET_P50_MS}), "
            f"p99 {over_p99:+.3f} ms (target <= {TARGET_P99_MS})"
        )
    ratio, peer = None, "litellm"
    if aiofast and litellm:
        ratio = litellm["added_p50_ms"] / aiofast["added_p50_ms"]
        verdicts["litellm_over_aiofast_added_p50"] = ratio
        verdicts["litellm_over_aiofast_added_p99"] = (
            litellm["added_p99_ms"] / aiofast["added_p99_ms"]
        )
        print(
            f"LiteLLM adds {ratio:.1f}x the latency aiofast adds at p50 "
            f"(target >= {TARGET_VS_LITELLM}x)"
        )
    elif aiofast and bare:
        ratio, peer = bare["added_p50_ms"] / aiofast["added_p50_ms"], "bare aiohttp"

    settings = {
        "rounds": rounds,
        "requests_per_round": per_round,
        "concurrency": 1,
        "mock_delay_ms": 0,
    }
    path = h.write_result(
        "gateway_overhead",
        {
            "environment": h.environment(loop_name),
            "settings": settings,
            "skipped": cast.skipped,
            "targets": figures,
            "verdicts": verdicts,
        },
    )
    print(f"result: {path}")
    h.print_ratio(ratio, peer)


def main() -> None:
    parser = h.common_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=0, help="interleaved rounds")
    parser.add_argument("--requests", type=int, default=0, help="requests per target per round")
    args = parser.parse_args()
    loop_name = h.prepare()
    asyncio.run(bench(args, loop_name))


if __name__ == "__main__":
    main()
