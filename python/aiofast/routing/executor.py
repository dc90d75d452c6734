"""Carries out a routing decision: timeouts, retries, fallbacks, breakers, cascades.

The executor knows nothing of HTTP clients: it is handed a *call* function that sends the
request to one deployment and returns a :class:`Reply` (raising ``OSError``,
``aiohttp.ClientError`` or ``TimeoutError`` on transport failures). Every call is
reported to the router, so latency averages, in-flight counts and breakers follow what
really happened.

Invariants a request can rely on:

- at most ``retry.max_attempts`` calls in total, over retries, fallbacks and a cascade,
  and no call starts after ``retry.deadline`` seconds;
- a deployment is tried in at most one run of consecutive attempts (a visited set), so a
  fallback graph with cycles cannot loop;
- a retry waits at least what the upstream asked (``retry-after-ms``/``retry-after``),
  and a wait longer than ``retry.retry_after_cap`` falls back instead;
- retries on the same deployment spend the shared retry budget; fallbacks do not, they
  are bounded by the attempt cap and the breakers;
- a stream falls back only before its first chunk reached the caller; a later failure
  ends it with an SSE error event.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import aiohttp
import orjson

from aiofast._core import RouteFacts
from aiofast.errors import RouteExhaustedError, UpstreamError
from aiofast.routing.constraints import OutputCheck
from aiofast.routing.retry import RetryBudget, Verdict, backoff_delay, classify, retry_after
from aiofast.routing.router import Router
from aiofast.routing.spec import DeploymentSpec, Timeouts

__all__ = ["Attempt", "Call", "Decision", "Executor", "Plan", "Reply", "Routed"]

logger = logging.getLogger("aiofast.routing")

T = TypeVar("T")

# A stream that ends without one of these in its last bytes was cut short.
_STREAM_ENDINGS = (b"[DONE]", b"message_stop")
_TAIL = 64


@dataclass(frozen=True, slots=True)
class Reply:
    """An upstream's reply. ``headers`` must be case-insensitive or use lowercase keys.

    Error replies (status >= 400) carry their whole ``body``. A streamed success carries
    ``chunks`` instead, not yet read; ``release`` frees the connection behind it. ``data``
    is the body already parsed as a JSON object, when the caller parsed it anyway: the
    cascade's output check then reads it instead of parsing the body a second time.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None
    release: Callable[[], Awaitable[None]] | None = None
    data: dict[str, Any] | None = None

    def answer(self) -> bytes | Mapping[str, Any]:
        """The whole answer for an output check: parsed when it was, else the bytes."""
        return self.body if self.data is None else self.data


Call = Callable[[DeploymentSpec, Timeouts], Awaitable[Reply]]


class Decision(Protocol):
    """What the executor reads from a decision; :class:`aiofast.routing.RouteDecision`
    has it, and so does a hand-made :class:`Plan`."""

    @property
    def candidates(self) -> Sequence[str]: ...

    @property
    def tier(self) -> str: ...

    @property
    def escalation_tier(self) -> str | None: ...

    @property
    def assignments(self) -> Sequence[tuple[str, str, bool]]: ...

    def explain(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """A decision made outside the router, for example a client naming one deployment."""

    candidates: Sequence[str]
    tier: str
    explanation: str
    escalation_tier: str | None = None
    assignments: Sequence[tuple[str, str, bool]] = ()

    def explain(self) -> str:
        return self.explanation


@dataclass(slots=True)
class Attempt:
    """One call: where it went, how it ended, and what the executor did next."""

    deployment: str
    tier: str
    started: float
    elapsed: float
    status: int | None
    error: str | None
    next_step: str  # "done", "retry", "fallback", "stop", "cascade" or "skipped"
    waited: float = 0.0


@dataclass(slots=True)
class Routed:
    """The answer that won, with everything the usage event and the headers need."""

    reply: Reply
    deployment: DeploymentSpec
    decision: Decision
    tier: str
    attempts: list[Attempt]
    cascade: str | None = None
    constraint_failure: str | None = None
    superseded: list[tuple[DeploymentSpec, Reply]] = field(default_factory=list)
    stream: AsyncIterator[bytes] | None = None
    stream_error: str | None = None

    def route_header(self) -> str:
        """The ``x-aiofast-route`` value: the decision's explanation plus what happened."""
        parts = [self.decision.explain(), f"served_by={self.deployment.name}"]
        parts.append(f"attempts={len(self.calls())}")
        if self.cascade is not None:
            parts.append(f"cascade={self.cascade}:{self.tier}")
        return "; ".join(parts)

    def calls(self) -> list[Attempt]:
        return [a for a in self.attempts if a.next_step != "skipped"]

    def usage_fields(self) -> dict[str, Any]:
        """Fields of the usage event that describe routing."""
        return {
            "route": self.route_header(),
            "tier": self.tier,
            "deployment": self.deployment.name,
            "experiments": {e: v for e, v, _ in self.decision.assignments},
            "attempts": len(self.calls()),
            "cascade": self.cascade,
            "stream_error": self.stream_error,
        }


@dataclass(slots=True)
class _Outcome:
    reply: Reply | None
    first_chunk: bytes | None
    verdict: Verdict | None  # None: success
    error: str | None
    wait: float | None = None
    detail: str = ""


@dataclass(slots=True)
class _Request:
    call: Call
    stream: bool
    deadline: float
    attempts: list[Attempt] = field(default_factory=list)
    visited: set[str] = field(default_factory=set)
    last_error: Reply | None = None
    last_reason: str = "no_candidate"
    last_detail: str = ""

    def calls_made(self) -> int:
        return sum(1 for a in self.attempts if a.next_step != "skipped")


if sys.version_info >= (3, 11):

    async def _within(awaitable: Awaitable[T], seconds: float) -> T:
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # pragma: no cover - Python 3.10 has no asyncio.timeout

    async def _within(awaitable: Awaitable[T], seconds: float) -> T:
        return await asyncio.wait_for(awaitable, seconds)


class _StreamDeadline:
    """One timer for a whole stream: reads past the deadline raise TimeoutError.

    An ``asyncio.timeout`` around every chunk would arm and disarm a timer per chunk
    (several microseconds each); this arms one per stream. When it fires during a read,
    it cancels the reading task the way ``asyncio.timeout`` does, and the read raises
    TimeoutError; when it fires between reads, the next read raises it at once. A
    cancellation from elsewhere stays a cancellation.
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_reader", "_timed_out")

    def __init__(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(loop.time() + seconds, self._expire)
        self._timed_out = False
        self._fired = False
        self._reader: asyncio.Task[Any] | None = None
        self._cancelling = 0

    def _expire(self) -> None:
        self._timed_out = True
        if self._reader is not None:
            self._fired = True
            self._reader.cancel()

    async def read(self, chunks: AsyncIterator[bytes]) -> bytes:
        """The next chunk; StopAsyncIteration at the end, TimeoutError past the deadline."""
        if self._timed_out:
            raise TimeoutError("stream deadline passed")
        task = asyncio.current_task()
        if task is None or sys.version_info < (3, 11):  # pragma: no cover - no uncancel()
            remaining = self._handle.when() - asyncio.get_running_loop().time()
            return await _within(chunks.__anext__(), max(remaining, 0.0))
        self._reader, self._cancelling = task, task.cancelling()
        try:
            return await chunks.__anext__()
        except asyncio.CancelledError as exc:
            if self._fired and task.uncancel() <= self._cancelling:
                raise TimeoutError("stream deadline passed") from exc
            raise
        finally:
            self._reader = None

    def close(self) -> None:
        self._handle.cancel()


def _error_event(code: str, message: str) -> bytes:
    error = {"message": message, "type": "upstream_error", "code": code}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


def _looks_like_error_event(chunk: bytes) -> bool:
    head = chunk.lstrip()[:40]
    return head.startswith((b"event: error", b'data: {"error"', b'data: {"type":"error"'))


class Executor:
    """Runs decisions of one router; one executor serves every request of a process."""

    def __init__(
        self,
        router: Router,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stream_failures: Literal["event", "raise"] = "event",
    ) -> None:
        self.router = router
        self.retry = router.spec.retry
        self.cascade_spec = router.spec.cascade
        self.budget = RetryBudget(self.retry.budget_ratio, self.retry.budget_burst)
        self._rng = rng or random.Random()
        self._sleep = sleep
        # "event": a committed stream that fails ends with an OpenAI-style SSE error event;
        # "raise": it raises UpstreamError, for a caller that writes its own error event.
        self._stream_failures = stream_failures

    async def run(
        self,
        decision: Decision,
        call: Call,
        *,
        facts: RouteFacts,
        stream: bool = False,
        check: OutputCheck | None = None,
    ) -> Routed:
        """Tries the decision's candidates until one answers; raises
        :class:`RouteExhaustedError` when none does."""
        self.budget.on_request()
        request = _Request(call, stream, self.router.clock() + self.retry.deadline)
        routed = await self._first_answer(decision, decision, request)
        if stream or check is None or not self.cascade_spec.enabled:
            return routed
        return await self._maybe_cascade(routed, check, facts, request)

    async def _maybe_cascade(
        self, routed: Routed, check: OutputCheck, facts: RouteFacts, request: _Request
    ) -> Routed:
        reason = check.failure(routed.reply.answer())
        routed.constraint_failure = reason
        upper_tier = routed.decision.escalation_tier
        if reason is None or upper_tier is None or self.cascade_spec.shadow:
            return routed
        if request.calls_made() >= self.retry.max_attempts:
            return routed
        routed.attempts[-1].next_step = "cascade"
        upper = self.router.decide_tier(facts, upper_tier)
        try:
            second = await self._first_answer(routed.decision, upper, request)
        except RouteExhaustedError:
            logger.info("cascade to %s found no answer; keeping the first", upper_tier)
            return routed
        second.cascade = reason
        second.superseded.append((routed.deployment, routed.reply))
        second.constraint_failure = check.failure(second.reply.answer())
        return second

    async def _first_answer(
        self, decision: Decision, current: Decision, request: _Request
    ) -> Routed:
        for name in current.candidates:
            if self.router.clock() >= request.deadline:
                request.last_reason = "deadline"
                break
            if name in request.visited:
                continue
            request.visited.add(name)
            deployment = self.router.deployment(name)
            outcome = await self._try_deployment(deployment, current.tier, request)
            if outcome is None or outcome.reply is None:
                continue
            routed = Routed(
                outcome.reply,
                deployment,
                decision,
                current.tier,
                request.attempts,
            )
            if request.stream:
                routed.stream = self._relay(routed, outcome)
            return routed
        raise self._exhausted(request)

    def _exhausted(self, request: _Request) -> RouteExhaustedError:
        made = request.calls_made()
        message = (
            f"no deployment answered after {made} attempt(s) "
            f"(last failure: {request.last_reason}{request.last_detail}); "
            "see the x-aiofast-route header"
        )
        return RouteExhaustedError(
            message, reason=request.last_reason, attempts=request.attempts, reply=request.last_error
        )

    async def _try_deployment(
        self, deployment: DeploymentSpec, tier: str, request: _Request
    ) -> _Outcome | None:
        """Calls one deployment, retrying it while that is allowed; None means move on."""
        retries = 0
        waited = 0.0
        while request.calls_made() < self.retry.max_attempts:
            now = self.router.clock()
            if not self.router.start(deployment.name):
                request.attempts.append(
                    Attempt(deployment.name, tier, now, 0.0, None, "breaker_open", "skipped")
                )
                return None
            outcome = await self._attempt(deployment, request)
            elapsed = self.router.clock() - now
            status = outcome.reply.status if outcome.reply else None
            attempt = Attempt(deployment.name, tier, now, elapsed, status, outcome.error, "done")
            attempt.waited = waited
            request.attempts.append(attempt)
            if outcome.verdict is None:
                return outcome
            request.last_reason = outcome.error or "error"
            request.last_detail = f": {outcome.detail}" if outcome.detail else ""
            if outcome.reply is not None:
                request.last_error = outcome.reply
            if outcome.verdict is Verdict.STOP:
                attempt.next_step = "stop"
                raise self._exhausted(request)
            delay = self._retry_delay(outcome, retries, request)
            if delay is None:
                attempt.next_step = "fallback"
                logger.info(
                    "falling back from %s after %s", deployment.name, outcome.error or "error"
                )
                return None
            attempt.next_step = "retry"
            logger.debug("retrying %s in %.3fs after %s", deployment.name, delay, outcome.error)
            await self._sleep(delay)
            waited = delay
            retries += 1
        return None

    def _retry_delay(self, outcome: _Outcome, retries: int, request: _Request) -> float | None:
        """Seconds to wait before retrying the same deployment, or None to fall back."""
        if outcome.verdict is not Verdict.RETRY:
            return None
        if retries >= self.retry.retries_per_deployment:
            return None
        if request.calls_made() >= self.retry.max_attempts:
            return None
        if outcome.wait is not None and outcome.wait > self.retry.retry_after_cap:
            return None
        if outcome.wait is not None:
            delay = outcome.wait
        else:
            delay = backoff_delay(retries, self.retry.base_delay, self.retry.max_delay, self._rng)
        if self.router.clock() + delay >= request.deadline:
            return None
        if not self.budget.try_spend():
            return None
        return delay

    async def _attempt(self, deployment: DeploymentSpec, request: _Request) -> _Outcome:
        """One call, reported to the router (streams report when they end)."""
        timeouts = self.router.timeouts(deployment.name)
        started = self.router.clock()
        try:
            if request.stream:
                reply, first = await _within(
                    self._open_stream(request.call, deployment, timeouts), timeouts.first_token
                )
            else:
                reply = await _within(request.call(deployment, timeouts), timeouts.total)
                first = None
        except asyncio.CancelledError:
            self.router.abandon(deployment.name)
            raise
        except (TimeoutError, asyncio.TimeoutError) as exc:
            self.router.record(deployment.name, False)
            return _Outcome(None, None, Verdict.RETRY, "timeout", detail=str(exc))
        except (OSError, aiohttp.ClientError, _StreamFailure) as exc:
            self.router.record(deployment.name, False)
            if isinstance(exc, _StreamFailure):
                return _Outcome(None, None, Verdict.RETRY, str(exc))
            return _Outcome(None, None, Verdict.RETRY, "connection", detail=str(exc))
        if reply.status >= 400:
            verdict = classify(reply.status, reply.body, reply.headers)
            self.router.record(deployment.name, not verdict.blames_deployment)
            wait = retry_after(reply.headers)
            return _Outcome(reply, None, verdict, f"http_{reply.status}", wait)
        if not request.stream:
            self.router.record(deployment.name, True, self.router.clock() - started)
        return _Outcome(reply, first, None, None)

    async def _open_stream(
        self, call: Call, deployment: DeploymentSpec, timeouts: Timeouts
    ) -> tuple[Reply, bytes | None]:
        """Sends the call and waits for the first chunk, which decides commitment."""
        reply = await call(deployment, timeouts)
        if reply.status >= 400 or reply.chunks is None:
            return reply, None
        try:
            first = await reply.chunks.__anext__()
        except StopAsyncIteration:
            await _release(reply)
            raise _StreamFailure("empty_stream") from None
        except BaseException:
            await _release(reply)
            raise
        if _looks_like_error_event(first):
            await _release(reply)
            raise _StreamFailure("stream_error_event")
        return reply, first

    async def _relay(self, routed: Routed, outcome: _Outcome) -> AsyncIterator[bytes]:
        """Yields the committed stream; a failure past this point becomes an error event."""
        reply = routed.reply
        name = routed.deployment.name
        timeouts = self.router.timeouts(name)
        attempt = routed.attempts[-1]
        deadline = attempt.started + timeouts.total
        first = outcome.first_chunk or b""
        tail = first[-_TAIL:]
        failure: str | None = None
        finished = False
        timer = _StreamDeadline(max(deadline - self.router.clock(), 0.0))
        try:
            yield first
            while reply.chunks is not None:
                try:
                    chunk = await timer.read(reply.chunks)
                except StopAsyncIteration:
                    break
                tail = (tail + chunk)[-_TAIL:]
                yield chunk
            if not any(ending in tail for ending in _STREAM_ENDINGS):
                failure = "stream_cut"
            finished = True
        except (TimeoutError, asyncio.TimeoutError):
            failure, finished = "timeout", True
        except (OSError, aiohttp.ClientError):
            failure, finished = "stream_cut", True
        finally:
            timer.close()
            await _release(reply)
            if finished:
                self.router.record(name, failure is None, attempt.elapsed)
            else:
                # The consumer stopped reading (client gone): no verdict on the upstream.
                self.router.abandon(name)
        if failure is not None:
            routed.stream_error = failure
            logger.warning("stream from %s failed after the first chunk: %s", name, failure)
            message = f"the upstream stream from {name!r} failed ({failure})"
            if self._stream_failures == "raise":
                raise UpstreamError(message)
            yield _error_event(failure, message)


class _StreamFailure(Exception):
    """A stream that failed before its first chunk reached the caller."""


async def _release(reply: Reply) -> None:
    if reply.release is not None:
        await reply.release()
