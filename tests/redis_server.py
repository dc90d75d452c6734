"""A real, throw-away ``redis-server`` for the tests.

Each server listens on a free loopback port, keeps its files in a temporary
directory and never persists anything, so killing it and starting it again on the
same port gives an empty Redis, which is what the outage tests need. Pausing it
with SIGSTOP leaves the socket open but unanswered: the worst kind of outage, the
one that hangs clients without a timeout.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer", "find_redis_server"]

START_TIMEOUT_S = 10.0


def find_redis_server() -> str:
    """The path of ``redis-server``, or an error saying how to install it."""
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(
            "redis-server was not found on PATH; the Redis tests need a real server. "
            "Install it with `apt-get install redis-server` (Debian/Ubuntu) or "
            "`brew install redis`, or run ./.ci/run, which installs it."
        )
    return path


# Cluster mode also listens on port + 10000, so the port must stay at or below 55535;
# the kernel's ephemeral range goes higher, hence a search of our own.
_PORTS = range(20000, 55536)


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    for _ in range(100):
        port = random.choice(_PORTS)
        if _is_free(port) and _is_free(port + 10000):
            return port
    raise RuntimeError("no free loopback port between 20000 and 55535")


class RedisServer:
    """One ``redis-server`` process that the tests can pause, kill and restart."""

    def __init__(self, workdir: Path, *, cluster: bool = False, password: str = "") -> None:
        self._binary = find_redis_server()
        self._workdir = workdir
        self._cluster = cluster
        self.password = password
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process.pid

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (empty) and wait until it answers PING."""
        args = [
            self._binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self._workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self._workdir / "redis.log"),
        ]
        if self._cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        if self.password:
            args += ["--requirepass", self.password]
        # Redis writes to its log file; a pipe nobody reads could fill up and stall it.
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_ready()
        if self._cluster:
            # A one-node cluster owning every slot: enough for Redis to refuse any
            # command or script whose keys hash to different slots (CROSSSLOT).
            self._command(b"CLUSTER ADDSLOTSRANGE 0 16383")

    def _command(self, line: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(line + b"\r\n")
            return sock.recv(4096)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                log = (self._workdir / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited at start:\n{log}")
            if self._answers_ping():
                return
            time.sleep(0.01)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within 10 s")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                # A server with a password answers NOAUTH: it is up all the same.
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def pause(self) -> None:
        """SIGSTOP: connections stay open and every command hangs."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT: the server answers again with its data intact."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def kill(self) -> None:
        """SIGKILL: the data is gone; clients see connection errors."""
        if self._process is None:
            return
        if self._paused:
            self.resume()
        self._process.kill()
        self._process.wait()
        self._process = None

    def restart_empty(self) -> None:
        """Kill the server and start a fresh, empty one on the same port."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self._process is None:
            return
        if self._paused:
            self.resume()
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def _signal(self, signum: int) -> None:
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        os.kill(self._process.pid, signum)
