"""``aiofast serve``: run the gateway."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import shlex
import sys

import orjson

from aiofast.errors import ConfigError
from aiofast.gateway import create_app
from aiofast.policy import Policy, default_policy, load_policy
from aiofast.server import run_app
from aiofast.telemetry import BackgroundLineHandler
from aiofast.workers import bind, serve_workers, unshared_state_warning

__all__ = ["add_parser", "is_loopback", "run"]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible gateway",
        description="Run the gateway. Without --config it serves the embedded default policy: "
        "three tiers (small, medium, large) on the built-in simulated provider.",
    )
    parser.add_argument("--config", metavar="FILE", help="policy TOML file")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="level of the aiofast loggers; info writes one JSON line per request to stderr",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes serving the port (default 1); with more than one, share limits, "
        "budgets and breakers through a [redis] section",
    )
    parser.add_argument(
        "--allow-open",
        action="store_true",
        help="allow binding beyond loopback with no API key configured",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.config) if args.config else default_policy()
    check_exposure(policy, args.host, allow_open=args.allow_open)
    _log_to_stderr(args.log_level)
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    if args.workers > 1:
        return _run_workers(policy, args)
    run_app(policy, host=args.host, port=args.port, on_ready=BannerPrinter(policy, args.config))
    return 0


def _run_workers(policy: Policy, args: argparse.Namespace) -> int:
    """Fork the workers on one pre-bound socket; the parent only supervises them."""
    log = logging.getLogger("aiofast.workers")
    warning = unshared_state_warning(args.workers, policy.redis is not None)
    if warning is not None:
        log.warning("%s", warning)
    if policy.redis is not None and policy.redis.instances < args.workers:
        # The local fallback divides each limit by `instances`: never by fewer processes
        # than this machine alone runs.
        log.warning(
            "redis.instances is %d but --workers starts %d processes; using %d (set it to "
            "the number of gateway processes on all machines)",
            policy.redis.instances,
            args.workers,
            args.workers,
        )
        shared = policy.redis.model_copy(update={"instances": args.workers})
        policy = policy.model_copy(update={"redis": shared})

    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    banner = BannerPrinter(policy, args.config)
    return serve_workers(
        lambda: create_app(policy),
        sock,
        args.workers,
        on_ready=lambda: banner(f"http://{shown}:{port}"),
    )


def _log_to_stderr(level: str) -> None:
    """aiofast's loggers to stderr: request lines are JSON already, so message only.

    Written from a thread, so the event loop never waits on stderr. This process is the
    gateway's own, so it also drops what every log record would otherwise collect and no
    line prints (caller frame, thread, process): the optimisations the logging HOWTO lists,
    worth a third of the cost of the per-request line.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if sys.version_info >= (3, 12):
        logging.logAsyncioTasks = False
    handler = BackgroundLineHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("aiofast")
    logger.addHandler(handler)
    logger.setLevel(level.upper())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(policy: Policy, host: str, *, allow_open: bool) -> None:
    """Refuse to serve an open gateway to the network unless told to."""
    if policy.auth_required or allow_open or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to bind {host} with no API key configured: anyone who can reach it could "
        "spend your provider credit. Add [[keys]] to the policy (aiofast keygen makes one), "
        "bind 127.0.0.1, or pass --allow-open"
    )


class BannerPrinter:
    """Prints where the gateway listens and a request to try."""

    def __init__(self, policy: Policy, config: str | None) -> None:
        self.policy = policy
        self.config = config

    def __call__(self, url: str) -> None:
        policy = self.policy
        source = self.config or "embedded default (simulated provider, no API key needed)"
        tier = policy.server.default_tier or next(iter(policy.tiers), "MODEL")
        auth = " -H 'Authorization: Bearer $AIOFAST_KEY'" if policy.auth_required else ""
        body = orjson.dumps(
            {"model": tier, "messages": [{"role": "user", "content": "Say hello"}]}
        ).decode()
        print(f"aiofast gateway on {url}", flush=True)
        print(f"  policy:  {source}, version {policy.version}")
        print(f"  tiers:   {', '.join(policy.tiers) or '(none)'}")
        print(f"  metrics: {url}/aiofast/metrics   health: {url}/aiofast/health")
        print("try:")
        print(
            f"  curl -s {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} "
            f"-d {shlex.quote(body)}",
            flush=True,
        )
