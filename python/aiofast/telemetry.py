"""Prometheus metrics and the one JSON log line per request.

Each :class:`Metrics` owns its registry, so several gateways (or tests) in one process
never collide. The gateway-overhead histogram measures the time a request spends in
aiofast itself, upstream wait excluded: the figure to watch for regressions.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import IO, Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from aiofast.ledger import UsageEvent

__all__ = ["BackgroundLineHandler", "Metrics", "log_request", "request_logger"]

request_logger = logging.getLogger("aiofast.request")

# From 10 µs to 100 ms: the gateway's own share of a request lives at the low end.
_OVERHEAD_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.000075, 0.0001, 0.00015, 0.00025, 0.0005, 0.001, 0.0025,
    0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
_Children = tuple[Counter, Histogram, Histogram, tuple[Counter, ...], Counter]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Every metric of one gateway, in its own registry."""

    def __init__(self, policy_version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.policy_version = policy_version
        info = Gauge("aiofast_policy_info", "Loaded policy", ["version"], registry=registry)
        info.labels(policy_version).set(1)
        self.requests = Counter(
            "aiofast_requests",
            "Requests by API, served model, tier and status",
            ["api", "model", "tier", "status", "policy_version"],
            registry=registry,
        )
        self.tokens = Counter(
            "aiofast_tokens",
            "Tokens by direction (input, cached_input, output, reasoning)",
            ["direction", "model", "tier"],
            registry=registry,
        )
        self.cost = Counter(
            "aiofast_cost_usd", "Cost in US dollars", ["model", "tier"], registry=registry
        )
        self.errors = Counter(
            "aiofast_errors", "Failed requests by error type", ["type"], registry=registry
        )
        self.in_flight = Gauge(
            "aiofast_in_flight_requests", "Requests in progress", registry=registry
        )
        self.latency = Histogram(
            "aiofast_request_duration_seconds",
            "Total request duration as seen by the gateway",
            ["api"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "aiofast_gateway_overhead_seconds",
            "Time spent in aiofast per request, upstream wait excluded",
            ["api"],
            buckets=_OVERHEAD_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str, str, int], _Children] = {}
        self.ttft = Histogram(
            "aiofast_time_to_first_token_seconds",
            "Time to the first streamed token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def observe(self, event: UsageEvent, overhead_seconds: float) -> None:
        model = event.model or event.requested_model
        key = (event.api, model, event.tier, event.status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = self._labelled(*key)
        requests, latency, overhead, tokens, cost = children
        requests.inc()
        latency.observe(event.latency_ms / 1000)
        overhead.observe(overhead_seconds)
        if event.error_type:
            self.errors.labels(event.error_type).inc()
        if event.ttft_ms is not None:
            self.ttft.labels(model).observe(event.ttft_ms / 1000)
        for counter, count in zip(
            tokens,
            (event.input_tokens, event.cached_tokens, event.output_tokens, event.reasoning_tokens),
            strict=True,
        ):
            if count:
                counter.inc(count)
        if event.cost_usd:
            cost.inc(event.cost_usd)

    def bill(self, event: UsageEvent) -> None:
        """Tokens and cost of an answer billed but not served (a cascade's superseded
        one): charged to its model, without a request series (rare: labels looked up)."""
        model = event.model or event.requested_model
        for direction, count in zip(
            ("input", "cached_input", "output", "reasoning"),
            (event.input_tokens, event.cached_tokens, event.output_tokens, event.reasoning_tokens),
            strict=True,
        ):
            if count:
                self.tokens.labels(direction, model, event.tier).inc(count)
        if event.cost_usd:
            self.cost.labels(model, event.tier).inc(event.cost_usd)

    def _labelled(self, api: str, model: str, tier: str, status: int) -> _Children:
        """The labelled series of one (api, model, tier, status): looked up once, since
        ``labels()`` costs more than the update itself."""
        tokens = tuple(
            self.tokens.labels(direction, model, tier)
            for direction in ("input", "cached_input", "output", "reasoning")
        )
        return (
            self.requests.labels(api, model, tier, str(status), self.policy_version),
            self.latency.labels(api),
            self.overhead.labels(api),
            tokens,
            self.cost.labels(model, tier),
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def log_request(
    event: UsageEvent,
    bodies: str,
    request: Any,
    response_text: str | None,
    *,
    guard: Sequence[Mapping[str, str]] = (),
) -> None:
    """Write the request's JSON log line; bodies only as the policy says. ``guard``
    lists guardrail findings as rule id and action, never the matched text."""
    if not request_logger.isEnabledFor(logging.INFO):
        return
    line: dict[str, Any] = {
        "request_id": event.request_id,
        "api": event.api,
        "stream": event.stream,
        "key": event.key,
        "user": event.user,
        "team": event.team,
        "requested_model": event.requested_model,
        "model": event.model,
        "tier": event.tier,
        "route": event.route,
        "upstream": event.upstream,
        "policy_version": event.policy_version,
        "status": event.status,
        "error_type": event.error_type,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "cost_usd": None if event.cost_usd is None else round(event.cost_usd, 10),
        "latency_ms": round(event.latency_ms, 3),
        "ttft_ms": None if event.ttft_ms is None else round(event.ttft_ms, 3),
        "attempts": event.attempts,
    }
    if guard:
        line["guard"] = list(guard)
    if bodies != "off":
        line["request"], line["response"] = _bodies(bodies, request, response_text)
    request_logger.info("%s", orjson.dumps(line).decode())


def _bodies(mode: str, request: Any, response_text: str | None) -> tuple[Any, Any]:
    if mode == "full":
        return request, response_text
    encoded = orjson.dumps(request)
    if mode == "hashed":
        answer = None if response_text is None else _digest(response_text.encode())
        return _digest(encoded), answer
    # "redacted": the shape of the exchange without any of its text.
    messages = request.get("messages") if isinstance(request, dict) else None
    shape = [
        {"role": m.get("role"), "chars": len(str(m.get("content") or ""))}
        for m in messages or ()
        if isinstance(m, dict)
    ]
    return shape, None if response_text is None else {"chars": len(response_text)}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BackgroundLineHandler(logging.Handler):
    """A log handler whose caller never waits on the stream, nor wakes a thread.

    ``emit`` only appends the record to a deque; a writer thread formats what has queued
    up and writes it with one ``write`` and one ``flush``. The writer is not woken per
    record: while lines keep coming it wakes every ``interval`` seconds and takes them
    all, and only a record arriving after an idle interval (or a warning) wakes it at
    once. Waking a thread per request line would hand it the GIL in the middle of the
    event loop's next request; batching takes the formatting and the system call off the
    loop and writes many lines per system call. Lines keep their order; ``close`` (called
    by ``logging.shutdown`` at exit) writes everything queued before it returns. A forked
    child (``aiofast serve --workers``) starts its own writer.
    """

    def __init__(self, stream: IO[str], *, interval: float = 0.1) -> None:
        super().__init__()
        self.stream = stream
        self.interval = interval
        self._start_writer()
        _open_line_handlers.add(self)

    def _start_writer(self) -> None:
        # deque.append and popleft are atomic: emit needs no lock.
        self._records: collections.deque[logging.LogRecord] = collections.deque()
        self._wake = threading.Event()
        # Set by the writer before it sleeps with nothing queued: the next record wakes it.
        self._idle = True
        self._stopping = False
        self._writer = threading.Thread(target=self._write_loop, name="aiofast-log", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)
        if self._idle or record.levelno >= logging.WARNING:
            self._idle = False
            self._wake.set()

    def _write_loop(self) -> None:
        records = self._records
        while True:
            # Announce idleness before looking at the deque: a record appended after the
            # look sees the flag and wakes the writer, so none waits for the next one.
            self._idle = True
            if not records and not self._stopping:
                self._wake.wait()
            self._idle = False
            self._wake.clear()
            stopping = self._stopping
            self._write_queued()
            if stopping:
                return
            # Lines are coming: let them gather for an interval rather than wake per line.
            if self._wake.wait(self.interval) and self._stopping:
                self._write_queued()
                return

    def _write_queued(self) -> None:
        records = self._records
        lines = []
        while records:
            lines.append(self._format(records.popleft()))
        if lines:
            self._write("".join(lines))

    def _format(self, record: logging.LogRecord) -> str:
        try:
            return self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return ""

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            # The stream is gone (closed pipe, closed file): nothing left to tell.
            pass

    def close(self) -> None:
        _open_line_handlers.discard(self)
        if self._writer.is_alive():
            self._stopping = True
            self._wake.set()
            self._writer.join(timeout=5)
        super().close()


_open_line_handlers: weakref.WeakSet[BackgroundLineHandler] = weakref.WeakSet()


def _restart_line_writers() -> None:
    # Threads do not survive fork: a child starts a writer for each handler it inherits.
    for handler in list(_open_line_handlers):
        handler._start_writer()


os.register_at_fork(after_in_child=_restart_line_writers)
