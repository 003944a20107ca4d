"""The memory-mapping simulator: plain numpy, no Gymnasium (the face is ``env.py``).

Buffers of a ``BufferSet`` are decided one at a time in a fixed order. The current buffer's
*candidates* are the bottoms of the free gaps left, over its whole lifetime, by the buffers
already placed in the (fast) memory whose lifetimes overlap it: 0 and top edges of placed
buffers, the positions of MiniMalloc's canonical solutions (Moffitt 2023), kept only where the
buffer fits. The action picks a candidate, or slow memory in the *map* task.

Two tasks:

* ``pack``: every buffer gets an address; the score is the peak height (MiniMalloc's problem);
  the address space is unbounded, so the topmost gap is always a candidate.
* ``map``: the mallocGame of mallocMuZero (Wang et al. 2023): fast memory holds ``capacity``
  bytes; op ``j`` takes ``max(c_j, F_j / fast_bw + S_j / slow_bw)`` seconds, where ``F_j`` and
  ``S_j`` are the bytes it moves from fast and slow memory; the score is the summed time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from schedgym.envs.hardware.kernels import KERNELS
from schedgym.errors import IllegalActionError
from schedgym.workloads.memory import BufferSet

TASKS = ("pack", "map", "msa")
ORDERS = ("start", "size", "area", "benefit")
RECORD_FORMAT = "schedgym-memmap-record/1"
_UNBOUNDED = np.int64(2**62)  # the pack task's address space has no ceiling

# Where a buffer lives.
UNDECIDED, FAST, SLOW = 0, 1, 2


def op_seconds(table: Any, op: Any) -> float:
    """Compute seconds of one traced op on a kernel cost table, for the max(compute, memory) model.

    A kernel whose roofline is compute-bound keeps its measured (interpolated) latency: moving its
    bytes faster would not shorten it. A memory-bound kernel's measured latency *is* its HBM
    traffic, which the tiers now price byte by byte, so only its launch overhead and arithmetic
    (FLOPs at the table's achieved peak) remain as compute. Either way times ``op.count``.
    """
    spec = KERNELS[op.kernel]
    r = table.roofline
    flops, nbytes = spec.work(table.dtype_bytes, **op.params)
    t_flops = float(flops) / (r.peak_flops * r.compute_efficiency)
    t_bytes = float(nbytes) / (r.mem_bandwidth * r.memory_efficiency)
    if spec.transfer is None and t_bytes >= t_flops:
        return (r.launch_s + t_flops) * op.count
    return table.predict(op.kernel, **op.params) * op.count


@dataclass(frozen=True, eq=False)
class CostModel:
    """The map task's time model over one buffer set, with per-buffer access lists (CSR)."""

    compute: np.ndarray  # [m] seconds
    total_bytes: np.ndarray  # [m] fixed bytes + every access, all from slow memory
    ptr: np.ndarray  # [n + 1] accesses of buffer b are acc_op[ptr[b]:ptr[b + 1]]
    acc_op: np.ndarray
    acc_bytes: np.ndarray
    fast_bandwidth: float
    slow_bandwidth: float

    @classmethod
    def build(cls, buffers: BufferSet, fast_bandwidth: float, slow_bandwidth: float) -> CostModel:
        ops = buffers.op_table()
        order = np.argsort(ops.access_buf, kind="stable")
        ptr = np.zeros(buffers.n + 1, np.int64)
        np.cumsum(np.bincount(ops.access_buf, minlength=buffers.n), out=ptr[1:])
        total = ops.fixed_bytes + np.bincount(ops.access_op, weights=ops.access_bytes,
                                              minlength=ops.n_ops)
        return cls(ops.compute_s, total, ptr, ops.access_op[order], ops.access_bytes[order],
                   float(fast_bandwidth), float(slow_bandwidth))

    def op_time(self, fast_bytes: np.ndarray, ops: np.ndarray | slice = slice(None)) -> np.ndarray:
        b = self.total_bytes[ops]
        memory = (b - fast_bytes) / self.slow_bandwidth + fast_bytes / self.fast_bandwidth
        return np.maximum(self.compute[ops], memory)

    def all_slow_time(self) -> float:
        return float(self.op_time(np.zeros_like(self.compute)).sum())

    def fast_bytes(self, fast: np.ndarray) -> np.ndarray:
        """Bytes each op moves from fast memory when the buffers where ``fast`` holds are fast."""
        owner = np.repeat(np.arange(self.ptr.size - 1), np.diff(self.ptr))
        w = np.where(fast[owner], self.acc_bytes, 0.0)
        return np.bincount(self.acc_op, weights=w, minlength=self.compute.size)

    def memory_boundedness(self, size: np.ndarray) -> np.ndarray:
        """XLA's memory-space-assignment priority per buffer (``CostAnalysis::
        GetMemoryBoundedness``): over the buffer's definition and uses, the alternate-memory
        benefit of each (time saved on a memory-bound op, or minus the distance from memory
        boundedness on a compute-bound one), summed where positive, else their maximum; divided
        by the square root of the size."""
        m_all = self.total_bytes / self.slow_bandwidth
        bound = m_all > self.compute
        saved = self.acc_bytes * (1.0 / self.slow_bandwidth - 1.0 / self.fast_bandwidth)
        benefit = np.where(bound[self.acc_op], saved, (m_all - self.compute)[self.acc_op])
        n = self.ptr.size - 1
        owner = np.repeat(np.arange(n), np.diff(self.ptr))
        positive = np.bincount(owner, weights=np.maximum(benefit, 0.0), minlength=n)
        best = np.full(n, -np.inf)
        np.maximum.at(best, owner, benefit)
        total = np.where(positive > 0, positive, np.where(np.isfinite(best), best, 0.0))
        return total / np.sqrt(size)

    def solo_gain(self) -> np.ndarray:
        """Per buffer: share of its ops' all-slow time saved by making it alone fast."""
        n = self.ptr.size - 1
        owner = np.repeat(np.arange(n), np.diff(self.ptr))
        base = self.op_time(np.zeros(self.acc_op.size), self.acc_op)
        moved = self.op_time(self.acc_bytes, self.acc_op)
        saved = np.bincount(owner, weights=base - moved, minlength=n)
        spent = np.bincount(owner, weights=base, minlength=n)
        return np.divide(saved, spent, out=np.zeros(n), where=spent > 0)


def decision_order(buffers: BufferSet, order: str, cost: CostModel) -> np.ndarray:
    """Buffer indices in the order decided, ties broken by the later keys, then by index.

    ``start``: earlier first, then larger first; ``size``: larger first, then earlier first;
    ``area``: size x lifetime, larger first; ``benefit``: XLA's memory boundedness, larger first
    (``CostModel.memory_boundedness``), then larger first.
    """
    idx = np.arange(buffers.n)
    size, start = buffers.size, buffers.start
    if order == "start":
        keys = (idx, -size, start)
    elif order == "size":
        keys = (idx, start, -size)
    elif order == "area":
        keys = (idx, start, -size * (buffers.end - start))
    elif order == "benefit":
        keys = (idx, start, -size, -cost.memory_boundedness(size))
    else:
        raise ValueError(f"unknown buffer order {order!r}; known: {', '.join(ORDERS)}")
    return np.lexsort(keys)


def placement_metrics(task: str, buffers: BufferSet, capacity: int, offset: np.ndarray,
                      cost: CostModel | None) -> dict[str, float | int]:
    """The task's metrics of a complete placement (``offset`` -1 = slow memory)."""
    fast = offset >= 0
    height = int((offset + buffers.size)[fast].max()) if fast.any() else 0
    if task == "pack":
        peak = buffers.peak_live_bytes()
        return {"height": height, "capacity": int(capacity), "height_over_capacity":
                height / capacity, "solved": int(height <= capacity), "peak_live": peak,
                "height_over_peak": height / peak}
    assert cost is not None
    fast_bytes = cost.fast_bytes(fast)
    t = float(cost.op_time(fast_bytes).sum())
    slow = cost.all_slow_time()
    owner = np.repeat(np.arange(buffers.n), np.diff(cost.ptr))
    moved = float(cost.acc_bytes.sum())
    return {"modelled_time_s": t, "all_slow_time_s": slow, "speedup": slow / t if t > 0 else 1.0,
            "fast_byte_share": float(cost.acc_bytes[fast[owner]].sum()) / moved if moved else 0.0,
            "fast_buffers": int(fast.sum()), "height": height, "capacity": int(capacity)}


def placement_record(task: str, buffers: BufferSet, capacity: int, offset: np.ndarray,
                     cost: CostModel | None, order: str, decided: np.ndarray) -> dict[str, Any]:
    """The JSON-serialisable episode record that ``record.validate`` re-checks."""
    record: dict[str, Any] = {
        "format": RECORD_FORMAT, "env": "memmap", "task": task, "case": buffers.name,
        "order": order, "capacity": int(capacity),
        "buffers": {"id": buffers.ids.tolist(), "start": buffers.start.tolist(),
                    "end": buffers.end.tolist(), "size": buffers.size.tolist()},
        "offset": np.asarray(offset, np.int64).tolist(),
        "decision_order": np.asarray(decided, np.int64).tolist(),
    }
    if task == "map":
        assert cost is not None
        ops = buffers.op_table()
        record["memory"] = {"fast_bandwidth": cost.fast_bandwidth,
                            "slow_bandwidth": cost.slow_bandwidth}
        record["ops"] = {"time": ops.time.tolist(), "compute_s": ops.compute_s.tolist(),
                         "fixed_bytes": ops.fixed_bytes.tolist()}
        record["accesses"] = {"op": ops.access_op.tolist(), "buffer": ops.access_buf.tolist(),
                              "bytes": ops.access_bytes.tolist()}
    return record


@dataclass(frozen=True)
class Snapshot:
    k: int
    where: np.ndarray
    offset: np.ndarray
    m: int
    placed: np.ndarray  # [4, m] start, end, offset, top of the fast buffers, in placement order
    fast_bytes: np.ndarray
    op_time: np.ndarray
    total_time: float
    height: int


class MemoryMapCore:
    """State, legal actions, transition and metrics of one episode (module docstring).

    Actions ``0 .. max_candidates - 1`` pick the candidate of that rank (ascending offset);
    in the map task, action ``max_candidates`` sends the buffer to slow memory. When more gaps
    fit than there are candidate slots, the lowest ``max_candidates - 1`` and the topmost are
    kept.
    """

    def __init__(self, buffers: BufferSet, task: str, capacity: int, *, order: str = "start",
                 max_candidates: int = 32, fast_bandwidth: float = 1.0,
                 slow_bandwidth: float = 1.0):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        if max_candidates < 1:
            raise ValueError("max_candidates must be at least 1")
        self.buffers, self.task, self.capacity = buffers, task, int(capacity)
        self.order_name, self.K = order, int(max_candidates)
        # Slow memory is an action of the map and msa tasks: a pack episode has K actions.
        self.slow_action = -1 if task == "pack" else self.K
        self.n_actions = self.K + (task != "pack")
        self.cost = CostModel.build(buffers, fast_bandwidth, slow_bandwidth)
        self.order = decision_order(buffers, order, self.cost)
        self.limit = _UNBOUNDED if task == "pack" else self.capacity
        self._start, self._end, self._size = buffers.start, buffers.end, buffers.size
        self.all_slow = self.cost.all_slow_time()
        n = buffers.n
        self.where = np.zeros(n, np.int8)
        self.offset = np.full(n, -1, np.int64)
        self._placed = np.zeros((4, n), np.int64)  # rows contiguous: scanned every step
        self._fast_bytes = np.zeros(self.cost.compute.size)
        self._prepare()
        self.reset()

    def _prepare(self) -> None:
        """Per-case tables a task adds before the first reset (the msa task's core)."""

    # -- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        self.k, self.m, self.height = 0, 0, 0
        self.where[:] = UNDECIDED
        self.offset[:] = -1
        self._fast_bytes[:] = 0.0
        self._op_time = self.cost.op_time(self._fast_bytes)
        self.total_time = float(self._op_time.sum())
        self._t0 = time.perf_counter()
        self.solve_s = 0.0
        self._refresh()

    def get_state(self) -> Snapshot:
        return Snapshot(self.k, self.where.copy(), self.offset.copy(), self.m,
                        self._placed[:, : self.m].copy(), self._fast_bytes.copy(),
                        self._op_time.copy(), self.total_time, self.height)

    def set_state(self, s: Snapshot) -> None:
        self.k, self.m, self.total_time, self.height = s.k, s.m, s.total_time, s.height
        self.where[:] = s.where
        self.offset[:] = s.offset
        self._placed[:, : s.m] = s.placed
        self._fast_bytes[:] = s.fast_bytes
        self._op_time = s.op_time.copy()
        self._refresh()

    @property
    def done(self) -> bool:
        return self.k >= self.buffers.n

    @property
    def current(self) -> int:
        """Index of the buffer being decided (valid while not done)."""
        return int(self.order[self.k])

    # -- candidates -------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Compute the current buffer's candidate offsets and the gaps above them."""
        if self.done:
            self.cand_offset = np.zeros(0, np.int64)
            self.cand_gap = np.zeros(0, np.int64)
            return
        b = self.current
        bottoms, gap = self._gaps(self._start[b], self._end[b])
        fits = np.flatnonzero(gap >= self._size[b])
        if fits.size > self.K:
            fits = np.concatenate((fits[: self.K - 1], fits[-1:]))
        self.cand_offset = bottoms[fits]
        self.cand_gap = gap[fits]

    def _gaps(self, s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        """Bottoms and heights of the free gaps over ``[s, e)`` between the placed boxes that
        overlap it, in ascending address (0 and the placed tops: the canonical positions)."""
        p = self._placed[:, : self.m]
        hit = (p[0] < e) & (p[1] > s)
        lo, hi = p[2, hit], p[3, hit]
        if lo.size:
            srt = np.argsort(lo, kind="stable")
            bottoms = np.concatenate(([0], np.maximum.accumulate(hi[srt])))
            tops = np.concatenate((lo[srt], [self.limit]))
        else:
            bottoms = np.zeros(1, np.int64)
            tops = np.array([self.limit], np.int64)
        return bottoms, tops - bottoms

    def action_mask(self) -> np.ndarray:
        mask = np.zeros(self.n_actions, bool)
        mask[: self.cand_offset.size] = True
        if self.task != "pack":
            mask[self.slow_action] = not self.done
        return mask

    # -- placement rules (what the greedy baselines choose) ----------------------------------

    def best_fit(self) -> int:
        """The candidate in the tightest gap (lowest on ties); slow memory when none fits."""
        if self.cand_offset.size == 0:
            return self.slow_action
        return int(np.argmin(self.cand_gap))

    def first_fit(self) -> int:
        """The lowest candidate; slow memory when none fits."""
        return 0 if self.cand_offset.size else self.slow_action

    # -- transition -------------------------------------------------------------------------

    def step(self, action: int) -> float:
        """Decide the current buffer; returns the reward (``MemoryMapEnv`` docstring)."""
        if self.done:
            raise IllegalActionError(f"action {action}: the episode is over; call reset()")
        b = self.current
        if action == self.slow_action and self.task == "map":
            self.where[b] = SLOW
            reward = 0.0
        elif 0 <= action < self.cand_offset.size:
            x = int(self.cand_offset[action])
            top = x + int(self._size[b])
            self.where[b] = FAST
            self.offset[b] = x
            self._placed[:, self.m] = (self._start[b], self._end[b], x, top)
            self.m += 1
            grown = max(0, top - self.height)
            self.height += grown
            if self.task == "map":
                lo, hi = self.cost.ptr[b], self.cost.ptr[b + 1]
                ops = self.cost.acc_op[lo:hi]
                self._fast_bytes[ops] += self.cost.acc_bytes[lo:hi]
                new = self.cost.op_time(self._fast_bytes[ops], ops)
                saved = float((self._op_time[ops] - new).sum())
                self._op_time[ops] = new
                self.total_time -= saved
                reward = saved / self.all_slow if self.all_slow > 0 else 0.0
            else:
                reward = -grown / self.capacity
        else:
            n = self.cand_offset.size
            raise IllegalActionError(
                f"action {action}: buffer {int(self.buffers.ids[b])} has {n} candidate "
                f"offset{'s' if n != 1 else ''} (actions 0..{n - 1})"
                + (f" and slow memory (action {self.slow_action})" if self.task == "map" else ""))
        self.k += 1
        if self.done:
            self.solve_s = time.perf_counter() - self._t0
        self._refresh()
        return reward

    # -- results ----------------------------------------------------------------------------

    def metrics(self) -> dict[str, float | int]:
        out = placement_metrics(self.task, self.buffers, self.capacity, self.offset, self.cost)
        if self.task == "pack":
            out["solve_s"] = self.solve_s
        return out

    def record(self) -> dict[str, Any]:
        return placement_record(self.task, self.buffers, self.capacity, self.offset, self.cost,
                                self.order_name, self.order)
