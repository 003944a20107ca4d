"""DagSched episode records: an independent validator and the Gantt chart (records are built by
``core.build_record``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from schedgym.envs.dag.core import (
    RECORD_FORMAT,
)
from schedgym.errors import RecordError

# -- independent validation ------------------------------------------------------------------


def validate(record: dict[str, Any]) -> dict[str, float]:
    """Re-check an episode record from scratch and return the metrics it implies.

    Checks, written apart from the simulator: every task is scheduled once, on a device that can
    run it (its cost is given and its op kind allowed), for exactly its cost in the plan and its
    cost times its noise factor when executed; no task starts before its job arrives; in both the
    plan and the execution every task starts after each predecessor's end plus the transfer time
    (latency + bytes / bandwidth between different devices) and no two tasks overlap on a device;
    the execution runs each device's tasks in planned order, each as early as inputs and device
    allow. A bound's record may relax ``exclusive`` (overlap) and ``transfers``; those checks are
    skipped. Raises ``RecordError`` naming the first fault.
    """

    def fail(why: str) -> RecordError:
        return RecordError(f"dag record ({record.get('case', '?')}): {why}")

    try:
        if record.get("format") != RECORD_FORMAT:
            raise fail(f"format is {record.get('format')!r}, expected {RECORD_FORMAT!r}")
        devices, tasks, jobs = record["devices"], record["tasks"], record["jobs"]
        edges, rows, mode = record["edges"], record["schedule"], record["mode"]
        relaxed = set(record.get("relaxed", []))
        sigma = float(record["sigma"])
        link = {}
        for lk in record["links"]:
            link[(lk["a"], lk["b"])] = link[(lk["b"], lk["a"])] = (lk["latency"], lk["bandwidth"])
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"malformed record: {exc!r}") from None
    if mode not in ("single", "online"):
        raise fail(f"mode is {mode!r}, expected 'single' or 'online'")
    if relaxed - {"exclusive", "transfers"}:
        raise fail(f"unknown relaxations {sorted(relaxed - {'exclusive', 'transfers'})}")
    n, n_dev = len(tasks), len(devices)
    if len(rows) != n:
        raise fail(f"{len(rows)} schedule rows for {n} tasks")
    by_task: list[dict[str, Any] | None] = [None] * n
    for row in rows:
        t = row["task"]
        if not (isinstance(t, int) and 0 <= t < n) or by_task[t] is not None:
            raise fail(f"schedule row names task {t!r} twice or out of range")
        by_task[t] = row
    horizon = max(max(abs(r["end"]), abs(r["planned_end"])) for r in rows)
    eps = 1e-9 * max(horizon, 1e-300)

    def transfer(a: int, b: int, nbytes: float) -> float:
        if a == b or "transfers" in relaxed:
            return 0.0
        lat, bw = link[(a, b)]
        return lat + nbytes / bw

    preds: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for s, d, b in edges:
        if not (0 <= s < n and 0 <= d < n):
            raise fail(f"edge {s} -> {d} names a task outside 0..{n - 1}")
        preds[d].append((s, b))
    order = _topological(preds)
    if order is None:
        raise fail("the task graph has a cycle")
    for t, (task, row) in enumerate(zip(tasks, by_task, strict=True)):
        d = row["device"]
        name = task["name"]
        if not (isinstance(d, int) and 0 <= d < n_dev):
            raise fail(f"task {name!r} on device {d!r}, not one of the {n_dev} devices")
        cost, ops = task["cost"][d], devices[d]["ops"]
        if cost is None or (ops is not None and task["kind"] not in ops):
            raise fail(f"task {name!r} ({task['kind']}) cannot run on {devices[d]['name']!r}")
        factor = task["factor"]
        if not factor > 0 or (sigma == 0 and factor != 1.0):
            raise fail(f"task {name!r}: noise factor {factor} with sigma {sigma}")
        if abs(row["planned_end"] - row["planned_start"] - cost) > eps:
            raise fail(
                f"task {name!r} planned for {row['planned_end'] - row['planned_start']}, "
                f"its cost on {devices[d]['name']} is {cost}"
            )
        if abs(row["end"] - row["start"] - cost * factor) > eps:
            raise fail(
                f"task {name!r} ran for {row['end'] - row['start']}, expected {cost * factor}"
            )
        arrival = jobs[task["job"]]["arrival"]
        for key in ("planned_start", "start"):
            if row[key] < arrival - eps:
                raise fail(f"task {name!r}: {key} {row[key]} before its job arrives ({arrival})")
        for p, nbytes in preds[t]:
            src = by_task[p]
            delay = transfer(src["device"], d, nbytes)
            for start, end in (("planned_start", "planned_end"), ("start", "end")):
                if row[start] < src[end] + delay - eps:
                    raise fail(
                        f"task {name!r} {start} {row[start]} before its input from "
                        f"{tasks[p]['name']!r} arrives ({src[end]} + {delay})"
                    )
    queues: list[list[int]] = [[] for _ in range(n_dev)]
    for t in sorted(range(n), key=lambda t: (by_task[t]["planned_start"], t)):
        queues[by_task[t]["device"]].append(t)
    for d, queue in enumerate(queues):
        prev_end = {"planned_end": -math.inf, "end": -math.inf}
        for t in queue:
            row = by_task[t]
            if "exclusive" not in relaxed:
                for start, end in (("planned_start", "planned_end"), ("start", "end")):
                    if row[start] < prev_end[end] - eps:
                        raise fail(
                            f"tasks overlap on {devices[d]['name']!r} at {row[start]} "
                            f"({tasks[t]['name']!r}, {start})"
                        )
            # the execution starts each task as soon as it may, in the device's planned order
            earliest = jobs[tasks[t]["job"]]["arrival"]
            if "exclusive" not in relaxed and prev_end["end"] > earliest:
                earliest = prev_end["end"]
            for p, nbytes in preds[t]:
                earliest = max(
                    earliest, by_task[p]["end"] + transfer(by_task[p]["device"], d, nbytes)
                )
            if abs(row["start"] - earliest) > eps:
                raise fail(
                    f"task {tasks[t]['name']!r} started at {row['start']}, but its inputs "
                    f"and device allowed {earliest}"
                )
            prev_end = {"planned_end": row["planned_end"], "end": row["end"]}
    return _record_metrics(record, mode, by_task, preds, order)


def _topological(preds: list[list[tuple[int, float]]]) -> list[int] | None:
    """Kahn's order of the tasks, None if the edges hold a cycle."""
    n = len(preds)
    indeg = [len(p) for p in preds]
    succ: list[list[int]] = [[] for _ in range(n)]
    for t in range(n):
        for p, _ in preds[t]:
            succ[p].append(t)
    order = [t for t in range(n) if indeg[t] == 0]
    for t in order:  # the list grows as tasks become free
        for s in succ[t]:
            indeg[s] -= 1
            if indeg[s] == 0:
                order.append(s)
    return order if len(order) == n else None


def _record_metrics(record, mode, by_task, preds, order) -> dict[str, float]:
    tasks, jobs = record["tasks"], record["jobs"]
    # critical path of fastest times per job (Topcuoglu's CP_MIN), longest path in topo order
    longest = [0.0] * len(tasks)
    for t in order:
        start = max((longest[p] for p, _ in preds[t]), default=0.0)
        longest[t] = start + min(c for c in tasks[t]["cost"] if c is not None)
    n_jobs = len(jobs)
    lb, done, planned = [0.0] * n_jobs, [-math.inf] * n_jobs, [-math.inf] * n_jobs
    for t, task in enumerate(tasks):
        j = task["job"]
        lb[j] = max(lb[j], longest[t])
        done[j] = max(done[j], by_task[t]["end"])
        planned[j] = max(planned[j], by_task[t]["planned_end"])
    makespan = max(done)
    if mode == "single":
        m = {"makespan": makespan, "planned_makespan": max(planned), "slr": makespan / lb[0]}
        sums = [0.0] * len(record["devices"])
        for task in tasks:
            for d, c in enumerate(task["cost"]):
                sums[d] = math.inf if c is None else sums[d] + c
        if min(sums) < math.inf:
            m["speedup"] = min(sums) / makespan
        return m
    slow = [(done[j] - jobs[j]["arrival"]) / lb[j] for j in range(n_jobs)]
    return {
        "mean_slowdown": sum(slow) / n_jobs,
        "max_slowdown": max(slow),
        "planned_mean_slowdown": sum(
            (planned[j] - jobs[j]["arrival"]) / lb[j] for j in range(n_jobs)
        )
        / n_jobs,
        "makespan": makespan,
    }


# -- Gantt chart ------------------------------------------------------------------------------


def plot_record(
    record: dict[str, Any], path: str | Path, *, title: str | None = None, dpi: int = 120
) -> Path:
    """Write a Gantt chart of the record to ``path`` (PNG): one row per device, one bar per task
    as executed (coloured by op kind, or by job online), task names on bars wide enough to hold
    them, and the planned slot as a dashed outline where noise moved it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    devices, tasks, rows = record["devices"], record["tasks"], record["schedule"]
    online = record["mode"] == "online"
    horizon = max(max(r["end"], r["planned_end"]) for r in rows) or 1.0
    unit, mult = record["time_unit"], 1.0
    if unit == "s":
        unit, mult = next(
            (u, k)
            for u, k in (("s", 1.0), ("ms", 1e3), ("us", 1e6), ("ns", 1e9))
            if horizon * k >= 1.0
        )
    groups = sorted({t["job"] if online else t["kind"] for t in tasks}, key=str)
    cmap = plt.get_cmap("tab20" if len(groups) > 10 else "tab10")
    colour = {g: cmap(i % cmap.N) for i, g in enumerate(groups)}
    fig_h = 1.2 + 0.6 * len(devices)
    fig, ax = plt.subplots(figsize=(12, fig_h))
    for r in rows:
        task = tasks[r["task"]]
        y = len(devices) - 1 - r["device"]
        start, width = r["start"] * mult, (r["end"] - r["start"]) * mult
        ax.barh(
            y,
            width,
            left=start,
            height=0.7,
            color=colour[task["job"] if online else task["kind"]],
            edgecolor="black",
            linewidth=0.4,
        )
        if r["planned_start"] != r["start"] or r["planned_end"] != r["end"]:
            ax.barh(
                y,
                (r["planned_end"] - r["planned_start"]) * mult,
                left=r["planned_start"] * mult,
                height=0.7,
                fill=False,
                edgecolor="grey",
                linestyle="--",
                linewidth=0.6,
            )
        if width > horizon * mult * 0.035:
            ax.text(
                start + width / 2,
                y,
                task["name"].split("/")[-1][:12],
                ha="center",
                va="center",
                fontsize=7,
                clip_on=True,
            )
    ax.set_yticks(range(len(devices)))
    ax.set_yticklabels([d["name"] for d in reversed(devices)])
    ax.set_xlabel(f"time ({unit})")
    ax.set_xlim(0, horizon * mult * 1.01)
    metrics = record.get("metrics", {})
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "planned_makespan")
    policy = f" — {record['policy']}" if record.get("policy") else ""
    ax.set_title(title or f"{record['case']}{policy}: {shown}", fontsize=10)
    if 1 < len(groups) <= 20:
        handles = [Patch(color=colour[g], label=f"job {g}" if online else str(g)) for g in groups]
        ax.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False
        )
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
