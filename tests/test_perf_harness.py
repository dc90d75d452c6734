"""The gateway benchmark harness measures what it claims to: its client, mock and floor proxy.

The benchmarks' figures are only as good as the lean HTTP client that times them, so it is
checked here against real aiohttp servers on loopback: bodies framed by length, chunked
streams, abandoned streams, dropped connections and the open-loop schedule. The mock
upstream and the bare pass-through proxy run in process, the proxy in front of the mock.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))

import _bare_proxy
import _harness
import _mock_upstream
from _loadgen import Abandoned, Pool, build_request, clock, exchange_once, open_loop


def mock_args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "delay_ms": 0.0,
        "chunks": 6,
        "chunk_ms": 2.0,
        "fault_rate": 0.0,
        "seed": 8,
        "stamp": True,
    }
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.fixture
async def mock() -> AsyncIterator[TestServer]:
    server = TestServer(_mock_upstream.build_app(mock_args()), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def proxy(mock: TestServer) -> AsyncIterator[TestServer]:
    app = _bare_proxy.build_app(f"http://127.0.0.1:{mock.port}")
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def chat(port: int, stream: bool = False) -> bytes:
    body = _harness.chat_body("Say something.", stream=stream)
    return build_request("127.0.0.1", port, "/v1/chat/completions", body)


async def test_a_length_framed_answer_is_read_whole_and_the_connection_reused(
    mock: TestServer,
) -> None:
    assert mock.port is not None
    pool = Pool("127.0.0.1", mock.port)
    first = await exchange_once(pool, chat(mock.port), clock(), timeout=5)
    second = await exchange_once(pool, chat(mock.port), clock(), timeout=5)
    pool.close()

    for exchange in (first, second):
        assert exchange.ok, exchange.error
        answer = orjson.loads(exchange.body)
        assert answer["choices"][0]["message"]["content"] == _mock_upstream.ANSWER
        assert exchange.start <= exchange.sent <= exchange.first_byte <= exchange.end
    assert 900 <= len(first.body) <= 1400
    assert pool.opened == 1


async def test_a_chunked_stream_has_one_time_stamped_event_per_chunk(mock: TestServer) -> None:
    assert mock.port is not None
    pool = Pool("127.0.0.1", mock.port)
    exchange = await exchange_once(pool, chat(mock.port, stream=True), clock(), timeout=5)
    pool.close()

    assert exchange.ok, exchange.error
    # Six content chunks, the finish chunk and [DONE].
    assert len(exchange.events) == 8
    assert exchange.events == sorted(exchange.events)
    assert exchange.body.endswith(b"data: [DONE]\n\n")
    # Chunks are paced 2 ms apart by the mock, so the stream cannot be faster than that.
    assert exchange.events[5] - exchange.events[0] >= 0.009


async def test_the_bare_proxy_relays_answers_and_streams_unchanged(
    mock: TestServer, proxy: TestServer
) -> None:
    assert mock.port is not None
    assert proxy.port is not None
    direct, relayed = Pool("127.0.0.1", mock.port), Pool("127.0.0.1", proxy.port)
    for stream in (False, True):
        want = await exchange_once(direct, chat(mock.port, stream), clock(), timeout=5)
        got = await exchange_once(relayed, chat(proxy.port, stream), clock(), timeout=5)
        assert got.ok, got.error
        # Stamped chunks differ in their send times only.
        assert len(got.body) == len(want.body)
        assert len(got.events) == len(want.events)
    direct.close()
    relayed.close()


async def test_an_abandoned_stream_is_reported_and_its_connection_dropped(
    mock: TestServer,
) -> None:
    assert mock.port is not None
    pool = Pool("127.0.0.1", mock.port)
    exchange = await exchange_once(
        pool, chat(mock.port, stream=True), clock(), timeout=5, abort_after_events=2
    )
    assert exchange.error == "aborted by client"
    assert len(exchange.events) >= 2
    assert pool.opened == 0
    # The pool opens a fresh connection for the next request.
    assert (await exchange_once(pool, chat(mock.port), clock(), timeout=5)).ok
    pool.close()


async def test_a_connection_cut_mid_body_is_an_error() -> None:
    server = TestServer(_mock_upstream.build_app(mock_args(fault_rate=1.0)), host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    pool = Pool("127.0.0.1", server.port)
    outcomes = set()
    for _ in range(30):
        exchange = await exchange_once(pool, chat(server.port), clock(), timeout=5)
        outcomes.add(exchange.error or exchange.status)
    pool.close()
    await server.close()
    assert outcomes == {500, 429, "connection lost before the response ended"}


async def test_a_server_that_never_answers_times_out() -> None:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/chat/completions", hang)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    pool = Pool("127.0.0.1", server.port)
    exchange = await exchange_once(pool, chat(server.port), clock(), timeout=0.1)
    pool.close()
    await server.close()
    assert exchange.error == "timeout"
    assert 0.1 <= exchange.end - exchange.sent < 1


async def test_the_open_loop_keeps_its_schedule_and_counts_from_it(mock: TestServer) -> None:
    assert mock.port is not None
    pool = Pool("127.0.0.1", mock.port)
    requests = [chat(mock.port), Abandoned(chat(mock.port, stream=True), 1)]
    begin = clock()
    results = await open_loop(pool, requests, rate=200, duration=0.5)
    pool.close()

    assert len(results) == 100
    starts = [r.start for r in results]
    assert starts == sorted(starts)
    assert starts[-1] - starts[0] == pytest.approx(99 / 200)
    assert all(r.start >= begin and r.end >= r.start for r in results)
    assert sum(r.ok for r in results) == 50
    assert sum(r.error == "aborted by client" for r in results) == 50


@given(st.floats(min_value=0, max_value=10_000_000, allow_nan=False))
def test_a_time_stamp_reads_back_to_the_microsecond(seconds: float) -> None:
    text = _mock_upstream.stamp(seconds)
    assert text.startswith("~")
    assert text.endswith("~")
    assert text[1:-1].isalpha()
    assert _mock_upstream.unstamp(text[1:-1]) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([1.0], 99, 1.0), ([1.0, 2.0, 3.0, 4.0, 5.0], 50, 3.0), ([0.0, 10.0], 99, 9.9)],
)
def test_percentiles_interpolate_between_samples(
    values: list[float], q: float, expected: float
) -> None:
    assert _harness.percentile(values, q) == pytest.approx(expected)
