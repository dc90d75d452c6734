"""Retry rules: which failures are retried, how long to wait, how many retries a budget allows."""

from __future__ import annotations

import random
from email.utils import formatdate

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiofast.routing import RetryBudget, Verdict, backoff_delay, classify, retry_after


def error_body(code: str) -> bytes:
    return orjson.dumps({"error": {"message": "x", "type": "error", "code": code}})


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (408, b"", Verdict.RETRY),
        (409, b"", Verdict.RETRY),
        (429, error_body("rate_limit_exceeded"), Verdict.RETRY),
        (429, error_body("insufficient_quota"), Verdict.FALLBACK),
        (500, b"", Verdict.RETRY),
        (503, b"not json", Verdict.RETRY),
        (
            529,
            orjson.dumps({"type": "error", "error": {"type": "overloaded_error"}}),
            Verdict.RETRY,
        ),
        (400, error_body("context_length_exceeded"), Verdict.FALLBACK),
        (400, error_body("invalid_request_error"), Verdict.STOP),
        (401, b"", Verdict.FALLBACK),
        (404, b"", Verdict.FALLBACK),
        (413, b"", Verdict.STOP),
        (422, b"", Verdict.STOP),
    ],
)
def test_classification_follows_provider_rules(status: int, body: bytes, verdict: Verdict) -> None:
    assert classify(status, body) is verdict


def test_should_retry_header_overrides_the_status() -> None:
    assert classify(400, b"", {"x-should-retry": "true"}) is Verdict.RETRY
    assert classify(503, b"", {"x-should-retry": "false"}) is Verdict.FALLBACK


def test_stop_is_the_only_verdict_that_spares_the_deployment() -> None:
    assert [v.blames_deployment for v in Verdict] == [True, True, False]


def test_retry_after_precedence_and_formats() -> None:
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after": "1.5"}) == 1.5
    assert retry_after({}) is None
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({"retry-after-ms": "x", "retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "-4"}) == 0.0
    date = formatdate(1_000_030.0, usegmt=True)
    assert retry_after({"retry-after": date}, now=1_000_000.0) == pytest.approx(30.0)


@given(
    retry=st.integers(0, 100),
    base=st.floats(0.001, 5),
    cap=st.floats(0.01, 60),
    seed=st.integers(0, 2**32),
)
def test_full_jitter_stays_within_its_ceiling(
    retry: int, base: float, cap: float, seed: int
) -> None:
    delay = backoff_delay(retry, base, cap, random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2.0**retry)


def test_full_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(3, 0.5, 30.0, rng) for _ in range(2000)]
    assert max(delays) <= 4.0
    # Full jitter, not the SDKs' [0.75, 1] band: a quarter of the draws fall below 1 s.
    assert 400 < sum(d < 1.0 for d in delays) < 600


@given(requests=st.integers(0, 5000), ratio=st.floats(0.0, 1.0), burst=st.floats(0.0, 50.0))
def test_retry_budget_bounds_retries_by_the_ratio(
    requests: int, ratio: float, burst: float
) -> None:
    budget = RetryBudget(ratio, burst)
    retries = 0
    for _ in range(requests):
        budget.on_request()
        while budget.try_spend():
            retries += 1
    assert retries <= burst + ratio * requests + 1e-6
