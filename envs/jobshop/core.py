"""The job-shop simulator core: state, legal actions, transition and the non-delay fast path.

Plain numpy, no Gymnasium: `JobShopEnv` (``envs/jobshop/env.py``) is its Gymnasium face, and the
dispatching rules of ``baselines/jobshop.py`` drive it directly through `non_delay_plan`.

An action is a job index; its next operation starts at the earliest time ``t >= ready[job]`` at
which it fits on its machine, idle gaps between already placed operations included (insertion,
so every reachable schedule is *active*). Operations on a machine may not overlap: sorted by
(start, end), each starts no earlier than the previous one ends, which also keeps an operation of
zero duration (``orb07`` has some) out of the inside of another one, as CP-SAT's NoOverlap does.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import numpy as np

from schedgym.errors import IllegalActionError
from schedgym.workloads.jobshop import JobShopInstance

_STATE_ARRAYS = (
    "next_op", "ready", "starts", "mach_avail", "mach_busy", "history",
)  # fmt: skip


class JobShopCore:
    """One job-shop episode. Arrays are public for encoders and rules to read, never to write.

    * ``next_op[j]``: index of job ``j``'s next unscheduled operation (``n_ops`` when done);
    * ``ready[j]``: end of job ``j``'s last scheduled operation;
    * ``starts[j, k]``: start of operation ``(j, k)``, -1 while unscheduled;
    * ``mach_avail[m]``: end of the last operation on machine ``m``; ``mach_busy[m]``: work done;
    * ``history[:n_done]``: the actions taken; ``work_done``: their total duration.

    Each machine's timeline (its operations' starts and ends, sorted, and the end of its latest
    idle gap, 0 if none, so the gap search is skipped when an operation cannot end before it)
    is kept in Python lists: the transition and the rules' fast path read and insert one scalar
    at a time, which lists serve several times faster than numpy rows.
    """

    def __init__(self, instance: JobShopInstance):
        self.instance = instance
        self.n_jobs, self.n_ops, self.n_machines = (
            instance.n_jobs,
            instance.n_ops,
            instance.n_machines,
        )
        self._machine_rows: list[list[int]] = instance.machines.tolist()
        self._duration_rows: list[list[int]] = instance.durations.tolist()
        J, K, M = self.n_jobs, self.n_ops, self.n_machines
        self.next_op = np.zeros(J, np.int64)
        self.ready = np.zeros(J, np.int64)
        self.starts = np.full((J, K), -1, np.int64)
        self.mach_avail = np.zeros(M, np.int64)
        self.mach_busy = np.zeros(M, np.int64)
        self.history = np.full(J * K, -1, np.int64)
        self._m_start: list[list[int]] = [[] for _ in range(M)]
        self._m_end: list[list[int]] = [[] for _ in range(M)]
        self._gap_end: list[int] = [0] * M
        self.n_done = 0
        self.makespan = 0
        self.work_done = 0

    def reset(self) -> None:
        for name in _STATE_ARRAYS:
            getattr(self, name).fill(0)
        self.starts.fill(-1)
        self.history.fill(-1)
        self._m_start = [[] for _ in range(self.n_machines)]
        self._m_end = [[] for _ in range(self.n_machines)]
        self._gap_end = [0] * self.n_machines
        self.n_done = 0
        self.makespan = 0
        self.work_done = 0

    @property
    def done(self) -> bool:
        return self.n_done == self.n_jobs * self.n_ops

    def legal_mask(self) -> np.ndarray:
        """True for jobs with operations left."""
        return self.next_op < self.n_ops

    # --- transition ----------------------------------------------------------------------

    def _check(self, job: int) -> int:
        if not 0 <= job < self.n_jobs:
            raise IllegalActionError(
                f"action {job}: no job {job} in instance {self.instance.name!r} "
                f"({self.n_jobs} jobs, actions 0..{self.n_jobs - 1})"
            )
        k = self.next_op.item(job)
        if k == self.n_ops:
            raise IllegalActionError(f"action {job}: job {job} has no operations left")
        return k

    def _fit(self, machine: int, ready: int, duration: int) -> tuple[int, int]:
        """Earliest start >= ready of an operation of ``duration`` on ``machine``, and the
        index its interval takes in the machine's sorted list."""
        starts, ends = self._m_start[machine], self._m_end[machine]
        count = len(starts)
        avail = ends[-1] if count else 0
        if ready >= avail or (duration > 0 and ready + duration > self._gap_end[machine]):
            return max(ready, avail), count
        # Gap i lies before interval i; gaps before an interval starting earlier than
        # ready + duration cannot hold the operation.
        first = bisect_left(starts, ready + duration)
        prev_end = ends[first - 1] if first else 0
        for i in range(first, count):
            t = max(ready, prev_end)
            if t + duration <= starts[i]:
                return t, i
            prev_end = ends[i]
        return max(ready, prev_end), count

    def earliest_start(self, job: int) -> int:
        """When job ``job``'s next operation would start if dispatched now."""
        k = self._check(job)
        return self._fit(
            self._machine_rows[job][k], self.ready.item(job), self._duration_rows[job][k]
        )[0]

    def step(self, job: int) -> int:
        """Dispatch job ``job``'s next operation; return its start time."""
        k = self._check(job)
        machine = self._machine_rows[job][k]
        duration = self._duration_rows[job][k]
        start, pos = self._fit(machine, self.ready.item(job), duration)
        self._place(job, k, machine, duration, start, pos)
        return start

    def _place(self, job: int, k: int, machine: int, duration: int, start: int, pos: int) -> None:
        """Put operation ``(job, k)`` at ``start``, interval ``pos`` of its machine (`_fit`)."""
        end = start + duration
        starts, ends = self._m_start[machine], self._m_end[machine]
        if pos == len(starts):
            if start > (ends[-1] if ends else 0):
                self._gap_end[machine] = start
            starts.append(start)
            ends.append(end)
            self.mach_avail[machine] = end
        else:
            starts.insert(pos, start)
            ends.insert(pos, end)
            self._refresh_gap_end(machine)
        self.mach_busy[machine] += duration
        self.starts[job, k] = start
        self.next_op[job] = k + 1
        self.ready[job] = end
        self.history[self.n_done] = job
        self.n_done += 1
        self.work_done += duration
        if end > self.makespan:
            self.makespan = end

    def _refresh_gap_end(self, machine: int) -> None:
        starts, ends = self._m_start[machine], self._m_end[machine]
        for i in range(len(starts) - 1, -1, -1):
            if starts[i] > (ends[i - 1] if i else 0):
                self._gap_end[machine] = starts[i]
                return
        self._gap_end[machine] = 0

    # --- snapshots -----------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A snapshot (copies) that `set_state` restores; cheap enough for tree search."""
        state: dict[str, Any] = {name: getattr(self, name).copy() for name in _STATE_ARRAYS}
        state["timelines"] = self._copy_timelines()
        state["n_done"] = self.n_done
        state["makespan"] = self.makespan
        state["work_done"] = self.work_done
        state["instance"] = self.instance
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        if state["instance"] is not self.instance:
            raise ValueError(
                f"state of instance {state['instance'].name!r} given to a core of "
                f"{self.instance.name!r}; reset the env on that instance first"
            )
        for name in _STATE_ARRAYS:
            np.copyto(getattr(self, name), state[name])
        m_start, m_end, gap_end = state["timelines"]
        self._m_start = [row[:] for row in m_start]
        self._m_end = [row[:] for row in m_end]
        self._gap_end = gap_end[:]
        self.n_done = int(state["n_done"])
        self.makespan = int(state["makespan"])
        self.work_done = int(state["work_done"])

    def _copy_timelines(self) -> tuple[list[list[int]], list[list[int]], list[int]]:
        return (
            [row[:] for row in self._m_start],
            [row[:] for row in self._m_end],
            self._gap_end[:],
        )

    def clone(self) -> JobShopCore:
        other = JobShopCore.__new__(JobShopCore)
        other.__dict__.update(self.__dict__)
        for name in _STATE_ARRAYS:
            setattr(other, name, getattr(self, name).copy())
        other._m_start, other._m_end, other._gap_end = self._copy_timelines()
        return other


# --- non-delay dispatching rules (Giffler & Thompson 1960) -----------------------------------

# A rule ranks the operation (j, k) by op_rank[j, k] + (ready time of job j if by_ready), lower
# first; ties go to the lower job index.
RuleKey = tuple[np.ndarray, bool]


DISPATCH_RULES: dict[str, Callable[[JobShopInstance], RuleKey]] = {
    # shortest processing time
    "spt": lambda inst: (inst.durations, False),
    # longest processing time
    "lpt": lambda inst: (-inst.durations, False),
    # most operations remaining (the current one included)
    "mor": lambda inst: (
        -np.broadcast_to(np.arange(inst.n_ops, 0, -1), inst.machines.shape),
        False,
    ),
    # most work remaining (the current operation included)
    "mwkr": lambda inst: (-inst.remaining_work, False),
    # first in, first out: the operation that became ready first
    "fifo": lambda inst: (np.zeros_like(inst.durations), True),
}


def non_delay_plan(core: JobShopCore, rule: RuleKey) -> np.ndarray:
    """Run a non-delay dispatching rule on ``core`` to the end of the episode; return the
    actions it took.

    Giffler–Thompson non-delay generation: each decision looks at the earliest start ``t*`` over
    all schedulable operations and dispatches, among those that can start at ``t*``, the one the
    rule ranks first. A heap keyed (earliest start, rank, job) holds one entry per unfinished
    job; earliest starts only grow as machines fill, so a popped entry whose start has grown is
    pushed back with the new value instead of recomputing every job at every decision.
    """
    op_rank, by_ready = rule
    ranks: list[list[int]] = np.asarray(op_rank).tolist()
    machines, durations = core._machine_rows, core._duration_rows
    timelines, fit, place = core._m_start, core._fit, core._place
    # the loop's own copies of the two arrays it reads per job, kept in step with the core's
    next_op: list[int] = core.next_op.tolist()
    ready: list[int] = core.ready.tolist()
    first, n_ops = core.n_done, core.n_ops

    # An entry also keeps its machine's operation count and the fitted slot: while that count
    # is unchanged, the machine is too and the stored start and slot still hold.
    def entry(job: int) -> tuple[int, int, int, int, int]:
        k = next_op[job]
        machine = machines[job][k]
        start, pos = fit(machine, ready[job], durations[job][k])
        rank = ranks[job][k] + ready[job] if by_ready else ranks[job][k]
        return start, rank, job, len(timelines[machine]), pos

    heap = [entry(j) for j in range(core.n_jobs) if next_op[j] < n_ops]
    heapq.heapify(heap)
    while heap:
        start, rank, job, seen, pos = heap[0]
        k = next_op[job]
        machine = machines[job][k]
        count = len(timelines[machine])
        if count != seen:
            now, pos = fit(machine, ready[job], durations[job][k])
            if now != start:
                heapq.heapreplace(heap, (now, rank, job, count, pos))
                continue
        place(job, k, machine, durations[job][k], start, pos)
        next_op[job] = k + 1
        ready[job] = start + durations[job][k]
        if k + 1 < n_ops:
            heapq.heapreplace(heap, entry(job))
        else:
            heapq.heappop(heap)
    return core.history[first : core.n_done].copy()
