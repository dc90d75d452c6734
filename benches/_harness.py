"""What the gateway benchmarks share: processes, pinning, the gateways under test, reporting.

Every gateway bench starts the same cast in separate processes:

- a mock upstream (``_mock_upstream.py``) pinned with the load generator to one core;
- the gateways, each pinned to the other core: a bare aiohttp pass-through proxy
  (``_bare_proxy.py``, the floor), ``aiofast serve`` with every policy on
  (``aiofast_policy.toml``), and LiteLLM's proxy from its own virtual environment;
- the bench process itself, which is the load generator (``_loadgen.py``).

A target is "where the client sends its requests": ``direct`` (the mock itself) or one of
the gateways. Results go to ``benches/results/`` as JSON, with versions, the CPU model and
the settings, next to a printed table and a final ``ratio:`` line.

Environment variables:

- ``AIOFAST_BENCH_LITELLM_VENV``: the virtual environment holding ``litellm[proxy]``
  (default: ``litellm-venv`` beside the repository checkout); LiteLLM is skipped, with a
  message saying how to create it, when it is absent.
- ``AIOFAST_BENCH_GATEWAY_CORE`` / ``AIOFAST_BENCH_CLIENT_CORE``: the cores (default 1 and 0).
- ``AIOFAST_BENCH_NICE``: a negative niceness (as root) for every process of the bench, so
  that other work on a shared machine disturbs the measurement less; every target gets
  the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from _loadgen import Exchange, build_request

BENCHES = Path(__file__).resolve().parent
REPO = BENCHES.parent
RESULTS = BENCHES / "results"
POLICY_TEMPLATE = BENCHES / "aiofast_policy.toml"
LITELLM_VENV = Path(
    os.environ.get("AIOFAST_BENCH_LITELLM_VENV", str(REPO.parent / "litellm-venv"))
).expanduser()
LITELLM_HOW_TO = (
    f"python3 -m venv {LITELLM_VENV} && {LITELLM_VENV}/bin/pip install 'litellm[proxy]' "
    "(or point AIOFAST_BENCH_LITELLM_VENV at an existing one)"
)
GATEWAY_CORE = int(os.environ.get("AIOFAST_BENCH_GATEWAY_CORE", "1"))
NICENESS = int(os.environ.get("AIOFAST_BENCH_NICE", "0"))
CLIENT_CORE = int(os.environ.get("AIOFAST_BENCH_CLIENT_CORE", "0"))

# The bearer keys the gateways are configured with; nothing secret, they guard a mock.
BENCH_KEY = "sk-aiofast-bench-0123456789abcdef"
LITELLM_MASTER_KEY = "sk-litellm-bench-0123456789abcdef0123456789"
MODEL = "gpt-4o-mini"
CHAT_PATH = "/v1/chat/completions"
ALL_TARGETS = ("direct", "bare", "aiofast", "litellm")
TARGET_LABELS = {
    "direct": "direct",
    "bare": "bare aiohttp",
    "aiofast": "aiofast",
    "litellm": "litellm",
}


def common_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to check it runs")
    parser.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help=f"comma-separated subset of {','.join(ALL_TARGETS)}",
    )
    return parser


def selected_targets(spec: str) -> list[str]:
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ALL_TARGETS))
    if unknown:
        raise SystemExit(f"--targets: unknown {unknown}; choose among {list(ALL_TARGETS)}")
    return names


# --- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) > max(
        GATEWAY_CORE, CLIENT_CORE
    )


def pin_self() -> None:
    """Pin the load generator (this process) to the client core."""
    if can_pin():
        os.sched_setaffinity(0, {CLIENT_CORE})


def install_uvloop() -> str:
    """Use uvloop for the load generator when it is installed; returns the loop's name."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return f"uvloop {uvloop.__version__}"


@dataclass
class Service:
    """A child process pinned to a core, ready once ``ready_path`` answers over HTTP."""

    name: str
    argv: list[str]
    port: int
    ready_path: str
    core: int | None
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 60.0
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return RESULTS / "logs" / f"{self.name}.log"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = list(self.argv)
        if self.core is not None and can_pin():
            argv = ["taskset", "-c", str(self.core), *argv]
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()

    def wait_ready(self) -> None:
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status < 500:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {self.ready_timeout:.0f} s; see log")

    def rss_mib(self) -> float:
        """Resident memory of the process and all its descendants, in MiB."""
        assert self.process is not None
        return sum(_rss_kib(pid) for pid in _process_tree(self.process.pid)) / 1024

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the process and its descendants."""
        assert self.process is not None
        return sum(_cpu_seconds(pid) for pid in _process_tree(self.process.pid))

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    # utime and stime, the 14th and 15th fields of the whole line, in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- the gateways under test ------------------------------------------------------------


@dataclass
class Target:
    """Where the client sends its requests: the mock itself or a gateway in front of it."""

    name: str
    port: int
    headers: dict[str, str]
    service: Service | None

    @property
    def label(self) -> str:
        return TARGET_LABELS[self.name]

    def request(self, body: bytes, path: str = CHAT_PATH) -> bytes:
        return build_request("127.0.0.1", self.port, path, body, self.headers)


def mock_service(
    delay_ms: float = 0.0,
    chunks: int = 64,
    chunk_ms: float = 20.0,
    fault_rate: float = 0.0,
    stamp: bool = False,
) -> Service:
    port = free_port()
    argv = [sys.executable, str(BENCHES / "_mock_upstream.py"), "--port", str(port)]
    argv += ["--delay-ms", str(delay_ms), "--chunks", str(chunks), "--chunk-ms", str(chunk_ms)]
    argv += ["--fault-rate", str(fault_rate)] + (["--stamp"] if stamp else [])
    return Service("mock", argv, port, "/v1/models", CLIENT_CORE)


def bare_service(upstream_port: int) -> Service:
    port = free_port()
    argv = [sys.executable, str(BENCHES / "_bare_proxy.py"), "--port", str(port)]
    argv += ["--upstream", f"http://127.0.0.1:{upstream_port}"]
    return Service("bare", argv, port, "/v1/models", GATEWAY_CORE)


def aiofast_skip_reason() -> str | None:
    from aiofast import cli

    if "serve" not in cli.COMMANDS:
        return "this build of aiofast has no `aiofast serve` yet"
    return None


def aiofast_service(upstream_port: int) -> Service:
    port = free_port()
    policy = POLICY_TEMPLATE.read_text().replace(
        "@UPSTREAM_BASE_URL@", f"http://127.0.0.1:{upstream_port}/v1"
    )
    policy = policy.replace("@LEDGER_PATH@", str(RESULTS / "logs" / f"aiofast-{port}.sqlite"))
    path = RESULTS / "logs" / f"aiofast-policy-{port}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(policy)
    argv = [sys.executable, "-m", "aiofast.cli", "serve", "--config", str(path)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    env = {"AIOFAST_BENCH_UPSTREAM_KEY": "sk-mock"}
    return Service("aiofast", argv, port, "/aiofast/health", GATEWAY_CORE, env)


def litellm_skip_reason() -> str | None:
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        return f"no LiteLLM virtual environment at {LITELLM_VENV}; create it with {LITELLM_HOW_TO}"
    return None


def litellm_service(upstream_port: int) -> Service:
    port = free_port()
    # JSON is valid YAML, which is what LiteLLM reads.
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "sk-mock",
                },
            }
        ],
        "litellm_settings": {"set_verbose": False, "telemetry": False},
        "general_settings": {"master_key": LITELLM_MASTER_KEY, "disable_spend_logs": True},
    }
    path = RESULTS / "logs" / f"litellm-config-{port}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(path)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
    }
    return Service("litellm", argv, port, "/health/liveliness", GATEWAY_CORE, env, 180.0)


@dataclass
class Cast:
    """The mock upstream and the targets of one bench run; stops them all on exit."""

    mock: Service
    targets: list[Target]
    skipped: dict[str, str]

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)


@contextlib.contextmanager
def start_cast(names: Sequence[str], mock: Service) -> Iterator[Cast]:
    """Start the mock and the named targets; skipped ones are reported, not fatal."""
    services: list[Service] = [mock]
    targets: list[Target] = []
    skipped: dict[str, str] = {}
    makers: dict[str, tuple[Callable[[], str | None], Callable[[int], Service], dict[str, str]]]
    makers = {
        "bare": (lambda: None, bare_service, {}),
        "aiofast": (aiofast_skip_reason, aiofast_service, {"Authorization": f"Bearer {BENCH_KEY}"}),
        "litellm": (
            litellm_skip_reason,
            litellm_service,
            {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
        ),
    }
    try:
        mock.start()
        mock.wait_ready()
        if "direct" in names:
            targets.append(Target("direct", mock.port, {}, None))
        pending: list[tuple[str, Service, dict[str, str]]] = []
        for name in names:
            if name == "direct":
                continue
            why_not, make, headers = makers[name]
            reason = why_not()
            if reason:
                skipped[name] = reason
                print(f"skipping {TARGET_LABELS[name]}: {reason}", flush=True)
                continue
            service = make(mock.port)
            service.start()
            services.append(service)
            pending.append((name, service, headers))
        for name, service, headers in pending:
            service.wait_ready()
            targets.append(Target(name, service.port, headers, service))
        yield Cast(mock, targets, skipped)
    finally:
        for service in reversed(services):
            service.stop()


# --- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def error_summary(exchanges: Sequence[Exchange]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for exchange in exchanges:
        if not exchange.ok:
            key = exchange.error or f"status {exchange.status}"
            counts[key] = counts.get(key, 0) + 1
    return counts


# --- chat requests ----------------------------------------------------------------------

_FALLBACK_PROMPT = (
    "Compose an engaging travel blog post about a recent trip to Hawaii, highlighting "
    "cultural experiences and must-see attractions."
)


def sample_prompts(limit: int = 32) -> list[str]:
    """Real user prompts (MT-Bench) when the shared data is present, else one built in."""
    source = REPO.parent / "shared" / "data" / "prompts" / "mt_bench" / "mt_bench_question.jsonl"
    if not source.exists():
        source = Path("/work/shared/data/prompts/mt_bench/mt_bench_question.jsonl")
    if not source.exists():
        return [_FALLBACK_PROMPT]
    prompts = []
    for line in source.read_text().splitlines()[:limit]:
        prompts.append(orjson.loads(line)["turns"][0])
    return prompts


def chat_body(prompt: str, stream: bool = False, max_tokens: int = 256) -> bytes:
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": prompt},
        ],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


# --- reporting --------------------------------------------------------------------------


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def litellm_version() -> str | None:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    try:
        result = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def cpu_pressure() -> str | None:
    """The kernel's CPU pressure line: how much of the time runnable work waited for a CPU.
    High figures mean other work shared the machine during the run."""
    with contextlib.suppress(OSError):
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    return None


def environment(loop_name: str) -> dict[str, object]:
    return {
        "cpu_pressure_at_end": cpu_pressure(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "event_loop": loop_name,
        "niceness": NICENESS,
        "pinning": (
            f"gateways on core {GATEWAY_CORE}, mock and load generator on core {CLIENT_CORE}"
            if can_pin()
            else "none (taskset missing or too few cores)"
        ),
        "versions": {
            "aiofast": _version("aiofast"),
            "aiofast_commit": git_commit(),
            "aiohttp": _version("aiohttp"),
            "orjson": _version("orjson"),
            "uvloop": _version("uvloop"),
            "litellm": litellm_version(),
        },
    }


def write_result(bench: str, result: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result = {"bench": bench, "finished": stamp, **result}
    path = RESULTS / f"{bench}-{stamp}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[[_cell(value) for value in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(value.rjust(width) for value, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return "-" if value is None else str(value)


def print_ratio(ratio: float | None, peer: str) -> None:
    """The last line of every bench, for scripts: aiofast speed over the peer's speed."""
    print(f"ratio: {ratio:.2f}x vs {peer}" if ratio is not None else f"ratio: n/a vs {peer}")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def prepare() -> str:
    """Pin the load generator and pick its event loop; returns the loop's name."""
    # SIGTERM (from `timeout`, a CI runner or kill) unwinds like Ctrl-C, so the services
    # the bench started are stopped by their context managers instead of left running.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    pin_self()
    if NICENESS:
        # Every process the bench starts inherits it.
        os.nice(NICENESS)
    return install_uvloop()
