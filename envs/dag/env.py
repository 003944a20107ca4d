"""`schedgym/DagSched-v0`: DAG tasks on heterogeneous accelerators, as a Gymnasium environment.

Beside the env class, the module holds what every schedgym env module provides (see
``evaluate.py``): `validate` (an independent re-check of an episode record), `plot_record` (a
Gantt chart per device) and `bench` (env steps/s and HEFT schedules/s).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from schedgym.envs.dag_core import (
    PLATFORMS,
    RECORD_FORMAT,
    RULES,
    DagCore,
    Instance,
    Platform,
    build_record,
    compile_instance,
    get_platform,
    plan,
    upward_rank,
)
from schedgym.envs.hardware import HardwareProfile
from schedgym.envs.spaces import EntityLayout
from schedgym.errors import IllegalActionError, RecordError, SchedgymError
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
    operator graph), a task-graph JSON file path, or a ``TaskGraph`` object.

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
            key = "makespan" if inst.mode == "single" else "mean_slowdown"
            planned = "planned_" + key
            late = metrics[key] - metrics[planned]
            reward -= late / inst.lower_bound[0] if inst.mode == "single" else late
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
            raise SchedgymError("DagSchedEnv: call reset() before step()")
        return self.core

    def _check_size(self, platform: Platform) -> None:
        if platform.size > self.layout.options_per_entity:
            raise SchedgymError(
                f"platform {platform.name!r} has {platform.size} devices; this env observes at "
                f"most max_devices={self.layout.options_per_entity}")

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
        if case.endswith(".json") or Path(case).is_file():
            return [load_graph(case)] * count
        raise SchedgymError(
            f"unknown case {case!r}: use topcuoglu, random[:N], daggen[:N], a model of "
            f"{', '.join(MODEL_ZOO)}, or a task-graph .json file")

    def _compile(self, case: str | TaskGraph) -> Instance:
        graphs = self._graphs(case)
        platform = Platform.abstract(graphs[0].devices) if graphs[0].explicit else self.platform
        self._check_size(platform)
        return compile_instance(
            graphs, platform, self.np_random, sigma=self.sigma,
            load=self.load if self.mode == "online" else None)

    def _use(self, inst: Instance, case_name: str) -> None:
        self.instance, self.case_name = inst, case_name
        self.core = DagCore(inst)
        finite = np.isfinite(inst.cost)
        self._scale = float(np.mean(np.where(finite, inst.cost, 0).sum(1) / finite.sum(1)))
        self._rank = upward_rank(inst) / self._scale
        self._log_succ = np.log1p(np.diff(inst.succ_ptr)).astype(np.float32)
        self._job_size = np.bincount(inst.job, minlength=inst.n_jobs).astype(float)
        kinds = [k if k in DEVICE_KINDS else "other" for k in inst.platform.kinds]
        self._kind_flags = np.array(
            [[k == c for c in (*DEVICE_KINDS, "other")] for k in kinds], np.float32)

    def _decode(self, action: Any) -> tuple[int, int]:
        core = self._require_core()
        if core.done:
            raise IllegalActionError(f"action {action}: the episode is over; call reset()")
        try:
            a = int(action)
        except (TypeError, ValueError):
            raise IllegalActionError(f"action {action!r} is not an integer") from None
        if not 0 <= a < self.layout.n_actions:
            raise IllegalActionError(f"action {a} is outside 0..{self.layout.n_actions - 1}")
        slot, device = self.layout.decode(a)
        shown = core.ready_tasks()[: self.layout.max_entities]
        p = self.instance.platform
        if slot >= len(shown):
            raise IllegalActionError(
                f"action {a}: slot {slot} holds no ready task ({len(shown)} are shown)")
        if device >= p.size:
            raise IllegalActionError(
                f"action {a}: device slot {device} is empty (the platform has {p.size} devices)")
        task = int(shown[slot])
        if not core.capable(np.array([task]))[0, device]:
            raise IllegalActionError(
                f"action {a}: task {self.instance.task_names[task]!r} "
                f"({self.instance.kinds[task]}) cannot run on {p.describe(device)}")
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
            ent[:m, 4 * D :] = np.column_stack((
                self._rank[shown], self._log_succ[shown], (ref - inst.arrival[job]) / s,
                1.0 - placed[job] / self._job_size[job], (core.job_end[job] - ref) / s))
            obs["entity_mask"][:m] = 1
        makespan = core.makespan()
        dev = obs["devices"]
        dev[:P, 0] = 1.0
        dev[:P, 1] = (np.maximum(core.available(), ref) - ref) / s
        dev[:P, 2] = core.busy / makespan if makespan > 0 else 0.0
        dev[:P, 3:] = self._kind_flags
        obs["devices_mask"][:P] = 1
        obs["globals"][:] = (
            core.n_placed / inst.n, (max(makespan, ref) - ref) / s, m / lay.max_entities,
            (core.n_ready - m) / lay.max_entities, core.n_released / inst.n_jobs, P / D,
            math.log1p(inst.n))
        return obs


# -- independent validation ------------------------------------------------------------------


def validate(record: dict[str, Any]) -> dict[str, float]:
    """Re-check an episode record from scratch and return the metrics it implies.

    Checks, written apart from the simulator: every task is scheduled once, on a device that can
    run it (its cost is given and its op kind allowed), for exactly its cost in the plan and its
    cost times its noise factor when executed; no task starts before its job arrives; in both the
    plan and the execution every task starts after each predecessor's end plus the transfer time
    (latency + bytes / bandwidth between different devices) and no two tasks overlap on a device;
    the execution runs each device's tasks in planned order, each as early as inputs and device
    allow. A bound's record may relax ``exclusive`` (overlap) and ``transfers``; those checks are
    skipped. Raises ``RecordError`` naming the first fault.
    """

    def fail(why: str) -> RecordError:
        return RecordError(f"dag record ({record.get('case', '?')}): {why}")

    try:
        if record.get("format") != RECORD_FORMAT:
            raise fail(f"format is {record.get('format')!r}, expected {RECORD_FORMAT!r}")
        devices, tasks, jobs = record["devices"], record["tasks"], record["jobs"]
        edges, rows, mode = record["edges"], record["schedule"], record["mode"]
        relaxed = set(record.get("relaxed", []))
        sigma = float(record["sigma"])
        link = {}
        for lk in record["links"]:
            link[(lk["a"], lk["b"])] = link[(lk["b"], lk["a"])] = (lk["latency"], lk["bandwidth"])
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"malformed record: {exc!r}") from None
    if mode not in ("single", "online"):
        raise fail(f"mode is {mode!r}, expected 'single' or 'online'")
    if relaxed - {"exclusive", "transfers"}:
        raise fail(f"unknown relaxations {sorted(relaxed - {'exclusive', 'transfers'})}")
    n, n_dev = len(tasks), len(devices)
    if len(rows) != n:
        raise fail(f"{len(rows)} schedule rows for {n} tasks")
    by_task: list[dict[str, Any] | None] = [None] * n
    for row in rows:
        t = row["task"]
        if not (isinstance(t, int) and 0 <= t < n) or by_task[t] is not None:
            raise fail(f"schedule row names task {t!r} twice or out of range")
        by_task[t] = row
    horizon = max(max(abs(r["end"]), abs(r["planned_end"])) for r in rows)
    eps = 1e-9 * max(horizon, 1e-300)

    def transfer(a: int, b: int, nbytes: float) -> float:
        if a == b or "transfers" in relaxed:
            return 0.0
        lat, bw = link[(a, b)]
        return lat + nbytes / bw

    preds: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for s, d, b in edges:
        if not (0 <= s < n and 0 <= d < n):
            raise fail(f"edge {s} -> {d} names a task outside 0..{n - 1}")
        preds[d].append((s, b))
    order = _topological(preds)
    if order is None:
        raise fail("the task graph has a cycle")
    for t, (task, row) in enumerate(zip(tasks, by_task, strict=True)):
        d = row["device"]
        name = task["name"]
        if not (isinstance(d, int) and 0 <= d < n_dev):
            raise fail(f"task {name!r} on device {d!r}, not one of the {n_dev} devices")
        cost, ops = task["cost"][d], devices[d]["ops"]
        if cost is None or (ops is not None and task["kind"] not in ops):
            raise fail(f"task {name!r} ({task['kind']}) cannot run on {devices[d]['name']!r}")
        factor = task["factor"]
        if not factor > 0 or (sigma == 0 and factor != 1.0):
            raise fail(f"task {name!r}: noise factor {factor} with sigma {sigma}")
        if abs(row["planned_end"] - row["planned_start"] - cost) > eps:
            raise fail(f"task {name!r} planned for {row['planned_end'] - row['planned_start']}, "
                       f"its cost on {devices[d]['name']} is {cost}")
        if abs(row["end"] - row["start"] - cost * factor) > eps:
            raise fail(f"task {name!r} ran for {row['end'] - row['start']}, expected "
                       f"{cost * factor}")
        arrival = jobs[task["job"]]["arrival"]
        for key in ("planned_start", "start"):
            if row[key] < arrival - eps:
                raise fail(f"task {name!r}: {key} {row[key]} before its job arrives ({arrival})")
        for p, nbytes in preds[t]:
            src = by_task[p]
            delay = transfer(src["device"], d, nbytes)
            for start, end in (("planned_start", "planned_end"), ("start", "end")):
                if row[start] < src[end] + delay - eps:
                    raise fail(f"task {name!r} {start} {row[start]} before its input from "
                               f"{tasks[p]['name']!r} arrives ({src[end]} + {delay})")
    queues: list[list[int]] = [[] for _ in range(n_dev)]
    for t in sorted(range(n), key=lambda t: (by_task[t]["planned_start"], t)):
        queues[by_task[t]["device"]].append(t)
    for d, queue in enumerate(queues):
        prev_end = {"planned_end": -math.inf, "end": -math.inf}
        for t in queue:
            row = by_task[t]
            if "exclusive" not in relaxed:
                for start, end in (("planned_start", "planned_end"), ("start", "end")):
                    if row[start] < prev_end[end] - eps:
                        raise fail(f"tasks overlap on {devices[d]['name']!r} at {row[start]} "
                                   f"({tasks[t]['name']!r}, {start})")
            # the execution starts each task as soon as it may, in the device's planned order
            earliest = jobs[tasks[t]["job"]]["arrival"]
            if "exclusive" not in relaxed and prev_end["end"] > earliest:
                earliest = prev_end["end"]
            for p, nbytes in preds[t]:
                earliest = max(earliest, by_task[p]["end"] + transfer(by_task[p]["device"], d,
                                                                      nbytes))
            if abs(row["start"] - earliest) > eps:
                raise fail(f"task {tasks[t]['name']!r} started at {row['start']}, but its inputs "
                           f"and device allowed {earliest}")
            prev_end = {"planned_end": row["planned_end"], "end": row["end"]}
    return _record_metrics(record, mode, by_task, preds, order)


def _topological(preds: list[list[tuple[int, float]]]) -> list[int] | None:
    """Kahn's order of the tasks, None if the edges hold a cycle."""
    n = len(preds)
    indeg = [len(p) for p in preds]
    succ: list[list[int]] = [[] for _ in range(n)]
    for t in range(n):
        for p, _ in preds[t]:
            succ[p].append(t)
    order = [t for t in range(n) if indeg[t] == 0]
    for t in order:  # the list grows as tasks become free
        for s in succ[t]:
            indeg[s] -= 1
            if indeg[s] == 0:
                order.append(s)
    return order if len(order) == n else None


def _record_metrics(record, mode, by_task, preds, order) -> dict[str, float]:
    tasks, jobs = record["tasks"], record["jobs"]
    # critical path of fastest times per job (Topcuoglu's CP_MIN), longest path in topo order
    longest = [0.0] * len(tasks)
    for t in order:
        start = max((longest[p] for p, _ in preds[t]), default=0.0)
        longest[t] = start + min(c for c in tasks[t]["cost"] if c is not None)
    n_jobs = len(jobs)
    lb, done, planned = [0.0] * n_jobs, [-math.inf] * n_jobs, [-math.inf] * n_jobs
    for t, task in enumerate(tasks):
        j = task["job"]
        lb[j] = max(lb[j], longest[t])
        done[j] = max(done[j], by_task[t]["end"])
        planned[j] = max(planned[j], by_task[t]["planned_end"])
    makespan = max(done)
    if mode == "single":
        m = {"makespan": makespan, "planned_makespan": max(planned), "slr": makespan / lb[0]}
        sums = [0.0] * len(record["devices"])
        for task in tasks:
            for d, c in enumerate(task["cost"]):
                sums[d] = math.inf if c is None else sums[d] + c
        if min(sums) < math.inf:
            m["speedup"] = min(sums) / makespan
        return m
    slow = [(done[j] - jobs[j]["arrival"]) / lb[j] for j in range(n_jobs)]
    return {"mean_slowdown": sum(slow) / n_jobs, "max_slowdown": max(slow),
            "planned_mean_slowdown": sum((planned[j] - jobs[j]["arrival"]) / lb[j]
                                         for j in range(n_jobs)) / n_jobs,
            "makespan": makespan}


# -- Gantt chart ------------------------------------------------------------------------------


def plot_record(
    record: dict[str, Any], path: str | Path, *, title: str | None = None, dpi: int = 120
) -> Path:
    """Write a Gantt chart of the record to ``path`` (PNG): one row per device, one bar per task
    as executed (coloured by op kind, or by job online), task names on bars wide enough to hold
    them, and the planned slot as a dashed outline where noise moved it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    devices, tasks, rows = record["devices"], record["tasks"], record["schedule"]
    online = record["mode"] == "online"
    horizon = max(max(r["end"], r["planned_end"]) for r in rows) or 1.0
    unit, mult = record["time_unit"], 1.0
    if unit == "s":
        unit, mult = next((u, k) for u, k in (("s", 1.0), ("ms", 1e3), ("us", 1e6), ("ns", 1e9))
                          if horizon * k >= 1.0)
    groups = sorted({t["job"] if online else t["kind"] for t in tasks}, key=str)
    cmap = plt.get_cmap("tab20" if len(groups) > 10 else "tab10")
    colour = {g: cmap(i % cmap.N) for i, g in enumerate(groups)}
    fig_h = 1.2 + 0.6 * len(devices)
    fig, ax = plt.subplots(figsize=(12, fig_h))
    for r in rows:
        task = tasks[r["task"]]
        y = len(devices) - 1 - r["device"]
        start, width = r["start"] * mult, (r["end"] - r["start"]) * mult
        ax.barh(y, width, left=start, height=0.7, color=colour[task["job"] if online else
                                                             task["kind"]],
                edgecolor="black", linewidth=0.4)
        if r["planned_start"] != r["start"] or r["planned_end"] != r["end"]:
            ax.barh(y, (r["planned_end"] - r["planned_start"]) * mult,
                    left=r["planned_start"] * mult, height=0.7, fill=False,
                    edgecolor="grey", linestyle="--", linewidth=0.6)
        if width > horizon * mult * 0.035:
            ax.text(start + width / 2, y, task["name"].split("/")[-1][:12], ha="center",
                    va="center", fontsize=7, clip_on=True)
    ax.set_yticks(range(len(devices)))
    ax.set_yticklabels([d["name"] for d in reversed(devices)])
    ax.set_xlabel(f"time ({unit})")
    ax.set_xlim(0, horizon * mult * 1.01)
    metrics = record.get("metrics", {})
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "planned_makespan")
    policy = f" — {record['policy']}" if record.get("policy") else ""
    ax.set_title(title or f"{record['case']}{policy}: {shown}", fontsize=10)
    if 1 < len(groups) <= 20:
        handles = [Patch(color=colour[g], label=f"job {g}" if online else str(g)) for g in groups]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7,
                  frameon=False)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


# -- speed -----------------------------------------------------------------------------------

BENCH_CASE = "random:100"


def _row(name: str, value: float, unit: str, note: str) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "note": note}


def bench(seconds: float = 2.0, rounds: int = 4) -> list[dict[str, Any]]:
    """Rows for ``schedgym bench``: steps/s of random legal actions through the Gymnasium face,
    and complete HEFT schedules/s on the core, both on one 100-task random op DAG on the
    ``hetero`` platform (each the best of ``rounds`` slices of ``seconds / rounds``)."""
    env = DagSchedEnv(case=BENCH_CASE)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    inst, empty = env.instance, env.get_state()
    steps_rate = heft_rate = 0.0
    for _ in range(rounds):
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / rounds:
            env.set_state(empty)
            done = False
            while not done:
                legal = np.flatnonzero(env.action_masks())
                _, _, done, _, _ = env.step(int(legal[rng.integers(len(legal))]))
                steps += 1
        steps_rate = max(steps_rate, steps / (time.perf_counter() - t0))
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / rounds:
            core = DagCore(inst)
            plan(core, RULES["heft"](inst))  # ranks included: they are part of HEFT's cost
            count += 1
        heft_rate = max(heft_rate, count / (time.perf_counter() - t0))
    return [
        _row(f"dag {BENCH_CASE} random steps/s", steps_rate, "steps/s",
             "random legal actions, whole episodes; timed: step (observation, reward, record at "
             "the end) and action_masks; 100 tasks on hetero (H100, A100, A40, CPU)"),
        _row(f"dag {BENCH_CASE} HEFT schedules/s", heft_rate, "schedules/s",
             f"ranks + insertion-based EFT on the core, makespan "
             f"{core.makespan() * 1e3:.3f} ms"),
    ]

