"""Aligned text tables for the terminal and Markdown tables for LEADERBOARD.md and docs; the
latency percentiles the benchmarks print."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def fmt(value: Any) -> str:
    """Numbers with 4 significant digits (integers in full), NaN as '-'."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False
) -> str:
    """Columns padded to their widest cell; numbers right-aligned, text left-aligned."""
    cells = [[fmt(v) for v in row] for row in rows]
    numeric = [
        all(
            isinstance(r[i], int | float) and not isinstance(r[i], bool)
            for r in rows
            if r[i] is not None
        )
        for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return ("| " + " | ".join(parts) + " |") if markdown else "  ".join(parts).rstrip()

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if n else ("-" * (w + 2))
            for w, n in zip(widths, numeric, strict=True)
        )
        + "|"
        if markdown
        else "  ".join("-" * w for w in widths)
    )
    return "\n".join([line(headers), rule] + [line(r) for r in cells])


def latency_percentiles(fn: Any, inputs: list[Any]) -> tuple[float, float]:
    """p50 and p99 seconds of ``fn(x)`` over ``inputs`` (one call each, timed with
    ``time.perf_counter``), after one untimed warm-up call: first-call allocations are not a
    decision's cost."""
    fn(inputs[0])
    times = np.empty(len(inputs))
    for i, x in enumerate(inputs):
        start = time.perf_counter()
        fn(x)
        times[i] = time.perf_counter() - start
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))
