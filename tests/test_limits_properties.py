"""Hypothesis properties of the limiter, driven through the Python API with a manual clock."""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from aiofast.limits import Limiter, ManualClock, RequestContext

NS = 1_000_000_000


def assert_window_bound(events: list[tuple[int, int]], burst: int, emission_ns: int) -> None:
    """No window [t_i, t_j] holds more than `burst + (t_j - t_i) / T` units."""
    for i in range(len(events)):
        units = 0
        for j in range(i, len(events)):
            units += events[j][1]
            width = events[j][0] - events[i][0]
            assert units * emission_ns <= burst * emission_ns + width, (units, width)


def emission_ns(limit: int, period_s: int) -> int:
    return -(-period_s * NS // limit)


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 600),
    burst=st.integers(1, 12),
    gaps_ms=st.lists(st.integers(0, 3000), min_size=1, max_size=120),
)
def test_no_window_admits_more_requests_than_rate_plus_burst(
    limit: int, burst: int, gaps_ms: list[int]
) -> None:
    burst = min(burst, limit)
    clock = ManualClock()
    limiter = Limiter(
        [{"scope": "user", "requests_per_minute": limit, "burst": burst}], clock=clock
    )
    ctx = RequestContext(user="u")
    admitted: list[tuple[int, int]] = []
    now_ns = 0
    for gap in gaps_ms:
        clock.advance(gap / 1000)
        now_ns += gap * 1_000_000
        if limiter.admit(ctx).admitted:
            admitted.append((now_ns, 1))
    assert_window_bound(admitted, burst, emission_ns(limit, 60))


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1_000, 50_000),
    asks=st.lists(
        st.tuples(
            st.integers(0, 2000), st.integers(1, 4000), st.integers(0, 100), st.integers(0, 3)
        ),
        min_size=1,
        max_size=100,
    ),
)
def test_tokens_used_never_exceed_rate_plus_burst(
    limit: int, asks: list[tuple[int, int, int, int]]
) -> None:
    clock = ManualClock()
    limiter = Limiter([{"scope": "key", "tokens_per_minute": limit}], clock=clock)
    used: list[tuple[int, int]] = []
    open_handles: deque[tuple[int, int]] = deque()
    now_ns = 0
    for gap_ms, reserved, percent, keep_open in asks:
        clock.advance(gap_ms / 1000)
        now_ns += gap_ms * 1_000_000
        admission = limiter.admit(RequestContext(key="k", input_tokens=reserved))
        if admission.admitted:
            tokens = reserved * percent // 100
            used.append((now_ns, tokens))
            open_handles.append((admission.handle, tokens))
        # Settle out of order with later admissions, using only part of the reservation.
        while len(open_handles) > keep_open:
            handle, tokens = open_handles.popleft()
            assert limiter.settle(handle, tokens, 0)
    assert_window_bound(used, limit, emission_ns(limit, 60))


@settings(max_examples=150, deadline=None)
@given(cap=st.integers(1, 6), ops=st.lists(st.booleans(), min_size=1, max_size=200))
def test_concurrency_never_exceeds_its_cap(cap: int, ops: list[bool]) -> None:
    limiter = Limiter([{"scope": "team", "concurrency": cap}])
    in_flight: list[int] = []
    for admit in ops:
        if admit:
            admission = limiter.admit(RequestContext(team="t"))
            assert admission.admitted == (len(in_flight) < cap)
            if admission.admitted:
                in_flight.append(admission.handle)
        elif in_flight:
            assert limiter.settle(in_flight.pop())
        assert len(in_flight) <= cap
        entries = limiter.snapshot()[0]["entries"]
        assert sum(e["in_flight"] for e in entries) == len(in_flight)
