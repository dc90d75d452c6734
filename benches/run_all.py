"""Run every benchmark in this folder with the same flags: ``python benches/run_all.py --smoke``.

Benchmarks run one after another in name order (``gateway_capacity`` before
``gateway_memory``, which reads its result); modules starting with ``_`` are shared code.
Exits non-zero if any benchmark failed, after running the rest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import _summary


def main() -> int:
    here = Path(__file__).resolve().parent
    benches = sorted(
        path
        for path in here.glob("*.py")
        if path.name != "run_all.py" and not path.name.startswith("_")
    )
    failed = []
    for bench in benches:
        print(f"\n=== {bench.stem} ===", flush=True)
        if subprocess.run([sys.executable, str(bench), *sys.argv[1:]], check=False).returncode:
            failed.append(bench.stem)
    if any(bench.stem.startswith("gateway_") for bench in benches):
        print("\n=== gateway summary (Markdown) ===")
        print(_summary.markdown())
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
