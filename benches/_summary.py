"""One Markdown table of the newest gateway results, as the README shows them.

    python benches/_summary.py

Reads the newest ``gateway_*.json`` of each bench in ``benches/results/``; a bench that has
not run leaves its rows out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = (("bare", "bare aiohttp"), ("aiofast", "aiofast"), ("litellm", "LiteLLM"))


def newest(bench: str) -> dict[str, Any] | None:
    found = sorted(RESULTS.glob(f"{bench}-*.json"))
    if not found:
        return None
    result: dict[str, Any] = orjson.loads(found[-1].read_bytes())
    return result


def cell(value: object, digits: int) -> str:
    if not isinstance(value, (int, float)) or value != value:
        return "-"
    return f"{value:,.{digits}f}"


def rows() -> list[tuple[str, dict[str, object], int, str]]:
    """(figure, value per target, decimals, target) for every figure measured."""
    found: list[tuple[str, dict[str, object], int, str]] = []
    overhead = newest("gateway_overhead")
    if overhead:
        t = overhead["targets"]
        found.append(("added latency p50, ms", _pick(t, "added_p50_ms"), 3, "≤ bare + 0.1"))
        found.append(("added latency p99, ms", _pick(t, "added_p99_ms"), 3, "≤ bare + 0.3"))
        found.append(("gateway CPU per request, µs", _pick(t, "gateway_cpu_us_per_request"), 0, ""))
    capacity = newest("gateway_capacity")
    if capacity:
        rates = capacity["capacity_rps"]
        found.append(
            ("capacity, req/s (p99 < 50 ms)", {k: rates.get(k) for k, _ in COLUMNS}, 0, "")
        )
    streaming = newest("gateway_streaming")
    if streaming:
        t = streaming["targets"]
        found.append(("added time to first token, ms", _pick(t, "added_ttft_p50_ms"), 2, ""))
        found.append(("added gap between chunks p99, µs", _pick(t, "added_gap_p99_us"), 0, "≤ 50"))
    memory = newest("gateway_memory")
    if memory:
        p, s = memory["profiles"], memory["soak"]
        found.append(("RSS idle, MiB", _pick(p, "rss_idle_mib"), 1, ""))
        found.append(("RSS under load, MiB", _pick(p, "rss_load_peak_mib"), 1, "< 80"))
        growth = {k: s[k]["growth_mib_per_min"] * 10 for k in s}
        minutes = memory["settings"]["soak_minutes"]
        found.append((f"RSS growth over {minutes:g} min soak, MiB per 10 min", growth, 2, "< 1"))
    return found


def _pick(targets: dict[str, dict[str, object]], key: str) -> dict[str, object]:
    return {name: figures.get(key) for name, figures in targets.items()}


def markdown() -> str:
    lines = [
        "| figure | " + " | ".join(label for _, label in COLUMNS) + " | aiofast target |",
        "|---|" + "---:|" * len(COLUMNS) + "---|",
    ]
    for figure, values, digits, target in rows():
        cells = [cell(values.get(name), digits) for name, _ in COLUMNS]
        lines.append(f"| {figure} | " + " | ".join(cells) + f" | {target} |")
    environment = next(
        (r["environment"] for b in ("gateway_overhead", "gateway_capacity") if (r := newest(b))),
        None,
    )
    if environment:
        v = environment["versions"]
        lines.append("")
        lines.append(
            f"{environment['cpu']}, {environment['cpus']} cores, Linux {environment['kernel']}, "
            f"Python {environment['python']}, {environment['event_loop']}, aiohttp "
            f"{v['aiohttp']}, aiofast {v['aiofast']} ({v['aiofast_commit']}), LiteLLM "
            f"{v['litellm'] or 'not run'}; {environment['pinning']}."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
