"""``aiofast serve`` as a child process, for tests that need real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["served_gateway"]


@contextmanager
def served_gateway(
    workdir: Path,
    policy: str,
    *,
    env: dict[str, str] | None = None,
    workers: int = 1,
    log_level: str = "error",
    capture_log: bool = False,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Write ``policy`` into ``workdir``, serve it on a free port and yield its base URL
    and process; stop it (SIGTERM, then SIGKILL to its whole group) on the way out.

    With ``capture_log`` the process's stderr is a pipe the test may read after it exits.
    """
    config = workdir / "policy.toml"
    config.write_text(policy)
    command = [sys.executable, "-m", "aiofast.cli", "serve", "--config", str(config)]
    command += ["--port", "0", "--workers", str(workers), "--log-level", log_level]
    process = subprocess.Popen(
        command,
        cwd=workdir,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_log else None,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("aiofast gateway on "), banner
        yield banner.split()[-1], process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
