"""The ``msa`` task: XLA's memory-space assignment over time, on the memory-mapping core.

In the ``map`` task a buffer is in fast memory for its whole lifetime or not at all. Here, as in
XLA's memory-space assignment (``xla/service/memory_space_assignment/``), a buffer may live in
the fast ("alternate") memory for part of its lifetime. Time is counted in op steps: op ``j``
(``0 .. m-1``, in the set's op order) runs after op ``j - 1``. Buffer ``b`` is accessed by the
ops ``u_0 < u_1 < ... < u_k`` (``BufferSet.op_table``); its first access ``u_0`` writes it. One
decision per buffer picks a *window*, the accesses ``u_i .. u_j`` served from fast memory, and an
address ``x``; the buffer then holds ``[x, x + size)`` over the op steps ``[lo, hi)``:

* ``i = 0``: the buffer is *defined* in fast memory (op ``u_0`` writes it there), ``lo = u_0``;
* ``i >= 1``: a *prefetch* (slow to fast) is issued at op ``p``, ``u_0 < p <= u_i`` (the copy
  starts once op ``p - 1`` ends, as XLA's copy-start sits between two instructions), ``lo = p``;
  the slow copy stays valid, so no eviction is needed when the window ends;
* ``j = k``: the window ends at the last access, ``hi = u_k + 1``;
* ``i = 0, j < k``: the only copy is in fast memory but the buffer is read again later, so an
  *eviction* (fast to slow) starts once op ``u_j`` ends; it overlaps at most the next op and the
  space is freed at ``hi = min(u_j + 2, u_{j+1})``; op ``hi`` waits for the eviction to end;
* ``i >= 1, j < k``: the window ends at ``hi = u_j + 1`` and the later accesses read the slow
  copy.

Copies take ``size / copy_bandwidth`` seconds on one copy engine, first come first served (by the
op at which they become ready, then by decision order), overlap compute, and hold their fast
space for their whole window. An op that needs a copy finished waits for it: op ``j`` starts at
``max(end of op j - 1, end of the copies it waits for)`` and lasts ``max(compute_j,
F_j / fast_bw + S_j / slow_bw)``, ``F_j``, ``S_j`` the bytes it moves in each tier, where each
buffer is at that op. The modelled time is the end of the last op (the all-slow time when every
buffer stays slow, the sum of the op times).

Simplifications against XLA, stated so a reader can weigh them: one fast window per buffer (XLA
may prefetch a buffer again after evicting it), evictions overlap at most one op (XLA's
``PreferredEvictionEndTime`` may span more), copies do not slow the ops they overlap (XLA's
cost analysis does not charge them either), and no limit on outstanding copies other than the one
engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from schedgym.envs.memory.core import FAST, SLOW, MemoryMapCore, placement_record
from schedgym.errors import IllegalActionError
from schedgym.workloads.memory import BufferSet

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
        by_ready = np.lexsort((np.arange(n), ready_op))
        by_wait = np.argsort(wait_op, kind="stable")
        ri = wi = 0
        shift, free = 0.0, 0.0
        for q in np.unique(np.concatenate([ready_op, wait_op])).tolist():
            t = base[q] + shift  # op q - 1 has ended
            while ri < n and ready_op[by_ready[ri]] == q:
                c = by_ready[ri]
                c_start[c] = max(t, free)
                c_end[c] = free = c_start[c] + dur[c]
                ri += 1
            need = t
            while wi < n and wait_op[by_wait[wi]] == q:
                need = max(need, c_end[by_wait[wi]])
                wi += 1
            if need > t:
                stall[q] = need - t
                shift += need - t
    op_start = base[:m] + np.cumsum(stall[:m])
    return op_start, c_start, c_end, float(base[m] + stall.sum())


class MsaCore(MemoryMapCore):
    """The msa task's state and transition (module docstring), on the map task's core.

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
        # The whole window: every gap that fits, as in the map task.
        bottoms, gap = self._gaps(ops[0], ops[k] + 1)
        fits = np.flatnonzero(gap >= z)[:whole]
        for f in fits.tolist():
            rows.append((ops[0], ops[k] + 1, 0, k, -1))
            offs.append(int(bottoms[f]))
            gaps.append(int(gap[f]))
        windows = [(ops[0], min(ops[j] + 2, ops[j + 1]), 0, j, -1) for j in range(k - 1, -1, -1)]
        for i in range(1, k + 1):
            starts = sorted(
                set(int(np.clip(p, ops[0] + 1, ops[i])) for p in self.prefetch_starts(b, i))
            )
            for j in range(k, i - 1, -1):
                windows += [(p, ops[j] + 1, i, j, p) for p in starts]
        for w in windows:
            if len(rows) >= self.K:
                break
            bottoms, gap = self._gaps(w[0], w[1])
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
            sel = slice(i, j + 1)
            self._fast_bytes[ops[sel]] += nbytes[sel]
            self._op_time[ops[sel]] = self.cost.op_time(self._fast_bytes[ops[sel]], ops[sel])
            self._times = None
            before = self.total_time
            self.total_time = self.times()[3]
            reward = (before - self.total_time) / self.all_slow if self.all_slow > 0 else 0.0
        else:
            raise IllegalActionError(
                f"action {action}: buffer {int(self.buffers.ids[b])} has {n} candidate "
                f"window{'s' if n != 1 else ''} (actions 0..{n - 1}) and slow memory "
                f"(action {self.slow_action})"
            )
        self.k += 1
        self._refresh()
        return reward

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
