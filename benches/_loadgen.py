"""A lean HTTP/1.1 client and an open-loop load generator for the gateway benchmarks.

The load generator shares one core with the mock upstream, so it has to cost far less per
request than any gateway it measures. A general client such as aiohttp's spends most of its
time building and parsing objects the benchmark never looks at; this one writes prebuilt
request bytes on keep-alive connections (TCP_NODELAY set) and parses only the status line,
the framing headers and, for streams, where each server-sent event ends.

Open loop means requests are sent on a fixed schedule whether or not earlier ones have
answered, and latency is counted from the scheduled time: a gateway that stalls cannot hide
the stall by slowing the generator down (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, cast

clock = time.perf_counter

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _UNTIL_CLOSE, _DONE = range(7)


@dataclass(slots=True)
class Exchange:
    """One request and what came back; times are ``clock()`` seconds."""

    start: float
    sent: float = 0.0
    first_byte: float = 0.0
    end: float = 0.0
    status: int = 0
    error: str = ""
    events: list[float] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error

    @property
    def latency(self) -> float:
        return self.end - self.start


def build_request(
    host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    """The bytes of one ``POST`` with a JSON body, ready to write on a keep-alive connection."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _ResponseReader:
    """Incremental parser of one HTTP/1.1 response (length, chunked or until-close bodies)."""

    def __init__(self, exchange: Exchange, abort_after_events: int | None) -> None:
        self.exchange = exchange
        self.abort_after_events = abort_after_events
        self.buffer = bytearray()
        self.state = _HEAD
        self.remaining = 0
        self.scanned = 0
        self.keep_alive = True

    def feed(self, data: bytes, now: float) -> bool:
        """Take bytes off the wire; true once the response is complete (or to be aborted)."""
        if not self.exchange.first_byte:
            self.exchange.first_byte = now
        self.buffer += data
        while self.state != _DONE:
            before = (self.state, len(self.buffer))
            self._step()
            if (self.state, len(self.buffer)) == before:
                break
        self._find_events(now)
        abort_after = self.abort_after_events
        if abort_after is not None and len(self.exchange.events) >= abort_after:
            return True
        return self.state == _DONE

    def _step(self) -> None:
        buffer = self.buffer
        if self.state == _HEAD:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                self._parse_head(bytes(buffer[:end]))
                del buffer[: end + 4]
        elif self.state == _LENGTH:
            taken = buffer[: self.remaining]
            self.exchange.body += taken
            self.remaining -= len(taken)
            del buffer[: len(taken)]
            if self.remaining == 0:
                self.state = _DONE
        elif self.state == _CHUNK_SIZE:
            end = buffer.find(b"\r\n")
            if end >= 0:
                size = int(bytes(buffer[:end]).split(b";")[0], 16)
                del buffer[: end + 2]
                self.remaining = size
                self.state = _CHUNK_DATA if size else _TRAILER
        elif self.state == _CHUNK_DATA:
            if len(buffer) >= self.remaining + 2:
                self.exchange.body += buffer[: self.remaining]
                del buffer[: self.remaining + 2]
                self.state = _CHUNK_SIZE
        elif self.state == _TRAILER:
            end = buffer.find(b"\r\n")
            if end >= 0:
                del buffer[: end + 2]
                if end == 0:
                    self.state = _DONE
        elif self.state == _UNTIL_CLOSE:
            self.exchange.body += buffer
            buffer.clear()

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.exchange.status = int(lines[0].split(b" ", 2)[1])
        self.state = _UNTIL_CLOSE
        self.keep_alive = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == b"content-length":
                self.remaining = int(value)
                self.state = _LENGTH if self.remaining else _DONE
                self.keep_alive = True
            elif name == b"transfer-encoding" and value.endswith(b"chunked"):
                self.state = _CHUNK_SIZE
                self.keep_alive = True
        for line in lines[1:]:
            if line.lower().replace(b" ", b"") == b"connection:close":
                self.keep_alive = False

    def _find_events(self, now: float) -> None:
        """Time-stamp every server-sent ``data:`` event completed by the latest bytes."""
        body = self.exchange.body
        while True:
            match = _EVENT_END.search(body, self.scanned)
            if match is None:
                return
            if body.startswith(b"data:", self.scanned):
                self.exchange.events.append(now)
            self.scanned = match.end()

    def finish_on_close(self) -> bool:
        """Whether a closed connection is a normal end of this response."""
        if self.state == _UNTIL_CLOSE:
            self._step()
            return True
        return False


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time.

    Completion is callback driven (a timer for the timeout, the pool told directly when
    the connection is free again), so a request on an idle connection costs no task.
    """

    def __init__(self, pool: Pool | None = None) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.reader: _ResponseReader | None = None
        self.waiter: asyncio.Future[Exchange] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.usable = True

    @classmethod
    async def open(cls, host: str, port: int, pool: Pool | None = None) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(pool), host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(
        self,
        raw: bytes,
        exchange: Exchange,
        abort_after_events: int | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Exchange]:
        """Write one request; the future resolves with ``exchange`` filled in, never fails."""
        assert self.transport is not None, "send() before the connection is made"
        assert self.waiter is None, "one request at a time per connection"
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.reader = _ResponseReader(exchange, abort_after_events)
        if timeout is not None:
            self.timer = loop.call_later(timeout, self._time_out)
        exchange.sent = clock()
        self.transport.write(raw)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        now = clock()
        if self.reader is None:
            self.close()
            return
        if self.reader.feed(data, now):
            exchange = self.reader.exchange
            exchange.end = now
            if self.reader.state != _DONE:
                exchange.error = "aborted by client"
                self.close()
            elif not self.reader.keep_alive:
                self.close()
            self._resolve(exchange)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self.reader is not None:
            exchange = self.reader.exchange
            exchange.end = clock()
            if not self.reader.finish_on_close():
                exchange.error = "connection lost before the response ended"
            self._resolve(exchange)

    def _time_out(self) -> None:
        if self.reader is not None:
            exchange = self.reader.exchange
            exchange.end = clock()
            exchange.error = "timeout"
            self.close()
            self._resolve(exchange)

    def _resolve(self, exchange: Exchange) -> None:
        waiter, self.waiter, self.reader = self.waiter, None, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if waiter is not None and not waiter.done():
            waiter.set_result(exchange)
        if self.pool is not None:
            self.pool.release(self)

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Keep-alive connections to one server; opens more whenever all are busy."""

    def __init__(self, host: str, port: int, limit: int = 4096) -> None:
        self.host = host
        self.port = port
        self.limit = limit
        self.idle: deque[Connection] = deque()
        self.opened = 0
        self.waiters: deque[asyncio.Future[Connection]] = deque()

    def take_idle(self) -> Connection | None:
        """A free open connection, if there is one, without waiting."""
        while self.idle:
            connection = self.idle.pop()
            if connection.usable:
                return connection
            self.opened -= 1
        return None

    async def acquire(self) -> Connection:
        connection = self.take_idle()
        if connection is not None:
            return connection
        if self.opened < self.limit:
            self.opened += 1
            try:
                return await Connection.open(self.host, self.port, self)
            except BaseException:  # refused, or cancelled by the caller's timeout
                self.opened -= 1
                raise
        waiter: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        return await waiter

    def release(self, connection: Connection) -> None:
        """Called by a connection once its request is over (it may have closed)."""
        if not connection.usable:
            self.opened -= 1
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self.idle.append(connection)

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


async def exchange_once(
    pool: Pool,
    raw: bytes,
    start: float,
    timeout: float,
    abort_after_events: int | None = None,
) -> Exchange:
    """Send ``raw`` on a pooled connection; errors are recorded, never raised."""
    exchange = Exchange(start=start)
    try:
        # A server too busy to accept (full backlog) must not hold the run past its timeout.
        connection = await asyncio.wait_for(pool.acquire(), timeout)
    except asyncio.TimeoutError:
        exchange.end = clock()
        exchange.error = "timeout"
        return exchange
    except OSError as exc:
        exchange.end = clock()
        exchange.error = f"connect: {exc}"
        return exchange
    return await connection.send(raw, exchange, abort_after_events, timeout)


def launch(
    pool: Pool,
    raw: bytes,
    start: float,
    timeout: float,
    abort_after_events: int | None = None,
) -> asyncio.Future[Exchange]:
    """Start one request now; on an idle connection this is a write and a timer, no task."""
    connection = pool.take_idle()
    if connection is None:
        return asyncio.ensure_future(exchange_once(pool, raw, start, timeout, abort_after_events))
    return connection.send(raw, Exchange(start=start), abort_after_events, timeout)


class Abandoned(NamedTuple):
    """A streaming request the client walks away from after ``events`` events."""

    raw: bytes
    events: int


async def open_loop(
    pool: Pool,
    requests: Sequence[bytes | Abandoned],
    rate: float,
    duration: float,
    timeout: float = 10.0,
) -> list[Exchange]:
    """Send ``rate`` requests per second for ``duration`` seconds, cycling through ``requests``.

    Latency of each result is measured from its scheduled start, so time a request spends
    waiting for a free connection or for the generator itself counts against the server.
    """
    total = max(1, int(rate * duration))
    pending: list[asyncio.Future[Exchange]] = []
    begin = clock() + 0.005
    issued = 0
    while issued < total:
        due = min(total, math.floor((clock() - begin) * rate) + 1)
        while issued < due:
            start = begin + issued / rate
            request = requests[issued % len(requests)]
            if isinstance(request, Abandoned):
                pending.append(launch(pool, request.raw, start, timeout, request.events))
            else:
                pending.append(launch(pool, request, start, timeout))
            issued += 1
        await asyncio.sleep(max(0.0, begin + issued / rate - clock()))
    return list(await asyncio.gather(*pending))
