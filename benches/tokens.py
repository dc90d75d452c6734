"""Token counting: aiofast against tiktoken, same texts, interleaved rounds.

Corpora (one call per document): prose = Alpaca records, code = HumanEval problems,
multilingual = XQuAD paragraphs in 12 languages, from the shared data folder. Both
encodings. Before timing, every document's count must equal tiktoken's. Rounds alternate
aiofast / tiktoken ``encode_ordinary`` / tiktoken ``encode``; the figure is the median
round. Batch rows compare ``count_tokens_batch`` with ``encode_ordinary_batch`` (both
threaded). Worst cases time one call on 100 KB and 1 MB of one repeated character, 1 MB of
random letters and 1 M spaces (where tiktoken's o200k fails).

    python benches/tokens.py [--smoke]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests"))

from aiofast import count_tokens, count_tokens_batch  # noqa: E402
from shared_data import shared_data  # noqa: E402
from tiktoken_offline import get_encoding  # noqa: E402

ENCODINGS = ("cl100k_base", "o200k_base")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def load_corpora(root: Path) -> dict[str, list[str]]:
    prompts = root / "prompts"
    alpaca = json.loads((prompts / "alpaca" / "alpaca_5000.json").read_text(encoding="utf-8"))
    prose = ["\n\n".join(filter(None, (r["instruction"], r["input"], r["output"]))) for r in alpaca]
    code = [
        p["prompt"] + p["canonical_solution"] + "\n\n" + p["test"]
        for p in _jsonl(prompts / "code" / "HumanEval.jsonl")
    ]
    multilingual = [
        text
        for row in _jsonl(prompts / "multilingual" / "xquad_contexts.parallel.jsonl")
        for text in row.values()
        if isinstance(text, str) and len(text) > 40
    ]
    return {"prose": prose, "code": code, "multilingual": multilingual}


def fixture_corpus() -> dict[str, list[str]]:
    entries = json.loads((HERE.parent / "tests/fixtures/tokens/texts.json").read_text("utf-8"))
    return {"fixture": [e["text"] for e in entries] * 50}


def worst_cases() -> dict[str, str]:
    rng = random.Random(7)
    return {
        "'a' x 100 KB": "a" * 100_000,
        "'a' x 1 MB": "a" * 1_000_000,
        "random letters 1 MB": "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=1_000_000)),
        "spaces 1 M": " " * 1_000_000,
    }


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_corpus(encoding: str, docs: Sequence[str], rounds: int) -> dict[str, float | int]:
    reference = get_encoding(encoding)
    ours = count_tokens_batch(docs, encoding=encoding)
    theirs = [len(reference.encode_ordinary(d)) for d in docs]
    if ours != theirs:
        bad = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        raise SystemExit(
            f"{encoding}: count differs on document {bad}: {ours[bad]} vs {theirs[bad]}"
        )

    sides: dict[str, Callable[[], object]] = {
        "aiofast": lambda: [count_tokens(d, encoding=encoding) for d in docs],
        "encode_ordinary": lambda: [len(reference.encode_ordinary(d)) for d in docs],
        "encode": lambda: [len(reference.encode(d, disallowed_special=())) for d in docs],
        "aiofast_batch": lambda: count_tokens_batch(docs, encoding=encoding),
        "encode_ordinary_batch": lambda: reference.encode_ordinary_batch(list(docs)),
    }
    for side in sides.values():
        side()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, side in sides.items():
            times[name].append(timed(side))
    megabytes = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    result: dict[str, float | int] = {"documents": len(docs), "megabytes": megabytes}
    result["tokens"] = sum(ours)
    for name, values in times.items():
        result[f"{name}_mb_s"] = megabytes / statistics.median(values)
    return result


def bench_worst(encoding: str, text: str, rounds: int) -> dict[str, Any]:
    reference = get_encoding(encoding)
    ours = count_tokens(text, encoding=encoding)
    try:
        theirs: int | str = len(reference.encode_ordinary(text))
    except BaseException as exc:  # tiktoken raises a pyo3 PanicException on stack overflow
        theirs = type(exc).__name__
    if isinstance(theirs, int) and theirs != ours:
        raise SystemExit(f"{encoding}: worst case count differs: {ours} vs {theirs}")
    ours_s = min(timed(lambda: count_tokens(text, encoding=encoding)) for _ in range(rounds))
    theirs_s = None
    if isinstance(theirs, int):
        theirs_s = min(timed(lambda: reference.encode_ordinary(text)) for _ in range(rounds))
    return {"tokens": ours, "tiktoken": theirs, "aiofast_s": ours_s, "tiktoken_s": theirs_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, small inputs")
    args = parser.parse_args()

    root = shared_data()
    corpora = load_corpora(root) if root else fixture_corpus()
    rounds = 1 if args.smoke else 5
    if args.smoke:
        corpora = {name: docs[: max(1, len(docs) // 20)] for name, docs in corpora.items()}
    worst = worst_cases()
    if args.smoke:
        worst = {name: text for name, text in worst.items() if "100 KB" in name}

    results: dict[str, Any] = {"corpora": {}, "worst": {}}
    print(
        f"{'encoding':12} {'corpus':13} {'MB':>6} {'aiofast':>9} {'ordinary':>9} "
        f"{'encode':>9} {'ratio':>7} {'batch':>9} {'tt batch':>9} {'ratio':>7}"
    )
    ratios = []
    for encoding in ENCODINGS:
        for corpus, docs in corpora.items():
            r = bench_corpus(encoding, docs, rounds)
            results["corpora"][f"{encoding}/{corpus}"] = r
            ratio = r["aiofast_mb_s"] / r["encode_ordinary_mb_s"]
            batch_ratio = r["aiofast_batch_mb_s"] / r["encode_ordinary_batch_mb_s"]
            ratios.append(ratio)
            print(
                f"{encoding:12} {corpus:13} {r['megabytes']:6.2f} {r['aiofast_mb_s']:9.1f} "
                f"{r['encode_ordinary_mb_s']:9.1f} {r['encode_mb_s']:9.1f} {ratio:6.2f}x "
                f"{r['aiofast_batch_mb_s']:9.1f} {r['encode_ordinary_batch_mb_s']:9.1f} "
                f"{batch_ratio:6.2f}x"
            )
    print("(MB/s, single thread except the batch columns)")

    print(
        f"\n{'encoding':12} {'worst case':20} {'tokens':>8} {'aiofast ms':>11} "
        f"{'tiktoken ms':>12} {'ratio':>7} {'ms per MB vs prose':>19}"
    )
    for encoding in ENCODINGS:
        prose = results["corpora"].get(f"{encoding}/prose") or next(
            v for k, v in results["corpora"].items() if k.startswith(encoding)
        )
        prose_s_per_mb = 1 / prose["aiofast_mb_s"]
        for name, text in worst.items():
            w = bench_worst(encoding, text, rounds)
            results["worst"][f"{encoding}/{name}"] = w
            per_mb = w["aiofast_s"] / (len(text.encode()) / 1e6) / prose_s_per_mb
            theirs = f"{w['tiktoken_s'] * 1e3:12.1f}" if w["tiktoken_s"] else f"{w['tiktoken']:>12}"
            ratio = f"{w['tiktoken_s'] / w['aiofast_s']:6.1f}x" if w["tiktoken_s"] else "      -"
            print(
                f"{encoding:12} {name:20} {w['tokens']:8} {w['aiofast_s'] * 1e3:11.1f} "
                f"{theirs} {ratio} {per_mb:18.1f}x"
            )

    results["meta"] = {
        "smoke": args.smoke,
        "rounds": rounds,
        "aiofast": importlib.metadata.version("aiofast"),
        "tiktoken": importlib.metadata.version("tiktoken"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tokens.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nratio: {min(ratios):.2f}x vs tiktoken encode_ordinary (lowest over corpora)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
