"""JobShop episode records: their metrics, the record itself, an independent validator and the
Gantt chart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from schedgym.errors import RecordError
from schedgym.workloads.jobshop import (
    JobShopInstance,
)

RECORD_FORMAT = "schedgym-jobshop-record/1"


# --- metrics and records ---------------------------------------------------------------------


def _relative(value: float, reference: float) -> float:
    return (value - reference) / reference if reference > 0 else 0.0


def metrics_for(instance: JobShopInstance, makespan: int) -> dict[str, Any]:
    """The episode metrics of a schedule of ``instance`` with this makespan.

    ``gap`` is relative to the best known upper bound (absent when none is known); ``lb_gap`` to
    the best known lower bound, or the trivial one (longest job, busiest machine) when stronger
    or none is known; ``utilisation`` is the machines' busy share of ``machines x makespan``.
    """
    lower = instance.best_lower_bound
    total = float(instance.durations.sum())
    metrics: dict[str, Any] = {
        "makespan": int(makespan),
        "lower_bound": lower,
        "lb_gap": _relative(makespan, lower),
        "utilisation": total / (instance.n_machines * makespan) if makespan > 0 else 0.0,
    }
    if instance.upper_bound is not None:
        metrics["upper_bound"] = instance.upper_bound
        metrics["gap"] = _relative(makespan, instance.upper_bound)
    return metrics


def make_record(
    instance: JobShopInstance,
    starts: np.ndarray,
    *,
    actions: np.ndarray | None = None,
    solver: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-serialisable episode record: the instance and every operation's slot."""
    ends = starts + instance.durations
    schedule = [
        {"job": j, "op": k, "machine": m, "start": s, "end": e}
        for (j, k), m, s, e in zip(
            np.ndindex(starts.shape),
            instance.machines.ravel().tolist(),
            starts.ravel().tolist(),
            ends.ravel().tolist(),
            strict=True,
        )
    ]
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "env": "jobshop",
        "instance": instance.to_dict(),
        "schedule": schedule,
    }
    if actions is not None:
        record["actions"] = np.asarray(actions).tolist()
    if solver is not None:
        record["solver"] = solver
    return record


def validate(record: dict[str, Any]) -> dict[str, Any]:
    """Re-check an episode record from scratch and return the metrics it implies.

    Checks that every operation of the instance is scheduled exactly once, on its own machine,
    for exactly its duration, at a time >= 0; that each job's operations run in order; and that
    no two operations overlap on a machine. Raises ``RecordError`` naming the first fault.
    """
    try:
        instance = JobShopInstance.from_dict(record["instance"])
        rows = record["schedule"]
        columns = {
            key: np.array([row[key] for row in rows], dtype=np.int64)
            for key in ("job", "op", "machine", "start", "end")
        }
    except KeyError as exc:
        raise RecordError(f"jobshop record lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordError(f"jobshop record is malformed: {exc}") from None
    J, K = instance.n_jobs, instance.n_ops
    job, op, machine, start, end = (columns[k] for k in ("job", "op", "machine", "start", "end"))
    bad = np.flatnonzero((job < 0) | (job >= J) | (op < 0) | (op >= K))
    if bad.size:
        i = bad[0]
        raise RecordError(f"schedule row {i}: no operation (job {job[i]}, op {op[i]}) in {J}x{K}")
    flat = job * K + op
    counts = np.bincount(flat, minlength=J * K)
    if (counts != 1).any():
        j, k = divmod(int(np.flatnonzero(counts != 1)[0]), K)
        raise RecordError(f"operation (job {j}, op {k}) is scheduled {counts[j * K + k]} times")
    want_machine = instance.machines.ravel()[flat]
    want_duration = instance.durations.ravel()[flat]
    faults: tuple[tuple[np.ndarray, Callable[[int], str]], ...] = (
        (machine != want_machine, lambda i: f"runs on machine {machine[i]}, not {want_machine[i]}"),
        (
            end - start != want_duration,
            lambda i: f"lasts {end[i] - start[i]}, not {want_duration[i]}",
        ),
        (start < 0, lambda i: f"starts at {start[i]} < 0"),
    )
    for wrong, describe in faults:
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise RecordError(f"operation (job {job[i]}, op {op[i]}) {describe(i)}")
    starts = np.empty(J * K, np.int64)
    ends = np.empty(J * K, np.int64)
    starts[flat], ends[flat] = start, end
    starts, ends = starts.reshape(J, K), ends.reshape(J, K)
    early = starts[:, 1:] < ends[:, :-1]
    if early.any():
        j, k = np.argwhere(early)[0]
        raise RecordError(
            f"precedence: operation (job {j}, op {k + 1}) starts at {starts[j, k + 1]} before "
            f"op {k} ends at {ends[j, k]}"
        )
    order = np.lexsort((end, start, machine))
    same = machine[order[1:]] == machine[order[:-1]]
    clash = same & (start[order[1:]] < end[order[:-1]])
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        a, b = order[i], order[i + 1]
        raise RecordError(
            f"overlap on machine {machine[a]}: (job {job[a]}, op {op[a]}) runs "
            f"[{start[a]}, {end[a]}) and (job {job[b]}, op {op[b]}) runs [{start[b]}, {end[b]})"
        )
    makespan = int(ends.max())
    metrics = metrics_for(instance, makespan)
    if "solver" in record:
        metrics.update(bound_metrics(instance, record["solver"], makespan))
    return metrics


def bound_metrics(
    instance: JobShopInstance, solver: dict[str, Any], makespan: int
) -> dict[str, Any]:
    """A solver's proven lower bound on the makespan as ``bound_<metric>`` entries: the metrics
    a schedule of that makespan would have. Raises ``RecordError`` when the claimed bound is
    below the trivial one (longest job, busiest machine) or above the solver's own schedule."""
    try:
        bound = int(solver["objective_bound"])
    except (KeyError, TypeError, ValueError):
        raise RecordError("jobshop record: the solver report has no objective_bound") from None
    if not instance.trivial_lower_bound <= bound <= makespan:
        raise RecordError(
            f"jobshop record: objective_bound {bound} is outside [trivial lower bound "
            f"{instance.trivial_lower_bound}, the schedule's makespan {makespan}]"
        )
    implied = metrics_for(instance, bound)
    return {f"bound_{k}": implied[k] for k in ("makespan", "gap", "lb_gap") if k in implied}


def plot_record(
    record: dict[str, Any], path: str | Path, *, title: str | None = None, dpi: int = 120
) -> Path:
    """Write a Gantt chart of the record to ``path`` (PNG): one row per machine, one colour per
    job, job numbers on the bars wide enough to hold them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    instance = JobShopInstance.from_dict(record["instance"])
    rows = record["schedule"]
    J, M = instance.n_jobs, instance.n_machines
    makespan = max(row["end"] for row in rows)
    colours = plt.get_cmap("tab20" if J > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(min(24, 8 + makespan / 150), 1.2 + 0.38 * M))
    min_label_width = makespan / 60
    for row in rows:
        width = row["end"] - row["start"]
        ax.broken_barh(
            [(row["start"], width)],
            (row["machine"] - 0.4, 0.8),
            facecolors=colours(row["job"] % colours.N),
            edgecolor="black",
            linewidth=0.4,
        )
        if width >= min_label_width:
            ax.text(
                row["start"] + width / 2, row["machine"], str(row["job"]),
                ha="center", va="center", fontsize=7,
            )  # fmt: skip
    ax.set_yticks(range(M), [f"M{m}" for m in range(M)])
    ax.invert_yaxis()
    ax.set_ylim(M - 0.5, -0.5)
    ax.set_xlim(0, makespan * 1.01)
    ax.set_xlabel("time")
    ax.grid(axis="x", linestyle=":", linewidth=0.5)
    metrics = metrics_for(instance, makespan)
    best = (
        f", best known {instance.upper_bound} (gap {100 * metrics['gap']:.1f} %)"
        if ("gap" in metrics)
        else ""
    )
    ax.set_title(title or f"{instance.name} ({J} jobs x {M} machines): makespan {makespan}{best}")
    if J <= 20:
        handles = [
            matplotlib.patches.Patch(color=colours(j % colours.N), label=f"job {j}")
            for j in range(J)
        ]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
