"""How well a cost table predicts measurements it was not built from.

``leave_one_out`` drops each interior grid point in turn and predicts it from its neighbours
along each axis with the table's own interpolation rule; ``held_out_error`` compares a table's
predictions with separate measurements (for example the raw vidur rows a reduced table left out).
Both report median and 90th-percentile absolute percentage error (APE).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schedgym.envs.hardware.costs import KernelCostTable


@dataclass(frozen=True)
class ErrorSummary:
    kernel: str
    n: int
    median_ape: float
    p90_ape: float
    max_ape: float

    @classmethod
    def of(cls, kernel: str, ape: np.ndarray) -> ErrorSummary:
        ape = np.asarray(ape, float)
        if ape.size == 0:
            return cls(kernel, 0, float("nan"), float("nan"), float("nan"))
        return cls(
            kernel,
            int(ape.size),
            float(np.median(ape)),
            float(np.percentile(ape, 90)),
            float(ape.max()),
        )


def leave_one_out(table: KernelCostTable) -> list[ErrorSummary]:
    """Per-kernel APE of predicting each interior grid point from its two axis neighbours.

    Interpolation is log(time) linear in log(axis), as ``KernelCostTable`` does inside a grid, so
    this is the error of the table's own rule at the points it happens to have measured.
    """
    out, every = [], []
    for name, entry in sorted(table.kernels.items()):
        apes = []
        for s in entry.series:
            log_axes = [np.log(v) for v in s.axes.values()]
            log_t = np.log(s.median_s)
            for ax, la in enumerate(log_axes):
                if la.size < 3:
                    continue
                t = np.moveaxis(log_t, ax, 0)
                w = (la[1:-1] - la[:-2]) / (la[2:] - la[:-2])
                w = w.reshape((-1,) + (1,) * (t.ndim - 1))
                pred = t[:-2] * (1 - w) + t[2:] * w
                apes.append(np.abs(np.exp(pred - t[1:-1]) - 1.0).ravel())
        ape = np.concatenate(apes) if apes else np.empty(0)
        every.append(ape)
        out.append(ErrorSummary.of(name, ape))
    out.append(ErrorSummary.of("all", np.concatenate(every) if every else np.empty(0)))
    return out


def held_out_error(
    table: KernelCostTable, kernel: str, params: dict[str, np.ndarray], measured_s: np.ndarray
) -> ErrorSummary:
    """APE of the table's predictions against separately measured latencies."""
    pred = table.predict_many(kernel, **params)
    return ErrorSummary.of(kernel, np.abs(pred / np.asarray(measured_s, float) - 1.0))


def shape_transfer_error(table: KernelCostTable) -> list[ErrorSummary]:
    """APE of pricing each measured shape from the *other* shapes (the shape-scaled rule)."""
    from dataclasses import replace

    out = []
    for name, entry in sorted(table.kernels.items()):
        if len(entry.series) < 2 or not entry.spec.shape:
            continue
        apes = []
        for i, s in enumerate(entry.series):
            others = entry.series[:i] + entry.series[i + 1 :]
            probe = KernelCostTable(
                table.name,
                table.device,
                table.provenance,
                table.roofline,
                {name: replace(entry, series=others)},
                table.dtype_bytes,
            )
            mesh = np.meshgrid(*s.axes.values(), indexing="ij")
            params = {**dict(zip(s.axes, mesh, strict=True)), **s.shape}
            pred = probe.predict_many(name, **params)
            apes.append(np.abs(pred / s.median_s - 1.0).ravel())
        out.append(ErrorSummary.of(name, np.concatenate(apes)))
    return out
