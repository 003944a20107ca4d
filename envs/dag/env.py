"""`schedgym/DagSched-v0`: DAG tasks on heterogeneous accelerators, as a Gymnasium environment.

Its ``record`` module holds the independent re-check `validate` and a Gantt chart per device
(`plot_record`); ``bench`` the env's steps/s and HEFT schedules/s.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from schedgym.envs.dag.core import (
    PLATFORMS,
    DagCore,
    Instance,
    Platform,
    build_record,
    compile_instance,
    get_platform,
    known_instance,
    realised_penalty,
    upward_rank,
)
from schedgym.envs.hardware import HardwareProfile
from schedgym.envs.spaces import EntityLayout, action_index
from schedgym.errors import IllegalActionError, SchedgymError
from schedgym.workloads.dag import (
    DagShape,
    TaskGraph,
    load_graph,
    random_dag,
    random_op_dag,
    topcuoglu_2002,
    traced_graph,
)

DEFAULT_CASE = "random"
DEVICE_KINDS = ("gpu", "cpu", "npu")  # one-hot in the device rows; anything else: "other"

TASK_FEATURES = (  # after 4 blocks of max_devices columns (see the class docstring)
    "upward_rank",  # HEFT's rank_u / scale
    "successors",  # log(1 + number of successors)
    "waiting",  # (decision time - job arrival) / scale
    "job_left",  # share of the task's job not yet placed
    "job_end",  # (planned completion of the job so far - decision time) / scale
)
DEVICE_FEATURES = ("present", "available", "busy", "gpu", "cpu", "npu", "other")
# Names the observation features' meaning, order and scale; exported policies record it.
ENCODER_VERSION = "dag-features-1"
GLOBAL_FEATURES = (
    "progress",  # placed tasks / all tasks
    "makespan",  # (planned makespan so far - decision time) / scale
    "ready",  # ready tasks shown / max_ready
    "hidden",  # ready tasks beyond max_ready / max_ready
    "released",  # jobs released / jobs
    "devices",  # devices / max_devices
    "tasks",  # log(1 + tasks)
)


class DagSchedEnv(gym.Env):
    """
    ## Description

    List scheduling of task DAGs on heterogeneous devices (Topcuoglu, Hariri & Wu 2002): a DAG's
    tasks must each run on one device, after all their predecessors, and a task placed on another
    device than a predecessor waits for its data (link latency + bytes / bandwidth). Each step
    picks a *ready* task (all predecessors placed) and a device that can run it; the task goes in
    at its earliest start there *with insertion* (the first idle gap long enough, from the time its
    inputs arrive), HEFT's placement. Task times come from the devices' measured kernel cost
    tables (``envs/hardware``) for the task's op and shape, or from the graph's own cost table.
    Devices can be restricted to some op kinds (an NPU that runs only GEMMs and elementwise ops).

    Two modes: ``"single"`` (one DAG; makespan and schedule length ratio, SLR = makespan over the
    critical path of fastest-device times) and ``"online"`` (``jobs`` DAGs arriving as a Poisson
    process at offered ``load``; mean job slowdown = (completion - arrival) / the job's critical
    path). Online, a job is revealed only once the decision time (the earliest start of any ready
    task) reaches its arrival. With ``sigma > 0`` realised times are the estimates times a
    log-normal factor of mean 1 (the DeepSoCS setting): the scheduler plans on estimates, and at
    the end each device runs its tasks in the planned order as soon as inputs and device allow;
    the metrics are the realised ones.

    Cases (``reset(options={"case": ...})``): ``"topcuoglu"`` (the 2002 paper's 10-task example on
    its 3 processors), ``"random"``/``"random:N"`` (a layered random DAG of transformer ops,
    daggen's knobs, on the ``platform``), ``"daggen"``/``"daggen:N"`` (a layered random DAG with
    Topcuoglu et al.'s explicit cost model: ``ccr``, ``beta`` on ``procs`` processors), a model of
    ``workloads.torch_models.MODEL_ZOO`` (``"gpt2-tiny"``, ``"resnet18"``, ...: its ``torch.fx``
    operator graph), a task-graph JSON file (``PATH`` or ``file:PATH``), or a ``TaskGraph`` object.

    ## Action Space

    ``Discrete(max_ready * max_devices)``: action ``i * max_devices + d`` places the ``i``-th shown
    ready task on device ``d``. ``action_masks()`` is True where the task exists and the device can
    run it (never all False before the episode ends); any other action raises
    ``schedgym.errors.IllegalActionError`` (a ``ValueError``) saying why.

    ## Observation Space

    The shared entity layout (``schedgym.envs.spaces.EntityLayout``), a ``Dict`` of:

    * ``entities`` ``(max_ready, 4 * max_devices + 5)`` float32, one row per shown ready task (the
      first ``max_ready`` in the order they became ready): per device slot, can-run flag, time,
      earliest start and earliest finish (0 where it cannot run); then upward rank, log(1 +
      successors), time waited since its job arrived, share of its job left, its job's planned
      completion so far;
    * ``entity_mask`` ``(max_ready,)`` int8;
    * ``devices`` ``(max_devices, 7)`` float32: present, when free, busy share of the makespan so
      far, kind one-hot (gpu, cpu, npu, other); ``devices_mask`` ``(max_devices,)`` int8;
    * ``globals`` ``(7,)`` float32: progress, makespan so far, shown and hidden ready tasks, jobs
      released, devices / max_devices, log(1 + tasks).

    Times are relative to the decision time (the earliest start of any ready task) and divided by
    ``scale``, the instance's mean task time (each task averaged over its capable devices).

    ## Rewards

    ``r_t = -(growth of the planned completion of the placed task's job) / (L_j * J)`` with ``L_j``
    the job's critical path and ``J`` the number of jobs; the last step adds the difference between
    realised and planned. The return is ``-SLR`` in single mode and ``-mean slowdown`` online.

    ## Starting State

    An empty schedule of the case named by ``reset(options={"case": ...})``, else the
    constructor's ``case``, else ``"random"`` (a 40-task random op DAG on the ``"hetero"``
    platform drawn from the reset seed). Same seed and case, same episode: graphs, arrivals and
    noise all come from the env's seeded generator.

    ## Episode End

    Terminated once every task is placed (one step per task); never truncated. The last step's
    ``info`` holds ``metrics`` (single: makespan, planned_makespan, slr, speedup when one device can
    run every task; online: mean_slowdown, max_slowdown, planned_mean_slowdown, makespan) and
    ``record`` (devices, links, tasks with their costs and noise, edges, jobs, the planned and the
    realised schedule), which `validate` re-checks.

    ## Arguments

    * ``case`` (``None``: ``"random"``): the case ``reset`` uses when its options name none;
    * ``mode`` (``"single"``) or ``"online"``, with ``jobs`` (10) and ``load`` (0.8);
    * ``platform`` (``"hetero"``: H100, A100, A40, CPU over PCIe; ``"h100x2"``: two NVLinked
      H100s and the CPU), or a ``dag_core.Platform`` or ``HardwareProfile``; graphs with explicit
      costs bring their own processors (unit bandwidth, zero latency);
    * ``sigma`` (0.0): log-normal noise of realised times;
    * ``dag`` (``{}``): daggen knobs of random cases (``n`` 40, ``fat`` 0.5, ``density`` 0.5,
      ``regularity`` 0.9, ``jump`` 1); ``ccr`` (1.0), ``beta`` (1.0), ``procs`` (3) for ``daggen``;
    * ``max_ready`` (64), ``max_devices`` (8): observation rows and action space.

    ``get_state()``/``set_state(state)`` snapshot and restore an episode (numpy copies); the core
    is ``env.core`` (`dag_core.DagCore`), the compiled instance ``env.instance``.

    ## Version History

    * v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        case: str | TaskGraph | None = None,
        mode: str = "single",
        platform: str | Platform | HardwareProfile = "hetero",
        sigma: float = 0.0,
        dag: dict[str, Any] | None = None,
        ccr: float = 1.0,
        beta: float = 1.0,
        procs: int = 3,
        jobs: int = 10,
        load: float = 0.8,
        max_ready: int = 64,
        max_devices: int = 8,
    ):
        if mode not in ("single", "online"):
            raise SchedgymError(f"mode must be 'single' or 'online', got {mode!r}")
        if max_ready < 1 or max_devices < 1 or jobs < 1:
            raise SchedgymError("max_ready, max_devices and jobs must be >= 1")
        if not (math.isfinite(sigma) and sigma >= 0) or not load > 0:
            raise SchedgymError(f"need sigma >= 0 and load > 0, got {sigma!r}, {load!r}")
        self.default_case = case or DEFAULT_CASE
        self.mode, self.sigma, self.jobs, self.load = mode, float(sigma), jobs, float(load)
        if isinstance(platform, str) and platform not in PLATFORMS:
            raise SchedgymError(f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")
        self._platform_spec, self._platform = platform, None
        self.shape = DagShape(**(dag or {}))
        self.daggen = {"ccr": ccr, "beta": beta, "procs": procs}
        self.layout = EntityLayout(
            max_entities=max_ready,
            n_features=4 * max_devices + len(TASK_FEATURES),
            n_globals=len(GLOBAL_FEATURES),
            options_per_entity=max_devices,
            context={"devices": (max_devices, len(DEVICE_FEATURES))},
        )
        self.observation_space = self.layout.observation_space()
        self.action_space = self.layout.action_space()
        self.instance: Instance | None = None
        self.core: DagCore | None = None
        self.case_name = ""
        self._known: tuple[Instance, int, Instance] | None = None
        self._derived: list[tuple[Instance, tuple]] = []

    @property
    def platform(self) -> Platform:
        """The devices kernel-op cases run on (loaded on first use: tables take a moment)."""
        if self._platform is None:
            self._platform = get_platform(self._platform_spec)
        return self._platform

    # --- Gymnasium API -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        case = (options or {}).get("case") or self.default_case
        self._use(self._compile(case), case if isinstance(case, str) else case.name)
        return self._observe(), {"case": self.case_name}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        core = self._require_core()
        task, device = self._decode(action)
        j, grown = core.place(task, device)
        inst = self.instance
        reward = -grown / (inst.lower_bound[j] * inst.n_jobs)
        info: dict[str, Any] = {}
        if core.done:
            metrics, record = build_record(inst, core.dev, core.start, case=self.case_name)
            reward -= realised_penalty(inst, metrics)
            info = {"metrics": metrics, "record": record}
        return self._observe(), float(reward), core.done, False, info

    def action_masks(self) -> np.ndarray:
        """True for (shown ready task, capable device) pairs (MaskablePPO's hook)."""
        core = self._require_core()
        mask = np.zeros((self.layout.max_entities, self.layout.options_per_entity), bool)
        shown = core.ready_tasks()[: self.layout.max_entities]
        mask[: len(shown), : self.instance.platform.size] = core.capable(shown)
        return mask.ravel()

    def action_of(self, task: int, device: int) -> int:
        """The action placing ``task`` (shown and ready) on ``device``."""
        shown = self._require_core().ready_tasks()[: self.layout.max_entities]
        slots = np.flatnonzero(shown == task)
        if slots.size == 0:
            raise IllegalActionError(f"task {task} is not among the shown ready tasks")
        return int(slots[0]) * self.layout.options_per_entity + int(device)

    # --- snapshots -----------------------------------------------------------------------------

    def get_state(self) -> tuple:
        """A cheap snapshot of the episode (numpy copies), for search agents."""
        return self.instance, self.case_name, self._require_core().snapshot()

    def known_state(self) -> tuple:
        """A `get_state` snapshot of only what a scheduler knows at this decision
        (`core.known_instance`: the jobs released so far, estimated times as the realised ones),
        so that planning with the simulator from it is no oracle; `get_state()` itself on a
        single DAG without noise. Restoring it moves the env onto the known instance (the same
        ready tasks and action indices); restore a `get_state` snapshot to go back."""
        core, inst = self._require_core(), self.instance
        jobs = core.n_released
        if self._known is None or self._known[0] is not inst or self._known[1] != jobs:
            self._known = (inst, jobs, known_instance(inst, jobs))
        known = self._known[2]
        if known is inst:
            return self.get_state()
        return known, self.case_name, core.known_snapshot(known.n, jobs)

    def set_state(self, state: tuple) -> dict[str, np.ndarray]:
        """Restore a `get_state` snapshot (of any instance); return its observation."""
        inst, case_name, snap = state
        if inst is not self.instance:
            self._use(inst, case_name)
        self.core.restore(snap)
        return self._observe()

    # --- internals -----------------------------------------------------------------------------

    def _require_core(self) -> DagCore:
        if self.core is None:
            raise SchedgymError("DagSchedEnv: call reset() first")
        return self.core

    def _check_size(self, platform: Platform) -> None:
        if platform.size > self.layout.options_per_entity:
            raise SchedgymError(
                f"platform {platform.name!r} has {platform.size} devices; this env observes at "
                f"most max_devices={self.layout.options_per_entity}"
            )

    def _graphs(self, case: str | TaskGraph) -> list[TaskGraph]:
        """The case's DAG, or ``jobs`` DAGs of its family online (fresh draws for random ones)."""
        count = self.jobs if self.mode == "online" else 1
        if isinstance(case, TaskGraph):
            return [case] * count
        family, _, arg = case.partition(":")
        if family in ("random", "daggen"):
            try:
                shape = replace(self.shape, n=int(arg)) if arg else self.shape
            except ValueError:
                raise SchedgymError(f"case {case!r}: expected {family}:N with N tasks") from None
            if family == "random":
                return [random_op_dag(self.np_random, shape) for _ in range(count)]
            return [random_dag(self.np_random, shape, **self.daggen) for _ in range(count)]
        if case == "topcuoglu":
            return [topcuoglu_2002()] * count
        from schedgym.workloads.torch_models import MODEL_ZOO  # imports torch: only when needed

        if case in MODEL_ZOO:
            return [traced_graph(case)] * count
        if family == "file":  # file:PATH, as every env's cases take it
            return [load_graph(arg)] * count
        if case.endswith(".json") or Path(case).is_file():
            return [load_graph(case)] * count
        raise SchedgymError(
            f"unknown case {case!r}: use topcuoglu, random[:N], daggen[:N], a model of "
            f"{', '.join(MODEL_ZOO)}, or a task-graph .json file (PATH or file:PATH)"
        )

    def _compile(self, case: str | TaskGraph) -> Instance:
        graphs = self._graphs(case)
        platform = Platform.abstract(graphs[0].devices) if graphs[0].explicit else self.platform
        self._check_size(platform)
        return compile_instance(
            graphs,
            platform,
            self.np_random,
            sigma=self.sigma,
            load=self.load if self.mode == "online" else None,
        )

    def _use(self, inst: Instance, case_name: str) -> None:
        self.instance, self.case_name = inst, case_name
        self.core = DagCore(inst)
        # planning from `known_state` switches between two instances every decision: keep both
        features = next((f for i, f in self._derived if i is inst), None)
        if features is None:
            features = self._features(inst)
            self._derived = [*self._derived[-1:], (inst, features)]
        self._scale, self._rank, self._log_succ, self._job_size, self._kind_flags = features

    @staticmethod
    def _features(inst: Instance) -> tuple:
        """The instance's fixed inputs to the observation: time scale, upward ranks (scaled),
        log(1 + successors), job sizes and device-kind flags."""
        finite = np.isfinite(inst.cost)
        scale = float(np.mean(np.where(finite, inst.cost, 0).sum(1) / finite.sum(1)))
        kinds = [k if k in DEVICE_KINDS else "other" for k in inst.platform.kinds]
        return (
            scale,
            upward_rank(inst) / scale,
            np.log1p(np.diff(inst.succ_ptr)).astype(np.float32),
            np.bincount(inst.job, minlength=inst.n_jobs).astype(float),
            np.array([[k == c for c in (*DEVICE_KINDS, "other")] for k in kinds], np.float32),
        )

    def _decode(self, action: Any) -> tuple[int, int]:
        core = self._require_core()
        if core.done:
            raise IllegalActionError(f"action {action}: the episode is over; call reset()")
        a = action_index(action)
        if not 0 <= a < self.layout.n_actions:
            raise IllegalActionError(f"action {a} is outside 0..{self.layout.n_actions - 1}")
        slot, device = self.layout.decode(a)
        shown = core.ready_tasks()[: self.layout.max_entities]
        p = self.instance.platform
        if slot >= len(shown):
            raise IllegalActionError(
                f"action {a}: slot {slot} holds no ready task ({len(shown)} are shown)"
            )
        if device >= p.size:
            raise IllegalActionError(
                f"action {a}: device slot {device} is empty (the platform has {p.size} devices)"
            )
        task = int(shown[slot])
        if not core.capable(np.array([task]))[0, device]:
            raise IllegalActionError(
                f"action {a}: task {self.instance.task_names[task]!r} "
                f"({self.instance.kinds[task]}) cannot run on {p.describe(device)}"
            )
        return task, device

    def _observe(self) -> dict[str, np.ndarray]:
        core, inst, lay = self.core, self.instance, self.layout
        obs = lay.empty_observation()
        D, P, s = lay.options_per_entity, inst.platform.size, self._scale
        ref = core.clock
        shown = core.ready_tasks()[: lay.max_entities]
        m = len(shown)
        if m:
            cost = inst.cost[shown]
            cap = np.isfinite(cost)
            est = core.est[shown]
            ent = obs["entities"]
            ent[:m, :P] = cap
            ent[:m, D : D + P] = np.where(cap, cost / s, 0.0)
            ent[:m, 2 * D : 2 * D + P] = np.where(cap, (est - ref) / s, 0.0)
            ent[:m, 3 * D : 3 * D + P] = np.where(cap, (est + cost - ref) / s, 0.0)
            job = inst.job[shown]
            placed = np.bincount(inst.job[core.dev >= 0], minlength=inst.n_jobs)
            ent[:m, 4 * D :] = np.column_stack(
                (
                    self._rank[shown],
                    self._log_succ[shown],
                    (ref - inst.arrival[job]) / s,
                    1.0 - placed[job] / self._job_size[job],
                    (core.job_end[job] - ref) / s,
                )
            )
            obs["entity_mask"][:m] = 1
        makespan = core.makespan()
        dev = obs["devices"]
        dev[:P, 0] = 1.0
        dev[:P, 1] = (np.maximum(core.available(), ref) - ref) / s
        dev[:P, 2] = core.busy / makespan if makespan > 0 else 0.0
        dev[:P, 3:] = self._kind_flags
        obs["devices_mask"][:P] = 1
        obs["globals"][:] = (
            core.n_placed / inst.n,
            (max(makespan, ref) - ref) / s,
            m / lay.max_entities,
            (core.n_ready - m) / lay.max_entities,
            core.n_released / inst.n_jobs,
            P / D,
            math.log1p(inst.n),
        )
        return obs
