"""The memory-mapping simulator: plain numpy, no Gymnasium (the face is ``env.py``).

Buffers of a ``BufferSet`` are decided one at a time in a fixed order. The current buffer's
*candidates* are the bottoms of the free gaps left, over its whole lifetime, by the buffers
already placed in the (fast) memory whose lifetimes overlap it: 0 and top edges of placed
buffers, the positions of MiniMalloc's canonical solutions (Moffitt 2023), kept only where the
buffer fits. The action picks a candidate, or slow memory in the *map* task.

Three tasks:

* ``pack``: every buffer gets an address; the score is the peak height (MiniMalloc's problem);
  the address space is unbounded, so the topmost gap is always a candidate.
* ``map``: the mallocGame of mallocMuZero (Wang et al. 2023): fast memory holds ``capacity``
  bytes; op ``j`` takes ``max(c_j, F_j / fast_bw + S_j / slow_bw)`` seconds, where ``F_j`` and
  ``S_j`` are the bytes it moves from fast and slow memory; the score is the summed time.
* ``msa``: XLA's memory-space assignment over time: buffers fast for part of their lifetime,
  moved by prefetches and evictions on a copy engine (`MsaCore` states the model).
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
# Above this many (buffer, overlapping buffer) pairs a step scans every placed buffer instead of
# the current one's neighbours (a set where thousands of buffers live at once would need
# millions of pairs for nothing: every placed buffer is a neighbour there anyway).
MAX_NEIGHBOUR_PAIRS = 1 << 24

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


def flops_seconds(peak_flops: float, dtype_bytes: int, op: Any) -> float:
    """Compute seconds of one traced op at ``peak_flops`` FLOP/s (its FLOPs at
    ``dtype_bytes``-byte elements over the peak, times ``op.count``): the pricing of a chip
    known by its datasheet (a `Scratchpad`) rather than by a measured kernel table."""
    flops, _ = KERNELS[op.kernel].work(dtype_bytes, **op.params)
    return float(flops) / peak_flops * op.count


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
        total = ops.fixed_bytes + np.bincount(
            ops.access_op, weights=ops.access_bytes, minlength=ops.n_ops
        )
        return cls(
            ops.compute_s,
            total,
            ptr,
            ops.access_op[order],
            ops.access_bytes[order],
            float(fast_bandwidth),
            float(slow_bandwidth),
        )

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


def placement_metrics(
    task: str, buffers: BufferSet, capacity: int, offset: np.ndarray, cost: CostModel | None
) -> dict[str, float | int]:
    """The task's metrics of a complete placement (``offset`` -1 = slow memory)."""
    fast = offset >= 0
    height = int((offset + buffers.size)[fast].max()) if fast.any() else 0
    if task == "pack":
        peak = buffers.peak_live_bytes()
        return {
            "height": height,
            "capacity": int(capacity),
            "height_over_capacity": height / capacity,
            "solved": int(height <= capacity),
            "peak_live": peak,
            "height_over_peak": height / peak,
        }
    assert cost is not None
    fast_bytes = cost.fast_bytes(fast)
    t = float(cost.op_time(fast_bytes).sum())
    slow = cost.all_slow_time()
    owner = np.repeat(np.arange(buffers.n), np.diff(cost.ptr))
    moved = float(cost.acc_bytes.sum())
    return {
        "modelled_time_s": t,
        "all_slow_time_s": slow,
        "speedup": slow / t if t > 0 else 1.0,
        "fast_byte_share": float(cost.acc_bytes[fast[owner]].sum()) / moved if moved else 0.0,
        "fast_buffers": int(fast.sum()),
        "height": height,
        "capacity": int(capacity),
    }


def placement_record(
    task: str,
    buffers: BufferSet,
    capacity: int,
    offset: np.ndarray,
    cost: CostModel | None,
    order: str,
    decided: np.ndarray,
) -> dict[str, Any]:
    """The JSON-serialisable episode record that ``record.validate`` re-checks."""
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "env": "memmap",
        "task": task,
        "case": buffers.name,
        "order": order,
        "capacity": int(capacity),
        "buffers": {
            "id": buffers.ids.tolist(),
            "start": buffers.start.tolist(),
            "end": buffers.end.tolist(),
            "size": buffers.size.tolist(),
        },
        "offset": np.asarray(offset, np.int64).tolist(),
        "decision_order": np.asarray(decided, np.int64).tolist(),
    }
    if task == "map":
        assert cost is not None
        ops = buffers.op_table()
        record["memory"] = {
            "fast_bandwidth": cost.fast_bandwidth,
            "slow_bandwidth": cost.slow_bandwidth,
        }
        record["ops"] = {
            "time": ops.time.tolist(),
            "compute_s": ops.compute_s.tolist(),
            "fixed_bytes": ops.fixed_bytes.tolist(),
        }
        record["accesses"] = {
            "op": ops.access_op.tolist(),
            "buffer": ops.access_buf.tolist(),
            "bytes": ops.access_bytes.tolist(),
        }
    return record


def lifetime_neighbours(
    start: np.ndarray, end: np.ndarray, max_pairs: int = MAX_NEIGHBOUR_PAIRS
) -> tuple[np.ndarray, np.ndarray] | None:
    """The buffers whose half-open lifetimes ``[start, end)`` overlap each buffer's, as CSR:
    buffer ``b``'s are ``nbr[ptr[b]:ptr[b + 1]]`` (ascending, ``b`` itself excluded). Of two
    overlapping lifetimes, the one later in a sort by start starts inside the other, so each
    pair is found once, in the range of the sort after the earlier one that starts before its
    end (a binary search). ``None`` when the pairs would exceed ``max_pairs``. ``start``,
    ``end``: ``[n]`` int arrays."""
    n = start.size
    order = np.argsort(start, kind="stable")
    sorted_start = start[order]
    first = np.arange(1, n + 1)  # sorted positions after each buffer's own
    count = np.maximum(np.searchsorted(sorted_start, end[order], "left") - first, 0)
    total = int(count.sum())
    if 2 * total > max_pairs:
        return None
    within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    a = np.repeat(order, count)
    b = order[np.repeat(first, count) + within]
    key = np.sort(np.concatenate((a * n + b, b * n + a)))
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(key // n, minlength=n), out=ptr[1:])
    return key % n, ptr


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

    def __init__(
        self,
        buffers: BufferSet,
        task: str,
        capacity: int,
        *,
        order: str = "start",
        max_candidates: int = 32,
        fast_bandwidth: float = 1.0,
        slow_bandwidth: float = 1.0,
    ):
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
        self._placed = np.zeros((4, n), np.int64)  # [4, m]: lo, hi, offset, top, in order placed
        # each buffer's placed box spans [_lo_of[b], _hi_of[b]) (its lifetime here; MsaCore's
        # windows lie within it), so only lifetime neighbours can overlap the current buffer
        self._lo_of, self._hi_of = self._start, self._end
        self._neighbours = lifetime_neighbours(self._start, self._end, MAX_NEIGHBOUR_PAIRS)
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
        return Snapshot(
            self.k,
            self.where.copy(),
            self.offset.copy(),
            self.m,
            self._placed[:, : self.m].copy(),
            self._fast_bytes.copy(),
            self._op_time.copy(),
            self.total_time,
            self.height,
        )

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
        bottoms, gap = self._gaps(self._start[b], self._end[b], self._near(b))
        fits = np.flatnonzero(gap >= self._size[b])
        if fits.size > self.K:
            fits = np.concatenate((fits[: self.K - 1], fits[-1:]))
        self.cand_offset = bottoms[fits]
        self.cand_gap = gap[fits]

    def _near(self, b: int) -> np.ndarray:
        """``[4, k]`` lo, hi, offset, top of the placed boxes that may overlap buffer ``b``'s
        lifetime: its placed lifetime neighbours, else (no neighbour index) every placed box."""
        if self._neighbours is None:
            return self._placed[:, : self.m]
        nbr, ptr = self._neighbours
        nb = nbr[ptr[b] : ptr[b + 1]]
        nb = nb[self.where[nb] == FAST]
        x = self.offset[nb]
        return np.stack((self._lo_of[nb], self._hi_of[nb], x, x + self._size[nb]))

    def _gaps(
        self, s: int, e: int, placed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bottoms and heights of the free gaps over ``[s, e)`` between the placed boxes that
        overlap it, in ascending address (0 and the placed tops: the canonical positions);
        ``placed`` narrows the boxes looked at to a subset known to hold every one that may
        overlap."""
        p = self._placed[:, : self.m] if placed is None else placed
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
                + (f" and slow memory (action {self.slow_action})" if self.task == "map" else "")
            )
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
        return placement_record(
            self.task,
            self.buffers,
            self.capacity,
            self.offset,
            self.cost,
            self.order_name,
            self.order,
        )


# --- the msa task ---------------------------------------------------------------------------

# XLA's CostAnalysisPrefetchIntervalPicker ratios as XLA's own memory-space-assignment tools and
# tests construct it (min_overlap_to_async_copy_ratio, preferred_overlap_to_async_copy_ratio,
# max_overlap_to_mem_size_async_copy_ratio).
PICKER_MIN_RATIO = 0.8
PICKER_PREFERRED_RATIO = 1.5
PICKER_MAX_MEM_RATIO = 10.0

PREFETCH, EVICTION = 0, 1
COPY_KINDS = ("prefetch", "eviction")


def timeline(
    d: np.ndarray, ready_op: np.ndarray, wait_op: np.ndarray, dur: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Op start times and copy windows of one schedule (module docstring).

    ``d`` [m] op durations (s); copy ``c`` becomes ready when op ``ready_op[c] - 1`` ends, lasts
    ``dur[c]`` s on the one copy engine (first come first served, ties in list order), and op
    ``wait_op[c]`` may not start before it ends. Returns ``(op_start [m], copy_start [n],
    copy_end [n], makespan)`` in seconds.
    """
    m, n = d.size, ready_op.size
    base = np.concatenate(([0.0], np.cumsum(d)))  # op j's start if nothing ever stalls
    stall = np.zeros(m + 1)
    c_start, c_end = np.zeros(n), np.zeros(n)
    if n:
        # One pass over the ops where a copy becomes ready or is awaited, in op order: O(copies).
        by_ready = np.lexsort((np.arange(n), ready_op)).tolist()
        by_wait = np.argsort(wait_op, kind="stable").tolist()
        ready, wait, length = ready_op.tolist(), wait_op.tolist(), dur.tolist()
        starts, ends = c_start.tolist(), c_end.tolist()
        ri = wi = 0
        shift = free = 0.0
        for q in np.unique(np.concatenate([ready_op, wait_op])).tolist():
            t = float(base[q]) + shift  # op q - 1 has ended
            while ri < n and ready[by_ready[ri]] == q:
                c = by_ready[ri]
                starts[c] = max(t, free)
                ends[c] = free = starts[c] + length[c]
                ri += 1
            need = t
            while wi < n and wait[by_wait[wi]] == q:
                need = max(need, ends[by_wait[wi]])
                wi += 1
            if need > t:
                stall[q] = need - t
                shift += need - t
        c_start, c_end = np.array(starts), np.array(ends)
    op_start = base[:m] + np.cumsum(stall[:m])
    return op_start, c_start, c_end, float(base[m] + stall.sum())


class MsaCore(MemoryMapCore):
    """The ``msa`` task's state and transition: XLA's memory-space assignment over time.

    In the ``map`` task a buffer is in fast memory for its whole lifetime or not at all. Here,
    as in XLA's memory-space assignment (``xla/service/memory_space_assignment/``), a buffer may
    live in the fast ("alternate") memory for part of its lifetime. Time is counted in op steps:
    op ``j`` (``0 .. m-1``, in the set's op order) runs after op ``j - 1``. Buffer ``b`` is
    accessed by the ops ``u_0 < u_1 < ... < u_k`` (``BufferSet.op_table``); its first access
    ``u_0`` writes it. One decision per buffer picks a *window*, the accesses ``u_i .. u_j``
    served from fast memory, and an address ``x``; the buffer then holds ``[x, x + size)`` over
    the op steps ``[lo, hi)``:

    * ``i = 0``: the buffer is *defined* in fast memory (op ``u_0`` writes it there),
      ``lo = u_0``;
    * ``i >= 1``: a *prefetch* (slow to fast) is issued at op ``p``, ``u_0 < p <= u_i`` (the
      copy starts once op ``p - 1`` ends, as XLA's copy-start sits between two instructions),
      ``lo = p``; the slow copy stays valid, so no eviction is needed when the window ends;
    * ``j = k``: the window ends at the last access, ``hi = u_k + 1``;
    * ``i = 0, j < k``: the only copy is in fast memory but the buffer is read again later, so
      an *eviction* (fast to slow) starts once op ``u_j`` ends; it overlaps at most the next op
      and the space is freed at ``hi = min(u_j + 2, u_{j+1})``; op ``hi`` waits for the eviction
      to end;
    * ``i >= 1, j < k``: the window ends at ``hi = u_j + 1`` and the later accesses read the
      slow copy.

    Copies take ``size / copy_bandwidth`` seconds on one copy engine, first come first served
    (by the op at which they become ready, then by decision order), overlap compute, and hold
    their fast space for their whole window. An op that needs a copy finished waits for it: op
    ``j`` starts at ``max(end of op j - 1, end of the copies it waits for)`` and lasts
    ``max(compute_j, F_j / fast_bw + S_j / slow_bw)``, ``F_j``, ``S_j`` the bytes it moves in
    each tier, where each buffer is at that op. The modelled time is the end of the last op (the
    all-slow time when every buffer stays slow, the sum of the op times).

    Simplifications against XLA, stated so a reader can weigh them: one fast window per buffer
    (XLA may prefetch a buffer again after evicting it), evictions overlap at most one op (XLA's
    ``PreferredEvictionEndTime`` may span more), copies do not slow the ops they overlap (XLA's
    cost analysis does not charge them either), and no limit on outstanding copies other than
    the one engine. The reward and the decision order are the env's.

    Actions ``0 .. max_candidates - 1`` pick a candidate (window, address): first the addresses
    of the *whole* window (defined in fast memory, kept to the last access: the map task's choice,
    every gap that fits, at most half the slots), then the best-fit address of every other
    window: define and evict after access ``j``, or prefetch for accesses ``i .. j`` from each of
    the issue ops XLA's cost-analysis interval picker names (`prefetch_starts`). Action
    ``max_candidates`` leaves the buffer in slow memory.
    """

    def __init__(
        self,
        buffers: BufferSet,
        capacity: int,
        *,
        order: str = "benefit",
        max_candidates: int = 32,
        fast_bandwidth: float = 1.0,
        slow_bandwidth: float = 1.0,
        copy_bandwidth: float = 1.0,
    ):
        if copy_bandwidth <= 0:
            raise ValueError(f"copy_bandwidth must be positive, got {copy_bandwidth}")
        self.copy_bandwidth = float(copy_bandwidth)
        super().__init__(
            buffers,
            "msa",
            capacity,
            order=order,
            max_candidates=max_candidates,
            fast_bandwidth=fast_bandwidth,
            slow_bandwidth=slow_bandwidth,
        )

    def _prepare(self) -> None:
        cost, n = self.cost, self.buffers.n
        self.slow_op_time = cost.op_time(np.zeros(cost.compute.size))
        self.elapsed_cum = np.concatenate(([0.0], np.cumsum(self.slow_op_time)))
        self.copy_s = self.buffers.size / self.copy_bandwidth
        # XLA: max_async_copy_elapsed_ = copy time of the whole alternate memory x ratio.
        self.max_prefetch_elapsed = PICKER_MAX_MEM_RATIO * self.capacity / self.copy_bandwidth
        self.win_lo, self.win_hi = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        self._lo_of, self._hi_of = self.win_lo, self.win_hi  # a placed buffer holds its window
        self.first_op, self.last_op = np.full(n, -1, np.int64), np.full(n, -1, np.int64)

    def accesses(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Ops (ascending) and bytes of buffer ``b``'s accesses."""
        lo, hi = self.cost.ptr[b], self.cost.ptr[b + 1]
        return self.cost.acc_op[lo:hi], self.cost.acc_bytes[lo:hi]

    # -- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        self.win_lo[:] = self.win_hi[:] = self.first_op[:] = self.last_op[:] = -1
        self._copies: list[tuple[int, int, int, int, float]] = []  # buffer, kind, ready, wait, s
        self._times: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None
        super().reset()

    def get_state(self) -> Any:
        return (
            super().get_state(),
            self.win_lo.copy(),
            self.win_hi.copy(),
            self.first_op.copy(),
            self.last_op.copy(),
            list(self._copies),
        )

    def set_state(self, s: Any) -> None:
        base, lo, hi, first, last, copies = s
        self.win_lo[:], self.win_hi[:], self.first_op[:], self.last_op[:] = lo, hi, first, last
        self._copies = list(copies)
        self._times = None
        super().set_state(base)

    # -- candidates -------------------------------------------------------------------------

    def prefetch_starts(self, b: int, i: int) -> tuple[int, int, int]:
        """``(earliest, preferred, latest)`` issue ops of a prefetch of ``b`` for its access
        ``i`` (``i >= 1``), after XLA's ``CostAnalysisPrefetchIntervalPicker`` (in
        ``prefetch_interval_picker.cc``): the elapsed time of the ops a prefetch issued at ``p``
        overlaps, ``ops p .. u_i - 1`` at their all-slow times, is at least
        ``PICKER_MIN_RATIO`` x the copy time plus the time the use saves
        (``LatestPrefetchStartTime``), at most ``PICKER_MAX_MEM_RATIO`` x the copy time of the
        whole fast memory (``max_async_copy_elapsed_``), and closest to
        ``PICKER_PREFERRED_RATIO`` x the copy time, the earlier on ties
        (``PreferredPrefetchStartTime``). ``latest < earliest`` when no issue op hides the copy;
        all three lie in ``u_0 + 1 .. u_i``."""
        ops, nbytes = self.accesses(b)
        u, first = int(ops[i]), int(ops[0]) + 1
        cum, c = self.elapsed_cum, float(self.copy_s[b])
        cost = self.cost
        saved = float(self.slow_op_time[u] - cost.op_time(np.array([nbytes[i]]), np.array([u]))[0])
        # elapsed(p) = cum[u] - cum[p], non-increasing in p
        latest = int(np.searchsorted(cum, cum[u] + saved - PICKER_MIN_RATIO * c, "right")) - 1
        earliest = int(np.searchsorted(cum, cum[u] - self.max_prefetch_elapsed, "left"))
        latest, earliest = min(latest, u), max(earliest, first)
        if latest < earliest:
            return earliest, earliest, latest
        span = np.arange(earliest, latest + 1)
        preferred = int(span[np.argmin(np.abs(cum[u] - cum[span] - PICKER_PREFERRED_RATIO * c))])
        return earliest, preferred, latest

    def _refresh(self) -> None:
        self.cand = np.zeros((6, 0), np.int64)  # lo, hi, first access, last access, kind, p
        self.cand_offset = np.zeros(0, np.int64)
        self.cand_gap = np.zeros(0, np.int64)
        if self.done:
            return
        b = self.current
        z = int(self._size[b])
        ops = self.accesses(b)[0].tolist()
        k = len(ops) - 1
        rows, offs, gaps = [], [], []
        whole = max(1, self.K // 2)
        # Every window lies within [u_0, u_k + 1): look only at the boxes overlapping it.
        p = self._near(b)
        near = p[:, (p[0] < ops[k] + 1) & (p[1] > ops[0])]
        # The whole window: every gap that fits, as in the map task.
        bottoms, gap = self._gaps(ops[0], ops[k] + 1, near)
        fits = np.flatnonzero(gap >= z)[:whole]
        for f in fits.tolist():
            rows.append((ops[0], ops[k] + 1, 0, k, -1))
            offs.append(int(bottoms[f]))
            gaps.append(int(gap[f]))
        windows = [(ops[0], min(ops[j] + 2, ops[j + 1]), 0, j, -1) for j in range(k - 1, -1, -1)]
        for i in range(1, k + 1):
            starts = sorted({min(max(p, ops[0] + 1), ops[i]) for p in self.prefetch_starts(b, i)})
            for j in range(k, i - 1, -1):
                windows += [(p, ops[j] + 1, i, j, p) for p in starts]
        for w in windows:
            if len(rows) >= self.K:
                break
            bottoms, gap = self._gaps(w[0], w[1], near)
            fits = np.flatnonzero(gap >= z)
            if fits.size:
                f = int(fits[np.argmin(gap[fits])])
                rows.append(w)
                offs.append(int(bottoms[f]))
                gaps.append(int(gap[f]))
        if rows:
            self.cand = np.array(rows, np.int64).T
            self.cand_offset = np.array(offs, np.int64)
            self.cand_gap = np.array(gaps, np.int64)

    def is_whole(self, c: int) -> bool:
        """Whether candidate ``c`` keeps the buffer in fast memory from its write to its end."""
        return self.cand[4, c] < 0 and self.cand[3, c] == self.accesses(self.current)[0].size - 1

    def best_fit(self) -> int:
        """The whole-window candidate in the tightest gap (the map task's rule); else slow."""
        whole = [c for c in range(self.cand_offset.size) if self.is_whole(c)]
        if not whole:
            return self.slow_action
        return whole[int(np.argmin(self.cand_gap[whole]))]

    def first_fit(self) -> int:
        """The lowest whole-window candidate; slow memory when none fits."""
        return 0 if self.cand_offset.size and self.is_whole(0) else self.slow_action

    def xla_choice(self) -> int:
        """XLA's choice for the current buffer (``heuristic:msa`` in the baselines): the whole
        window at its best fit; else, of the eviction windows whose copy the ops it overlaps
        hide (at their all-slow times), the one that keeps the buffer in fast memory longest;
        else a prefetch for the earliest use that can be served, longest window
        first, issued at the picker's preferred op, else its latest, else its earliest, only
        when the copy can be hidden (``earliest <= latest``); else slow memory."""
        whole = self.best_fit()
        if whole != self.slow_action:
            return whole
        cand, n = self.cand, self.cand_offset.size
        # XLA evicts only when the copy fits in the time its interval picker gives it
        # (PreferredEvictionEndTime): here the ops between the last fast use and the freeing op.
        cum = self.elapsed_cum
        c_s = float(self.copy_s[self.current])
        evict = [
            c
            for c in range(n)
            if cand[4, c] < 0
            and cum[cand[1, c]] - cum[self.accesses(self.current)[0][cand[3, c]] + 1] >= c_s
        ]
        if evict:
            return max(evict, key=lambda c: (int(cand[3, c]), -int(self.cand_gap[c])))
        pick: dict[int, tuple[int, int, int]] = {}
        for i in sorted({int(v) for v in cand[2]}):
            early, preferred, late = self.prefetch_starts(self.current, i)
            rank = {preferred: 0, late: 1, early: 2} if early <= late else {}
            for c in range(n):
                p = int(cand[4, c])
                if cand[2, c] == i and p in rank:
                    pick[c] = (i, -int(cand[3, c]), rank[p])
        return min(pick, key=pick.__getitem__) if pick else self.slow_action

    # -- transition -------------------------------------------------------------------------

    def step(self, action: int) -> float:
        if self.done:
            raise IllegalActionError(f"action {action}: the episode is over; call reset()")
        b = self.current
        n = self.cand_offset.size
        if action == self.slow_action:
            self.where[b] = SLOW
            reward = 0.0
        elif 0 <= action < n:
            lo, hi, i, j, p = (int(v) for v in self.cand[:5, action])
            x = int(self.cand_offset[action])
            top = x + int(self._size[b])
            ops, nbytes = self.accesses(b)
            self.where[b], self.offset[b] = FAST, x
            self.win_lo[b], self.win_hi[b] = lo, hi
            self.first_op[b], self.last_op[b] = int(ops[i]), int(ops[j])
            self._placed[:, self.m] = (lo, hi, x, top)
            self.m += 1
            self.height = max(self.height, top)
            if p >= 0:
                self._copies.append((b, PREFETCH, p, int(ops[i]), float(self.copy_s[b])))
            elif j < ops.size - 1:
                self._copies.append((b, EVICTION, int(ops[j]) + 1, hi, float(self.copy_s[b])))
            sel = ops[i : j + 1]
            self._fast_bytes[sel] += nbytes[i : j + 1]
            new = self.cost.op_time(self._fast_bytes[sel], sel)
            saved = float((self._op_time[sel] - new).sum())
            self._op_time[sel] = new
            self._times = None
            self.total_time -= saved
            reward = saved
        else:
            raise IllegalActionError(
                f"action {action}: buffer {int(self.buffers.ids[b])} has {n} candidate "
                f"window{'s' if n != 1 else ''} (actions 0..{n - 1}) and slow memory "
                f"(action {self.slow_action})"
            )
        self.k += 1
        if self.done:  # the stalls of the whole schedule, charged once it is known
            stall = self.times()[3] - self.total_time
            self.total_time += stall
            reward -= stall
        self._refresh()
        return reward / self.all_slow if self.all_slow > 0 else 0.0

    def times(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """``timeline`` of the decisions so far (cached until the next placement)."""
        if self._times is None:
            cp = np.array([c[2:] for c in self._copies], np.float64).reshape(-1, 3)
            self._times = timeline(
                self._op_time, cp[:, 0].astype(np.int64), cp[:, 1].astype(np.int64), cp[:, 2]
            )
        return self._times

    # -- results ----------------------------------------------------------------------------

    def metrics(self) -> dict[str, float | int]:
        op_start, c_start, c_end, total = self.times()
        fast = self.where == FAST
        moved = float(self.cost.acc_bytes.sum())
        kinds = np.array([c[1] for c in self._copies], np.int64)
        return {
            "modelled_time_s": total,
            "all_slow_time_s": self.all_slow,
            "speedup": self.all_slow / total if total > 0 else 1.0,
            "stall_s": total - float(self._op_time.sum()),
            "fast_byte_share": float(self._fast_bytes.sum()) / moved if moved else 0.0,
            "fast_buffers": int(fast.sum()),
            "prefetches": int((kinds == PREFETCH).sum()),
            "evictions": int((kinds == EVICTION).sum()),
            "copy_bytes": int(sum(int(self._size[c[0]]) for c in self._copies)),
            "height": int(self.height),
            "capacity": int(self.capacity),
        }

    def record(self) -> dict[str, Any]:
        rec = placement_record(
            "map", self.buffers, self.capacity, self.offset, self.cost, self.order_name, self.order
        )
        op_start, c_start, c_end, _ = self.times()
        rec["task"] = "msa"
        rec["memory"]["copy_bandwidth"] = self.copy_bandwidth
        rec["windows"] = {
            "lo": self.win_lo.tolist(),
            "hi": self.win_hi.tolist(),
            "first_op": self.first_op.tolist(),
            "last_op": self.last_op.tolist(),
        }
        rec["copies"] = {
            "buffer": [c[0] for c in self._copies],
            "kind": [COPY_KINDS[c[1]] for c in self._copies],
            "ready_op": [c[2] for c in self._copies],
            "wait_op": [c[3] for c in self._copies],
            "start_s": c_start.tolist(),
            "end_s": c_end.tolist(),
        }
        rec["op_start_s"] = op_start.tolist()
        return rec
