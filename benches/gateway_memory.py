"""Gateway memory: resident memory idle, under load, after it, and its growth over a soak.

For each gateway alone: RSS once started and warmed by a few requests (idle), the peak while
it serves a constant arrival rate (by default 80 % of the capacity the newest
``gateway_capacity`` result measured for it) against a mock that answers after 20 ms, and
RSS a few seconds after the load stops. Then all gateways soak together for
``--soak-minutes`` under a steady mix with faults injected on both sides: the mock answers
500, 429 with ``Retry-After`` or cuts the connection for 5 % of requests, and clients send
malformed JSON, ask for unknown models and walk away from streams. Growth per minute is the
least-squares slope of RSS after the first tenth of the soak.

    python benches/gateway_memory.py [--smoke] [--soak-minutes M] [--rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import urllib.request

import orjson

import _harness as h
from _loadgen import Abandoned, Exchange, Pool, open_loop

MOCK_DELAY_MS = 20.0
DEFAULT_RATE = 200.0
# A gateway whose capacity search found no passing rate still gets some load.
MIN_RATE = 10.0
SOAK_RATE = 50.0
SOAK_FAULT_RATE = 0.05
TARGET_LOAD_MIB = 80.0
TARGET_SOAK_GROWTH_MIB = 1.0


def capacity_rates() -> dict[str, float]:
    """Per-target capacity from the newest gateway_capacity result, if there is one."""
    results = sorted(h.RESULTS.glob("gateway_capacity-*.json"))
    if not results:
        return {}
    found: dict[str, float] = orjson.loads(results[-1].read_bytes()).get("capacity_rps", {})
    return found


def traffic(target: h.Target, faults: bool) -> list[bytes | Abandoned]:
    """Mostly ordinary chats, some streamed; with faults, also bad and abandoned requests."""
    prompts = h.sample_prompts(8)
    mix: list[bytes | Abandoned] = [target.request(h.chat_body(p)) for p in prompts]
    mix.append(target.request(h.chat_body(prompts[0], stream=True)))
    if faults:
        mix.append(Abandoned(target.request(h.chat_body(prompts[1], stream=True)), 3))
        mix.append(target.request(b'{"model": "gpt-4o-mini", "messages": [{"role": '))
        unknown = orjson.loads(h.chat_body(prompts[2]))
        unknown["model"] = "no-such-model"
        mix.append(target.request(orjson.dumps(unknown)))
    return mix


def set_mock_faults(cast: h.Cast, rate: float) -> None:
    url = f"http://127.0.0.1:{cast.mock.port}/faults?rate={rate}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5):
        pass


async def sample_rss(
    services: dict[str, h.Service], every: float, into: dict[str, list[tuple[float, float]]]
) -> None:
    """Append (seconds, MiB) for each service every ``every`` seconds until cancelled."""
    begin = time.monotonic()
    while True:
        now = time.monotonic() - begin
        for name, service in services.items():
            into[name].append((now, service.rss_mib()))
        await asyncio.sleep(every)


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares growth in MiB per minute, skipping the first tenth as warm-up."""
    kept = samples[len(samples) // 10 :]
    if len(kept) < 2:
        return float("nan")
    mean_t = sum(t for t, _ in kept) / len(kept)
    mean_m = sum(m for _, m in kept) / len(kept)
    spread = sum((t - mean_t) ** 2 for t, _ in kept)
    if spread == 0:
        return float("nan")
    return sum((t - mean_t) * (m - mean_m) for t, m in kept) / spread * 60


async def profile_one(
    target: h.Target, rate: float, seconds: float, warm: int
) -> dict[str, object]:
    assert target.service is not None
    service = target.service
    pool = Pool("127.0.0.1", target.port)
    started = service.rss_mib()
    await open_loop(pool, traffic(target, faults=False), rate=min(rate, 50.0), duration=warm / 50)
    idle = service.rss_mib()
    samples: dict[str, list[tuple[float, float]]] = {target.name: []}
    sampler = asyncio.create_task(sample_rss({target.name: service}, 0.5, samples))
    exchanges: list[Exchange] = await open_loop(pool, traffic(target, faults=False), rate, seconds)
    sampler.cancel()
    pool.close()
    await asyncio.sleep(5)
    after = service.rss_mib()
    failed = sum(1 for e in exchanges if not e.ok)
    return {
        "rss_started_mib": started,
        "rss_idle_mib": idle,
        "rss_load_peak_mib": max(m for _, m in samples[target.name]),
        "rss_after_mib": after,
        "load_rate": rate,
        "load_seconds": seconds,
        "load_error_share": failed / max(1, len(exchanges)),
    }


async def soak(
    targets: list[h.Target], minutes: float, rate: float
) -> dict[str, dict[str, object]]:
    services = {t.name: t.service for t in targets if t.service is not None}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in services}
    every = 1.0 if minutes < 2 else 10.0
    sampler = asyncio.create_task(sample_rss(services, every, samples))
    pools = {t.name: Pool("127.0.0.1", t.port) for t in targets}
    runs = [
        open_loop(pools[t.name], traffic(t, faults=True), rate, minutes * 60, timeout=30)
        for t in targets
    ]
    results = await asyncio.gather(*runs)
    sampler.cancel()
    for pool in pools.values():
        pool.close()
    report: dict[str, dict[str, object]] = {}
    for target, exchanges in zip(targets, results, strict=True):
        series = samples[target.name]
        kept = series[len(series) // 10 :]
        report[target.name] = {
            "growth_mib_per_min": slope_per_minute(series),
            "growth_mib_total": kept[-1][1] - kept[0][1] if kept else float("nan"),
            "rss_first_mib": series[0][1] if series else float("nan"),
            "rss_last_mib": series[-1][1] if series else float("nan"),
            "requests": len(exchanges),
            "outcomes": h.error_summary(exchanges),
            "samples": series,
        }
    return report


async def bench(args: argparse.Namespace, loop_name: str) -> None:
    load_seconds = 2.0 if args.smoke else args.load_seconds
    minutes = 0.05 if args.smoke and args.soak_minutes is None else (args.soak_minutes or 10.0)
    capacity = capacity_rates()
    mock = h.mock_service(delay_ms=MOCK_DELAY_MS, chunks=16, chunk_ms=5.0)
    names = [n for n in h.selected_targets(args.targets) if n != "direct"]
    profiles: dict[str, dict[str, object]] = {}
    rates: dict[str, float] = {}
    with h.start_cast(names, mock) as cast:
        for target in cast.targets:
            rate = args.rate or max(MIN_RATE, 0.8 * capacity.get(target.name, DEFAULT_RATE / 0.8))
            rates[target.name] = rate = min(rate, 50.0) if args.smoke else rate
            print(f"{target.label}: load at {rate:.0f} rps for {load_seconds:.0f} s", flush=True)
            profiles[target.name] = await profile_one(target, rate, load_seconds, warm=20)
        print(f"soak: {minutes:g} min at {args.soak_rate:.0f} rps each, faults on", flush=True)
        set_mock_faults(cast, SOAK_FAULT_RATE)
        soaked = await soak(cast.targets, minutes, args.soak_rate)
    report(cast, profiles, soaked, rates, minutes, args, loop_name)


def report(
    cast: h.Cast,
    profiles: dict[str, dict[str, object]],
    soaked: dict[str, dict[str, object]],
    rates: dict[str, float],
    minutes: float,
    args: argparse.Namespace,
    loop_name: str,
) -> None:
    rows = []
    for target in cast.targets:
        p, s = profiles[target.name], soaked[target.name]
        rows.append(
            [
                target.label,
                p["rss_idle_mib"],
                rates[target.name],
                p["rss_load_peak_mib"],
                p["rss_after_mib"],
                s["growth_mib_per_min"],
                s["growth_mib_total"],
            ]
        )
    print(f"\ngateway memory (MiB), soak {minutes:g} min with faults")
    headers = ["target", "idle", "load rps", "under load", "after", "soak MiB/min"]
    h.print_table([*headers, "soak growth"], rows)

    aiofast, litellm = profiles.get("aiofast"), profiles.get("litellm")
    if aiofast:
        print(
            f"aiofast under load: {aiofast['rss_load_peak_mib']:.1f} MiB "
            f"(target < {TARGET_LOAD_MIB:.0f}); soak growth "
            f"{soaked['aiofast']['growth_mib_per_min'] * 10:.2f} MiB per 10 min "
            f"(target < {TARGET_SOAK_GROWTH_MIB:.0f})"
        )
    ratio, peer = None, "litellm"
    bare = profiles.get("bare")
    if aiofast and litellm:
        ratio = float(litellm["rss_load_peak_mib"]) / float(aiofast["rss_load_peak_mib"])
    elif aiofast and bare:
        peer = "bare aiohttp"
        ratio = float(bare["rss_load_peak_mib"]) / float(aiofast["rss_load_peak_mib"])
    settings = {
        "mock_delay_ms": MOCK_DELAY_MS,
        "load_seconds": 2.0 if args.smoke else args.load_seconds,
        "load_rates": rates,
        "soak_minutes": minutes,
        "soak_rate_per_target": args.soak_rate,
        "soak_mock_fault_rate": SOAK_FAULT_RATE,
        "soak_client_faults": "1 in 12 each: malformed JSON, unknown model, abandoned stream",
    }
    path = h.write_result(
        "gateway_memory",
        {
            "environment": h.environment(loop_name),
            "settings": settings,
            "skipped": cast.skipped,
            "profiles": profiles,
            "soak": soaked,
            "ratio_basis": "peak RSS under load, peer over aiofast",
        },
    )
    print(f"result: {path}")
    h.print_ratio(ratio, peer)


def main() -> None:
    parser = h.common_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--soak-minutes", type=float, default=None, help="default 10")
    parser.add_argument("--soak-rate", type=float, default=SOAK_RATE, help="rps per gateway")
    parser.add_argument("--rate", type=float, default=0.0, help="load rate for every gateway")
    parser.add_argument("--load-seconds", type=float, default=30.0)
    args = parser.parse_args()
    loop_name = h.prepare()
    asyncio.run(bench(args, loop_name))


if __name__ == "__main__":
    main()
