"""Several worker processes serving one port: ``aiofast serve --workers N``.

The parent binds the listening socket once, then forks N workers that each run
their own event loop and application on that inherited socket; the kernel hands
each new connection to one of them. The parent only supervises: it forwards
SIGINT/SIGTERM to the workers and waits for their graceful shutdown (which drains
each worker's ledger), and it replaces a worker that dies, unless workers keep
dying, in which case it stops them all rather than crash-loop.

Each worker has its own memory: in-process limits, budgets and breakers hold per
worker unless they are shared through Redis (the ``[redis]`` section).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType

from aiohttp import web

__all__ = ["bind", "serve_on_socket", "serve_workers", "unshared_state_warning"]

logger = logging.getLogger("aiofast.workers")

AppFactory = Callable[[], web.Application]

# More deaths than this within the window means something is wrong with every worker.
_MAX_RESTARTS = 5
_RESTART_WINDOW_S = 30.0
_BACKLOG = 2048


def unshared_state_warning(workers: int, redis_configured: bool) -> str | None:
    """The warning to print when several workers would each keep their own limits."""
    if workers <= 1 or redis_configured:
        return None
    return (
        f"{workers} workers without Redis: rate limits, budgets and circuit breakers hold "
        f"per worker, so a limit of 600 requests per minute admits up to {600 * workers}. "
        "To share them, add a [redis] section to the policy (url_env names the variable "
        "holding redis://host:6379/0) and set instances to the total number of gateway "
        "processes."
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(_BACKLOG)
    sock.setblocking(False)
    return sock


def serve_workers(
    make_app: AppFactory,
    sock: socket.socket,
    workers: int,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Fork ``workers`` processes serving ``make_app()`` on ``sock``; return an exit code
    once they have all stopped."""
    supervisor = _Supervisor(make_app, sock, workers)
    return supervisor.run(on_ready)


def serve_on_socket(make_app: AppFactory, sock: socket.socket) -> None:
    """Serve one application on an already bound socket until SIGINT/SIGTERM."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(make_app(), sock))
    else:
        uvloop.run(_serve(make_app(), sock))


async def _serve(app: web.Application, sock: socket.socket) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        await stop.wait()
    finally:
        await runner.cleanup()


class _Supervisor:
    def __init__(self, make_app: AppFactory, sock: socket.socket, workers: int) -> None:
        self.make_app = make_app
        self.sock = sock
        self.workers = workers
        self.children: dict[int, int] = {}
        self.stopping = False
        self.deaths: list[float] = []

    def run(self, on_ready: Callable[[], None] | None) -> int:
        previous = {
            signum: signal.signal(signum, self._stop) for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for index in range(self.workers):
                self._spawn(index)
            if on_ready is not None:
                on_ready()
            return self._supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.sock.close()

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                # The parent's handlers only forward signals; the worker installs its own.
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                serve_on_socket(self.make_app, self.sock)
            except BaseException:
                logger.exception("worker %d failed", index)
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = index

    def _supervise(self) -> int:
        code = 0
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = self.children.pop(pid, None)
            if index is None or self.stopping:
                continue
            logger.warning(
                "worker %d (pid %d) exited with status %d; starting a new one",
                index,
                pid,
                os.waitstatus_to_exitcode(status),
            )
            if self._too_many_deaths():
                logger.error("workers keep exiting; stopping the gateway")
                code = 1
                self._stop(signal.SIGTERM, None)
                continue
            self._spawn(index)
        return code

    def _too_many_deaths(self) -> bool:
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < _RESTART_WINDOW_S] + [now]
        return len(self.deaths) > _MAX_RESTARTS

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self.children.pop(pid, None)
