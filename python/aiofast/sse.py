"""Incremental parsing of ``text/event-stream`` bodies.

Network reads split a stream anywhere: inside a line, between ``\\r`` and ``\\n``,
inside a multi-byte character. :class:`SSEParser` takes bytes as they arrive and
hands back whole events, each with its raw bytes so a relay can forward it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEParser", "format_event"]


@dataclass(slots=True)
class SSEEvent:
    """One event: its ``event:`` name (empty when absent), its joined ``data:`` lines,
    and the exact bytes it was made of, blank line included."""

    event: str
    data: str
    raw: bytes


class SSEParser:
    """Split a byte stream into events; tolerant of any split and of CRLF endings."""

    __slots__ = ("_buffer", "_event_start", "_scan_from")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._event_start = 0
        self._scan_from = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add bytes; return the events they complete (possibly none)."""
        buffer = self._buffer
        buffer += chunk
        events: list[SSEEvent] = []
        while True:
            newline = buffer.find(b"\n", self._scan_from)
            if newline < 0:
                break
            line_start = self._scan_from
            self._scan_from = newline + 1
            if newline == line_start or (newline == line_start + 1 and buffer[line_start] == 13):
                # A blank line closes the event that began at _event_start.
                raw = bytes(buffer[self._event_start : self._scan_from])
                self._event_start = self._scan_from
                event = _parse(raw)
                if event is not None:
                    events.append(event)
        if self._event_start:
            del buffer[: self._event_start]
            self._scan_from -= self._event_start
            self._event_start = 0
        return events

    def finish(self) -> SSEEvent | None:
        """The last event of a stream that ended without a closing blank line.

        Its ``raw`` gets the missing line ends, so a relayed copy is a complete event
        that any client dispatches.
        """
        raw = bytes(self._buffer)
        self._buffer.clear()
        self._event_start = self._scan_from = 0
        if not raw.strip():
            return None
        return _parse(raw.rstrip(b"\r\n") + b"\n\n")


def _parse(raw: bytes) -> SSEEvent | None:
    if raw.startswith(b"data: ") and raw.count(b"\n") == 2 and raw.endswith(b"\n\n"):
        # The shape of nearly every OpenAI event: one data line, nothing else.
        return SSEEvent("", raw[6:-2].decode("utf-8", errors="replace"), raw)
    name = ""
    data: list[str] = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if not data and not name:
        return None
    return SSEEvent(name, "\n".join(data), raw)


def format_event(data: bytes, event: str | None = None) -> bytes:
    """Serialise one event with a ``data:`` payload that holds no newline (JSON)."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + data + b"\n\n"
