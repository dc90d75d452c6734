"""Replaying prompt files through a gateway: "what would this traffic cost, and how fast?".

:func:`load_conversations` reads JSON or JSONL in the common layouts: MT-Bench and
Vicuna (``turns``), Alpaca (``instruction`` / ``input``), Alpaca seed tasks
(``instances``), ShareGPT (``conversations`` of ``from`` / ``value``) and recorded
traffic (OpenAI chat request bodies, one per line, possibly under ``"request"``).
:func:`replay` sends them to a gateway: the turns of one conversation in order, each
with the replies so far, several conversations at once. :class:`ReplayReport` sums up
requests, tokens, cost by tier and model, latency percentiles and errors, from the
``x-aiofast-*`` facts of each answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from aiofast.errors import InvalidInputError

__all__ = ["Conversation", "ReplayReport", "load_conversations", "replay"]


@dataclass(slots=True)
class Conversation:
    """User turns to send in order; ``request`` holds a recorded body sent as is."""

    turns: list[str] = field(default_factory=list)
    system: str | None = None
    request: dict[str, Any] | None = None

    @property
    def requests(self) -> int:
        return 1 if self.request is not None else len(self.turns)


def load_conversations(path: str | Path) -> list[Conversation]:
    """Read a prompts or traffic file; the layout is recognised record by record."""
    file = Path(path)
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(f"prompts file {str(file)!r} does not exist") from None
    records = _records(text, str(file))
    conversations = []
    for index, record in enumerate(records):
        conversation = _conversation(record)
        if conversation is None:
            raise InvalidInputError(
                f"{file}: record {index} is in no known layout (MT-Bench 'turns', Alpaca "
                "'instruction', ShareGPT 'conversations', or a chat request with 'messages')"
            )
        if conversation.requests:
            conversations.append(conversation)
    return conversations


def _records(text: bytes, name: str) -> list[dict[str, Any]]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list):
        return [r for r in data if isinstance(r, dict)]
    if isinstance(data, dict):
        return [data]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"{name}:{number}: not JSON ({exc})") from None
        if isinstance(record, dict):
            records.append(record)
    return records


def _conversation(record: Mapping[str, Any]) -> Conversation | None:
    if isinstance(record.get("turns"), list):
        return Conversation(turns=[str(turn) for turn in record["turns"]])
    if isinstance(record.get("conversations"), list):
        turns, system = [], None
        for message in record["conversations"]:
            speaker = message.get("from")
            if speaker == "human":
                turns.append(str(message.get("value", "")))
            elif speaker == "system":
                system = str(message.get("value", ""))
        return Conversation(turns=turns, system=system)
    if isinstance(record.get("instruction"), str):
        extra = record.get("input")
        instances = record.get("instances")
        if not extra and isinstance(instances, list) and instances:
            extra = instances[0].get("input")
        prompt = record["instruction"] + (f"\n\n{extra}" if extra else "")
        return Conversation(turns=[prompt])
    request = record.get("request", record)
    if isinstance(request, dict) and isinstance(request.get("messages"), list):
        return Conversation(request=dict(request))
    return None


@dataclass(slots=True)
class _Result:
    status: int
    latency: float
    tier: str = ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    error: str = ""


@dataclass(slots=True)
class ReplayReport:
    """What a replay sent, what it cost and how long it took."""

    results: list[_Result] = field(default_factory=list)
    elapsed: float = 0.0

    def summary(self) -> dict[str, Any]:
        results = self.results
        ok = [r for r in results if r.status == 200]
        latencies = sorted(r.latency for r in ok)
        groups: dict[tuple[str, str], list[_Result]] = defaultdict(list)
        for result in ok:
            groups[(result.tier, result.model)].append(result)
        return {
            "requests": len(results),
            "succeeded": len(ok),
            "errors": dict(Counter(r.error or str(r.status) for r in results if r.status != 200)),
            "input_tokens": sum(r.input_tokens for r in ok),
            "output_tokens": sum(r.output_tokens for r in ok),
            "cost_usd": round(sum(r.cost for r in ok), 8),
            "elapsed_s": round(self.elapsed, 3),
            "requests_per_s": round(len(results) / self.elapsed, 2) if self.elapsed else None,
            "latency_ms": {
                name: round(_percentile(latencies, q) * 1000, 1)
                for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            }
            if latencies
            else {},
            "by_tier_model": [
                {
                    "tier": tier,
                    "model": model,
                    "requests": len(group),
                    "input_tokens": sum(r.input_tokens for r in group),
                    "output_tokens": sum(r.output_tokens for r in group),
                    "cost_usd": round(sum(r.cost for r in group), 8),
                }
                for (tier, model), group in sorted(groups.items())
            ],
        }


def _percentile(ordered: Sequence[float], q: float) -> float:
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


Progress = Callable[[int, int, ReplayReport], None]


async def replay(
    conversations: Sequence[Conversation],
    url: str,
    *,
    concurrency: int = 4,
    model: str | None = None,
    api_key: str | None = None,
    max_tokens: int | None = None,
    progress: Progress | None = None,
) -> ReplayReport:
    """Send every conversation to the gateway at ``url``; ``model`` overrides recorded ones."""
    if concurrency < 1:
        raise InvalidInputError(f"concurrency must be at least 1, got {concurrency}")
    report = ReplayReport()
    total = sum(c.requests for c in conversations)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    endpoint = url.rstrip("/") + "/v1/chat/completions"
    queue: asyncio.Queue[Conversation] = asyncio.Queue()
    for conversation in conversations:
        queue.put_nowait(conversation)

    def record(result: _Result) -> None:
        report.results.append(result)
        if progress is not None:
            progress(len(report.results), total, report)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            conversation = queue.get_nowait()
            for body in _bodies(conversation, model, max_tokens):
                result, reply = await _send(session, endpoint, body)
                record(result)
                if reply is None:
                    break
                body["messages"].append({"role": "assistant", "content": reply})

    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    report.elapsed = time.perf_counter() - started
    return report


def _bodies(conversation: Conversation, model: str | None, max_tokens: int | None) -> Any:
    """Request bodies of one conversation; each later turn extends the same messages."""
    if conversation.request is not None:
        body = dict(conversation.request)
        body["messages"] = list(body["messages"])
        body.pop("stream", None)
        body.pop("stream_options", None)
        if model:
            body["model"] = model
        yield body
        return
    messages: list[dict[str, Any]] = []
    if conversation.system:
        messages.append({"role": "system", "content": conversation.system})
    body = {"model": model or "small", "messages": messages}
    if max_tokens:
        body["max_tokens"] = max_tokens
    for turn in conversation.turns:
        messages.append({"role": "user", "content": turn})
        yield body


async def _send(
    session: aiohttp.ClientSession, endpoint: str, body: dict[str, Any]
) -> tuple[_Result, str | None]:
    started = time.perf_counter()
    try:
        async with session.post(endpoint, data=orjson.dumps(body)) as response:
            raw = await response.read()
            latency = time.perf_counter() - started
            headers = response.headers
            if response.status != 200:
                return _Result(
                    response.status, latency, error=_error_code(raw, response.status)
                ), None
            answer = orjson.loads(raw)
            cost = headers.get("x-aiofast-cost-usd", "0")
            result = _Result(
                status=200,
                latency=latency,
                tier=headers.get("x-aiofast-tier", ""),
                model=headers.get("x-aiofast-model", str(answer.get("model", ""))),
                input_tokens=int(headers.get("x-aiofast-input-tokens", 0)),
                output_tokens=int(headers.get("x-aiofast-output-tokens", 0)),
                cost=0.0 if cost == "unknown" else float(cost),
            )
            message = (answer.get("choices") or [{}])[0].get("message") or {}
            return result, str(message.get("content") or "")
    except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError) as exc:
        return _Result(0, time.perf_counter() - started, error=type(exc).__name__), None


def _error_code(raw: bytes, status: int) -> str:
    try:
        error = orjson.loads(raw).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return str(status)
    return f"{status} {error.get('code') or error.get('type') or ''}".strip()
