"""Profile a gateway under steady load with py-spy, to find where its time per request goes.

    python benches/_profile.py [--target aiofast] [--rate 300] [--seconds 20] [--stream]

Starts the mock upstream and the target as the gateway benches do, sends a constant open-loop
load, and records the target with ``py-spy record`` (``pip install py-spy``). Writes the
collapsed stacks and a speedscope file to ``benches/results/``, and prints the functions with
the most samples, inclusive and on their own. Not run by ``run_all.py``: profiling slows the
target, so its figures are not benchmark results.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess

import _harness as h
from _loadgen import Pool, open_loop


def top_functions(collapsed: str, limit: int) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    for title, counter in (("inclusive", inclusive), ("own", own)):
        print(f"\ntop {limit} functions by {title} samples (of {total}):")
        for frame, count in counter.most_common(limit):
            print(f"  {count / total:6.1%}  {frame[:150]}")


async def main(args: argparse.Namespace) -> None:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    mock = h.mock_service(delay_ms=args.delay_ms, chunks=64, chunk_ms=5.0)
    with h.start_cast([args.target], mock) as cast:
        target = cast.targets[0]
        assert target.service is not None
        assert target.service.process is not None
        body = h.chat_body(h.sample_prompts(1)[0], stream=args.stream)
        requests = [target.request(body)]
        pool = Pool("127.0.0.1", target.port)
        await open_loop(pool, requests, args.rate, 2.0)
        folded = h.RESULTS / f"profile-{args.target}.folded"
        argv = [py_spy, "record", "--pid", str(target.service.process.pid), "--format", "raw"]
        argv += ["--rate", "1000", "--duration", str(int(args.seconds)), "-o", str(folded)]
        argv += ["--gil"] + (["--native"] if args.native else [])
        recorder = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        results = await open_loop(pool, requests, args.rate, args.seconds + 1)
        await recorder.wait()
        pool.close()
        failed = sum(not r.ok for r in results)
        print(f"{len(results)} requests, {failed} failed {h.error_summary(results)}")
        print(f"stacks in {folded}")
    top_functions(folded.read_text(), args.top)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="aiofast", choices=["bare", "aiofast", "litellm"])
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="mock upstream delay")
    parser.add_argument("--stream", action="store_true", help="profile streamed requests")
    parser.add_argument("--native", action="store_true", help="include native frames")
    parser.add_argument("--top", type=int, default=30)
    cli = parser.parse_args()
    h.prepare()
    asyncio.run(main(cli))
