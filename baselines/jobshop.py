"""Job-shop baselines: non-delay dispatching rules and the CP-SAT solver.

The rules are the proper *non-delay* ones (Giffler & Thompson 1960): at each decision, among
the operations that can start earliest, dispatch the one the rule ranks first (lowest job index
on ties). On Taillard's ta01–ta10 they reproduce the mean gaps Park et al. (2021) report: SPT
25.9 %, FIFO 23.9 %, MOR 20.5 % (``tests/test_jobshop.py`` checks it). They act on the
simulator core directly: the first decision plans the whole episode with the core's fast path,
later ones read the plan while the env's history still follows it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from schedgym.envs.jobshop.core import DISPATCH_RULES, JobShopCore, non_delay_plan
from schedgym.envs.jobshop.env import JobShopEnv
from schedgym.envs.jobshop.record import bound_metrics, make_record, metrics_for
from schedgym.errors import SchedgymError
from schedgym.policy import PolicyKind, unwrap_env
from schedgym.workloads.jobshop import JobShopInstance


class NonDelayRule:
    """A non-delay dispatching rule (``spt``, ``lpt``, ``mor``, ``mwkr``, ``fifo``)."""

    kind: PolicyKind = "heuristic"

    def __init__(self, rule: str):
        if rule not in DISPATCH_RULES:
            raise SchedgymError(f"unknown rule {rule!r}; known: {', '.join(DISPATCH_RULES)}")
        self.name = f"heuristic:{rule}"
        self.rule = rule
        self._instance: JobShopInstance | None = None
        self._actions = np.empty(0, np.int64)  # the env's history so far + the planned rest

    def reset(self, env: Any) -> None:
        self._instance = None

    def act(self, env: Any, obs: Any) -> int:
        core = unwrap_env(env, JobShopEnv).core
        if core is None:
            raise SchedgymError(f"{self.name}: reset the env before asking for an action")
        done = core.n_done
        if not (
            core.instance is self._instance
            and done < self._actions.size
            and np.array_equal(core.history[:done], self._actions[:done])
        ):
            self._plan(core)
        return int(self._actions[done])

    def play_out(self, env: Any) -> float:
        """The undiscounted return of finishing ``env``'s episode by this rule from its current
        state, planned on a copy of the core with the fast path: ``env`` is left unchanged, and
        the value equals stepping the env with `act` to the end (``tests/test_muzero.py``).
        Search agents use it for rollout values (`SimulatorModel`)."""
        inner = unwrap_env(env, JobShopEnv)
        core = inner.core
        if core is None:
            raise SchedgymError(f"{self.name}: reset the env before asking for a play-out")
        rest = core.clone()
        non_delay_plan(rest, DISPATCH_RULES[self.rule](core.instance))
        return inner.reward_between(core.makespan, rest.makespan)

    def _plan(self, core: JobShopCore) -> None:
        rule = DISPATCH_RULES[self.rule](core.instance)
        rest = non_delay_plan(core.clone(), rule)
        self._actions = np.concatenate([core.history[: core.n_done], rest])
        self._instance = core.instance


class CpSatSolver:
    """OR-Tools CP-SAT on the disjunctive model, warm-started with the MOR schedule.

    A ``solver``: it spends up to ``time_limit_s`` per instance, so its schedule is an upper bound
    on the optimum, not a bound. It reports whether it proved that schedule optimal and the lower
    bound it proved (``metrics["objective_bound"]``, and as ``bound_makespan``, ``bound_gap``,
    ``bound_lb_gap``): the leaderboard lists that as the bound row ``bound:cpsat-lb``.
    """

    kind: PolicyKind = "solver"

    def __init__(self, time_limit_s: float = 60.0, num_workers: int = 2):
        self.name = "solver:cpsat"
        self.time_limit_s = time_limit_s
        self.num_workers = num_workers

    def reset(self, env: Any) -> None:
        """Nothing to reset: every `solve` starts afresh."""

    def act(self, env: Any, obs: Any) -> int:
        raise SchedgymError("solver:cpsat solves whole instances: call solve(env, case, seed)")

    def solve(self, env: Any, case: str | None, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Solve the instance ``env`` resolves ``case`` to; return (metrics, episode record)."""
        inner = unwrap_env(env, JobShopEnv)
        inner.reset(seed=seed, options=None if case is None else {"case": case})
        instance = inner.instance
        starts, solver = self.solve_instance(instance, seed)
        makespan = int((starts + instance.durations).max())
        metrics = metrics_for(instance, makespan)
        metrics.update(bound_metrics(instance, solver, makespan))
        metrics.update(
            optimal=solver["optimal"],
            objective_bound=solver["objective_bound"],
            wall_s=solver["wall_s"],
            num_workers=self.num_workers,
        )
        return metrics, make_record(instance, starts, solver=solver)

    def solve_instance(
        self, instance: JobShopInstance, seed: int = 0
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start times ``[jobs, ops]`` of the best schedule found, and the solver's report."""
        from ortools.sat.python import cp_model  # imported here: it takes ~0.5 s to load

        hint = JobShopCore(instance)
        non_delay_plan(hint, DISPATCH_RULES["mor"](instance))
        horizon = hint.makespan
        J, K = instance.n_jobs, instance.n_ops
        model = cp_model.CpModel()
        starts = [[model.new_int_var(0, horizon, f"s{j}_{k}") for k in range(K)] for j in range(J)]
        by_machine: dict[int, list[Any]] = {}
        for j in range(J):
            for k in range(K):
                duration = int(instance.durations[j, k])
                interval = model.new_fixed_size_interval_var(starts[j][k], duration, f"o{j}_{k}")
                by_machine.setdefault(int(instance.machines[j, k]), []).append(interval)
                if k:
                    model.add(starts[j][k] >= starts[j][k - 1] + int(instance.durations[j, k - 1]))
                model.add_hint(starts[j][k], int(hint.starts[j, k]))
        for intervals in by_machine.values():
            model.add_no_overlap(intervals)
        makespan = model.new_int_var(instance.trivial_lower_bound, horizon, "makespan")
        for j in range(J):
            model.add(makespan >= starts[j][K - 1] + int(instance.durations[j, K - 1]))
        model.minimize(makespan)

        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = float(self.time_limit_s)
        solver.parameters.num_workers = int(self.num_workers)
        solver.parameters.random_seed = int(seed)
        t0 = time.perf_counter()
        status = solver.solve(model)
        wall = time.perf_counter() - t0
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            raise SchedgymError(
                f"CP-SAT found no schedule for {instance.name!r} ({solver.status_name(status)})"
            )
        values = np.array([[solver.value(s) for s in row] for row in starts], np.int64)
        report = {
            "solver": "ortools-cp-sat",
            "status": solver.status_name(status),
            "optimal": status == cp_model.OPTIMAL,
            "objective": int(solver.objective_value),
            "objective_bound": int(solver.best_objective_bound),
            "wall_s": wall,
            "time_limit_s": float(self.time_limit_s),
            "num_workers": int(self.num_workers),
            "seed": int(seed),
        }
        return values, report


POLICIES: dict[str, Callable[[], Any]] = {
    **{f"heuristic:{rule}": (lambda rule=rule: NonDelayRule(rule)) for rule in DISPATCH_RULES},
    "solver:cpsat": CpSatSolver,
}
