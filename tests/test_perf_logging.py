"""The request log leaves the event loop: lines are written by a thread, none lost, in order."""

from __future__ import annotations

import io
import logging
import os
import threading
import time

import pytest

from aiofast.telemetry import BackgroundLineHandler


class SlowStream(io.StringIO):
    """A stream whose writes block until released, like a stalled pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.writes = 0

    def write(self, text: str) -> int:
        self.release.wait(5)
        self.writes += 1
        return super().write(text)


@pytest.fixture
def logger() -> logging.Logger:
    log = logging.getLogger("aiofast.test-perf-logging")
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def test_every_line_is_written_in_order_once_closed(logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = BackgroundLineHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        for index in range(2000):
            logger.info("line %d", index)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert stream.getvalue().splitlines() == [f"INFO line {i}" for i in range(2000)]


def test_logging_does_not_wait_for_a_stalled_stream(logger: logging.Logger) -> None:
    stream = SlowStream()
    handler = BackgroundLineHandler(stream)
    logger.addHandler(handler)
    try:
        for index in range(500):
            logger.info("queued %d", index)
        # All 500 calls returned while the stream was still blocked.
        assert stream.getvalue() == ""
        stream.release.set()
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert stream.getvalue().splitlines() == [f"queued {i}" for i in range(500)]
    # Lines that queued up while the stream stalled went out together.
    assert stream.writes < 500


def test_exceptions_are_formatted_with_their_traceback(logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = BackgroundLineHandler(stream)
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = stream.getvalue()
    assert text.startswith("failed\nTraceback")
    assert "ValueError: boom" in text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_its_own_lines(logger: logging.Logger) -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    handler = BackgroundLineHandler(stream)
    logger.addHandler(handler)
    try:
        pid = os.fork()
        if pid == 0:  # the child: log, flush through close, leave without cleanup
            logger.info("from the child")
            handler.close()
            os._exit(0)
        os.waitpid(pid, 0)
        logger.info("from the parent")
    finally:
        logger.removeHandler(handler)
        handler.close()
        stream.close()
    with os.fdopen(read_end) as pipe:
        assert sorted(pipe.read().splitlines()) == ["from the child", "from the parent"]


def test_a_lone_line_and_one_after_a_quiet_spell_are_written_without_close(
    logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    handler = BackgroundLineHandler(stream, interval=0.02)
    logger.addHandler(handler)

    def written(expected: str) -> bool:
        deadline = time.monotonic() + 5
        while stream.getvalue() != expected and time.monotonic() < deadline:
            time.sleep(0.005)
        return stream.getvalue() == expected

    try:
        logger.info("first")
        assert written("first\n")
        time.sleep(0.1)  # the writer goes idle: the next line must wake it
        logger.info("second")
        assert written("first\nsecond\n")
    finally:
        logger.removeHandler(handler)
        handler.close()
