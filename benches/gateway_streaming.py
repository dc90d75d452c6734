"""Gateway streaming: time to first token and gap between chunks each gateway adds.

The mock streams a chat completion as 64 content chunks 20 ms apart (then a finish chunk and
``[DONE]``), each stamped with the monotonic time it was written, so the client knows how long
every chunk took to reach it (the clock is shared by all processes of the machine). Streams
run one at a time in interleaved rounds across the targets.

- added time to first token: median over streams, target minus direct;
- relay: time from the mock writing a chunk to the client reading it, p50 and p99;
- added gap: how much longer the gap between two chunks is at the client than at the mock
  (relay of a chunk minus relay of the one before), p99, target minus direct. A gateway that
  holds chunks back, batches them or stalls on its own work shows up here.

    python benches/gateway_streaming.py [--smoke] [--rounds N] [--streams N]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import itertools
import re

import orjson

import _harness as h
from _loadgen import Exchange, Pool, clock, exchange_once
from _mock_upstream import unstamp

_EVENT = re.compile(rb"(?s)(data:.*?)\r?\n\r?\n")
_STAMP = re.compile(r"~([a-z]+)~")

TARGET_GAP_P99_US = 50.0


def stream_problem(exchange: Exchange, chunks: int) -> str | None:
    if not exchange.ok:
        return exchange.error or f"status {exchange.status}: {bytes(exchange.body[:200])!r}"
    if len(exchange.events) < chunks:
        return f"{len(exchange.events)} events, expected at least {chunks}"
    if b"data: [DONE]" not in exchange.body:
        return "the stream did not end with data: [DONE]"
    return None


def relays(exchange: Exchange, chunks: int) -> list[float]:
    """Seconds each content chunk's text took from the mock's write to the client's read.

    A gateway may deliver a chunk's text with later events, even split across two: a
    streamed-output guard holds back a tail until it knows no match runs through it. That
    delay is what a reader sees, so each stamp counts from the event that completed it.
    """
    pieces: list[str] = []
    ends: list[int] = []  # the answer's length after each event that carried text
    arrivals: list[float] = []
    for arrival, payload in zip(exchange.events, _EVENT.findall(exchange.body), strict=False):
        piece = _content(payload)
        if piece:
            pieces.append(piece)
            ends.append((ends[-1] if ends else 0) + len(piece))
            arrivals.append(arrival)
    result = [
        arrivals[bisect.bisect_left(ends, found.end())] - unstamp(found.group(1))
        for found in _STAMP.finditer("".join(pieces))
    ]
    if len(result) != chunks:
        raise SystemExit(f"{chunks} chunks were stamped but {len(result)} stamps arrived")
    return result


def _content(payload: bytes) -> str:
    """The text of one ``data:`` event of a chat completion stream ("" for any other)."""
    data = payload.removeprefix(b"data:").strip()
    if not data.startswith(b"{"):
        return ""
    choices = orjson.loads(data).get("choices") or [{}]
    content = (choices[0].get("delta") or {}).get("content")
    return content if isinstance(content, str) else ""


async def one_stream(pool: Pool, raw: bytes) -> Exchange:
    return await exchange_once(pool, raw, clock(), timeout=60)


async def bench(args: argparse.Namespace, loop_name: str) -> None:
    smoke = args.smoke
    chunks, chunk_ms = (8, 5.0) if smoke else (64, 20.0)
    rounds = args.rounds or (1 if smoke else 5)
    per_round = args.streams or (2 if smoke else 4)
    body = h.chat_body(h.sample_prompts(1)[0], stream=True)
    mock = h.mock_service(chunks=chunks, chunk_ms=chunk_ms, stamp=True)

    with h.start_cast(h.selected_targets(args.targets), mock) as cast:
        pools = {t.name: Pool("127.0.0.1", t.port, limit=1) for t in cast.targets}
        raws = {t.name: t.request(body) for t in cast.targets}
        for target in cast.targets:
            for _ in range(2):
                problem = stream_problem(
                    await one_stream(pools[target.name], raws[target.name]), chunks
                )
                if problem:
                    raise SystemExit(f"{target.label} does not relay the mock's stream: {problem}")

        ttft: dict[str, list[float]] = {t.name: [] for t in cast.targets}
        relay: dict[str, list[float]] = {t.name: [] for t in cast.targets}
        gaps: dict[str, list[float]] = {t.name: [] for t in cast.targets}
        broken: dict[str, int] = {t.name: 0 for t in cast.targets}
        gc.collect()
        gc.freeze()
        gc.disable()
        for index in range(rounds):
            shift = index % len(cast.targets)
            for target in cast.targets[shift:] + cast.targets[:shift]:
                for _ in range(per_round):
                    exchange = await one_stream(pools[target.name], raws[target.name])
                    if stream_problem(exchange, chunks):
                        broken[target.name] += 1
                        continue
                    times = [seconds * 1e6 for seconds in relays(exchange, chunks)]
                    ttft[target.name].append((exchange.events[0] - exchange.sent) * 1000)
                    relay[target.name] += times
                    gaps[target.name] += [b - a for a, b in itertools.pairwise(times)]
        gc.enable()
        for pool in pools.values():
            pool.close()

    settings = {
        "chunks": chunks,
        "chunk_interval_ms": chunk_ms,
        "rounds": rounds,
        "streams_per_round": per_round,
        "concurrency": 1,
    }
    report(cast, {"ttft": ttft, "relay": relay, "gaps": gaps}, broken, settings, loop_name)


def report(
    cast: h.Cast,
    series: dict[str, dict[str, list[float]]],
    broken: dict[str, int],
    settings: dict[str, object],
    loop_name: str,
) -> None:
    ttft, relay, gaps = series["ttft"], series["relay"], series["gaps"]
    base = {
        "ttft": h.median(ttft["direct"]) if "direct" in ttft else float("nan"),
        "relay_p50": h.median(relay["direct"]) if "direct" in relay else float("nan"),
        "relay_p99": h.percentile(relay["direct"], 99) if "direct" in relay else float("nan"),
        "gap_p99": h.percentile(gaps["direct"], 99) if "direct" in gaps else float("nan"),
    }
    figures, rows = {}, []
    for target in cast.targets:
        name = target.name
        f = figures[name] = {
            "ttft_p50_ms": h.median(ttft[name]),
            "added_ttft_p50_ms": h.median(ttft[name]) - base["ttft"],
            "relay_p50_us": h.median(relay[name]),
            "relay_p99_us": h.percentile(relay[name], 99),
            "added_relay_p50_us": h.median(relay[name]) - base["relay_p50"],
            "added_relay_p99_us": h.percentile(relay[name], 99) - base["relay_p99"],
            "gap_excess_p99_us": h.percentile(gaps[name], 99),
            "gap_excess_max_us": max(gaps[name], default=float("nan")),
            "added_gap_p99_us": h.percentile(gaps[name], 99) - base["gap_p99"],
            "streams": len(ttft[name]),
            "broken_streams": broken[name],
        }
        rows.append(
            [
                target.label,
                f["ttft_p50_ms"],
                f["added_ttft_p50_ms"],
                f["relay_p50_us"],
                f["relay_p99_us"],
                f["gap_excess_max_us"],
                f["added_gap_p99_us"],
                broken[name],
            ]
        )

    print(
        f"\ngateway streaming, {settings['chunks']} chunks {settings['chunk_interval_ms']} ms "
        f"apart, concurrency 1, {settings['rounds']} rounds x {settings['streams_per_round']}"
    )
    headers = ["target", "ttft ms", "added ttft ms", "relay p50 us", "relay p99 us"]
    h.print_table([*headers, "gap excess max us", "added gap p99 us", "broken"], rows)

    ratio, peer = None, "litellm"
    aiofast, bare, litellm = (figures.get(n) for n in ("aiofast", "bare", "litellm"))
    if aiofast:
        print(
            f"aiofast added gap p99: {aiofast['added_gap_p99_us']:+.1f} us "
            f"(target <= {TARGET_GAP_P99_US:.0f} us)"
        )
    if aiofast and litellm:
        ratio = litellm["added_ttft_p50_ms"] / aiofast["added_ttft_p50_ms"]
    elif aiofast and bare:
        ratio, peer = bare["added_ttft_p50_ms"] / aiofast["added_ttft_p50_ms"], "bare aiohttp"
    path = h.write_result(
        "gateway_streaming",
        {
            "environment": h.environment(loop_name),
            "settings": settings,
            "skipped": cast.skipped,
            "targets": figures,
            "ratio_basis": "added time to first token, p50",
        },
    )
    print(f"result: {path}")
    h.print_ratio(ratio, peer)


def main() -> None:
    parser = h.common_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=0, help="interleaved rounds")
    parser.add_argument("--streams", type=int, default=0, help="streams per target per round")
    args = parser.parse_args()
    loop_name = h.prepare()
    asyncio.run(bench(args, loop_name))


if __name__ == "__main__":
    main()
