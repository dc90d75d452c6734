"""Points in time as people type them: ``1733230000``, ``2026-12-03T10:00``, ``24h``."""

from __future__ import annotations

import time
from datetime import datetime, timezone

__all__ = ["parse_time"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, *, now: float | None = None) -> float:
    """Unix seconds for an absolute time, an ISO 8601 date, or a duration ago (``7d``)."""
    value = text.strip()
    if value and value[-1] in _UNITS and value[:-1].replace(".", "", 1).isdigit():
        return (time.time() if now is None else now) - float(value[:-1]) * _UNITS[value[-1]]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"cannot read the time {text!r}; use Unix seconds, ISO 8601 "
            "(2026-12-03T10:00:00Z) or a duration ago such as 24h or 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
