"""`schedgym/JobShop-v0`: the classic job-shop problem as a Gymnasium environment.

Its ``record`` module holds the episode record, the independent re-check `validate` and a Gantt
chart (`plot_record`); ``bench`` steps/s beside the JSSEnv and job-shop-lib environments.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from schedgym.envs.jobshop.core import JobShopCore
from schedgym.envs.jobshop.record import make_record, metrics_for
from schedgym.envs.spaces import EntityLayout, action_index
from schedgym.errors import SchedgymError, WorkloadError
from schedgym.workloads.jobshop import (
    JobShopInstance,
    load_instance,
)

DEFAULT_CASE = "random:6x6"

JOB_FEATURES = (
    "next_duration",  # duration of the job's next operation / scale
    "ready",  # (job ready time - makespan so far) / scale
    "machine_available",  # (when the next operation's machine is free - makespan) / scale
    "start_estimate",  # (max of the two above - makespan) / scale, idle gaps not counted
    "remaining_work",  # work left in the job, next operation included / scale
    "remaining_ops",  # operations left / operations per job
    "done",  # 1 once the job has no operations left
)
MACHINE_FEATURES = (
    "available",  # (end of the machine's last operation - makespan) / scale
    "remaining_load",  # unscheduled work on the machine / scale
    "load",  # all the machine's work / scale (1 for the bottleneck machine)
    "queue",  # jobs whose next operation is on the machine / jobs
)
# Names the observation features' meaning, order and scale; exported policies record it.
ENCODER_VERSION = "jobshop-features-1"
GLOBAL_FEATURES = (
    "progress",  # scheduled operations / all operations
    "makespan",  # makespan so far / scale
    "jobs",  # jobs / max_jobs
    "machines",  # machines / max_machines
    "remaining_work",  # unscheduled work / (machines * scale)
)


class JobShopEnv(gym.Env):
    """
    ## Description

    The classic job-shop scheduling problem (JSSP): ``J`` jobs, each a chain of operations that
    must run in order, each operation on a given machine for a given time; a machine runs one
    operation at a time. The goal is the shortest makespan (time until the last operation ends).
    Each step dispatches the next operation of one job; it starts at the earliest time that job
    and machine allow, *inside an idle gap of the machine when it fits there* (insertion), so
    every episode builds an active schedule and every active schedule, the optimum among them,
    is reachable. Instances: Taillard's ta01–ta80, ft, la, abz, orb, swv, yn with best known
    bounds, files in Taillard or OR-Library format, and Taillard-style random instances.

    ## Action Space

    ``Discrete(max_jobs)``: action ``j`` dispatches job ``j``'s next operation. ``action_masks()``
    is True for the jobs with operations left (never all False before the episode ends); any
    other action raises ``schedgym.errors.IllegalActionError`` (a ``ValueError``).

    ## Observation Space

    The shared entity layout (``schedgym.envs.spaces.EntityLayout``), a ``Dict`` of:

    * ``entities`` ``(max_jobs, 7)`` float32, one row per job: next op duration, ready time,
      availability of the next op's machine, start estimate (the later of the two), remaining
      work, fraction of ops remaining, done flag;
    * ``entity_mask`` ``(max_jobs,)`` int8: 1 for the instance's jobs;
    * ``machines`` ``(max_machines, 4)`` float32, one row per machine: availability, remaining
      load, total load, share of jobs whose next op waits for it;
    * ``machines_mask`` ``(max_machines,)`` int8: 1 for the instance's machines;
    * ``globals`` ``(5,)`` float32: progress, makespan so far, jobs / max_jobs,
      machines / max_machines, remaining work per machine.

    Times are relative to the current makespan and divided by the instance's trivial lower
    bound ``scale = max(longest job, busiest machine)``, so features stay O(1) on every size.
    Rows past the instance's jobs and machines are zero.

    ## Rewards

    ``r_t = -(C_t - C_{t-1}) / scale`` where ``C_t`` is the makespan of the partial schedule
    after step ``t``: the episode's return is ``-makespan / scale`` (``-1`` would mean a schedule
    as short as the trivial bound).

    ## Starting State

    An empty schedule of the case named by ``reset(options={"case": ...})``, else the
    constructor's ``case``, else ``"random:6x6"``: a Taillard-style random 6x6 instance drawn
    from the seed given to ``reset``. Same seed and case, same episode.

    ## Episode End

    Terminated when every operation is scheduled (``J x ops`` steps); never truncated. The last
    step's ``info`` holds ``metrics`` (makespan; gap to the best known upper bound when known;
    lb_gap to the best known or trivial lower bound; utilisation) and ``record`` (the instance and
    every operation's job, op index, machine, start, end), which `validate` re-checks.

    ## Arguments

    * ``case`` (default ``None``, meaning ``"random:6x6"``): the case ``reset`` uses when its
      options name none: ``"ta01"``, ``"random:15x15"``, ``"random:15x15:SEED"``,
      ``"file:PATH"``;
    * ``max_jobs`` (100): rows of ``entities``, size of the action space;
    * ``max_machines`` (20): rows of ``machines``.

    ``get_state()``/``set_state(state)`` snapshot and restore an episode (numpy copies); the
    simulator core is ``env.core`` (`JobShopCore`) and the instance ``env.instance``.
    Gymnasium's ``check_env`` steps with ``action_space.sample()``, blind to the mask, so it
    passes when ``max_jobs`` equals the instance's job count.

    ## Version History

    * v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, case: str | None = None, max_jobs: int = 100, max_machines: int = 20):
        if max_jobs < 1 or max_machines < 1:
            raise ValueError(
                f"max_jobs and max_machines must be >= 1, got {max_jobs}, {max_machines}"
            )
        self.default_case = case or DEFAULT_CASE
        self.layout = EntityLayout(
            max_entities=max_jobs,
            n_features=len(JOB_FEATURES),
            n_globals=len(GLOBAL_FEATURES),
            context={"machines": (max_machines, len(MACHINE_FEATURES))},
        )
        self.observation_space = self.layout.observation_space()
        self.action_space = self.layout.action_space()
        self.instance: JobShopInstance | None = None
        self.core: JobShopCore | None = None
        self._encoder: _Encoder | None = None

    # --- Gymnasium API -------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        case = (options or {}).get("case") or self.default_case
        self._use(load_instance(case, rng=self.np_random))
        self.core.reset()
        return self._encoder.encode(self.core), {"case": self.instance.name}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        core = self._require_core()
        before = core.makespan
        core.step(action_index(action))
        reward = self.reward_between(before, core.makespan)
        done = core.done
        info: dict[str, Any] = {}
        if done:
            info["metrics"] = metrics_for(self.instance, core.makespan)
            info["record"] = make_record(self.instance, core.starts, actions=core.history)
        return self._encoder.encode(core), reward, done, False, info

    def action_masks(self) -> np.ndarray:
        """True for the jobs with operations left (MaskablePPO's hook)."""
        core = self._require_core()
        mask = np.zeros(self.layout.max_entities, bool)
        mask[: core.n_jobs] = core.next_op < core.n_ops
        return mask

    def reward_between(self, before: int, after: int) -> float:
        """The reward for the makespan growing from ``before`` to ``after`` (time units):
        ``-(after - before) / scale``. It telescopes, so over any run of steps it is that run's
        return: a planner can value a completion computed on a copy of the core without
        stepping the env (`NonDelayRule.play_out`)."""
        return (before - after) * self._encoder.inv_scale

    # --- snapshots -----------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A cheap snapshot of the episode (numpy copies), for search agents."""
        return self._require_core().get_state()

    def set_state(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        """Restore a `get_state` snapshot (of any instance); return its observation."""
        self._use(state["instance"])
        self.core.set_state(state)
        return self._encoder.encode(self.core)

    # --- internals -----------------------------------------------------------------------

    def _use(self, instance: JobShopInstance) -> None:
        if instance is self.instance:
            return
        max_jobs, (max_machines, _) = self.layout.max_entities, self.layout.context["machines"]
        if instance.n_jobs > max_jobs or instance.n_machines > max_machines:
            raise WorkloadError(
                f"instance {instance.name!r} is {instance.n_jobs} jobs x {instance.n_machines} "
                f"machines; this env observes at most {max_jobs} x {max_machines} (make it with "
                "larger max_jobs/max_machines)"
            )
        self.instance = instance
        self.core = JobShopCore(instance)
        self._encoder = _Encoder(instance, self.layout)

    def _require_core(self) -> JobShopCore:
        if self.core is None:
            raise SchedgymError("JobShopEnv: call reset() before step() or action_masks()")
        return self.core


class _Encoder:
    """Builds observations for one instance: static per-operation tables are made once, so a
    step costs a few vectorised gathers over the jobs and machines."""

    def __init__(self, instance: JobShopInstance, layout: EntityLayout):
        J, K, M = instance.n_jobs, instance.n_ops, instance.n_machines
        self.inv_scale = 1.0 / max(instance.trivial_lower_bound, 1)
        # One row per (job, next op index), index K meaning "job done": the features that depend
        # on the op alone, scaled and in their final columns; the time columns 1-3 are per step.
        table = np.zeros((J, K + 1, len(JOB_FEATURES)), np.float32)
        table[:, :K, 0] = instance.durations * self.inv_scale
        table[:, :K, 4] = instance.remaining_work * self.inv_scale
        table[:, :, 5] = np.arange(K, -1, -1) / K
        table[:, K, 6] = 1.0
        self.op_table = table.reshape(J * (K + 1), -1)
        # Finished jobs point at a dummy machine M whose availability reads 0.
        self.op_machine = np.concatenate([instance.machines, np.full((J, 1), M)], axis=1).ravel()
        self.row_base = np.arange(J) * (K + 1)
        # Per-step values before scaling live in one buffer, so one multiply scales them all:
        # 3 rows of job times (ready, next machine available, start estimate) and the machine
        # feature rows, whose row 0 (availability) doubles as the lookup table of each job's
        # next machine, dummy included.
        n_rows = len(MACHINE_FEATURES)
        raw = np.zeros(3 * J + n_rows * (M + 1))
        self.raw = raw
        self.times = raw[: 3 * J].reshape(3, J)
        self.machine_rows = raw[3 * J :].reshape(n_rows, M + 1)
        self.machine_rows[2, :M] = instance.machine_loads
        scale = np.empty_like(raw)
        scale[: 3 * J] = self.inv_scale
        scale[3 * J :].reshape(n_rows, M + 1)[:] = np.array([[self.inv_scale]] * 3 + [[1.0 / J]])
        self.scale = scale
        self.scaled = np.zeros_like(raw, dtype=np.float32)
        self.scaled_times = self.scaled[: 3 * J].reshape(3, J).T
        self.scaled_machines = self.scaled[3 * J :].reshape(n_rows, M + 1)[:, :M].T
        self.load = instance.machine_loads.astype(float)
        self.total_work = float(instance.durations.sum())
        self.static_globals = (J / layout.max_entities, M / layout.context["machines"][0])
        self.template = layout.empty_observation()
        self.template["entity_mask"][:J] = 1
        self.template["machines_mask"][:M] = 1
        self.J, self.M, self.n_total = J, M, J * K

    def encode(self, core: JobShopCore) -> dict[str, np.ndarray]:
        J, M = self.J, self.M
        makespan = core.makespan
        idx = self.row_base + core.next_op
        machine = self.op_machine.take(idx)
        rows, times = self.machine_rows, self.times
        np.subtract(core.mach_avail, makespan, out=rows[0, :M])
        np.subtract(core.ready, makespan, out=times[0])
        rows[0].take(machine, out=times[1])
        np.maximum(times[0], times[1], out=times[2])
        np.subtract(self.load, core.mach_busy, out=rows[1, :M])
        rows[3] = np.bincount(machine, minlength=M + 1)
        np.multiply(self.raw, self.scale, out=self.scaled)

        template = self.template
        entities = template["entities"].copy()
        self.op_table.take(idx, axis=0, out=entities[:J])
        entities[:J, 1:4] = self.scaled_times
        machines = template["machines"].copy()
        machines[:M] = self.scaled_machines
        progress = (
            core.n_done / self.n_total,
            makespan * self.inv_scale,
            *self.static_globals,
            (self.total_work - core.work_done) * self.inv_scale / M,
        )
        return {
            "entities": entities,
            "entity_mask": template["entity_mask"].copy(),
            "globals": np.array(progress, np.float32),
            "machines": machines,
            "machines_mask": template["machines_mask"].copy(),
        }
