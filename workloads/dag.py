"""Task graphs to schedule on heterogeneous devices: traced operator graphs, random DAGs, a fixture.

A `TaskGraph` is a DAG whose tasks are priced one of two ways:

* **kernel ops** (``kind`` is a schedgym kernel such as ``linear`` or ``layernorm``, with its
  parameters and a launch count): a device prices the task from its kernel cost table, so the same
  graph runs on an H100, an A40 or the CPU at their measured speeds. Edge weights are the bytes the
  consumer reads from the producer.
* **explicit costs** (``kind`` is ``"task"``): the graph carries a time per task and per named
  abstract processor, as in the scheduling literature; ``None`` marks a processor that cannot run
  the task. Edge weights are then communication *times* between two different processors
  (Topcuoglu et al.'s model: one transfer rate, no start-up cost).

Sources: ``traced_graph(model)`` (operators of a zoo model traced with ``torch.fx``),
``random_op_dag``/``random_dag`` (layered random DAGs with daggen's knobs), ``topcuoglu_2002()``
(the paper's 10-task example) and ``load_graph(path)`` (the JSON format ``TaskGraph.to_json``
writes). A graph is validated whole at construction: a cycle is refused naming a task on it.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from schedgym.envs.hardware.kernels import KERNELS
from schedgym.errors import WorkloadError
from schedgym.randomness import SeedLike, as_generator
from schedgym.workloads.base import open_text

ABSTRACT = "task"  # the kind of a task priced by the graph's explicit per-processor costs
FORMAT = "schedgym-taskgraph/1"
# the keys a task graph file may hold (what `TaskGraph.to_json` writes); any other is refused, so
# a misspelt field ("taks", "cots") is an error rather than silently ignored
TOP_KEYS = ("format", "name", "devices", "tasks", "edges", "source")
TASK_KEYS = ("name", "kind", "params", "count", "costs")

# Size limits of the random DAG generators: tasks and processors are checked before anything is
# drawn, edges before each task's edges are made. Suites and scripts use 8 to 100 tasks, the tests
# at most 4,000; on this project's 2-core box a 10,000-task `daggen` DAG draws in 0.5 s and HEFT
# schedules it in 5 s (190 MB), but HEFT's time grows about as n**2 and the edges as n**1.5:
# 30,000 tasks take 47 s with 1.3 million edges, so 100,000 would take about ten minutes with
# some 8 million edges (gigabytes of Python objects).
MAX_TASKS = 10_000
# Dense knobs (fat 0.7, density 1) draw 3 million edges at 10,000 tasks, and n**2 / 2 at worst;
# a million is twice the densest default-fat DAG at the task limit (density 1, regularity 0).
MAX_EDGES = 1_000_000
# `daggen` processors: the env observes 8 devices by default and the literature uses 2 to 32; a
# cost table of 10,000 tasks x 256 processors is still only 2.6 million numbers.
MAX_PROCS = 256


@dataclass(frozen=True, eq=False)
class TaskGraph:
    """A DAG of tasks with op kinds, kernel parameters or explicit costs, and edge weights.

    ``edges[k] = (src, dst)`` are task indices; ``edge_bytes[k]`` is the data ``dst`` reads from
    ``src`` (bytes for kernel ops, a communication time for explicit-cost graphs). ``costs[i][p]``
    (explicit-cost graphs only) is task ``i``'s time on processor ``devices[p]``.
    """

    name: str
    tasks: tuple[str, ...]
    kinds: tuple[str, ...]
    params: tuple[Mapping[str, int], ...]
    counts: tuple[int, ...]
    edges: tuple[tuple[int, int], ...]
    edge_bytes: tuple[float, ...]
    costs: tuple[tuple[float | None, ...], ...] | None = None
    devices: tuple[str, ...] = ()
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        def fail(reason: str) -> WorkloadError:
            return WorkloadError(reason, self.name or "<graph>")

        n = len(self.tasks)
        if n == 0:
            raise fail("a task graph needs at least one task")
        for label, seq in (("kinds", self.kinds), ("params", self.params), ("counts", self.counts)):
            if len(seq) != n:
                raise fail(f"{len(seq)} {label} for {n} tasks")
        if len(set(self.tasks)) != n:
            dup = next(t for t in self.tasks if self.tasks.count(t) > 1)
            raise fail(f"task name {dup!r} is used twice")
        explicit = self.costs is not None
        if explicit:
            if not self.devices or len(set(self.devices)) != len(self.devices):
                raise fail("explicit costs need a list of distinct processor names")
            if len(self.costs) != n:
                raise fail(f"{len(self.costs)} cost rows for {n} tasks")
        for i, (task, kind) in enumerate(zip(self.tasks, self.kinds, strict=True)):
            if explicit:
                row = self.costs[i]
                if len(row) != len(self.devices):
                    raise fail(
                        f"task {task!r}: {len(row)} costs for {len(self.devices)} processors"
                    )
                if all(c is None for c in row):
                    raise fail(f"task {task!r} can run on no processor (all costs are null)")
                bad = [c for c in row if c is not None and not (math.isfinite(c) and c > 0)]
                if bad:
                    raise fail(f"task {task!r}: costs must be positive and finite, got {bad[0]!r}")
            elif kind == ABSTRACT:
                raise fail(f"task {task!r} has kind {ABSTRACT!r} but the graph has no costs")
            if kind != ABSTRACT:
                spec = KERNELS.get(kind)
                if spec is None:
                    known = ", ".join((ABSTRACT, *KERNELS))
                    raise fail(f"task {task!r}: unknown op kind {kind!r}; known: {known}")
                got = set(self.params[i])
                if got != set(spec.params):
                    raise fail(
                        f"task {task!r}: {kind} takes ({', '.join(spec.params)}), "
                        f"got ({', '.join(sorted(got))})"
                    )
                if any(not (isinstance(v, int) and v > 0) for v in self.params[i].values()):
                    raise fail(f"task {task!r}: kernel parameters must be positive integers")
            if not (isinstance(self.counts[i], int) and self.counts[i] >= 1):
                raise fail(f"task {task!r}: count must be a positive integer")
        if len(self.edge_bytes) != len(self.edges):
            raise fail(f"{len(self.edge_bytes)} edge weights for {len(self.edges)} edges")
        seen: set[tuple[int, int]] = set()
        for (s, d), b in zip(self.edges, self.edge_bytes, strict=True):
            if not (0 <= s < n and 0 <= d < n):
                raise fail(f"edge ({s}, {d}) names a task index outside 0..{n - 1}")
            if s == d:
                raise fail(f"task {self.tasks[s]!r} depends on itself")
            if (s, d) in seen:
                raise fail(f"edge {self.tasks[s]} -> {self.tasks[d]} is given twice")
            seen.add((s, d))
            if not (math.isfinite(b) and b >= 0):
                raise fail(
                    f"edge {self.tasks[s]} -> {self.tasks[d]}: weight must be finite "
                    f"and >= 0, got {b!r}"
                )
        if explicit:
            # a schedule adds these up: a sum past the largest float is an infinite makespan
            longest = sum(max(c for c in row if c is not None) for row in self.costs)
            if not math.isfinite(longest + sum(self.edge_bytes)):
                raise fail(
                    "the costs and edge weights add up past the largest float, so schedule "
                    "times would overflow; rescale them"
                )
        cycle = self._find_cycle()
        if cycle:
            path = " -> ".join(self.tasks[i] for i in cycle)
            raise fail(f"the graph has a cycle through task {self.tasks[cycle[0]]!r} ({path})")

    # -- structure -----------------------------------------------------------------------------

    @property
    def n(self) -> int:
        return len(self.tasks)

    @property
    def explicit(self) -> bool:
        return self.costs is not None

    @cached_property
    def src(self) -> np.ndarray:
        return np.array([e[0] for e in self.edges], dtype=np.int64)

    @cached_property
    def dst(self) -> np.ndarray:
        return np.array([e[1] for e in self.edges], dtype=np.int64)

    @cached_property
    def weights(self) -> np.ndarray:
        return np.array(self.edge_bytes, dtype=float)

    @cached_property
    def topo_order(self) -> np.ndarray:
        """Tasks in a topological order (Kahn's, lowest index first among the ready)."""
        order = self._kahn()
        return np.array(order, dtype=np.int64)

    def _kahn(self) -> list[int]:
        indeg = [0] * self.n
        succ: list[list[int]] = [[] for _ in range(self.n)]
        for s, d in self.edges:
            indeg[d] += 1
            succ[s].append(d)
        heap = [i for i in range(self.n) if indeg[i] == 0]
        order: list[int] = []
        while heap:
            i = heapq.heappop(heap)
            order.append(i)
            for j in succ[i]:
                indeg[j] -= 1
                if indeg[j] == 0:
                    heapq.heappush(heap, j)
        return order

    def _find_cycle(self) -> list[int]:
        """A cycle as a closed list of task indices, or [] for a DAG."""
        order = self._kahn()
        if len(order) == self.n:
            return []
        # Every task Kahn could not order lies on or downstream of a cycle; walking predecessors
        # among them must revisit a task, and the walk from that task back to itself is a cycle.
        left = set(range(self.n)) - set(order)
        pred = {d: s for s, d in self.edges if s in left and d in left}
        walk, at = [], min(left)
        while at not in walk:
            walk.append(at)
            at = pred[at]
        cycle = walk[walk.index(at) :][::-1]
        return [*cycle, cycle[0]]

    # -- (de)serialisation ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        tasks = []
        for i, name in enumerate(self.tasks):
            t: dict[str, Any] = {"name": name}
            if self.kinds[i] != ABSTRACT:
                t.update(kind=self.kinds[i], params=dict(self.params[i]))
                if self.counts[i] != 1:
                    t["count"] = self.counts[i]
            if self.costs is not None:
                t["costs"] = list(self.costs[i])
            tasks.append(t)
        doc: dict[str, Any] = {"format": FORMAT, "name": self.name}
        if self.costs is not None:
            doc["devices"] = list(self.devices)
        doc["tasks"] = tasks
        doc["edges"] = [
            [self.tasks[s], self.tasks[d], b]
            for (s, d), b in zip(self.edges, self.edge_bytes, strict=True)
        ]
        if self.source:
            doc["source"] = self.source
        return doc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")


def graph_from_json(doc: Any, path: str | Path | None = None) -> TaskGraph:
    """Build a graph from the JSON document ``TaskGraph.to_json`` writes; refuse a malformed one
    naming the file and the element (``tasks[3].params``) that is wrong. A key the format does
    not define (``TOP_KEYS``, ``TASK_KEYS``) is refused, never ignored."""

    def fail(where: str, why: str) -> WorkloadError:
        return WorkloadError(f"{where}: {why}", path)

    def refuse_unknown(obj: dict, allowed: tuple[str, ...], where: str) -> None:
        unknown = [k for k in obj if k not in allowed]
        if unknown:
            raise fail(
                where,
                f"unknown key{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(k) for k in unknown)}; allowed keys: {', '.join(allowed)}",
            )

    if not isinstance(doc, dict):
        raise fail("top level", "expected a JSON object")
    refuse_unknown(doc, TOP_KEYS, "top level")
    if doc.get("format", FORMAT) != FORMAT:
        raise fail("format", f"expected {FORMAT!r}, found {doc.get('format')!r}")
    tasks_doc, edges_doc = doc.get("tasks"), doc.get("edges", [])
    if not isinstance(tasks_doc, list) or not tasks_doc:
        raise fail("tasks", "missing or empty: expected a list of task objects")
    if not isinstance(edges_doc, list):
        raise fail("edges", "expected a list of [src, dst, bytes]")
    devices = doc.get("devices")
    if devices is not None and not (
        isinstance(devices, list) and all(isinstance(d, str) for d in devices)
    ):
        raise fail("devices", "expected a list of processor names")
    names, kinds, params, counts, costs = [], [], [], [], []
    for i, t in enumerate(tasks_doc):
        where = f"tasks[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise fail(where, "expected an object with a non-empty string 'name'")
        refuse_unknown(t, TASK_KEYS, where)
        names.append(t["name"])
        kind = t.get("kind", ABSTRACT)
        p = t.get("params", {})
        if not isinstance(kind, str) or not isinstance(p, dict):
            raise fail(where, "'kind' must be a string and 'params' an object")
        if kind == ABSTRACT and (p or t.get("count", 1) != 1):
            # an explicit-cost task is priced by its 'costs' alone: these would be dropped
            raise fail(
                where,
                f"'params' and 'count' belong to kernel ops (a 'kind' such as linear); a task "
                f"of kind {ABSTRACT!r} is priced by its 'costs'",
            )
        kinds.append(kind)
        params.append(p)
        counts.append(t.get("count", 1))
        if devices is not None:
            row = t.get("costs")
            if not isinstance(row, list) or not all(
                c is None or (isinstance(c, int | float) and not isinstance(c, bool)) for c in row
            ):
                raise fail(f"{where}.costs", "expected a list of numbers or null per processor")
            try:
                costs.append(tuple(None if c is None else float(c) for c in row))
            except OverflowError:
                raise fail(f"{where}.costs", "a cost beyond the float range") from None
        elif "costs" in t:
            raise fail(f"{where}.costs", "explicit costs need a top-level 'devices' list")
    index = {name: i for i, name in enumerate(names)}
    edges, weights = [], []
    for k, e in enumerate(edges_doc):
        if not (
            isinstance(e, list)
            and len(e) == 3
            and isinstance(e[2], int | float)
            and not isinstance(e[2], bool)
        ):
            raise fail(f"edges[{k}]", "expected [src task, dst task, bytes]")
        for end in e[:2]:
            if not isinstance(end, str) or end not in index:
                raise fail(f"edges[{k}]", f"unknown task {end!r}")
        edges.append((index[e[0]], index[e[1]]))
        try:
            weights.append(float(e[2]))
        except OverflowError:
            raise fail(f"edges[{k}]", "a weight beyond the float range") from None
    try:
        return TaskGraph(
            str(doc.get("name") or (Path(path).stem if path else "graph")),
            tuple(names),
            tuple(kinds),
            tuple(params),
            tuple(counts),
            tuple(edges),
            tuple(weights),
            tuple(costs) if devices is not None else None,
            tuple(devices or ()),
            str(doc.get("source", path or "")),
        )
    except WorkloadError as exc:
        raise WorkloadError(exc.reason, path) from None


def load_graph(path: str | Path) -> TaskGraph:
    """Load a task graph JSON file (see ``graph_from_json``)."""
    with open_text(path) as fh:
        try:
            doc = json.load(fh)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"not valid JSON: {exc.msg}", path, exc.lineno) from None
        except RecursionError:
            raise WorkloadError("not valid JSON: nested too deeply", path) from None
        except UnicodeDecodeError as exc:
            raise WorkloadError(f"not UTF-8 text: {exc.reason}", path) from None
    return graph_from_json(doc, path)


# -- the Topcuoglu, Hariri and Wu (2002) example ------------------------------------------------

_THW_COSTS = (  # Fig. 2(b): computation cost of each task on P1, P2, P3
    (14, 16, 9),
    (13, 19, 18),
    (11, 13, 19),
    (13, 8, 17),
    (12, 13, 10),
    (13, 16, 9),
    (7, 15, 11),
    (5, 11, 14),
    (18, 12, 20),
    (21, 7, 16),
)
_THW_EDGES = (  # Fig. 2(a): (from, to, communication cost), tasks numbered from 1
    (1, 2, 18),
    (1, 3, 12),
    (1, 4, 9),
    (1, 5, 11),
    (1, 6, 14),
    (2, 8, 19),
    (2, 9, 16),
    (3, 7, 23),
    (4, 8, 27),
    (4, 9, 23),
    (5, 9, 13),
    (6, 8, 15),
    (7, 10, 17),
    (8, 10, 11),
    (9, 10, 13),
)


def topcuoglu_2002() -> TaskGraph:
    """The 10-task, 3-processor example of Topcuoglu, Hariri and Wu (2002), Fig. 2.

    HEFT schedules it in 80 time units (the paper's Fig. 4a) and CPOP in 86 (Fig. 4b).
    """
    n = len(_THW_COSTS)
    return TaskGraph(
        "topcuoglu",
        tuple(f"n{i + 1}" for i in range(n)),
        (ABSTRACT,) * n,
        ({},) * n,
        (1,) * n,
        tuple((s - 1, d - 1) for s, d, _ in _THW_EDGES),
        tuple(float(c) for _, _, c in _THW_EDGES),
        tuple(tuple(float(c) for c in row) for row in _THW_COSTS),
        ("P1", "P2", "P3"),
        "Topcuoglu, Hariri, Wu, IEEE TPDS 13(3):260-274, 2002, Fig. 2",
    )


# -- random layered DAGs (daggen's structure) ----------------------------------------------------


@dataclass(frozen=True)
class DagShape:
    """daggen's structural knobs (Suter & Hunold): how many tasks, how wide, how connected.

    * ``fat``: 0 gives a chain, 1 a single level of independent tasks; a level holds about
      ``n ** fat`` tasks;
    * ``regularity``: 1 makes every level that wide, 0 lets widths vary by up to +-100 %;
    * ``density``: each task has 1 + U[0, density * width of the level above) parents;
    * ``jump``: a parent lies 1 to ``jump`` levels up.
    """

    n: int = 40
    fat: float = 0.5
    density: float = 0.5
    regularity: float = 0.9
    jump: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and self.n >= 1):
            raise WorkloadError(f"n must be a positive integer, got {self.n!r}", "random DAG")
        for knob in ("fat", "density", "regularity"):
            v = getattr(self, knob)
            if not 0.0 <= v <= 1.0:
                raise WorkloadError(f"{knob} must lie in [0, 1], got {v!r}", "random DAG")
        if not (isinstance(self.jump, int) and self.jump >= 1):
            raise WorkloadError(f"jump must be an integer >= 1, got {self.jump!r}", "random DAG")

    def label(self) -> str:
        return (
            f"n={self.n},fat={self.fat},density={self.density},"
            f"regularity={self.regularity},jump={self.jump}"
        )


def layered_dag(
    shape: DagShape, rng: np.random.Generator
) -> tuple[list[int], list[tuple[int, int]]]:
    """daggen's ``generateTasks``/``generateDependencies``: per-task level and the edge list.

    Tasks are numbered level by level, so every edge goes from a lower to a higher index.
    """
    # here, not in DagShape, so that the env's `daggen:N` parsing passes this message on
    if shape.n > MAX_TASKS:
        raise WorkloadError(f"n must be at most {MAX_TASKS} tasks, got {shape.n}", "random DAG")
    per_level = int(math.exp(shape.fat * math.log(shape.n)))
    perc = 100.0 - 100.0 * shape.regularity
    widths: list[int] = []
    while sum(widths) < shape.n:
        r = -perc + 2.0 * perc * rng.random()
        widths.append(min(max(1, int(per_level * (1.0 + r / 100.0))), shape.n - sum(widths)))
    starts = np.concatenate([[0], np.cumsum(widths)]).astype(int)
    level = [lv for lv, w in enumerate(widths) for _ in range(w)]
    edges: list[tuple[int, int]] = []
    for lv in range(1, len(widths)):
        for j in range(widths[lv]):
            child = int(starts[lv] + j)
            parents: set[int] = set()
            n_parents = min(1 + int(rng.random() * shape.density * widths[lv - 1]), widths[lv - 1])
            if len(edges) + n_parents > MAX_EDGES:  # checked before the child's edges are made
                raise WorkloadError(
                    f"{shape.label()} draws more than {MAX_EDGES} edges; lower n, fat or density",
                    "random DAG",
                )
            for _ in range(n_parents):
                plv = max(0, lv - int(1.0 + rng.random() * shape.jump))
                w = widths[plv]
                idx = int(rng.random() * w)
                # daggen moves on to the next task of that level until one is not yet a parent
                for _ in range(w):
                    if int(starts[plv]) + idx not in parents:
                        parents.add(int(starts[plv]) + idx)
                        break
                    idx = (idx + 1) % w
            edges.extend((p, child) for p in sorted(parents))
    return level, edges


def random_dag(
    seed: SeedLike = None,
    shape: DagShape | None = None,
    *,
    ccr: float = 1.0,
    procs: int = 3,
    beta: float = 1.0,
    mean_cost: float = 50.0,
) -> TaskGraph:
    """A layered random DAG with explicit costs on ``procs`` abstract processors.

    Costs follow Topcuoglu et al. (2002) §5.1: a task's mean cost ``w_i`` is uniform in
    ``(0, 2 * mean_cost]``, its cost on each processor uniform in ``[w_i (1 - beta/2),
    w_i (1 + beta/2)]`` (``beta`` in [0, 2] is the heterogeneity), and each edge's communication
    cost uniform in ``(0, 2 * ccr * mean_cost]``, so that the communication-to-computation ratio
    is ``ccr`` on average.
    """
    rng, shape = as_generator(seed), shape or DagShape()
    if procs > MAX_PROCS:
        raise WorkloadError(
            f"procs must be at most {MAX_PROCS} processors, got {procs}", "random DAG"
        )
    if not 0.0 <= beta <= 2.0 or procs < 1 or ccr < 0 or mean_cost <= 0:
        raise WorkloadError(
            f"need 0 <= beta <= 2, procs >= 1, ccr >= 0, mean_cost > 0; got beta={beta}, "
            f"procs={procs}, ccr={ccr}, mean_cost={mean_cost}",
            "random DAG",
        )
    _, edges = layered_dag(shape, rng)
    n = shape.n
    mean = 2.0 * mean_cost * (1.0 - rng.random(n))  # (0, 2 w]: never a zero-cost task
    lo, hi = mean * (1.0 - beta / 2.0), mean * (1.0 + beta / 2.0)
    costs = lo[:, None] + (hi - lo)[:, None] * rng.random((n, procs))
    costs = np.maximum(costs, np.finfo(float).tiny)  # beta = 2 allows a zero draw
    comm = 2.0 * ccr * mean_cost * (1.0 - rng.random(len(edges)))
    return TaskGraph(
        f"daggen({shape.label()},ccr={ccr},procs={procs},beta={beta})",
        tuple(f"t{i}" for i in range(n)),
        (ABSTRACT,) * n,
        ({},) * n,
        (1,) * n,
        tuple(edges),
        tuple(float(c) for c in comm),
        tuple(tuple(float(c) for c in row) for row in costs),
        tuple(f"P{p + 1}" for p in range(procs)),
        "schedgym.workloads.dag.random_dag",
    )


# Weight shapes (d_in, d_out) of the projections of common decoder models (Llama-3-8B, GPT-2 XL,
# Mistral-7B), so a random op graph's GEMMs are ones the cost tables measured or lie near.
_GEMM_SHAPES = (
    (4096, 4096),
    (4096, 6144),
    (4096, 14336),
    (14336, 4096),
    (1600, 6400),
    (6400, 1600),
    (1600, 4800),
    (4096, 1024),
)
_OP_KINDS = (
    "linear",
    "linear",
    "linear",
    "elementwise",
    "layernorm",
    "activation",
    "attention_prefill",
)


def random_op_dag(seed: SeedLike = None, shape: DagShape | None = None) -> TaskGraph:
    """A layered random DAG of transformer-like kernel ops, priced by a platform's cost tables.

    Each task draws an op (GEMMs of decoder-model weight shapes, norms, activations, residual
    adds, causal attention with 32 heads of 128) over a batch of 128 to 4096 tokens; an edge
    carries the producer's fp16 output (tokens x width x 2 bytes).
    """
    rng, shape = as_generator(seed), shape or DagShape()
    _, edges = layered_dag(shape, rng)
    kinds, params, out_bytes = [], [], []
    for _ in range(shape.n):
        kind = _OP_KINDS[int(rng.integers(len(_OP_KINDS)))]
        tokens = int(2 ** rng.integers(7, 13))
        if kind == "linear":
            d_in, d_out = _GEMM_SHAPES[int(rng.integers(len(_GEMM_SHAPES)))]
            p, width = {"tokens": tokens, "d_in": d_in, "d_out": d_out}, d_out
        elif kind == "attention_prefill":
            p = {"tokens": tokens, "context": tokens, "heads": 32, "kv_heads": 8, "head_dim": 128}
            width = 32 * 128
        else:
            width = 4096
            p = {"elements": tokens * width}
        kinds.append(kind)
        params.append(p)
        out_bytes.append(2.0 * tokens * width)
    return TaskGraph(
        f"random-ops({shape.label()})",
        tuple(f"{k}_{i}" for i, k in enumerate(kinds)),
        tuple(kinds),
        tuple(params),
        (1,) * shape.n,
        tuple(edges),
        tuple(out_bytes[s] for s, _ in edges),
        source="schedgym.workloads.dag.random_op_dag",
    )


# -- operator graphs of real models --------------------------------------------------------------


def graph_from_ops(ops: Sequence[Any], name: str) -> TaskGraph:
    """A task graph of traced operators (``workloads.tracing.TracedOp``).

    An edge carries the bytes the consumer reads from the producer's buffer. Model inputs
    (``input:<i>``) and weights are taken to be resident on every device, so they cost no
    transfer: the graph schedules the activations' flow.
    """
    index = {op.name: i for i, op in enumerate(ops)}
    edges: dict[tuple[int, int], float] = {}
    for j, op in enumerate(ops):
        for src, nbytes in zip(op.inputs, op.input_bytes, strict=True):
            if src in index:
                key = (index[src], j)
                edges[key] = edges.get(key, 0.0) + float(nbytes)
    return TaskGraph(
        name,
        tuple(op.name for op in ops),
        tuple(op.kernel for op in ops),
        tuple(dict(op.params) for op in ops),
        tuple(int(op.count) for op in ops),
        tuple(edges),
        tuple(edges.values()),
        source=f"torch.fx trace of {name}",
    )


@lru_cache(maxsize=8)
def traced_graph(model: str) -> TaskGraph:
    """The operator graph of a ``workloads.torch_models.MODEL_ZOO`` model (cached: tracing the
    larger models takes seconds)."""
    from schedgym.workloads.tracing import trace_model

    return graph_from_ops(trace_model(model), model)
