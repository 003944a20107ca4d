"""Reading workload files so that every fault names the file, the line and what is wrong.

Loaders parse the whole file into plain lists first and only then build the frozen dataclasses,
so a bad file is refused whole: nothing is half-loaded.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from schedgym.errors import WorkloadError

T = TypeVar("T", int, float)


def shared_data_dir() -> Path:
    """Reference data: ``$SCHEDGYM_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("SCHEDGYM_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def open_text(path: str | Path):
    """Open a workload file for reading, refusing a missing or unreadable one with its name."""
    p = Path(path)
    if not p.is_file():
        raise WorkloadError("no such file", p)
    try:
        # utf-8-sig: files saved by spreadsheet tools start with a byte-order mark
        return p.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise WorkloadError(f"cannot read: {exc.strerror}", p) from exc


def csv_rows(
    path: str | Path, required: Sequence[str], aliases: dict[str, str] | None = None
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)`` for each data row of a CSV file with a header.

    ``required`` names the columns that must be present (after stripping spaces and applying
    ``aliases``, a map from a column as written to our name). Blank lines are skipped.
    """
    aliases = aliases or {}
    with open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise WorkloadError("empty file (no header line)", path, 1) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise WorkloadError(f"unreadable header: {exc}", path, 1) from exc
        names = [aliases.get(h.strip(), h.strip()) for h in header]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise WorkloadError(
                f"column(s) {', '.join(twice)} given twice; header is {','.join(header)}", path, 1
            )
        missing = [c for c in required if c not in names]
        if missing:
            raise WorkloadError(
                f"missing column(s) {', '.join(missing)}; header is {','.join(header)}", path, 1
            )
        try:
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(names):
                    raise WorkloadError(
                        f"expected {len(names)} fields, found {len(row)}", path, line
                    )
                yield line, {n: cell.strip() for n, cell in zip(names, row, strict=True)}
        except (csv.Error, UnicodeDecodeError) as exc:
            raise WorkloadError(f"malformed CSV: {exc}", path, reader.line_num) from exc


def parse_number(
    text: str,
    kind: Callable[[str], T],
    *,
    field: str,
    path: str | Path | None,
    line: int | None,
    minimum: float | None = None,
) -> T:
    """Parse one field as ``int`` or ``float``; refuse blanks, junk, NaN and infinities, integers
    beyond 64 bits, and values below ``minimum``."""
    if text == "":
        raise WorkloadError(f"{field} is missing", path, line)
    try:
        value = kind(text)
    except ValueError:
        try:  # integers written as "12.0" are common in exported traces
            as_float = float(text)
        except ValueError:
            as_float = None
        if kind is int and as_float is not None and as_float.is_integer():
            value = int(as_float)
        else:
            raise WorkloadError(f"{field} is not a number: {text!r}", path, line) from None
    if kind is float and not math.isfinite(value):
        raise WorkloadError(f"{field} must be finite, got {text!r}", path, line)
    if kind is int and not -(2**63) <= value < 2**63:
        raise WorkloadError(f"{field} {text} is out of the 64-bit integer range", path, line)
    if minimum is not None and value < minimum:
        raise WorkloadError(f"{field} must be >= {minimum}, got {text}", path, line)
    return value
