"""Baselines of `schedgym/MemoryMap-v0`: greedy placements, and the bounds that frame them.

Heuristics (each knows only the buffer set, as an ahead-of-time compiler does):

* ``heuristic:msa``: XLA's memory-space assignment (`MsaPolicy`): buffers by memory
  boundedness (alternate-memory benefit over sqrt(size), XLA's ``GetMemoryBoundedness``); in the
  map task each at its best-fit offset, else slow memory; in the msa task each kept in fast
  memory as long as space allows, else evicted, else prefetched from the interval picker's
  preferred issue op, else slow;
* ``heuristic:best-fit-{start,size,area}``: buffers by start time, by size or by size x lifetime,
  each in the tightest gap that holds it (TFLite's greedy-by-size planner is best-fit by size);
* ``heuristic:first-fit-{start,size,area}``: the same orders, each at the lowest candidate;
* ``heuristic:all-slow`` (map): every buffer in slow memory, the reference of the speedup.

A heuristic's ``act`` applies its rule to whatever order the env runs; its ``solve`` runs its own
episode through the env in its own order, which is how the evaluator runs it.

Bounds:

* ``bound:peak-live`` (pack): no packing is lower than the peak of live bytes;
* ``bound:knapsack`` (map): the fractional knapsack over time, an LP: each buffer a fraction
  in fast memory over its whole lifetime, the fractions live at any moment within the fast
  capacity, each op at ``max(compute, memory time)`` of those fractions; its optimum is a lower
  bound on the modelled time (an upper bound on what fast memory can save);
* ``bound:knapsack`` (msa): the same relaxation over time (`msa_time_bound`): each access of a
  buffer a fraction in fast memory, reached either by holding the buffer since its previous
  access (space counted over the ops between) or by a prefetch (its copy time counted on the one
  copy engine within the total time), the fractions at every op within the fast capacity;
* ``solver:cpsat``: CP-SAT (OR-Tools) with ``NoOverlap2D`` over time x address boxes, exact on
  small sets (pack: minimum height; map: minimum modelled time), seeded with the best greedy
  placement; its placement is a real one and `validate` checks it.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from schedgym.envs.memory.core import MemoryMapCore, placement_metrics, placement_record
from schedgym.errors import SchedgymError
from schedgym.policy import PolicyKind

CPSAT_MAX_BUFFERS = 400
CPSAT_TIME_LIMIT_S = 30.0


class GreedyPolicy:
    """A placement rule (``best_fit`` or ``first_fit`` of the core) in a buffer order."""

    kind: PolicyKind = "heuristic"

    def __init__(self, name: str, order: str, rule: str):
        self.name, self.order, self.rule = name, order, rule

    def reset(self, env: Any) -> None:
        """Nothing to prepare: the rule reads the current candidates."""

    def act(self, env: Any, obs: Any) -> int:
        return getattr(env.unwrapped.core, self.rule)()

    def solve(self, env: Any, case: Any, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return run_in_order(self, env, case, seed, self.order)


class MsaPolicy:
    """XLA's memory-space assignment, as far as the env's decisions reach.

    Followed from ``xla/service/memory_space_assignment/``: the buffer order is
    ``MemoryBoundednessBufferIntervalComparator`` (``buffer_interval_comparator.cc``: memory
    boundedness from ``CostAnalysis::GetMemoryBoundedness``, larger first, then larger size):
    the env's ``"benefit"`` order. Per buffer, as ``MsaAlgorithm::AllocateSegment``
    (``algorithm.cc``) tries its options: keep the buffer in alternate memory from its write
    with no copy (``AllocateInAlternateMemoryNoCopy``), through the last use if space allows;
    else keep it as long as space allows and evict it (``Evict``); else prefetch it
    (``Prefetch``) for the earliest use that can be served, trying issue ops in the order of
    ``CostAnalysisPrefetchIntervalPicker`` (``prefetch_interval_picker.cc``: the preferred op,
    then alternately later and earlier ones, only those between ``LatestPrefetchStartTime`` and
    the earliest the maximum overlap allows, so that the copy is hidden); else slow memory.
    Addresses are best fit, as XLA's chunk candidates are. The env offers three issue ops per
    use (`MsaCore.prefetch_starts`), so the picker's later candidates beyond them are not
    tried. The per-buffer rule is the core's `MsaCore.xla_choice`. In the map task it is best
    fit in the same buffer order.
    """

    kind: PolicyKind = "heuristic"
    name = "heuristic:msa"

    def reset(self, env: Any) -> None:
        """Nothing to prepare: the rule reads the current candidates."""

    def act(self, env: Any, obs: Any) -> int:
        core = env.unwrapped.core
        if core.task != "msa":
            return core.best_fit()
        return core.xla_choice()

    def solve(self, env: Any, case: Any, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return run_in_order(self, env, case, seed, "benefit")


class AllSlowPolicy:
    """Every buffer in slow memory (map task only)."""

    kind: PolicyKind = "heuristic"
    name = "heuristic:all-slow"

    def reset(self, env: Any) -> None:
        if env.unwrapped.task == "pack":
            raise SchedgymError("heuristic:all-slow applies to the map and msa tasks only")

    def act(self, env: Any, obs: Any) -> int:
        return env.unwrapped.core.slow_action


def run_in_order(
    policy: Any, env: Any, case: Any, seed: int, order: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One episode of ``policy`` through ``env`` with the buffers in ``order``."""
    env = env.unwrapped
    options: dict[str, Any] = {"order": order}
    if case is not None:
        options["case"] = case
    obs, info = env.reset(seed=seed, options=options)
    policy.reset(env)
    done = False
    while not done:
        obs, _, done, _, info = env.step(policy.act(env, obs))
    return info["metrics"], info["record"]


def _episode_core(env: Any, case: Any, seed: int) -> MemoryMapCore:
    env = env.unwrapped
    env.reset(seed=seed, options={"case": case} if case is not None else None)
    return env.core


class _Solver:
    """A bound or solver computed whole by ``solve``; it makes no step-by-step decisions."""

    kind: PolicyKind = "bound"
    name = "bound:?"

    def reset(self, env: Any) -> None:
        """Nothing to prepare: ``solve`` resets the env itself."""

    def act(self, env: Any, obs: Any) -> int:
        raise SchedgymError(f"{self.name} is a solver: run it through solve(env, case, seed)")


class PeakLiveBound(_Solver):
    """Pack: the peak of live bytes, a lower bound on every packing's height."""

    name = "bound:peak-live"

    def solve(self, env: Any, case: Any, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        core = _episode_core(env, case, seed)
        if core.task != "pack":
            raise SchedgymError(
                f"{self.name} bounds the pack task; the map task has bound:knapsack"
            )
        record = core.record()
        record["bound"] = "peak-live"
        record.pop("offset")
        peak = core.buffers.peak_live_bytes()
        return {
            "height": peak,
            "capacity": core.capacity,
            "height_over_capacity": peak / core.capacity,
            "peak_live": peak,
            "height_over_peak": 1.0,
        }, record


class KnapsackBound(_Solver):
    """Map: the fractional knapsack over time (module docstring), a lower bound on time."""

    name = "bound:knapsack"

    def solve(self, env: Any, case: Any, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        core = _episode_core(env, case, seed)
        if core.task == "pack":
            raise SchedgymError(
                f"{self.name} bounds the map and msa tasks; the pack task has bound:peak-live"
            )
        lower = knapsack_time_bound(core) if core.task == "map" else msa_time_bound(core)
        record = core.record()
        record["bound"] = "knapsack"
        record.pop("offset")
        slow = core.all_slow
        return {
            "modelled_time_s": lower,
            "all_slow_time_s": slow,
            "speedup": slow / lower if lower > 0 else 1.0,
            "capacity": core.capacity,
        }, record


def knapsack_time_bound(core: MemoryMapCore) -> float:
    """The LP relaxation of the map task: buffer ``b`` is a fraction ``x_b`` in fast memory for
    its whole lifetime, the fractions live at every start time fit in the capacity, and each op
    takes ``max(compute, memory time at those fractions)``; address fragmentation is ignored.
    Its optimum (HiGHS) is at most the modelled time of every placement."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, vstack

    cost, bs = core.cost, core.buffers
    n, m = bs.n, cost.compute.size
    unit = core.all_slow / m if core.all_slow > 0 else 1.0
    owner = np.repeat(np.arange(n), np.diff(cost.ptr))
    gain = cost.acc_bytes * (1.0 / cost.slow_bandwidth - 1.0 / cost.fast_bandwidth) / unit
    # op rows: -T_j - sum_b gain_jb x_b <= -(all-slow memory time of op j)
    op_rows = coo_matrix(
        (
            np.concatenate([-gain, -np.ones(m)]),
            (
                np.concatenate([cost.acc_op, np.arange(m)]),
                np.concatenate([owner, n + np.arange(m)]),
            ),
        ),
        shape=(m, n + m),
    )
    # capacity rows, one per distinct start time t: sum over b live at t of size_b x_b <= C
    times = np.unique(bs.start)
    lo, hi = np.searchsorted(times, bs.start), np.searchsorted(times, bs.end)
    count = hi - lo
    row = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(count.sum())
    col = np.repeat(np.arange(n), count)
    cap_rows = coo_matrix((bs.size[col] / core.capacity, (row, col)), shape=(times.size, n + m))
    a_ub = vstack([op_rows, cap_rows]).tocsr()
    b_ub = np.concatenate([-cost.total_bytes / cost.slow_bandwidth / unit, np.ones(times.size)])
    bounds = [(0.0, 1.0)] * n + [(c / unit, None) for c in cost.compute]
    res = linprog(
        np.concatenate([np.zeros(n), np.ones(m)]),
        A_ub=a_ub,
        b_ub=b_ub,
        bounds=bounds,
        method="highs",
    )
    if res.status != 0:
        raise SchedgymError(f"bound:knapsack: the LP solver failed ({res.message})")
    return float(res.fun) * unit


def msa_time_bound(core: Any) -> float:
    """The LP relaxation of the msa task (`MsaCore`), a lower bound on its modelled time.

    Per access ``a`` of buffer ``b`` at op ``u`` (the ``i``-th of ``b``'s accesses): ``y_a`` in
    [0, 1], the fraction served from fast memory; for ``i >= 1`` also ``h_a`` (held since the
    previous access, ``h_a <= y_prev``) and ``q_a`` (prefetched), with ``y_a <= h_a + q_a``.
    Space: at every op, ``size_b`` times the ``y`` of the accesses there plus the ``h`` of the
    holds spanning it is at most ``C``. Copies: ``sum size_b q_a / copy_bw`` is at most the total
    time, as the one engine runs them one at a time before the ops they serve end. Op times:
    ``T_j >= compute_j`` and ``T_j >= `` its all-slow memory time less what the ``y`` save. Every
    schedule of the task is a 0/1 point of this LP with its stalls spread over ``T``, so the
    optimum (HiGHS) is at most every schedule's modelled time; evictions and the space a prefetch
    holds before its use are relaxed away.
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, vstack

    cost, bs = core.cost, core.buffers
    m, na = cost.compute.size, cost.acc_op.size
    unit = core.all_slow / m if core.all_slow > 0 else 1.0
    owner = np.repeat(np.arange(bs.n), np.diff(cost.ptr))
    size = bs.size[owner].astype(np.float64)
    later = np.ones(na, bool)
    later[cost.ptr[:-1][np.diff(cost.ptr) > 0]] = False  # first access of each buffer: no h, q
    prev = np.flatnonzero(later) - 1  # the previous access of the same buffer
    nl = prev.size
    # columns: y [na], h [nl], q [nl], T [m]
    ycol, hcol, qcol, tcol = 0, na, na + nl, na + 2 * nl
    ncol = tcol + m
    gain = cost.acc_bytes * (1.0 / cost.slow_bandwidth - 1.0 / cost.fast_bandwidth) / unit
    rows = []
    # op rows: -T_j - sum gain y <= -(all-slow memory time of op j)
    rows.append(
        coo_matrix(
            (
                np.concatenate([-gain, -np.ones(m)]),
                (
                    np.concatenate([cost.acc_op, np.arange(m)]),
                    np.concatenate([ycol + np.arange(na), tcol + np.arange(m)]),
                ),
            ),
            shape=(m, ncol),
        )
    )
    k = np.arange(nl)
    later_idx = np.flatnonzero(later)
    # y_a - h_a - q_a <= 0 and h_a - y_prev <= 0
    rows.append(
        coo_matrix(
            (
                np.concatenate([np.ones(nl), -np.ones(nl), -np.ones(nl)]),
                (np.concatenate([k, k, k]), np.concatenate([ycol + later_idx, hcol + k, qcol + k])),
            ),
            shape=(nl, ncol),
        )
    )
    rows.append(
        coo_matrix(
            (
                np.concatenate([np.ones(nl), -np.ones(nl)]),
                (np.concatenate([k, k]), np.concatenate([hcol + k, ycol + prev])),
            ),
            shape=(nl, ncol),
        )
    )
    # space at every op: the accesses there, and the holds over the ops strictly between
    lo, hi = cost.acc_op[prev] + 1, cost.acc_op[later_idx]
    count = np.maximum(hi - lo, 0)
    hold_op = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(count.sum())
    hold_var = np.repeat(k, count)
    rows.append(
        coo_matrix(
            (
                np.concatenate([size, size[later_idx][hold_var]]) / core.capacity,
                (
                    np.concatenate([cost.acc_op, hold_op]),
                    np.concatenate([ycol + np.arange(na), hcol + hold_var]),
                ),
            ),
            shape=(m, ncol),
        )
    )
    # one copy engine: sum size q / copy_bw - sum T <= 0
    rows.append(
        coo_matrix(
            (
                np.concatenate([size[later_idx] / core.copy_bandwidth / unit, -np.ones(m)]),
                (np.zeros(nl + m, np.int64), np.concatenate([qcol + k, tcol + np.arange(m)])),
            ),
            shape=(1, ncol),
        )
    )
    a_ub = vstack(rows).tocsr()
    b_ub = np.concatenate(
        [-cost.total_bytes / cost.slow_bandwidth / unit, np.zeros(2 * nl), np.ones(m), [0.0]]
    )
    bounds = [(0.0, 1.0)] * (na + 2 * nl) + [(c / unit, None) for c in cost.compute]
    res = linprog(
        np.concatenate([np.zeros(na + 2 * nl), np.ones(m)]),
        A_ub=a_ub,
        b_ub=b_ub,
        bounds=bounds,
        method="highs",
    )
    if res.status != 0:
        raise SchedgymError(f"bound:knapsack: the msa LP solver failed ({res.message})")
    return float(res.fun) * unit


class CpSatPolicy(_Solver):
    """CP-SAT with NoOverlap2D: exact on small sets within the time limit (module docstring)."""

    kind: PolicyKind = "solver"
    name = "solver:cpsat"

    def __init__(self, time_limit_s: float = CPSAT_TIME_LIMIT_S, workers: int = 2):
        self.time_limit_s, self.workers = time_limit_s, workers

    def solve(self, env: Any, case: Any, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        from ortools.sat.python import cp_model

        core = _episode_core(env, case, seed)
        if core.task == "msa":
            raise SchedgymError(f"{self.name} solves the map and pack tasks, not msa")
        n = core.buffers.n
        if n > CPSAT_MAX_BUFFERS:
            raise SchedgymError(
                f"{self.name}: {n} buffers; exact search is offered up to {CPSAT_MAX_BUFFERS}"
            )
        hint_metrics, hint = _best_greedy(env, case, seed)
        core = env.unwrapped.core
        bs = core.buffers
        start, end, size = (a.tolist() for a in (bs.start, bs.end, bs.size))
        hint_offset = hint["offset"]
        model = cp_model.CpModel()
        t0 = time.perf_counter()
        if core.task == "pack":
            top = int(hint_metrics["height"])
            peak = bs.peak_live_bytes()
            offs = [model.new_int_var(0, top - z, f"o{i}") for i, z in enumerate(size)]
            xs = [
                model.new_fixed_size_interval_var(s, e - s, f"t{i}")
                for i, (s, e) in enumerate(zip(start, end, strict=True))
            ]
            ys = [
                model.new_fixed_size_interval_var(o, z, f"a{i}")
                for i, (o, z) in enumerate(zip(offs, size, strict=True))
            ]
            model.add_no_overlap_2d(xs, ys)
            height = model.new_int_var(peak, top, "height")
            for o, z in zip(offs, size, strict=True):
                model.add(height >= o + z)
            model.minimize(height)
        else:
            cap = core.capacity
            fits = [z <= cap for z in size]
            fast = [model.new_bool_var(f"f{i}") if ok else None for i, ok in enumerate(fits)]
            offs = [
                model.new_int_var(0, cap - z, f"o{i}") if ok else None
                for i, (z, ok) in enumerate(zip(size, fits, strict=True))
            ]
            xs, ys = [], []
            for i, ok in enumerate(fits):
                if ok:
                    xs.append(
                        model.new_optional_fixed_size_interval_var(
                            start[i], end[i] - start[i], fast[i], f"t{i}"
                        )
                    )
                    ys.append(
                        model.new_optional_fixed_size_interval_var(
                            offs[i], size[i], fast[i], f"a{i}"
                        )
                    )
            model.add_no_overlap_2d(xs, ys)
            model.minimize(_map_objective(model, core, fast))
        _add_hint(model, offs, hint_offset, fast if core.task == "map" else None)
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = self.time_limit_s
        solver.parameters.num_workers = self.workers
        solver.parameters.random_seed = seed
        status = solver.solve(model)
        wall = time.perf_counter() - t0
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            raise SchedgymError(
                f"{self.name}: no solution within {self.time_limit_s} s "
                f"({solver.status_name(status)})"
            )
        offset = np.array(
            [
                -1
                if (core.task == "map" and (fast[i] is None or not solver.value(fast[i])))
                else int(solver.value(offs[i]))
                for i in range(bs.n)
            ],
            np.int64,
        )
        metrics = placement_metrics(core.task, bs, core.capacity, offset, core.cost)
        record = placement_record(
            core.task, bs, core.capacity, offset, core.cost, "cpsat", np.arange(bs.n)
        )
        optimal = status == cp_model.OPTIMAL
        record["solver"] = {
            "name": "cp-sat",
            "status": solver.status_name(status),
            "wall_s": wall,
            "time_limit_s": self.time_limit_s,
        }
        metrics.update({"optimal": int(optimal), "solve_s": wall})
        return metrics, record


def _map_objective(model: Any, core: MemoryMapCore, fast: list[Any]) -> Any:
    """Sum of per-op times in integer units of 1e-9 of the all-slow time, each op's time
    ``T_j >= compute_j`` and ``T_j >= all-slow memory time - saved by its fast buffers``."""
    cost = core.cost
    unit = max(core.all_slow, 1e-30) * 1e-9
    gain = (1.0 / cost.slow_bandwidth - 1.0 / cost.fast_bandwidth) / unit
    slow_mem = cost.total_bytes / cost.slow_bandwidth / unit
    compute = cost.compute / unit
    terms: list[list[tuple[int, Any]]] = [[] for _ in range(compute.size)]
    for b in range(core.buffers.n):
        if fast[b] is None:
            continue
        for p in range(cost.ptr[b], cost.ptr[b + 1]):
            terms[int(cost.acc_op[p])].append((round(cost.acc_bytes[p] * gain), fast[b]))
    total = []
    for j, items in enumerate(terms):
        floor = round(compute[j])
        mem = round(slow_mem[j])
        if not items or floor >= mem:
            total.append(max(floor, mem))
            continue
        t = model.new_int_var(floor, mem, f"T{j}")
        model.add(t >= mem - sum(c * f for c, f in items))
        total.append(t)
    return sum(total)


def _add_hint(model: Any, offs: list[Any], offset: list[int], fast: list[Any] | None) -> None:
    for i, o in enumerate(offs):
        if o is None:
            continue
        if fast is not None:
            model.add_hint(fast[i], offset[i] >= 0)
        if offset[i] >= 0:
            model.add_hint(o, offset[i])


def _best_greedy(env: Any, case: Any, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The best greedy placement: CP-SAT's starting point."""
    best: tuple[float, dict[str, Any], dict[str, Any]] | None = None
    for name in (n for n in POLICIES if n.startswith("heuristic:") and n != "heuristic:all-slow"):
        metrics, record = POLICIES[name]().solve(env, case, seed)
        score = metrics["height"] if record["task"] == "pack" else metrics["modelled_time_s"]
        if best is None or score < best[0]:
            best = (score, metrics, record)
    assert best is not None
    return best[1], best[2]


def _greedy(order: str, rule: str) -> Callable[[], GreedyPolicy]:
    name = f"heuristic:{rule.replace('_', '-')}-{order}"
    return lambda: GreedyPolicy(name, order, rule)


POLICIES: dict[str, Callable[[], Any]] = {
    "heuristic:msa": MsaPolicy,
    **{
        f"heuristic:{rule.replace('_', '-')}-{order}": _greedy(order, rule)
        for rule in ("best_fit", "first_fit")
        for order in ("start", "size", "area")
    },
    "heuristic:all-slow": AllSlowPolicy,
    "bound:peak-live": PeakLiveBound,
    "bound:knapsack": KnapsackBound,
    "solver:cpsat": CpSatPolicy,
}


# --- MiniMalloc's search ----------------------------------------------------------------------

MINIMALLOC_TIME_LIMIT_S = 60.0
_BIG = np.iinfo(np.int64).max
MINIMALLOC_ORDERS = ("WAT", "TAW", "TWA")  # MiniMalloc's default static preorderings


class _Aborted(Exception):
    """The node budget of one preordering ran out."""


class _Deadline(Exception):
    """The time limit ran out."""


class _MiniMalloc:
    """MiniMalloc's depth-first search (Moffitt, "MiniMalloc: A Lightweight Memory Allocator for
    Hardware-Accelerated Machine Learning", ASPLOS 2023; github.com/google/minimalloc,
    ``src/solver.cc``), re-implemented here: does a packing of height at most ``capacity``
    exist?

    * *Canonical solutions*: buffers are placed in non-decreasing (offset, preorder rank) order,
      each at its *minimum offset*, the highest top of the placed buffers it overlaps in time;
      every packing can be pushed down into one of these.
    * *Spatial inference*: time is cut into *sections* between consecutive event times; a
      section's *floor* is the top of the last buffer placed across it (no lower than the
      offset being placed now), and a partial packing is pruned when any section's floor plus
      the sizes of its unplaced buffers exceeds the capacity; no floor lies below the least
      minimum offset of its section's unplaced buffers.
    * *Dominance*: a buffer is never placed at or above the lowest top any unplaced buffer could
      reach (it would leave a gap the other fills), and when a placed buffer overlaps no unplaced
      one ("hatless") its siblings need not be tried once its subtree fails.
    * Independent *partitions* (no buffer live across their border) are solved apart; the
      preorderings ``WAT``, ``TAW``, ``TWA`` (width, area, section total, each descending) take
      turns under a node budget that doubles each round, as MiniMalloc's round robin does.
    """

    def __init__(
        self, start: np.ndarray, end: np.ndarray, size: np.ndarray, capacity: int, deadline: float
    ):
        self.start, self.end, self.size = start, end, size.astype(np.int64)
        self.capacity, self.deadline = int(capacity), deadline
        n = size.size
        times = np.unique(np.concatenate([start, end]))
        self.sec_lo = np.searchsorted(times, start)
        self.sec_hi = np.searchsorted(times, end)  # sections [sec_lo, sec_hi)
        n_sec = times.size - 1
        sec = np.arange(n_sec)
        live = (self.sec_lo[:, None] <= sec) & (sec < self.sec_hi[:, None])
        self.live = live
        self.total0 = (live * self.size[:, None]).sum(axis=0)
        overlap = (start[:, None] < end[None, :]) & (start[None, :] < end[:, None])
        np.fill_diagonal(overlap, False)
        self.overlap = overlap
        self.overlaps = [np.flatnonzero(overlap[b]) for b in range(n)]
        self.nodes = 0

    def partitions(self) -> list[np.ndarray]:
        """Groups of buffers no buffer links across (the live set is empty between them)."""
        order = np.argsort(self.start, kind="stable").tolist()
        groups, current, reach = [], [], 0
        for b in order:
            if current and self.start[b] >= reach:
                groups.append(np.array(current))
                current = []
            current.append(b)
            reach = max(reach, int(self.end[b])) if len(current) > 1 else int(self.end[b])
        groups.append(np.array(current))
        return groups

    def solve(self) -> np.ndarray | None:
        """Offsets of a packing within the capacity, or None when none exists; raises
        ``_Deadline`` when the time runs out first."""
        n = self.size.size
        budget = 2 * n
        while True:
            for heuristic in MINIMALLOC_ORDERS:
                self.heuristic, self.nodes_left = heuristic, budget
                self.offset = np.full(n, -1, np.int64)
                self.solution = np.full(n, -1, np.int64)
                self.min_off = np.zeros(n, np.int64)
                self.floor = np.zeros(self.total0.size, np.int64)
                self.total = self.total0.copy()
                # cuts[s]: unplaced buffers live across the border of sections s and s + 1
                self.cuts = np.zeros(self.total0.size, np.int64)
                for lo, hi in zip(self.sec_lo.tolist(), self.sec_hi.tolist(), strict=True):
                    self.cuts[lo : hi - 1] += 1
                try:
                    for part in self.partitions():
                        secs = (int(self.sec_lo[part].min()), int(self.sec_hi[part].max()))
                        if not self._sub_solve(part, secs):
                            return None
                    return self.solution
                except _Aborted:
                    continue
            budget *= 2

    def _sub_solve(self, part: np.ndarray, secs: tuple[int, int]) -> bool:
        """Rank the part's buffers by the preordering (section totals as they stand now), then
        search it from the bottom."""
        width = self.end[part] - self.start[part]
        total = np.array([self.total[self.sec_lo[b] : self.sec_hi[b]].max() for b in part])
        keys = {"W": width, "A": width * self.size[part], "T": total}
        # lexsort sorts by its last key first: each key descending, ties by buffer index
        order = np.lexsort((part, *(-keys[c] for c in reversed(self.heuristic))))
        pre = np.empty(self.size.size, np.int64)
        pre[part[order]] = np.arange(part.size)
        return self._dfs(part, secs, pre, -1, -1)

    def _dfs(
        self,
        part: np.ndarray,
        secs: tuple[int, int],
        pre: np.ndarray,
        last_offset: int,
        last_rank: int,
    ) -> bool:
        if self.nodes_left <= 0:
            raise _Aborted
        self.nodes_left -= 1
        self.nodes += 1
        if self.nodes % 256 == 0 and time.perf_counter() > self.deadline:
            raise _Deadline
        free = part[self.offset[part] < 0]
        if free.size == 0:
            self.solution[part] = self.offset[part]
            return True
        lows = self.min_off[free]
        ranks = pre[free]
        min_height = int((lows + self.size[free]).min())
        # canonical (not below the last placement in (offset, rank) order) and undominated
        keep = ((lows > last_offset) | ((lows == last_offset) & (ranks >= last_rank))) & (
            lows < min_height
        )
        cand = np.flatnonzero(keep)
        cand = cand[np.lexsort((ranks[cand], lows[cand]))]
        size, cap = self.size, self.capacity
        s0, s1 = secs
        # The spatial check of every candidate at once (the state is restored after each
        # trial, so the trials are independent). Placing b at o turns each of b's sections
        # into o + total (its top replaces the floor, its size leaves the total) and any
        # other into max(floor, o) + total: it fits iff o + total <= cap everywhere and
        # every section already over (floor + total > cap) lies in b's span.
        cb, co = free[cand], lows[cand]
        total = self.total[s0:s1]
        over = np.flatnonzero(self.floor[s0:s1] + total > cap) + s0
        fits = co + int(total.max()) <= cap
        if over.size:
            fits &= (self.sec_lo[cb] <= over[0]) & (self.sec_hi[cb] > over[-1])
        # hatless: no unplaced buffer overlaps it (then no sibling after it does better)
        hatless = ~self.overlap[cb[:, None], free[None, :]].any(axis=1)
        for k, fit, bare in zip(cand.tolist(), fits.tolist(), hatless.tolist(), strict=True):
            if not fit:
                if bare:
                    break
                continue
            b = int(free[k])
            o, r = int(lows[k]), int(ranks[k])
            top = o + int(size[b])
            self.offset[b] = o
            others = self.overlaps[b]
            others = others[self.offset[others] < 0]
            raised = others[self.min_off[others] < top]
            saved_min = self.min_off[raised].copy()
            self.min_off[raised] = top
            lo, hi = int(self.sec_lo[b]), int(self.sec_hi[b])
            # the floors that may move: b's sections, and those of the buffers it raised
            f0 = min(lo, int(self.sec_lo[raised].min())) if raised.size else lo
            f1 = max(hi, int(self.sec_hi[raised].max())) if raised.size else hi
            saved_floor = self.floor[f0:f1].copy()
            self.floor[lo:hi] = top
            self.total[lo:hi] -= size[b]
            ok = True  # the check above; raising floors below only prunes more
            if raised.size:  # no floor below the least minimum offset of its unplaced
                rest = free[self.offset[free] < 0]
                # a section with no unplaced buffer keeps its floor (the minimum is then _BIG)
                least = np.where(self.live[rest, f0:f1], self.min_off[rest, None], _BIG)
                if least.size:
                    least = least.min(axis=0)
                    np.maximum(
                        self.floor[f0:f1], np.where(least < _BIG, least, 0), out=self.floor[f0:f1]
                    )
                    ok = (np.maximum(self.floor[f0:f1], o) + self.total[f0:f1] <= cap).all()
            found = False
            if ok:
                self.solution[b] = o
                found = self._decompose(part, secs, pre, o, r, lo, hi)
            self.total[lo:hi] += size[b]
            self.floor[f0:f1] = saved_floor
            self.min_off[raised] = saved_min
            self.offset[b] = -1
            if found:
                return True
            if others.size == 0:
                break  # hatless: nothing sits above it, so no sibling does better
        return False

    def _decompose(
        self,
        part: np.ndarray,
        secs: tuple[int, int],
        pre: np.ndarray,
        o: int,
        r: int,
        lo: int,
        hi: int,
    ) -> bool:
        """Continue after placing a buffer over sections ``[lo, hi)``: where no unplaced buffer
        crosses a section border any more, the rest splits into parts searched apart, and the
        first that fails fails them all (MiniMalloc's dynamic decomposition)."""
        self.cuts[lo : hi - 1] -= 1
        try:
            inner = np.arange(max(lo, secs[0]), min(hi - 1, secs[1] - 1))
            borders = (inner[self.cuts[inner] == 0] + 1).tolist()
            if not borders:
                return self._dfs(part, secs, pre, o, r)
            free = part[self.offset[part] < 0]
            edges = [secs[0], *borders, secs[1]]
            for a, z in itertools.pairwise(edges):
                sub = free[(self.sec_lo[free] < z) & (self.sec_hi[free] > a)]
                if sub.size and not self._sub_solve(sub, (a, z)):
                    return False
            return True
        finally:
            self.cuts[lo : hi - 1] += 1


class MiniMallocSolver(_Solver):
    """``solver:minimalloc``: MiniMalloc's search (`_MiniMalloc`) for a packing within the
    case's capacity (pack task); the packing is a real one and `validate` checks it. When the
    search proves no packing fits, or runs out of time, the best greedy packing is returned
    with ``solved`` 0 and ``status`` saying which."""

    kind: PolicyKind = "solver"
    name = "solver:minimalloc"

    def __init__(self, time_limit_s: float = MINIMALLOC_TIME_LIMIT_S):
        self.time_limit_s = time_limit_s

    def solve(self, env: Any, case: Any, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        core = _episode_core(env, case, seed)
        if core.task != "pack":
            raise SchedgymError(f"{self.name} solves the pack task only")
        bs = core.buffers
        t0 = time.perf_counter()
        search = _MiniMalloc(bs.start, bs.end, bs.size, core.capacity, t0 + self.time_limit_s)
        depth = sys.getrecursionlimit()
        sys.setrecursionlimit(max(depth, 4 * bs.n + 1000))  # a few frames per placed buffer
        try:
            offset = search.solve()
            status = "feasible" if offset is not None else "infeasible"
        except _Deadline:
            offset, status = None, "time limit"
        finally:
            sys.setrecursionlimit(depth)
        wall = time.perf_counter() - t0
        if offset is None:
            _, greedy = _best_greedy(env, case, seed)
            offset = np.asarray(greedy["offset"], np.int64)
        metrics = placement_metrics("pack", bs, core.capacity, offset, None)
        record = placement_record(
            "pack", bs, core.capacity, offset, None, "minimalloc", np.arange(bs.n)
        )
        # no wall time in the record: a search that ends within its limit replays exactly
        record["solver"] = {
            "name": "minimalloc-search",
            "status": status,
            "nodes": search.nodes,
            "time_limit_s": self.time_limit_s,
        }
        metrics.update({"solve_s": wall, "nodes": search.nodes})
        return metrics, record


POLICIES["solver:minimalloc"] = MiniMallocSolver
