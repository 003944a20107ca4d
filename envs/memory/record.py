"""MemoryMap episode records: an independent validator and the placement picture (records are
built by ``core.placement_record``).
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import numpy as np

from schedgym.envs.memory.core import (
    RECORD_FORMAT,
    TASKS,
)
from schedgym.errors import RecordError, SchedgymError
from schedgym.workloads.memory import (
    live_profile,
)

# --- validation ------------------------------------------------------------------------------


def validate(record: dict[str, Any]) -> dict[str, Any]:
    """Re-check an episode record from scratch and return the metrics it implies.

    A placement record: sizes positive, lifetimes non-empty, ids unique; every buffer placed in
    pack; fast buffers within ``[0, capacity)`` in map; no two placed buffers overlapping in
    time x address (a sweep over time against the live address intervals); the map task's
    modelled time recomputed op by op from the listed compute and accesses. A bound record
    (``record["bound"]``) is re-derived: the peak of live bytes, or the fractional knapsack.
    Raises ``RecordError`` naming the first fault.
    """
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise RecordError(f"not a memory-map record (format must be {RECORD_FORMAT!r})")
    task = record.get("task")
    if task not in TASKS:
        raise RecordError(f"record task {task!r} is not one of {TASKS}")
    try:
        cols = {
            k: np.asarray(record["buffers"][k], dtype=np.int64)
            for k in ("id", "start", "end", "size")
        }
        capacity = int(record["capacity"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"record buffers/capacity unreadable: {exc}") from exc
    ids, start, end, size = cols["id"], cols["start"], cols["end"], cols["size"]
    n = ids.size
    if n == 0 or any(c.shape != (n,) for c in cols.values()):
        raise RecordError("record buffers: empty or columns of different lengths")
    if len(set(ids.tolist())) != n:
        raise RecordError("record buffers: duplicate ids")
    for bad, why in ((size <= 0, "non-positive size"), (end <= start, "empty lifetime")):
        if bad.any():
            raise RecordError(f"buffer {int(ids[bad.argmax()])}: {why}")
    if capacity < 1:
        raise RecordError(f"capacity must be positive, got {capacity}")
    peak = _peak_live(start, end, size)
    bound = record.get("bound")
    if bound is not None:
        return _validate_bound(record, bound, task, capacity, peak, start, end, size)

    offset = np.asarray(record.get("offset", []), dtype=np.int64)
    if offset.shape != (n,):
        raise RecordError(f"record has {offset.size} offsets for {n} buffers")
    if np.any(offset < -1):
        raise RecordError(f"buffer {int(ids[(offset < -1).argmax()])}: offset below -1")
    fast = offset >= 0
    if task == "pack" and not fast.all():
        raise RecordError(f"pack: buffer {int(ids[(~fast).argmax()])} was left unplaced")
    if task != "pack":
        over = fast & (offset + size > capacity)
        if over.any():
            i = int(over.argmax())
            raise RecordError(
                f"buffer {int(ids[i])} at offset {int(offset[i])} + size "
                f"{int(size[i])} exceeds the fast capacity {capacity}"
            )
    if task == "msa":
        return _validate_msa(record, ids, start, end, size, offset, capacity)
    _check_no_overlap(ids, start, end, size, offset)
    height = int((offset + size)[fast].max()) if fast.any() else 0
    if task == "pack":
        return {
            "height": height,
            "capacity": capacity,
            "height_over_capacity": height / capacity,
            "solved": int(height <= capacity),
            "peak_live": peak,
            "height_over_peak": height / peak,
        }
    op = _map_inputs(record, start, end, ids)
    in_fast = fast[op["buffer"]]
    f_bytes = np.zeros(op["m"])
    s_bytes = op["fixed"].copy()
    np.add.at(f_bytes, op["op"][in_fast], op["bytes"][in_fast])
    np.add.at(s_bytes, op["op"][~in_fast], op["bytes"][~in_fast])
    fbw, sbw = op["fast_bandwidth"], op["slow_bandwidth"]
    modelled = float(np.maximum(op["compute"], f_bytes / fbw + s_bytes / sbw).sum())
    slow = float(np.maximum(op["compute"], (f_bytes + s_bytes) / sbw).sum())
    moved = float(op["bytes"].sum())
    return {
        "modelled_time_s": modelled,
        "all_slow_time_s": slow,
        "speedup": slow / modelled if modelled > 0 else 1.0,
        "fast_byte_share": float(op["bytes"][in_fast].sum()) / moved if moved else 0.0,
        "fast_buffers": int(fast.sum()),
        "height": height,
        "capacity": capacity,
    }


def _validate_msa(record, ids, start, end, size, offset, capacity) -> dict[str, Any]:
    """The msa task's checks (``core.MsaCore`` states the model): every fast window holds its
    buffer's fast accesses, starts at the write or at a prefetch's issue op and ends where
    the rules say; boxes of op steps x addresses do not overlap; each needed copy exists, once,
    lasts size / copy bandwidth, starts once it is ready, ends before the op that needs it and
    does not overlap another copy; each op starts after the previous one ends and after the
    copies it waits for, and lasts max(compute, memory time) with its operands where the windows
    put them."""
    op = _map_inputs(record, start, end, ids)
    m, n = op["m"], ids.size
    try:
        win = {
            k: np.asarray(record["windows"][k], np.int64)
            for k in ("lo", "hi", "first_op", "last_op")
        }
        cp = record["copies"]
        c_buf = np.asarray(cp["buffer"], np.int64)
        c_kind = list(cp["kind"])
        c_ready, c_wait = (np.asarray(cp[k], np.int64) for k in ("ready_op", "wait_op"))
        c_start, c_end = (np.asarray(cp[k], np.float64) for k in ("start_s", "end_s"))
        op_start = np.asarray(record["op_start_s"], np.float64)
        copy_bw = float(record["memory"]["copy_bandwidth"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"msa record: windows/copies/op_start_s unreadable: {exc}") from exc
    if any(a.shape != (n,) for a in win.values()) or op_start.shape != (m,):
        raise RecordError("msa record: one window per buffer and one start per op expected")
    nc = c_buf.size
    if any(a.shape != (nc,) for a in (c_ready, c_wait, c_start, c_end)) or len(c_kind) != nc:
        raise RecordError("msa record: copy columns of different lengths")
    if copy_bw <= 0 or (nc and (c_buf.min() < 0 or c_buf.max() >= n)):
        raise RecordError("msa record: bad copy bandwidth or a copy of an unknown buffer")
    lo, hi, first, last = win["lo"], win["hi"], win["first_op"], win["last_op"]
    fast = offset >= 0
    order = np.argsort(op["buffer"], kind="stable")
    acc_op, acc_buf, acc_bytes = op["op"][order], op["buffer"][order], op["bytes"][order]
    ptr = np.searchsorted(acc_buf, np.arange(n + 1))
    in_fast = np.zeros(acc_op.size, bool)
    scale = max(float(np.abs(op_start).max(initial=0.0)), 1e-30)
    eps = 1e-9 * scale
    need: dict[int, list[tuple[str, int, int]]] = {}  # buffer -> copies it must have
    for b in np.flatnonzero(fast).tolist():
        u = np.sort(acc_op[ptr[b] : ptr[b + 1]])
        name = f"buffer {int(ids[b])}"
        if u.size == 0 or first[b] not in u or last[b] not in u or first[b] > last[b]:
            raise RecordError(f"{name}: its fast window does not start and end at accesses")
        if not (0 <= lo[b] <= first[b] < last[b] + 1 <= hi[b] <= m):
            raise RecordError(
                f"{name}: window [{int(lo[b])}, {int(hi[b])}) does not hold its "
                f"fast accesses {int(first[b])}..{int(last[b])}"
            )
        sel = slice(ptr[b], ptr[b + 1])
        in_fast[sel] = (acc_op[sel] >= first[b]) & (acc_op[sel] <= last[b])
        later = u[u > last[b]]
        if first[b] != u[0]:  # not written in fast memory: a prefetch brings it
            if lo[b] <= u[0]:
                raise RecordError(
                    f"{name}: prefetch issued at op {int(lo[b])}, before the op "
                    f"{int(u[0])} that writes it ends"
                )
            if hi[b] != last[b] + 1:
                raise RecordError(f"{name}: a prefetched window ends at its last fast access")
            need[b] = [("prefetch", int(lo[b]), int(first[b]))]
        elif later.size:
            if lo[b] != first[b] or hi[b] != min(last[b] + 2, later[0]):
                raise RecordError(
                    f"{name}: an evicted window spans [write, min(last fast "
                    "access + 2, next access))"
                )
            need[b] = [("eviction", int(last[b]) + 1, int(hi[b]))]
        elif hi[b] != last[b] + 1:
            raise RecordError(
                f"{name}: window ends at op {int(hi[b])}, not after its last access {int(last[b])}"
            )
    if np.any(~fast & ((lo >= 0) | (hi >= 0))):
        raise RecordError("msa record: a slow buffer has a fast window")
    _check_no_overlap(ids, np.where(fast, lo, 0), np.where(fast, hi, 1), size, offset)
    # op times with the operands where the windows put them
    f_bytes = np.zeros(m)
    s_bytes = op["fixed"].copy()
    np.add.at(f_bytes, acc_op[in_fast], acc_bytes[in_fast])
    np.add.at(s_bytes, acc_op[~in_fast], acc_bytes[~in_fast])
    dur = np.maximum(op["compute"], f_bytes / op["fast_bandwidth"] + s_bytes / op["slow_bandwidth"])
    end_of = op_start + dur
    if m and op_start[0] < -eps:
        raise RecordError("msa record: op 0 starts before time 0")
    early = op_start[1:] < end_of[:-1] - eps
    if early.any():
        j = int(early.argmax()) + 1
        raise RecordError(
            f"op {j} starts at {op_start[j]:.6g} s, before op {j - 1} ends at {end_of[j - 1]:.6g} s"
        )
    seen: set[tuple[int, str]] = set()
    for c in range(nc):
        b, kind = int(c_buf[c]), c_kind[c]
        want = [w for w in need.get(b, []) if w[0] == kind]
        if not want or (b, kind) in seen:
            raise RecordError(f"copy {c}: an unneeded or repeated {kind} of buffer {int(ids[b])}")
        seen.add((b, kind))
        _, ready, wait = want[0]
        if (c_ready[c], c_wait[c]) != (ready, wait):
            raise RecordError(
                f"copy {c}: {kind} of buffer {int(ids[b])} must be ready at op "
                f"{ready} and awaited by op {wait}"
            )
        if abs(c_end[c] - c_start[c] - size[b] / copy_bw) > eps:
            raise RecordError(
                f"copy {c}: lasts {c_end[c] - c_start[c]:.6g} s, not size / copy "
                f"bandwidth = {size[b] / copy_bw:.6g} s"
            )
        if c_start[c] < (end_of[ready - 1] if ready > 0 else 0.0) - eps:
            raise RecordError(f"copy {c}: starts before op {ready - 1} ends")
        if wait < m and c_end[c] > op_start[wait] + eps:
            raise RecordError(
                f"copy {c}: the {kind} of buffer {int(ids[b])} ends at "
                f"{c_end[c]:.6g} s, after op {wait} starts at {op_start[wait]:.6g} s"
            )
    missing = sum(len(v) for v in need.values()) - len(seen)
    if missing:
        raise RecordError(f"msa record: {missing} needed prefetch/eviction copies are missing")
    by_start = np.argsort(c_start, kind="stable")
    clash = c_start[by_start[1:]] < c_end[by_start[:-1]] - eps
    if clash.any():
        k = int(clash.argmax())
        raise RecordError(
            f"copies {int(by_start[k])} and {int(by_start[k + 1])} overlap on the one copy engine"
        )
    modelled = float(end_of[-1]) if m else 0.0
    slow = float(np.maximum(op["compute"], (f_bytes + s_bytes) / op["slow_bandwidth"]).sum())
    moved = float(acc_bytes.sum())
    kinds = np.array(c_kind)
    return {
        "modelled_time_s": modelled,
        "all_slow_time_s": slow,
        "speedup": slow / modelled if modelled > 0 else 1.0,
        "stall_s": modelled - float(dur.sum()),
        "fast_byte_share": float(acc_bytes[in_fast].sum()) / moved if moved else 0.0,
        "fast_buffers": int(fast.sum()),
        "prefetches": int((kinds == "prefetch").sum()),
        "evictions": int((kinds == "eviction").sum()),
        "copy_bytes": int(size[c_buf].sum()),
        "height": int((offset + size)[fast].max()) if fast.any() else 0,
        "capacity": capacity,
    }


def _peak_live(start: np.ndarray, end: np.ndarray, size: np.ndarray) -> int:
    # Ends sort before starts at equal times: lifetimes are half-open.
    times = np.concatenate([end, start])
    delta = np.concatenate([-size, size])
    kind = np.concatenate([np.zeros(end.size), np.ones(start.size)])
    order = np.lexsort((kind, times))
    return int(np.cumsum(delta[order]).max())


def _check_no_overlap(ids, start, end, size, offset) -> None:
    """Sweep over time; the live fast buffers' address intervals are kept sorted by offset."""
    placed = np.flatnonzero(offset >= 0).tolist()
    events = sorted([(int(end[i]), 0, i) for i in placed] + [(int(start[i]), 1, i) for i in placed])
    lows: list[int] = []
    owner: dict[int, int] = {}
    for _, kind, i in events:
        lo = int(offset[i])
        if kind == 0:
            del lows[bisect.bisect_left(lows, lo)]
            del owner[lo]
            continue
        hi = lo + int(size[i])
        k = bisect.bisect_left(lows, lo)
        for j in ([owner[lows[k]]] if k < len(lows) and lows[k] < hi else []) + (
            [owner[lows[k - 1]]]
            if k > 0 and lows[k - 1] + int(size[owner[lows[k - 1]]]) > lo
            else []
        ):
            raise RecordError(
                f"buffers {int(ids[j])} and {int(ids[i])} overlap: addresses "
                f"[{int(offset[j])}, {int(offset[j] + size[j])}) and [{lo}, {hi}) while both "
                f"live at time {max(int(start[i]), int(start[j]))}"
            )
        lows.insert(k, lo)
        owner[lo] = i


def _map_inputs(record: dict[str, Any], start, end, ids) -> dict[str, Any]:
    try:
        ops, acc, mem = record["ops"], record["accesses"], record["memory"]
        out = {
            "time": np.asarray(ops["time"], np.int64),
            "compute": np.asarray(ops["compute_s"], np.float64),
            "fixed": np.asarray(ops["fixed_bytes"], np.float64),
            "op": np.asarray(acc["op"], np.int64),
            "buffer": np.asarray(acc["buffer"], np.int64),
            "bytes": np.asarray(acc["bytes"], np.float64),
            "fast_bandwidth": float(mem["fast_bandwidth"]),
            "slow_bandwidth": float(mem["slow_bandwidth"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"map record: ops/accesses/memory unreadable: {exc}") from exc
    m = out["time"].size
    out["m"] = m
    if out["compute"].shape != (m,) or out["fixed"].shape != (m,):
        raise RecordError("map record: op columns of different lengths")
    a = out["op"]
    if not (a.shape == out["buffer"].shape == out["bytes"].shape):
        raise RecordError("map record: access columns of different lengths")
    if a.size and (
        a.min() < 0 or a.max() >= m or out["buffer"].min() < 0 or out["buffer"].max() >= ids.size
    ):
        raise RecordError("map record: an access names an op or buffer out of range")
    if np.any(out["compute"] < 0) or np.any(out["fixed"] < 0) or np.any(out["bytes"] < 0):
        raise RecordError("map record: negative compute time or byte count")
    if out["fast_bandwidth"] <= 0 or out["slow_bandwidth"] <= 0:
        raise RecordError("map record: bandwidths must be positive")
    t, b = out["time"][a], out["buffer"]
    outside = (t < start[b]) | (t >= end[b])
    if outside.any():
        k = int(outside.argmax())
        raise RecordError(
            f"op {int(a[k])} at time {int(t[k])} touches buffer {int(ids[b[k]])} "
            f"outside its lifetime [{int(start[b[k]])}, {int(end[b[k]])})"
        )
    return out


def _validate_bound(record, bound, task, capacity, peak, start, end, size) -> dict[str, Any]:
    if bound == "peak-live" and task == "pack":
        return {
            "height": peak,
            "capacity": capacity,
            "height_over_capacity": peak / capacity,
            "peak_live": peak,
            "height_over_peak": 1.0,
        }
    if bound == "knapsack" and task == "map":
        op = _map_inputs(record, start, end, np.asarray(record["buffers"]["id"]))
        lower, slow = _time_lp(op, start, end, size, capacity)
        return {
            "modelled_time_s": lower,
            "all_slow_time_s": slow,
            "speedup": slow / lower if lower > 0 else 1.0,
            "capacity": capacity,
        }
    if bound == "knapsack" and task == "msa":
        op = _map_inputs(record, start, end, np.asarray(record["buffers"]["id"]))
        lower, slow = _msa_lp(op, size, capacity, float(record["memory"]["copy_bandwidth"]))
        return {
            "modelled_time_s": lower,
            "all_slow_time_s": slow,
            "speedup": slow / lower if lower > 0 else 1.0,
            "capacity": capacity,
        }
    raise RecordError(f"unknown bound {bound!r} for the {task} task")


def _time_lp(op: dict[str, Any], start, end, size, capacity: int) -> tuple[float, float]:
    """Re-derive the map task's LP bound: variables are each buffer's fast fraction and each
    op's time (seconds); constraints are listed one by one."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix

    n, m = size.size, op["m"]
    fbw, sbw = op["fast_bandwidth"], op["slow_bandwidth"]
    total = op["fixed"].copy()
    np.add.at(total, op["op"], op["bytes"])
    slow = float(np.maximum(op["compute"], total / sbw).sum())
    scale = slow if slow > 0 else 1.0
    rows, cols, vals, rhs = [], [], [], []
    for j in range(m):  # time of op j >= its memory time with the fractions in fast memory
        rows.append(j)
        cols.append(n + j)
        vals.append(-1.0)
        rhs.append(-total[j] / sbw / scale)
    for j, b, nbytes in zip(
        op["op"].tolist(), op["buffer"].tolist(), op["bytes"].tolist(), strict=True
    ):
        rows.append(j)
        cols.append(b)
        vals.append(-nbytes * (1.0 / sbw - 1.0 / fbw) / scale)
    r = m
    for t in sorted(set(start.tolist())):  # the fractions live at each start fit in fast memory
        live = np.flatnonzero((start <= t) & (end > t))
        rows += [r] * live.size
        cols += live.tolist()
        vals += (size[live] / capacity).tolist()
        rhs.append(1.0)
        r += 1
    a_ub = csr_matrix((vals, (rows, cols)), shape=(r, n + m))
    bounds = [(0.0, 1.0)] * n + [(float(c) / scale, None) for c in op["compute"]]
    res = linprog([0.0] * n + [1.0] * m, A_ub=a_ub, b_ub=rhs, bounds=bounds, method="highs")
    if res.status != 0:
        raise RecordError(f"knapsack bound: the LP has no optimum ({res.message})")
    return float(res.fun) * scale, slow


def _msa_lp(op: dict[str, Any], size, capacity: int, copy_bw: float) -> tuple[float, float]:
    """Re-derive the msa task's LP bound, constraint by constraint: per access a fast fraction
    ``y``, per later access a held ``h <= y(previous)`` and a prefetched ``q`` with
    ``y <= h + q``; space per op; one copy engine within the total time; op times."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix

    m, fbw, sbw = op["m"], op["fast_bandwidth"], op["slow_bandwidth"]
    total = op["fixed"].copy()
    np.add.at(total, op["op"], op["bytes"])
    slow = float(np.maximum(op["compute"], total / sbw).sum())
    scale = slow if slow > 0 else 1.0
    per_buffer: dict[int, list[tuple[int, float]]] = {}
    for j, b, nbytes in zip(
        op["op"].tolist(), op["buffer"].tolist(), op["bytes"].tolist(), strict=True
    ):
        per_buffer.setdefault(b, []).append((j, nbytes))
    cols: dict[tuple[str, int, int], int] = {}

    def col(kind: str, b: int, i: int) -> int:
        return cols.setdefault((kind, b, i), len(cols))

    rows, cvals, vals, rhs = [], [], [], []
    space: list[list[tuple[int, float]]] = [[] for _ in range(m)]
    engine: list[tuple[int, float]] = []
    op_terms: list[list[tuple[int, float]]] = [[] for _ in range(m)]
    for b, acc in per_buffer.items():
        acc.sort()
        for i, (j, nbytes) in enumerate(acc):
            y = col("y", b, i)
            op_terms[j].append((y, -nbytes * (1.0 / sbw - 1.0 / fbw) / scale))
            space[j].append((y, size[b] / capacity))
            if i == 0:
                continue
            h, q = col("h", b, i), col("q", b, i)
            for terms in ([(y, 1.0), (h, -1.0), (q, -1.0)], [(h, 1.0), (col("y", b, i - 1), -1.0)]):
                r = len(rhs)
                for c, v in terms:
                    rows.append(r)
                    cvals.append(c)
                    vals.append(v)
                rhs.append(0.0)
            for t in range(acc[i - 1][0] + 1, j):
                space[t].append((h, size[b] / capacity))
            engine.append((q, size[b] / copy_bw / scale))
    n_var = len(cols)
    t_col = [n_var + j for j in range(m)]
    for j in range(m):
        r = len(rhs)
        for c, v in op_terms[j] + [(t_col[j], -1.0)]:
            rows.append(r)
            cvals.append(c)
            vals.append(v)
        rhs.append(-total[j] / sbw / scale)
    for j in range(m):
        if space[j]:
            r = len(rhs)
            for c, v in space[j]:
                rows.append(r)
                cvals.append(c)
                vals.append(v)
            rhs.append(1.0)
    r = len(rhs)
    for c, v in engine + [(t, -1.0) for t in t_col]:
        rows.append(r)
        cvals.append(c)
        vals.append(v)
    rhs.append(0.0)
    a_ub = csr_matrix((vals, (rows, cvals)), shape=(len(rhs), n_var + m))
    bounds = [(0.0, 1.0)] * n_var + [(float(c) / scale, None) for c in op["compute"]]
    res = linprog([0.0] * n_var + [1.0] * m, A_ub=a_ub, b_ub=rhs, bounds=bounds, method="highs")
    if res.status != 0:
        raise RecordError(f"msa knapsack bound: the LP has no optimum ({res.message})")
    return float(res.fun) * scale, slow


# --- pictures --------------------------------------------------------------------------------


def plot_record(record: dict[str, Any], path: str | Path, *, title: str | None = None) -> None:
    """Write the time x address picture of a placement (map: with the per-op times below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    if record.get("bound") is not None:
        raise SchedgymError(f"a {record['bound']} bound record has no placement to draw")
    metrics = validate(record)
    task, capacity = record["task"], int(record["capacity"])
    b = record["buffers"]
    start, end, size = (np.asarray(b[k], np.float64) for k in ("start", "end", "size"))
    offset = np.asarray(record["offset"], np.float64)
    fast = offset >= 0
    unit, scale = _byte_unit(max(capacity, metrics["height"]))
    rows = 1 if task == "pack" else 2
    fig, axes = plt.subplots(
        rows,
        1,
        figsize=(11, 4.2 * rows + 0.6),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1.4][:rows]},
    )
    ax = axes[0, 0]
    x0, x1, y0 = start[fast], end[fast], offset[fast] / scale
    if task == "msa":  # a buffer holds its address over its window of op steps only
        t = np.append(np.asarray(record["ops"]["time"], np.float64), end.max())
        x0 = t[np.asarray(record["windows"]["lo"])[fast]]
        x1 = t[np.asarray(record["windows"]["hi"])[fast]]
    y1 = y0 + size[fast] / scale
    boxes = np.stack(
        [
            np.stack([x0, y0], 1),
            np.stack([x1, y0], 1),
            np.stack([x1, y1], 1),
            np.stack([x0, y1], 1),
        ],
        axis=1,
    )
    colours = plt.get_cmap("tab20")(np.arange(int(fast.sum())) % 20)
    ax.add_collection(
        PolyCollection(
            boxes,
            facecolors=colours,
            edgecolors="black" if fast.sum() <= 1500 else "none",
            linewidths=0.3,
        )
    )
    times, live = live_profile(start, end, size)
    ax.step(
        times,
        live / scale,
        where="post",
        color="black",
        lw=1.0,
        ls=":",
        label="live bytes (lower bound)" if task == "pack" else "live bytes of all buffers",
    )
    ax.axhline(
        capacity / scale,
        color="crimson",
        lw=1.2,
        ls="--",
        label="capacity" if task == "pack" else "fast capacity",
    )
    ax.set_xlim(times[0], times[-1])
    ax.set_ylim(
        0, 1.05 * max(capacity, metrics["height"], live.max() if task == "pack" else 0) / scale
    )
    time_unit = "op step" if "ops" in record else "time"
    ax.set_xlabel(time_unit)
    ax.set_ylabel(f"address ({unit})")
    ax.legend(loc="upper right", fontsize=8)
    if task == "pack":
        summary = (
            f"height {metrics['height']:,} = {metrics['height_over_capacity']:.3f} x "
            f"capacity, {metrics['height_over_peak']:.3f} x peak live"
        )
    else:
        summary = (
            f"{int(fast.sum())}/{fast.size} buffers fast, speedup "
            f"{metrics['speedup']:.3f} x all-slow, {metrics['fast_byte_share']:.1%} "
            "of buffer bytes from fast memory"
        )
        if task == "msa":
            summary += (
                f",\n{metrics['prefetches']} prefetches, {metrics['evictions']} "
                f"evictions, {metrics['stall_s'] * 1e6:.2f} us stalled"
            )
    ax.set_title(
        f"{title or record.get('case', '')} [{task}, order {record.get('order')}]: {summary}",
        fontsize=10,
    )
    if task != "pack":
        _plot_op_times(axes[1, 0], record, fast)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _byte_unit(nbytes: float) -> tuple[str, float]:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= 4 * scale:
            return unit, float(scale)
    return "bytes", 1.0


def _plot_op_times(ax, record: dict[str, Any], fast: np.ndarray) -> None:
    ops, acc, mem = record["ops"], record["accesses"], record["memory"]
    t = np.asarray(ops["time"], np.float64)
    compute = np.asarray(ops["compute_s"])
    op, buf, nbytes = (np.asarray(acc[k]) for k in ("op", "buffer", "bytes"))
    served = fast[buf]
    if "windows" in record:  # msa: fast only between the window's first and last fast access
        w = record["windows"]
        first, last = np.asarray(w["first_op"]), np.asarray(w["last_op"])
        served = served & (op >= first[buf]) & (op <= last[buf])
    f_bytes = np.bincount(op, weights=np.where(served, nbytes, 0.0), minlength=t.size)
    total = np.asarray(ops["fixed_bytes"]) + np.bincount(op, weights=nbytes, minlength=t.size)
    slow_t = np.maximum(compute, total / mem["slow_bandwidth"])
    mapped = np.maximum(
        compute, f_bytes / mem["fast_bandwidth"] + (total - f_bytes) / mem["slow_bandwidth"]
    )
    ax.step(t, slow_t * 1e6, where="post", color="lightcoral", lw=1.0, label="all slow")
    ax.step(t, mapped * 1e6, where="post", color="navy", lw=1.0, label="this mapping")
    ax.step(t, compute * 1e6, where="post", color="grey", lw=0.8, ls=":", label="compute")
    ax.set_xlabel("op step" if t.size and t[-1] < 1e5 else "time")
    ax.set_ylabel("op time (us)")
    ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8, ncol=3)
