"""DAG-scheduling baselines: the classic list schedulers, a bound and a solver.

Heuristics (``dag_core.RULES``, acting through the env's own insertion-based placement):

* ``heuristic:heft``: HEFT exactly as Topcuoglu, Hariri & Wu (2002): upward rank on mean
  computation and mean communication costs, highest first (lowest index on ties), each task on
  the device where it finishes first with insertion. On the paper's example it gives the
  published ranks and makespan 80 (``tests/test_dag.py``).
* ``heuristic:peft``: PEFT (Arabnejad & Barbosa 2014), the optimistic cost table.
* ``heuristic:cpop``: CPOP from the same 2002 paper (makespan 86 on its example).
* ``heuristic:minmin``: Min-Min over ready task x device pairs.
* ``heuristic:fcfs``: ready order, first free device.

(``random``, uniform over legal actions, is the generic policy of ``schedgym.policy``.)

The bound and the solver, which may see the realised (noisy) times:

* ``bound:critical-path``: every task on its fastest device, no device conflicts, free
  transfers: a lower bound on the makespan and on each job's completion;
* ``solver:cpsat``: OR-Tools CP-SAT on DAGs up to ``max_tasks`` tasks, with a time limit,
  warm-started with HEFT; records whether it proved optimality and, where its time grid is exact,
  the lower bound it proved (``bound_makespan``, listed as the bound row ``bound:cpsat-lb``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from schedgym.envs.dag.core import (
    RULES,
    DagCore,
    Instance,
    build_record,
    plan,
    realised_penalty,
)
from schedgym.envs.dag.env import DagSchedEnv
from schedgym.errors import SchedgymError
from schedgym.policy import PolicyKind, unwrap_env


class ListScheduler:
    """A list-scheduling rule of ``dag_core.RULES`` choosing among the env's shown ready tasks."""

    kind: PolicyKind = "heuristic"

    def __init__(self, rule: str):
        if rule not in RULES:
            raise SchedgymError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
        self.name = f"heuristic:{rule}"
        self.rule = rule
        self._instance: Instance | None = None
        self._choose: Callable | None = None

    def reset(self, env: Any) -> None:
        self._instance = None

    def _rule(self, env: Any) -> tuple[DagSchedEnv, DagCore, Callable]:
        env = unwrap_env(env, DagSchedEnv)
        if env.core is None:
            raise SchedgymError(f"{self.name}: reset the env before asking for an action")
        if env.instance is not self._instance:  # priorities are per instance: compute once
            self._instance, self._choose = env.instance, RULES[self.rule](env.instance)
        return env, env.core, self._choose

    def act(self, env: Any, obs: Any) -> int:
        env, core, choose = self._rule(env)
        if core.done:
            raise SchedgymError(f"{self.name}: the episode is over; reset the env")
        return env.action_of(*choose(core, core.ready_tasks()[: env.layout.max_entities]))

    def play_out(self, env: Any) -> float:
        """The return of finishing the episode by this rule from the env's state, as stepping
        the env with `act` would collect it (the rewards of ``DagSchedEnv``: each job's growth
        over its critical path over the number of jobs, then the realised end's correction),
        but computed on the env's core without observations, for search rollouts. The env is
        left at the episode's end (callers restore a snapshot); 0 at the end."""
        env, core, choose = self._rule(env)
        if core.done:  # the end's correction was part of the last step's reward
            return 0.0
        inst = env.instance
        before = core.job_end.copy()
        plan(core, choose, env.layout.max_entities)
        total = -float(np.sum((core.job_end - before) / inst.lower_bound)) / inst.n_jobs
        if inst.sigma > 0:
            metrics = build_record(inst, core.dev, core.start, case=env.case_name)[0]
            total -= realised_penalty(inst, metrics)
        return total


class _Bound:
    """A policy that solves whole cases (``solve``) instead of deciding step by step."""

    kind: PolicyKind = "bound"
    name = ""

    def reset(self, env: Any) -> None:
        """Nothing to prepare: a bound solves the whole case in ``solve``."""

    def act(self, env: Any, obs: Any) -> int:
        raise SchedgymError(
            f"{self.name} solves whole cases: run it with "
            "schedgym.episode.run_episode (which calls solve)"
        )

    @staticmethod
    def _instance(env: Any, case: str | None, seed: int) -> DagSchedEnv:
        env = unwrap_env(env, DagSchedEnv)
        env.reset(seed=seed, options={"case": case} if case else None)
        return env


class CriticalPathBound(_Bound):
    """Each task on its fastest device as soon as its predecessors end, with no device conflicts
    and free transfers (realised times): no schedule can finish a job earlier."""

    name = "bound:critical-path"

    def solve(self, env: Any, case: str | None, seed: int) -> tuple[dict[str, Any], dict]:
        env = self._instance(env, case, seed)
        inst = env.instance
        dev = np.argmin(inst.cost, axis=1)
        run = inst.cost[np.arange(inst.n), dev]
        start = np.zeros(inst.n)
        for t in inst.topo:
            p = inst.src[inst.preds(t)]
            start[t] = max(inst.arrival[inst.job[t]], float((start[p] + run[p]).max(initial=0)))
        return build_record(
            inst,
            dev,
            start,
            case=env.case_name,
            policy=self.name,
            relaxed=("exclusive", "transfers"),
        )


class CpSatSolver(_Bound):
    """OR-Tools CP-SAT: device choice, start times, one task at a time per device, transfers
    between devices; minimises the makespan (single) or the slowdown-weighted sum of job
    completions (online). Times are integers of ``resolution`` (1 when every cost and transfer
    is integral, as in the Topcuoglu example, else the HEFT makespan / 100,000) rounded up, so
    its schedules are feasible in real time; optimality is proven for that rounded model."""

    kind: PolicyKind = "solver"
    name = "solver:cpsat"

    def __init__(self, time_limit_s: float = 20.0, num_workers: int = 2, max_tasks: int = 40):
        self.time_limit_s, self.num_workers, self.max_tasks = time_limit_s, num_workers, max_tasks

    def solve(self, env: Any, case: str | None, seed: int) -> tuple[dict[str, Any], dict]:
        from ortools.sat.python import cp_model

        env = self._instance(env, case, seed)
        inst = env.instance
        if inst.n > self.max_tasks:
            raise SchedgymError(
                f"{self.name} is for DAGs up to {self.max_tasks} tasks; {env.case_name!r} has "
                f"{inst.n} (CP-SAT's model grows with tasks x devices^2 per edge)"
            )
        heft = DagCore(inst)
        plan(heft, RULES["heft"](inst))
        P = inst.platform.size
        comm = inst.transfer(
            np.arange(P)[None, :, None], np.arange(P)[None, None, :], inst.data[:, None, None]
        )  # [edge, from, to]
        finite = np.isfinite(inst.cost)
        numbers = np.concatenate([inst.cost[finite], comm.ravel(), inst.arrival])
        exact = bool(np.all(numbers == np.round(numbers)))
        unit = 1.0 if exact else heft.makespan() / 100_000

        def ticks(x: np.ndarray) -> np.ndarray:
            # round up, but forgive float noise just above an integer number of ticks
            return np.ceil(np.asarray(x) / unit - 1e-9).astype(np.int64)

        dur = np.where(finite, ticks(np.where(finite, inst.cost, 0.0)), 0)
        delay, arrive = ticks(comm), ticks(inst.arrival)
        horizon = int(arrive.max() + dur.max(axis=1).sum() + delay.max(axis=(1, 2)).sum())
        m = cp_model.CpModel()
        start = [m.NewIntVar(int(arrive[inst.job[t]]), horizon, f"s{t}") for t in range(inst.n)]
        end = [m.NewIntVar(0, horizon, f"e{t}") for t in range(inst.n)]
        on: list[dict[int, Any]] = []
        per_device: list[list[Any]] = [[] for _ in range(P)]
        for t in range(inst.n):
            on.append({})
            for d in np.flatnonzero(finite[t]):
                d = int(d)
                x = m.NewBoolVar(f"x{t}_{d}")
                per_device[d].append(
                    m.NewOptionalIntervalVar(start[t], int(dur[t, d]), end[t], x, f"i{t}_{d}")
                )
                on[t][d] = x
                m.AddHint(x, int(heft.dev[t]) == d)
            m.AddExactlyOne(on[t].values())
            m.AddHint(start[t], int(ticks(heft.start[t])))
        for ivs in per_device:
            m.AddNoOverlap(ivs)
        for e, (i, j) in enumerate(zip(inst.src, inst.dst, strict=True)):
            m.Add(start[j] >= end[i])
            for a, xa in on[i].items():
                for b, xb in on[j].items():
                    if a != b and delay[e, a, b] > 0:
                        m.Add(start[j] >= end[i] + int(delay[e, a, b])).OnlyEnforceIf([xa, xb])
        done = [m.NewIntVar(0, horizon, f"c{j}") for j in range(inst.n_jobs)]
        for t in range(inst.n):
            m.Add(done[inst.job[t]] >= end[t])
        if inst.mode == "single":
            m.Minimize(done[0])
        else:  # mean slowdown = mean of (C_j - a_j) / L_j: weights 1 / L_j, to 1e-4 relative
            weight = np.round(1e4 * inst.lower_bound.min() / inst.lower_bound).astype(int)
            m.Minimize(sum(int(w) * c for w, c in zip(weight, done, strict=True)))
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = self.time_limit_s
        solver.parameters.num_workers = self.num_workers
        t0 = time.perf_counter()
        status = solver.Solve(m)
        wall = time.perf_counter() - t0
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            raise SchedgymError(
                f"{self.name}: no schedule within {self.time_limit_s} s "
                f"({solver.StatusName(status)})"
            )
        dev = np.array(
            [next(d for d, x in on[t].items() if solver.Value(x)) for t in range(inst.n)]
        )
        planned = np.array([solver.Value(s) for s in start], dtype=float) * unit
        optimal = status == cp_model.OPTIMAL
        info = {
            "status": solver.StatusName(status),
            "optimal": optimal,
            "wall_s": wall,
            "num_workers": self.num_workers,
            "time_limit_s": self.time_limit_s,
            "resolution": unit,
            "exact": exact,
            "objective_bound": solver.BestObjectiveBound()
            * (unit if inst.mode == "single" else 1.0),
        }
        metrics, record = build_record(
            inst, dev, planned, case=env.case_name, policy=self.name, extra={"solver": info}
        )
        metrics = {**metrics, "optimal": int(optimal), "solver_wall_s": wall}
        if inst.mode == "single" and exact:
            metrics["lower_bound"] = max(info["objective_bound"], float(inst.lower_bound[0]))
            metrics["bound_makespan"] = metrics["lower_bound"]
        return metrics, record


POLICIES: dict[str, Callable[[], Any]] = {
    **{f"heuristic:{rule}": (lambda rule=rule: ListScheduler(rule)) for rule in RULES},
    "bound:critical-path": CriticalPathBound,
    "solver:cpsat": CpSatSolver,
}

__all__ = ["POLICIES", "CpSatSolver", "CriticalPathBound", "ListScheduler"]
