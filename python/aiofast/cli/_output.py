"""Plain-text tables and a progress bar for the command line."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

__all__ = ["ProgressBar", "format_table"]


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as aligned columns; numbers right-aligned, floats with enough digits for cents."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    numeric = [all(_is_number(row.get(c)) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if is_number else value.ljust(width)
            for value, width, is_number in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    header = line(list(columns))
    return "\n".join([header, "-" * len(header), *(line(values) for values in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6f}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value) if value != "" else "(none)"


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


class ProgressBar:
    """``[#####.....] 80/160`` on stderr; redrawn in place on a terminal, else every 10 %."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self._last_decile = -1

    def update(self, done: int, total: int, suffix: str = "") -> None:
        share = done / total if total else 1.0
        filled = round(share * self.width)
        text = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {suffix}"
        if self.stream.isatty():
            self.stream.write("\r" + text)
            if done >= total:
                self.stream.write("\n")
        elif int(share * 10) != self._last_decile or done >= total:
            self._last_decile = int(share * 10)
            self.stream.write(text + "\n")
        self.stream.flush()
