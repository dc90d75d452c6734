"""The usage ledger: one row per request in SQLite, written off the event loop.

:meth:`Ledger.record` only appends the event to a deque (well under a microsecond on
the request path); a writer thread wakes every ``ledger.flush_interval`` seconds (or
when ``ledger.batch_size`` events wait) and writes them in batches, one transaction per
batch, so the loop never waits on the disk. :meth:`Ledger.close` drains what is left before it
returns, so a graceful shutdown loses nothing. Reads (``/aiofast/usage``,
``aiofast report``) open their own connection; WAL mode lets them run while the
writer writes.
"""

from __future__ import annotations

import itertools
import logging
import operator
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from functools import partial
from typing import Any

from aiofast.errors import ConfigError
from aiofast.policy import LedgerPolicy

__all__ = ["GROUPS", "SUPERSEDED_ERROR", "Ledger", "UsageEvent", "summarize"]

logger = logging.getLogger("aiofast.ledger")

# error_type of the row of an answer a cascade billed but did not serve. Such a row counts
# in tokens and cost (charged to its own model) but is not a request, nor an error.
SUPERSEDED_ERROR = "cascade_superseded"


@dataclass(slots=True)
class UsageEvent:
    """Everything recorded about one request. Times are Unix seconds, latencies ms.

    ``input_tokens`` counts every prompt token; ``cached_tokens`` (read from the prompt
    cache) and ``cache_write_tokens`` are the parts of it priced differently.
    ``output_tokens`` includes ``reasoning_tokens``.
    """

    request_id: str
    # The app request a Client call was made for (middleware), else empty.
    parent_id: str
    started_at: float
    finished_at: float
    api: str
    stream: bool
    key: str
    user: str
    team: str
    requested_model: str
    model: str
    tier: str
    route: str
    upstream: str
    deployment: str
    policy_version: str
    status: int
    error_type: str
    usage_source: str
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float | None
    latency_ms: float
    ttft_ms: float | None
    upstream_ms: float | None
    attempts: int
    tool_calls: str
    tool_call_count: int


_COLUMNS = [f.name for f in fields(UsageEvent)]
_SQL_TYPES = {"float": "REAL", "float | None": "REAL", "int": "INTEGER", "bool": "INTEGER"}

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS usage_events ("
    + ", ".join(
        f"{f.name} {_SQL_TYPES.get(str(f.type), 'TEXT')}"
        + (" PRIMARY KEY" if f.name == "request_id" else "")
        for f in fields(UsageEvent)
    )
    + ")",
    "CREATE INDEX IF NOT EXISTS usage_events_started ON usage_events (started_at)",
    "CREATE TABLE IF NOT EXISTS outcomes ("
    "request_id TEXT PRIMARY KEY, success INTEGER NOT NULL, reported_at REAL NOT NULL, "
    "detail TEXT NOT NULL DEFAULT '')",
)
_INSERT_EVENT = (
    f"INSERT OR REPLACE INTO usage_events ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_INSERT_OUTCOME = (
    "INSERT OR REPLACE INTO outcomes (request_id, success, reported_at, detail) VALUES (?, ?, ?, ?)"
)

# Columns a summary may be grouped by, by their public name.
GROUPS = {
    "key": "key",
    "user": "user",
    "team": "team",
    "model": "model",
    "requested_model": "requested_model",
    "tier": "tier",
    "upstream": "upstream",
    "deployment": "deployment",
    "policy_version": "policy_version",
    "api": "api",
    "status": "status",
}

_memory_ids = itertools.count()
_event_row = operator.attrgetter(*_COLUMNS)


@dataclass(slots=True)
class _Outcome:
    request_id: str
    success: bool
    reported_at: float
    detail: str


class Ledger:
    """A SQLite usage ledger with a batching writer thread."""

    def __init__(self, policy: LedgerPolicy) -> None:
        self.batch_size = policy.batch_size
        self.flush_interval = policy.flush_interval
        if policy.path:
            self.database, self._uri = policy.path, False
        else:
            # A shared in-memory database, so reader connections see the writer's rows.
            self.database = f"file:aiofast-ledger-{next(_memory_ids)}?mode=memory&cache=shared"
            self._uri = True
        # deque.append and popleft are atomic, so the loop appends without a lock and
        # without waking the writer: waking a thread per request would hand it the GIL
        # in the middle of the event loop's work.
        self._pending: deque[UsageEvent | _Outcome] = deque()
        self._wake = threading.Event()
        self._written = threading.Condition()
        self._generation = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._keeper: sqlite3.Connection | None = None
        self.dropped = 0

    def connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.database, uri=self._uri, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ConfigError(f"ledger.path: cannot open {self.database!r}: {exc}") from None
        connection.execute("PRAGMA busy_timeout = 5000")
        return connection

    def start(self) -> None:
        """Create the schema, then start the writer thread."""
        self._keeper = self.connect()
        if not self._uri:
            self._keeper.execute("PRAGMA journal_mode = WAL")
        for statement in _SCHEMA:
            self._keeper.execute(statement)
        self._keeper.commit()
        self._stopping = False
        self._thread = threading.Thread(target=self._write_loop, name="aiofast-ledger", daemon=True)
        self._thread.start()

    def record(self, event: UsageEvent) -> None:
        pending = self._pending
        pending.append(event)
        if len(pending) >= self.batch_size:
            self._wake.set()

    def record_outcome(self, request_id: str, success: bool, detail: str = "") -> None:
        self._pending.append(_Outcome(request_id, success, time.time(), detail))

    def flush(self, timeout: float = 10.0) -> None:
        """Block until every record made before the call is committed."""
        if self._thread is None:
            return
        with self._written:
            start = self._generation
            # A pass already under way may have missed the latest records; the pass after
            # it cannot have, so wait for two.
            for passes in (1, 2):
                self._wake.set()
                self._written.wait_for(partial(self._passed, start + passes), timeout)

    def _passed(self, generation: int) -> bool:
        return self._generation >= generation

    def close(self) -> None:
        """Write what is pending, then stop the writer."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None

    def summarize(
        self, group_by: Sequence[str], since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        connection = self.connect()
        try:
            return summarize(connection, group_by, since, until)
        finally:
            connection.close()

    def _write_loop(self) -> None:
        connection = self.connect()
        try:
            while True:
                self._wake.wait(self.flush_interval)
                self._wake.clear()
                stopping = self._stopping
                self._drain(connection)
                with self._written:
                    self._generation += 1
                    self._written.notify_all()
                if stopping:
                    return
        finally:
            connection.close()

    def _drain(self, connection: sqlite3.Connection) -> None:
        pending = self._pending
        while pending:
            batch: list[UsageEvent | _Outcome] = []
            try:
                while len(batch) < self.batch_size:
                    batch.append(pending.popleft())
            except IndexError:
                pass
            self._write(connection, batch)

    def _write(self, connection: sqlite3.Connection, batch: list[UsageEvent | _Outcome]) -> None:
        events = [_event_row(item) for item in batch if isinstance(item, UsageEvent)]
        outcomes = [astuple(item) for item in batch if isinstance(item, _Outcome)]
        try:
            with connection:
                connection.executemany(_INSERT_EVENT, events)
                connection.executemany(_INSERT_OUTCOME, outcomes)
        except Exception:
            # Whatever went wrong (disk full, locked file, a bad value), the writer lives
            # on: losing a batch is better than losing every later one.
            self.dropped += len(batch)
            logger.exception("ledger write failed; %d records lost", len(batch))


def summarize(
    connection: sqlite3.Connection,
    group_by: Sequence[str],
    since: float | None = None,
    until: float | None = None,
) -> list[dict[str, Any]]:
    """Requests, tokens, cost and cost per successful outcome, grouped by ``group_by``."""
    unknown = [name for name in group_by if name not in GROUPS]
    if unknown:
        raise ValueError(f"cannot group by {unknown}; choose from {sorted(GROUPS)}")
    columns = [f"e.{GROUPS[name]}" for name in group_by]
    select = "".join(
        f"{column} AS {name}, " for column, name in zip(columns, group_by, strict=True)
    )
    where, params = _period(since, until)
    sql = (
        f"SELECT {select}SUM(e.error_type != '{SUPERSEDED_ERROR}') AS requests, "
        f"SUM(e.status >= 400 OR e.error_type NOT IN ('', '{SUPERSEDED_ERROR}')) AS errors, "
        "SUM(e.input_tokens) AS input_tokens, SUM(e.cached_tokens) AS cached_tokens, "
        "SUM(e.output_tokens) AS output_tokens, SUM(e.reasoning_tokens) AS reasoning_tokens, "
        "ROUND(SUM(COALESCE(e.cost_usd, 0)), 9) AS cost_usd, "
        "SUM(e.cost_usd IS NULL) AS unpriced, "
        "COUNT(DISTINCT CASE WHEN o.success = 1 THEN o.request_id END) AS successes, "
        "COUNT(DISTINCT CASE WHEN o.success = 0 THEN o.request_id END) AS failures, "
        f"ROUND(AVG(CASE WHEN e.error_type != '{SUPERSEDED_ERROR}' THEN e.latency_ms END), 3)"
        " AS mean_latency_ms "
        # An outcome reported for an app request covers the LLM calls made for it.
        "FROM usage_events e LEFT JOIN outcomes o "
        "ON o.request_id = COALESCE(NULLIF(e.parent_id, ''), e.request_id)"
        f"{where}"
        + (f" GROUP BY {', '.join(columns)}" if columns else "")
        + " ORDER BY cost_usd DESC"
    )
    connection.row_factory = sqlite3.Row
    rows = [dict(row) for row in connection.execute(sql, params)]
    for row in rows:
        successes = row["successes"] or 0
        row["successes"] = successes
        row["failures"] = row["failures"] or 0
        row["cost_per_success_usd"] = round(row["cost_usd"] / successes, 9) if successes else None
    return rows


def _period(since: float | None, until: float | None) -> tuple[str, list[float]]:
    clauses: list[str] = []
    params: list[float] = []
    if since is not None:
        clauses.append("e.started_at >= ?")
        params.append(since)
    if until is not None:
        clauses.append("e.started_at < ?")
        params.append(until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
