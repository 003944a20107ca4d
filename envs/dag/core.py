"""The simulator core of DagSched: DAG jobs placed task by task on heterogeneous devices.

Plain numpy, no Gymnasium. A `Platform` is a set of devices with the links between them and,
per device, the kernel cost table that prices an op (or nothing, for the abstract processors of
graphs with explicit costs). `compile_instance` prices a list of DAG jobs on a platform, draws
their arrival times and the noise of their execution times, and returns the arrays an episode
works on. `DagCore` holds one episode's state:

* a task is *ready* once every predecessor is placed (and, online, its job has arrived);
* a decision places one ready task on one capable device, at the earliest start time at which
  its inputs have arrived there (producer's finish + link latency + bytes / bandwidth, nothing on
  the same device) and a long enough idle gap exists on the device (*insertion*, as in HEFT);
* the placements form a *plan* on the estimated times. At the end the plan is *executed*: each
  device runs its tasks in planned order, each as soon as its inputs and the device allow, with
  the realised times (estimates times a log-normal factor; equal when ``sigma`` is 0).

Online, jobs are revealed as time advances: the decision time is the earliest start any ready
task could have, and a job is released once that time reaches its arrival, so a scheduler never
plans with a job that has not arrived by the time its plan starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from schedgym.envs.hardware import (
    HardwareProfile,
    KernelCostTable,
    Link,
    device_from_table,
    load_cost_table,
)
from schedgym.envs.hardware.kernels import KERNELS
from schedgym.errors import SchedgymError, WorkloadError
from schedgym.workloads.dag import TaskGraph

RECORD_FORMAT = "schedgym-dag-record/1"


# -- platforms -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Platform:
    """Devices, the links between every pair, and how each device prices a task.

    ``bandwidth[a, b]`` (bytes/s, or data units per time unit) and ``latency[a, b]`` describe the
    link between devices ``a`` and ``b``; the diagonal is infinite bandwidth and zero latency, so a
    transfer on one device costs nothing. ``ops[d]`` is the set of op kinds device ``d`` can run
    (``None``: every kind its cost table prices).
    """

    name: str
    devices: tuple[str, ...]
    kinds: tuple[str, ...]
    bandwidth: np.ndarray
    latency: np.ndarray
    tables: tuple[KernelCostTable | None, ...]
    ops: tuple[frozenset[str] | None, ...]
    time_unit: str = "s"
    notes: str = ""

    def __post_init__(self) -> None:
        p = len(self.devices)
        if p == 0:
            raise SchedgymError(f"platform {self.name!r} has no devices")
        if len(set(self.devices)) != p:
            raise SchedgymError(f"platform {self.name!r}: duplicate device names {self.devices}")
        for label, seq in (("kinds", self.kinds), ("tables", self.tables), ("ops", self.ops)):
            if len(seq) != p:
                raise SchedgymError(f"platform {self.name!r}: {len(seq)} {label} for {p} devices")
        off = ~np.eye(p, dtype=bool)
        if self.bandwidth.shape != (p, p) or self.latency.shape != (p, p):
            raise SchedgymError(f"platform {self.name!r}: link matrices must be {p}x{p}")
        if np.any(self.bandwidth[off] <= 0) or np.any(self.latency[off] < 0):
            raise SchedgymError(f"platform {self.name!r}: bandwidths must be > 0, latencies >= 0")
        for d, ops in enumerate(self.ops):
            unknown = sorted((ops or set()) - set(KERNELS))
            if unknown:
                raise SchedgymError(
                    f"platform {self.name!r}: device {self.devices[d]!r} lists "
                    f"unknown op kinds {unknown}"
                )

    @property
    def size(self) -> int:
        return len(self.devices)

    @classmethod
    def from_profile(
        cls,
        profile: HardwareProfile,
        ops: Mapping[str, Iterable[str]] | None = None,
        notes: str = "",
    ) -> Platform:
        """A platform from a hardware profile; every pair of devices needs a link.

        ``ops`` restricts devices to some op kinds: ``{"npu": ["linear", "elementwise"]}``.
        """
        names = tuple(d.name for d in profile.devices)
        ops = dict(ops or {})
        unknown = sorted(set(ops) - set(names))
        if unknown:
            raise SchedgymError(f"op restrictions name devices {unknown} not in {names}")
        p = len(names)
        bw, lat = np.full((p, p), np.inf), np.zeros((p, p))
        for a in range(p):
            for b in range(a + 1, p):
                link = profile.link(names[a], names[b])  # refuses a missing link by name
                bw[a, b] = bw[b, a] = link.bandwidth
                lat[a, b] = lat[b, a] = link.latency_s
        return cls(
            profile.name,
            names,
            tuple(d.kind for d in profile.devices),
            bw,
            lat,
            tuple(d.costs for d in profile.devices),
            tuple(frozenset(ops[n]) if n in ops else None for n in names),
            "s",
            notes,
        )

    @classmethod
    def abstract(
        cls, names: Sequence[str], bandwidth: float = 1.0, latency: float = 0.0
    ) -> Platform:
        """Processors of an explicit-cost graph: one transfer rate, one start-up cost."""
        p = len(names)
        bw = np.where(np.eye(p, dtype=bool), np.inf, bandwidth)
        lat = np.where(np.eye(p, dtype=bool), 0.0, latency)
        return cls(
            "abstract(" + ",".join(names) + ")",
            tuple(names),
            ("abstract",) * p,
            bw,
            lat,
            (None,) * p,
            (None,) * p,
            "unit",
            f"abstract processors, bandwidth {bandwidth:g}, latency {latency:g}",
        )

    def describe(self, d: int) -> str:
        what = f"{self.devices[d]} ({self.kinds[d]}"
        if self.tables[d] is None:
            what += ", explicit costs only"
        if self.ops[d] is not None:
            what += ", runs only " + ", ".join(sorted(self.ops[d]))
        return what + ")"

    def price(self, graph: TaskGraph) -> np.ndarray:
        """Estimated time of every task on every device, ``inf`` where the device cannot run it."""
        cost = np.full((graph.n, self.size), np.inf)
        if graph.explicit:
            column = {name: p for p, name in enumerate(graph.devices)}
            for d, name in enumerate(self.devices):
                if name in column:
                    cost[:, d] = [
                        np.inf if row[column[name]] is None else row[column[name]]
                        for row in graph.costs
                    ]
        else:
            groups: dict[tuple, list[int]] = {}
            for i, kind in enumerate(graph.kinds):
                spec = KERNELS[kind]
                key = (kind, tuple(graph.params[i][s] for s in spec.shape))
                groups.setdefault(key, []).append(i)
            counts = np.asarray(graph.counts, dtype=float)
            for d, table in enumerate(self.tables):
                if table is None:
                    continue
                for (kind, shape), idx in groups.items():
                    spec = KERNELS[kind]
                    # one vectorised query per (kernel, shape) group: cheaper than op by op
                    query = {
                        a: np.array([graph.params[i][a] for i in idx], float) for a in spec.axes
                    }
                    query.update(zip(spec.shape, shape, strict=True))
                    cost[idx, d] = np.ravel(table.predict_many(kind, **query)) * counts[idx]
        for d, ops in enumerate(self.ops):
            if ops is not None:
                cost[[k not in ops for k in graph.kinds], d] = np.inf
        bad = np.flatnonzero(~np.isfinite(cost).any(axis=1))
        if bad.size:
            i = int(bad[0])
            devices = "; ".join(self.describe(d) for d in range(self.size))
            raise WorkloadError(
                f"task {graph.tasks[i]!r} (op kind {graph.kinds[i]!r}) can run on no device of "
                f"platform {self.name!r}: {devices}",
                graph.name,
            )
        return cost


def _table_device(name: str, table_name: str | None = None):
    return device_from_table(load_cost_table(table_name or name), name)


def _pcie_host_links(gpus, host: str) -> list[Link]:
    """Each GPU's own PCIe link to host memory, with its cost table's figures."""
    return [
        Link(g.name, host, g.costs.roofline.host_bandwidth, g.costs.roofline.host_latency_s)
        for g in gpus
    ]


@cache
def hetero_platform() -> Platform:
    """An H100, an A100, an A40 and the host CPU, all joined by PCIe.

    GPU to CPU: the GPU's own PCIe link (H100 Gen5 x16: 64 GB/s, A100/A40 Gen4 x16: 32 GB/s per
    direction, 10 us per copy, from the cost tables). GPU to GPU: GPUs of different models share no
    NVLink, so a copy is staged through host memory (``HardwareProfile.compose``: half the slower
    PCIe link's bandwidth, 16 GB/s, and both latencies, 20 us).
    """
    gpus = [_table_device(n) for n in ("h100", "a100", "a40")]
    cpu = _table_device("cpu")
    links = (*HardwareProfile.compose("gpus", gpus).links, *_pcie_host_links(gpus, cpu.name))
    return Platform.from_profile(
        HardwareProfile("hetero", (*gpus, cpu), links), notes=hetero_platform.__doc__ or ""
    )


@cache
def nvlink_platform() -> Platform:
    """Two H100s joined by NVLink (450 GB/s per direction, 20 us, from the H100 table) and the
    host CPU over each GPU's PCIe Gen5 link (64 GB/s, 10 us)."""
    gpus = [_table_device("h100:0", "h100"), _table_device("h100:1", "h100")]
    cpu = _table_device("cpu")
    r = gpus[0].costs.roofline
    links = (
        Link("h100:0", "h100:1", r.network_bandwidth, r.network_latency_s),
        *_pcie_host_links(gpus, cpu.name),
    )
    return Platform.from_profile(
        HardwareProfile("h100x2", (*gpus, cpu), links), notes=nvlink_platform.__doc__ or ""
    )


PLATFORMS = {"hetero": hetero_platform, "h100x2": nvlink_platform}


def get_platform(spec: str | Platform | HardwareProfile) -> Platform:
    if isinstance(spec, Platform):
        return spec
    if isinstance(spec, HardwareProfile):
        return Platform.from_profile(spec)
    if spec not in PLATFORMS:
        raise SchedgymError(f"unknown platform {spec!r}; known: {', '.join(PLATFORMS)}")
    return PLATFORMS[spec]()


# -- instances -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Instance:
    """DAG jobs compiled onto a platform: the arrays one episode schedules (read-only).

    Tasks of all jobs are numbered together; ``pred_ptr``/``pred_edge`` and ``succ_ptr``/
    ``succ_edge`` index the edges (``src``, ``dst``, ``data``) by consumer and by producer.
    ``lower_bound[j]`` is job ``j``'s critical path on each task's fastest device without
    communication (Topcuoglu et al.'s CP_MIN, the denominator of the SLR).
    """

    mode: str
    platform: Platform
    task_names: tuple[str, ...]
    kinds: tuple[str, ...]
    job: np.ndarray
    job_names: tuple[str, ...]
    arrival: np.ndarray
    cost: np.ndarray
    factor: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    data: np.ndarray
    topo: np.ndarray
    sigma: float
    pred_ptr: np.ndarray = field(init=False)
    pred_edge: np.ndarray = field(init=False)
    succ_ptr: np.ndarray = field(init=False)
    succ_edge: np.ndarray = field(init=False)
    lower_bound: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.task_names)
        for name, key in (("pred", self.dst), ("succ", self.src)):
            order = np.argsort(key, kind="stable")
            ptr = np.zeros(n + 1, dtype=np.int64)
            np.add.at(ptr, key + 1, 1)
            object.__setattr__(self, f"{name}_ptr", np.cumsum(ptr))
            object.__setattr__(self, f"{name}_edge", order)
        finish = np.zeros(n)
        fastest = self.cost.min(axis=1)
        for t in self.topo:
            finish[t] = fastest[t] + finish[self.src[self.preds(t)]].max(initial=0.0)
        lb = np.zeros(len(self.job_names))
        np.maximum.at(lb, self.job, finish)
        object.__setattr__(self, "lower_bound", lb)

    @property
    def n(self) -> int:
        return len(self.task_names)

    @property
    def n_jobs(self) -> int:
        return len(self.job_names)

    def preds(self, t: int) -> np.ndarray:
        """Edge indices into task ``t``."""
        return self.pred_edge[self.pred_ptr[t] : self.pred_ptr[t + 1]]

    def succs(self, t: int) -> np.ndarray:
        """Edge indices out of task ``t``."""
        return self.succ_edge[self.succ_ptr[t] : self.succ_ptr[t + 1]]

    def transfer(self, a: np.ndarray | int, b: np.ndarray | int, nbytes: np.ndarray | float):
        """Time to move ``nbytes`` from device ``a`` to ``b`` (zero when ``a == b``)."""
        p = self.platform
        return p.latency[a, b] + nbytes / p.bandwidth[a, b]


def compile_instance(
    jobs: Sequence[TaskGraph],
    platform: Platform,
    rng: np.random.Generator,
    *,
    sigma: float = 0.0,
    load: float | None = None,
) -> Instance:
    """Price ``jobs`` on ``platform`` and draw their noise and, with ``load``, their arrivals.

    Without ``load`` every job arrives at 0 (one DAG: the single mode). With it, jobs arrive as a
    Poisson process whose mean gap is a job's mean work over ``load``, the offered load: a job's
    work is the time all devices together would take, each task spread over the devices that can
    run it in proportion to their speed (sum over tasks of 1 / sum over devices of 1 / time), so a
    slow CPU beside GPUs adds little capacity, as it should.
    Realised times are the estimates times ``exp(sigma * Z - sigma**2 / 2)``, Z standard normal:
    log-normal with mean 1, so the estimates are unbiased.
    """
    if sigma < 0 or not math.isfinite(sigma):
        raise SchedgymError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if load is not None and not load > 0:
        raise SchedgymError(f"load must be > 0, got {load!r}")
    priced: dict[int, np.ndarray] = {}  # id(graph) -> cost: repeated jobs are priced once
    for g in jobs:
        if id(g) not in priced:
            priced[id(g)] = platform.price(g)
    costs = [priced[id(g)] for g in jobs]
    sizes = [g.n for g in jobs]
    offset = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    multi = len(jobs) > 1
    task_names = tuple(f"j{j}/{t}" if multi else t for j, g in enumerate(jobs) for t in g.tasks)
    if load is None:
        arrival = np.zeros(len(jobs))
    else:
        mean_work = float(np.mean([np.sum(1.0 / np.sum(1.0 / c, axis=1)) for c in costs]))
        gaps = rng.exponential(mean_work / load, size=len(jobs))
        arrival = np.concatenate([[0.0], np.cumsum(gaps[1:])])
    n = int(offset[-1])
    factor = np.exp(sigma * rng.standard_normal(n) - sigma**2 / 2) if sigma > 0 else np.ones(n)
    return Instance(
        "online" if load is not None else "single",
        platform,
        task_names,
        tuple(k for g in jobs for k in g.kinds),
        np.repeat(np.arange(len(jobs)), sizes),
        tuple(f"j{j}" for j in range(len(jobs))),
        arrival,
        np.concatenate(costs),
        factor,
        np.concatenate([g.src + o for g, o in zip(jobs, offset, strict=False)]),
        np.concatenate([g.dst + o for g, o in zip(jobs, offset, strict=False)]),
        np.concatenate([g.weights for g in jobs]),
        np.concatenate([g.topo_order + o for g, o in zip(jobs, offset, strict=False)]),
        float(sigma),
    )


def known_instance(inst: Instance, jobs: int) -> Instance:
    """What a scheduler knows of ``inst`` once its first ``jobs`` jobs are released: those jobs
    alone (later arrivals are unknown, so a plan assumes none) with the estimated task times as
    the realised ones (their unbiased mean: ``factor`` 1, ``sigma`` 0). ``inst`` itself when that
    is everything. Jobs are released in arrival order, which `compile_instance` makes job order,
    and tasks are numbered job by job, so the known tasks, their ready order and every
    snapshot's task axis are prefixes of ``inst``'s (`DagCore.known_snapshot`). Raises
    ``SchedgymError`` for ``jobs`` outside 1..n_jobs or arrivals out of job order."""
    if not 1 <= jobs <= inst.n_jobs:
        raise SchedgymError(f"known_instance: jobs must lie in 1..{inst.n_jobs}, got {jobs}")
    if np.any(np.diff(inst.arrival) < 0):
        raise SchedgymError("known_instance: jobs must arrive in job order")
    if jobs == inst.n_jobs and inst.sigma == 0:
        return inst
    m = int(np.searchsorted(inst.job, jobs))  # tasks of the first `jobs` jobs
    keep = inst.dst < m  # an edge stays inside its job
    return Instance(
        inst.mode,
        inst.platform,
        inst.task_names[:m],
        inst.kinds[:m],
        inst.job[:m],
        inst.job_names[:jobs],
        inst.arrival[:jobs],
        inst.cost[:m],
        np.ones(m),
        inst.src[keep],
        inst.dst[keep],
        inst.data[keep],
        inst.topo[inst.topo < m],
        0.0,
    )


def mean_costs(inst: Instance) -> tuple[np.ndarray, np.ndarray]:
    """Topcuoglu et al.'s averages: each task's mean time over the devices that can run it, and
    each edge's mean communication cost ``L + data / B`` with ``L`` and ``B`` the mean latency and
    mean bandwidth over pairs of distinct devices (zero with a single device)."""
    cost = inst.cost
    w = np.where(np.isfinite(cost), cost, 0.0).sum(1) / np.isfinite(cost).sum(1)
    p = inst.platform
    if p.size == 1:
        return w, np.zeros(len(inst.data))
    off = ~np.eye(p.size, dtype=bool)
    return w, p.latency[off].mean() + inst.data / p.bandwidth[off].mean()


def upward_rank(inst: Instance) -> np.ndarray:
    """rank_u(i) = w_i + max over successors j of (c_ij + rank_u(j)), with mean costs (HEFT)."""
    w, c = mean_costs(inst)
    rank = np.zeros(inst.n)
    for t in inst.topo[::-1]:
        e = inst.succs(t)
        rank[t] = w[t] + (np.max(c[e] + rank[inst.dst[e]]) if e.size else 0.0)
    return rank


def downward_rank(inst: Instance) -> np.ndarray:
    """rank_d(i) = max over predecessors j of (rank_d(j) + w_j + c_ji), with mean costs (CPOP)."""
    w, c = mean_costs(inst)
    rank = np.zeros(inst.n)
    for t in inst.topo:
        e = inst.preds(t)
        if e.size:
            p = inst.src[e]
            rank[t] = np.max(rank[p] + w[p] + c[e])
    return rank


def optimistic_cost_table(inst: Instance) -> np.ndarray:
    """PEFT's OCT(i, p): the longest way from task ``i`` on device ``p`` to an exit, each later
    task on its best device, paying the mean communication cost only between different devices
    (Arabnejad & Barbosa 2014, Eq. 6)."""
    _, c = mean_costs(inst)
    oct_ = np.zeros_like(inst.cost)
    for t in inst.topo[::-1]:
        for e in inst.succs(t):
            j = inst.dst[e]
            via = oct_[j] + inst.cost[j]  # inf where j cannot run
            oct_[t] = np.maximum(oct_[t], np.minimum(via, via.min() + c[e]))
    return oct_


def _priority_key(priority: np.ndarray) -> np.ndarray:
    """A key whose argmax over tasks is the highest priority, lowest index first among ties;
    priorities equal to 9 significant digits count as tied (the paper's 80.000 and 80.000 differ
    in the last bits once summed in floating point)."""
    n = len(priority)
    top = float(np.max(np.abs(priority))) or 1.0
    return np.round(priority * (1e9 / top)) * (n + 1) + (n - np.arange(n))


Choice = tuple[int, int]


def _min_eft(core: DagCore, task: int, extra: np.ndarray | float = 0.0) -> int:
    return int(np.argmin(core.eft(np.array([task]))[0] + extra))


def heft_rule(inst: Instance):
    """HEFT (Topcuoglu et al. 2002): highest upward rank first, on the device of earliest finish
    time with insertion."""
    key = _priority_key(upward_rank(inst))

    def choose(core: DagCore, ready: np.ndarray) -> Choice:
        t = int(ready[np.argmax(key[ready])])
        return t, _min_eft(core, t)

    return choose


def peft_rule(inst: Instance):
    """PEFT (Arabnejad & Barbosa 2014): highest mean OCT first, on the device minimising
    EFT + OCT."""
    oct_ = optimistic_cost_table(inst)
    capable = np.isfinite(inst.cost)
    key = _priority_key(np.where(capable, oct_, 0.0).sum(1) / capable.sum(1))

    def choose(core: DagCore, ready: np.ndarray) -> Choice:
        t = int(ready[np.argmax(key[ready])])
        return t, _min_eft(core, t, oct_[t])

    return choose


def cpop_rule(inst: Instance):
    """CPOP (Topcuoglu et al. 2002): highest rank_u + rank_d first; a task on its job's critical
    path goes to the device that runs that whole path fastest, any other to its earliest finish."""
    priority = upward_rank(inst) + downward_rank(inst)
    key = _priority_key(priority)
    on_cp = np.zeros(inst.n, dtype=bool)
    cp_device = np.full(inst.n_jobs, -1)
    for j in range(inst.n_jobs):
        tasks = np.flatnonzero(inst.job == j)
        entries = tasks[np.diff(inst.pred_ptr)[tasks] == 0]
        t = int(entries[np.argmax(key[entries])])
        length = priority[t]
        path = [t]
        while (e := inst.succs(t)).size:
            nxt = inst.dst[e]
            nxt = nxt[np.isclose(priority[nxt], length, rtol=1e-9, atol=0.0)]
            if nxt.size == 0:
                break
            t = int(nxt.min())
            path.append(t)
        on_cp[path] = True
        total = inst.cost[path].sum(axis=0)  # inf on a device that cannot run the whole path
        if np.isfinite(total).any():
            cp_device[j] = int(np.argmin(total))

    def choose(core: DagCore, ready: np.ndarray) -> Choice:
        t = int(ready[np.argmax(key[ready])])
        d = int(cp_device[inst.job[t]])
        return t, (d if on_cp[t] and d >= 0 else _min_eft(core, t))

    return choose


def minmin_rule(inst: Instance):
    """Min-Min (Ibarra & Kim 1977; Braun et al. 2001): of all ready task x device pairs, the one
    that finishes first."""

    def choose(core: DagCore, ready: np.ndarray) -> Choice:
        eft = core.eft(ready)
        k = int(np.argmin(eft))
        return int(ready[k // eft.shape[1]]), k % eft.shape[1]

    return choose


def fcfs_rule(inst: Instance):
    """First come, first served: the task ready longest, on the capable device free first."""

    def choose(core: DagCore, ready: np.ndarray) -> Choice:
        t = int(ready[0])  # the ready list keeps the order in which tasks became ready
        free = np.where(core.capable(np.array([t]))[0], core.available(), np.inf)
        return t, int(np.argmin(free))

    return choose


RULES = {
    "heft": heft_rule,
    "peft": peft_rule,
    "cpop": cpop_rule,
    "minmin": minmin_rule,
    "fcfs": fcfs_rule,
}


def plan(core: DagCore, choose, shown: int | None = None) -> None:
    """Run a list-scheduling rule to the end of the episode on the core (the fast path),
    choosing among the first ``shown`` ready tasks (all of them when ``None``), as an env that
    shows that many does."""
    while not core.done:
        t, d = choose(core, core.ready_tasks()[:shown])
        core.place(t, d)


# -- the episode state ----------------------------------------------------------------------------


class DagCore:
    """One episode: which tasks are placed where and when, which are ready, and their costs."""

    def __init__(self, inst: Instance):
        self.inst = inst
        n, p = inst.n, inst.platform.size
        self._capable = np.isfinite(inst.cost)
        self._n_preds = np.diff(inst.pred_ptr)
        self._job_order = np.argsort(inst.arrival, kind="stable")
        self._entry = [
            np.flatnonzero((inst.job == j) & (self._n_preds == 0)) for j in range(inst.n_jobs)
        ]
        # state (all numpy, copied whole by snapshot())
        self.dev = np.full(n, -1, dtype=np.int64)
        self.start = np.zeros(n)
        self.finish = np.zeros(n)
        self.missing = self._n_preds.copy()
        self.rdy = np.zeros((n, p))  # when a ready task's inputs can be on each device
        self.est = np.full((n, p), np.inf)  # earliest start with insertion, per device
        self.ready = np.zeros(n, dtype=np.int64)  # ready tasks in the order they became ready
        # each device's placed intervals sorted by start; unused slots hold inf, so slot k's
        # start is the end of the open gap after the last task
        self.tl_start = np.full((p, n + 1), np.inf)
        self.tl_end = np.full((p, n + 1), np.inf)
        self.tl_len = np.zeros(p, dtype=np.int64)
        self.busy = np.zeros(p)
        self.job_end = inst.arrival.copy()  # planned completion of each job so far
        self.n_ready = 0
        self.n_placed = 0
        self.n_released = 0
        self.clock = 0.0
        self._release()

    # -- queries -------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.n_placed == self.inst.n

    def ready_tasks(self) -> np.ndarray:
        return self.ready[: self.n_ready]

    def capable(self, tasks: np.ndarray) -> np.ndarray:
        return self._capable[tasks]

    def eft(self, tasks: np.ndarray) -> np.ndarray:
        """Earliest finish time (with insertion) of ``tasks`` on every device; inf if incapable."""
        return self.est[tasks] + self.inst.cost[tasks]

    def available(self) -> np.ndarray:
        """When each device finishes the last task placed on it (0 when idle)."""
        last = self.tl_end[np.arange(len(self.tl_len)), np.maximum(self.tl_len - 1, 0)]
        return np.where(self.tl_len > 0, last, 0.0)

    def makespan(self) -> float:
        return float(self.finish[self.dev >= 0].max()) if self.n_placed else 0.0

    # -- transition ----------------------------------------------------------------------------

    def place(self, task: int, device: int) -> tuple[int, float]:
        """Place a ready ``task`` on ``device`` at its insertion EST; the caller checked legality.

        Returns the task's job and how much the job's planned completion grew.
        """
        inst = self.inst
        s = float(self.est[task, device])
        f = s + float(inst.cost[task, device])
        k = int(self.tl_len[device])
        pos = int(np.searchsorted(self.tl_start[device, :k], s))
        self.tl_start[device, pos + 1 : k + 1] = self.tl_start[device, pos:k]
        self.tl_end[device, pos + 1 : k + 1] = self.tl_end[device, pos:k]
        self.tl_start[device, pos], self.tl_end[device, pos] = s, f
        self.tl_len[device] = k + 1
        self.dev[task], self.start[task], self.finish[task] = device, s, f
        self.busy[device] += f - s
        self.n_placed += 1
        where = int(np.flatnonzero(self.ready[: self.n_ready] == task)[0])
        self.ready[where : self.n_ready - 1] = self.ready[where + 1 : self.n_ready]
        self.n_ready -= 1
        j = int(inst.job[task])
        grown = max(0.0, f - self.job_end[j])
        self.job_end[j] += grown
        if self.n_ready:
            ready = self.ready[: self.n_ready]
            self.est[ready, device] = self._insertion_est(ready, device)
        e = inst.succs(task)
        succ = inst.dst[e]
        self.missing[succ] -= 1
        self._make_ready(succ[self.missing[succ] == 0])
        self._release()
        return j, grown

    def _insertion_est(self, tasks: np.ndarray, d: int | None = None) -> np.ndarray:
        """Earliest start of each task on device ``d`` (``(m,)``), or on every device (``(m, P)``):
        the first idle gap, from the task's input-ready time on, long enough for it (the gap
        after a device's last task is unbounded)."""
        rows = slice(None) if d is None else d
        k = int(self.tl_len.max() if d is None else self.tl_len[d])
        gap_end = self.tl_start[rows, : k + 1]
        gap_start = np.concatenate(
            (np.zeros(gap_end.shape[:-1] + (1,)), self.tl_end[rows, :k]), axis=-1
        )
        r = self.rdy[tasks][:, rows]
        w = self.inst.cost[tasks][:, rows]
        cand = np.maximum(r[..., None], gap_start)
        # gap starts increase, so the earliest fitting candidate is the smallest fitting one
        est = np.where(cand + w[..., None] <= gap_end, cand, np.inf).min(axis=-1)
        est[~np.isfinite(w)] = np.inf
        return est

    def _make_ready(self, tasks: np.ndarray) -> None:
        if tasks.size == 0:
            return
        inst = self.inst
        for t in tasks:
            e = inst.preds(t)
            arrive = self.finish[inst.src[e], None] + inst.transfer(
                self.dev[inst.src[e], None],
                np.arange(inst.platform.size)[None, :],
                inst.data[e, None],
            )
            self.rdy[t] = arrive.max(axis=0, initial=inst.arrival[inst.job[t]])
        self.est[tasks] = self._insertion_est(tasks)
        m = tasks.size
        self.ready[self.n_ready : self.n_ready + m] = tasks
        self.n_ready += m

    def _release(self) -> None:
        """Release the jobs that have arrived by the decision time (the earliest start of any
        ready task), or the next job when nothing is ready."""
        inst = self.inst
        while self.n_released < inst.n_jobs:
            j = int(self._job_order[self.n_released])
            if self.n_ready:
                self.clock = float(self.est[self.ready[: self.n_ready]].min())
                if inst.arrival[j] > self.clock:
                    return
            self.n_released += 1
            self._make_ready(self._entry[j])
        if self.n_ready:
            self.clock = float(self.est[self.ready[: self.n_ready]].min())

    # -- snapshots -----------------------------------------------------------------------------

    _STATE = (
        "dev",
        "start",
        "finish",
        "missing",
        "rdy",
        "est",
        "ready",
        "tl_start",
        "tl_end",
        "tl_len",
        "busy",
        "job_end",
    )

    def snapshot(self) -> tuple:
        return (
            tuple(getattr(self, k).copy() for k in self._STATE),
            (self.n_ready, self.n_placed, self.n_released, self.clock),
        )

    def known_snapshot(self, tasks: int, jobs: int) -> tuple:
        """A `snapshot` restricted to the first ``tasks`` tasks and ``jobs`` jobs, for the core
        of `known_instance` (every released task, placed or ready, is among them; a device's
        timeline holds at most ``tasks`` intervals and its open end)."""
        arrays, scalars = self.snapshot()
        cut = {
            "tl_start": (slice(None), slice(tasks + 1)),
            "tl_end": (slice(None), slice(tasks + 1)),
        }
        cut |= {"tl_len": (), "busy": (), "job_end": slice(jobs)}
        return (
            tuple(a[cut.get(k, slice(tasks))] for k, a in zip(self._STATE, arrays, strict=True)),
            scalars,
        )

    def restore(self, snap: tuple) -> None:
        arrays, (self.n_ready, self.n_placed, self.n_released, self.clock) = snap
        for k, a in zip(self._STATE, arrays, strict=True):
            getattr(self, k)[...] = a


# -- execution, metrics, record ------------------------------------------------------------------


def execute(
    inst: Instance,
    dev: np.ndarray,
    planned_start: np.ndarray,
    *,
    exclusive: bool = True,
    transfers: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Run a plan with the realised times: each device takes its tasks in planned order, each
    as soon as its job has arrived, its inputs are there and (``exclusive``) the device is free.

    Returns realised start and finish times.
    """
    n = inst.n
    order = np.lexsort((np.arange(n), planned_start))
    run = inst.cost[np.arange(n), dev] * inst.factor
    start, finish = np.zeros(n), np.zeros(n)
    free = np.zeros(inst.platform.size)
    for t in order:
        d = dev[t]
        e = inst.preds(t)
        s = inst.arrival[inst.job[t]]
        if e.size:
            p = inst.src[e]
            arrive = finish[p] + (inst.transfer(dev[p], d, inst.data[e]) if transfers else 0.0)
            s = max(s, float(arrive.max()))
        if exclusive:
            s = max(s, free[d])
        start[t], finish[t] = s, s + run[t]
        free[d] = finish[t]
    return start, finish


def schedule_metrics(
    inst: Instance, planned_finish: np.ndarray, finish: np.ndarray
) -> dict[str, float]:
    """The episode's metrics from the planned and realised finish times."""
    lb = inst.lower_bound
    done = np.zeros(inst.n_jobs)
    np.maximum.at(done, inst.job, finish)
    planned = np.zeros(inst.n_jobs)
    np.maximum.at(planned, inst.job, planned_finish)
    makespan = float(finish.max())
    if inst.mode == "single":
        m = {
            "makespan": makespan,
            "planned_makespan": float(planned_finish.max()),
            "slr": makespan / float(lb[0]),
        }
        whole = np.all(np.isfinite(inst.cost), axis=0)
        if whole.any():  # Topcuoglu's speedup: best single device that can run every task
            m["speedup"] = float(inst.cost[:, whole].sum(axis=0).min()) / makespan
        return m
    slow = (done - inst.arrival) / lb
    return {
        "mean_slowdown": float(slow.mean()),
        "max_slowdown": float(slow.max()),
        "planned_mean_slowdown": float(((planned - inst.arrival) / lb).mean()),
        "makespan": makespan,
    }


def realised_penalty(inst: Instance, metrics: Mapping[str, float]) -> float:
    """The end-of-episode reward correction: how far the realised objective exceeds the planned
    one (``schedule_metrics``' ``makespan`` over the critical path single, ``mean_slowdown``
    online), in the units of the steps' rewards; 0 without noise."""
    if inst.mode == "single":
        return (metrics["makespan"] - metrics["planned_makespan"]) / inst.lower_bound[0]
    return metrics["mean_slowdown"] - metrics["planned_mean_slowdown"]


def build_record(
    inst: Instance,
    dev: np.ndarray,
    planned_start: np.ndarray,
    *,
    case: str,
    policy: str = "",
    relaxed: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Execute a plan and return its metrics and its JSON-serialisable episode record.

    ``relaxed`` names constraints a bound drops (``"exclusive"``: devices run any number of
    tasks at once; ``"transfers"``: data moves for free); ``validate`` skips exactly those.
    """
    n = inst.n
    planned_finish = planned_start + inst.cost[np.arange(n), dev]
    start, finish = execute(
        inst,
        dev,
        planned_start,
        exclusive="exclusive" not in relaxed,
        transfers="transfers" not in relaxed,
    )
    metrics = schedule_metrics(inst, planned_finish, finish)
    p = inst.platform
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "env": "dag",
        "case": case,
        "policy": policy,
        "mode": inst.mode,
        "time_unit": p.time_unit,
        "sigma": inst.sigma,
        "relaxed": list(relaxed),
        "platform": p.name,
        "devices": [
            {
                "name": p.devices[d],
                "kind": p.kinds[d],
                "ops": None if p.ops[d] is None else sorted(p.ops[d]),
            }
            for d in range(p.size)
        ],
        "links": [
            {
                "a": a,
                "b": b,
                "bandwidth": float(p.bandwidth[a, b]),
                "latency": float(p.latency[a, b]),
            }
            for a in range(p.size)
            for b in range(a + 1, p.size)
        ],
        "jobs": [
            {"name": name, "arrival": float(inst.arrival[j])}
            for j, name in enumerate(inst.job_names)
        ],
        "tasks": [
            {
                "name": inst.task_names[t],
                "kind": inst.kinds[t],
                "job": int(inst.job[t]),
                "cost": [float(c) if math.isfinite(c) else None for c in inst.cost[t]],
                "factor": float(inst.factor[t]),
            }
            for t in range(n)
        ],
        "edges": [
            [int(s), int(d), float(b)]
            for s, d, b in zip(inst.src, inst.dst, inst.data, strict=True)
        ],
        "schedule": [
            {
                "task": t,
                "device": int(dev[t]),
                "planned_start": float(planned_start[t]),
                "planned_end": float(planned_finish[t]),
                "start": float(start[t]),
                "end": float(finish[t]),
            }
            for t in range(n)
        ],
        "metrics": metrics,
    }
    if extra:
        record.update(extra)
    return metrics, record
