"""`schedgym/MemoryMap-v0`: the mallocGame, mapping tensors to fast and slow memory.

Beside the env class, the module holds what every schedgym env module provides (see
``evaluate.py``): `validate` (an independent re-check of an episode record), `plot_record` (the
time x address picture of a placement) and `bench` (steps/s, and the greedy baselines on an
18,000-buffer set).
"""

from __future__ import annotations

import bisect
import functools
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from schedgym.envs.hardware import device_from_table, load_cost_table
from schedgym.envs.memory_core import (
    ORDERS,
    RECORD_FORMAT,
    TASKS,
    MemoryMapCore,
    op_seconds,
)
from schedgym.envs.spaces import EntityLayout
from schedgym.errors import RecordError, SchedgymError, WorkloadError
from schedgym.workloads.memory import (
    BufferSet,
    benchmark_path,
    live_profile,
    model_buffer_set,
    parse_random_case,
    random_buffer_set,
    read_buffer_csv,
)
from schedgym.workloads.torch_models import MODEL_ZOO

DEFAULT_CASE = "random:64"
# H100 SXM5's L2 cache, "50 MB" (NVIDIA H100 Tensor Core GPU Architecture whitepaper, 2022); the
# shipped cost tables list HBM only, so the fast tier is defined here.
DEFAULT_FAST_CAPACITY = 50 * 2**20
# A table whose device lists one of these memory tiers gives the fast tier's defaults instead.
FAST_TIER_NAMES = ("sram", "l2")
# Fast-tier bandwidth as a multiple of the slow tier's: the A100's L2 read bandwidth over its HBM
# bandwidth (NVIDIA A100 Tensor Core GPU Architecture whitepaper, 2020: 5,120 B/clk at 1,410 MHz
# = 7.2 TB/s, against 1,555 GB/s of HBM2), an assumption carried to the other devices.
FAST_BANDWIDTH_RATIO = 4.6

CANDIDATE_FEATURES = (
    "offset",  # candidate offset / C
    "top",  # (offset + size) / C
    "slack",  # min(gap - size, C) / C: room left in the gap once the buffer sits in it
    "ceiling",  # 1 if the gap is the topmost one (unbounded in pack, up to C in map)
    "growth",  # max(0, offset + size - height) / C: how much the height would grow
    "within",  # 1 if offset + size <= C
)
GLOBAL_FEATURES = (
    "map",  # 1 in the map task, 0 in pack
    "size",  # buffer size / C
    "lifetime",  # (end - start) / horizon
    "start",  # (start - first start) / horizon
    "progress",  # buffers decided / buffers
    "height",  # height of the fast memory (pack: of the packing) so far / C
    "pressure",  # peak of live bytes over the buffer's lifetime / C
    "gain",  # map: share of its ops' all-slow time saved if the buffer alone were fast
    "fast_share",  # map: share of the decided buffers placed in fast memory
    "saved",  # map: (all-slow time - modelled time so far) / all-slow time
    "peak",  # peak live bytes of the whole set / C
)


class MemoryMapEnv(gym.Env):
    """
    ## Description

    The mallocGame of mallocMuZero (Wang et al., "Optimizing Memory Mapping Using Deep
    Reinforcement Learning", 2023) on schedgym's measured costs. A *buffer set* lists tensors with
    a size and a lifetime ``[start, end)``; buffers are decided one at a time in a fixed order,
    each placed at an address or (map task) left in slow memory. Two placed buffers whose
    lifetimes overlap may not overlap in address.

    * ``task="map"`` (default): fast memory (on-chip SRAM or similar) of capacity ``C`` beside
      slow memory (HBM/DRAM). Op ``j`` takes ``max(compute_j, F_j / fast_bw + S_j / slow_bw)``
      seconds, ``F_j``/``S_j`` the bytes it reads and writes in fast/slow memory (weights and
      model inputs always slow); the score is the total, the modelled execution time.
    * ``task="pack"``: MiniMalloc's problem: every buffer gets an address; minimise the peak
      height; solved when the height is within the case's capacity.

    Cases: buffer sets traced from the model zoo (``gpt2-tiny``, ``gpt2-small``,
    ``gpt2-medium``, ``resnet18``, ``resnet-tiny``, ``mlp``; compute priced by the cost table,
    see `memory_core.op_seconds`), MiniMalloc's hard instances ``minimalloc:A``..``F`` and the
    ResNet-50 plan ``idealloc:resnet50`` (from ``../shared/data/memory``), any
    ``id,lower,upper,size`` CSV (``file:PATH`` or a path), and seeded random sets
    (``random[:N[:SEED]]``). CSV sets carry no access counts: each buffer is then written once
    at its first step and read once at its last, with no compute (`BufferSet.op_table`).

    ## Action Space

    ``Discrete(max_candidates + 1)`` in map, ``Discrete(max_candidates)`` in pack (which has no
    slow memory). Action ``i < max_candidates`` places the current buffer at
    candidate ``i``: the candidates are the bottoms of the free gaps, over the buffer's lifetime,
    between the placed buffers overlapping it in time (0 and their top edges, MiniMalloc's
    canonical positions), in ascending order, kept where the buffer fits (map: below ``C``);
    when more fit, the lowest ``max_candidates - 1`` and the topmost. Action ``max_candidates``
    leaves the buffer in slow memory (map only). ``action_masks()`` marks exactly these; it is
    never all False (pack: the topmost gap is unbounded; map: slow memory). Any other action
    raises ``schedgym.errors.IllegalActionError`` (a ``ValueError``) saying why.

    ## Observation Space

    The shared entity layout (``schedgym.envs.spaces.EntityLayout``), a ``Dict`` of:

    * ``entities`` ``(max_candidates, 6)`` float32, one row per candidate: offset, top, slack
      in its gap, topmost-gap flag, height growth, within-capacity flag (``CANDIDATE_FEATURES``);
    * ``entity_mask`` ``(max_candidates,)`` int8: 1 for the real candidates;
    * ``globals`` ``(11,)`` float32: task flag, the buffer's size, lifetime and start, progress,
      height so far, peak of live bytes over the buffer's lifetime, its solo gain, share of
      buffers made fast, share of time saved so far, the set's peak live bytes
      (``GLOBAL_FEATURES``).

    Bytes are divided by ``C`` (map: the fast capacity; pack: the case's capacity, or its peak
    of live bytes when it names none), times by the set's horizon: O(1) on every size.

    ## Rewards

    * map: the modelled time saved by the step over the all-slow time, so the return is
      ``1 - 1 / speedup``;
    * pack: minus the growth of the height over ``C``, so the return is ``-height / C``.

    ## Starting State

    Nothing placed, the first buffer of the order up. The case is ``reset(options={"case":
    ...})``, else the constructor's ``case``, else ``"random:64"``: 64 buffers, about 8 live at
    a time, sizes spread 64:1 scaled to a 128 MiB peak of live bytes, drawn from the seed given to
    ``reset``. ``options={"order": ...}`` overrides the buffer order for that episode. Same seed
    and case, same episode.

    ## Episode End

    Terminated once every buffer is decided; never truncated. The last step's ``info`` holds
    ``metrics`` (pack: ``height``, ``capacity``, ``height_over_capacity``, ``solved``,
    ``peak_live``, ``height_over_peak``, ``solve_s``; map: ``modelled_time_s``,
    ``all_slow_time_s``, ``speedup``, ``fast_byte_share``, ``fast_buffers``, ``height``,
    ``capacity``) and ``record`` (buffers, offsets with -1 for slow memory, ops and accesses for
    map), which `validate` re-checks.

    ## Arguments

    * ``task`` (``"map"``): ``"map"`` or ``"pack"``;
    * ``case`` (``None``, meaning ``"random:64"``): the case ``reset`` uses when its options name
      none;
    * ``hardware`` (``"h100"``): cost table (shipped name or JSON path) pricing the traced ops;
      the slow tier is its device's ``hbm`` (or first) memory tier, and an ``sram`` or ``l2``
      tier, where the table lists one, gives the fast tier's defaults (the shipped tables do not);
    * ``fast_capacity`` (``None``): bytes of fast memory (an ``int``), or a share of the case's
      peak live bytes (a ``float`` in (0, 1]); ``None`` means the case's own capacity when it
      names one (MiniMalloc: 1,048,576), else the table's fast tier, else 50 MiB, the H100's L2;
    * ``fast_bandwidth`` (``None``): bytes/s; ``None`` means the table's fast tier, else 4.6 x
      the slow tier's (the A100's L2 over HBM read bandwidth, an assumption; see
      ``FAST_BANDWIDTH_RATIO``);
    * ``order`` (``"start"``): the buffer order, ``"start"`` (earliest first, then largest),
      ``"size"`` (largest first), ``"area"`` (size x lifetime), ``"benefit"`` (XLA's memory
      boundedness: alternate-memory benefit / sqrt(size));
    * ``max_candidates`` (32): candidate rows, and the action space's size less one.

    ``get_state()``/``set_state(state)`` snapshot and restore an episode (numpy copies); the
    simulator core is ``env.core`` (`memory_core.MemoryMapCore`), the case ``env.buffers``.

    ## Version History

    * v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        task: str = "map",
        case: str | BufferSet | None = None,
        hardware: str = "h100",
        fast_capacity: int | float | None = None,
        fast_bandwidth: float | None = None,
        order: str = "start",
        max_candidates: int = 32,
    ):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        if order not in ORDERS:
            raise ValueError(f"unknown buffer order {order!r}; known: {', '.join(ORDERS)}")
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        if isinstance(fast_capacity, float) and not 0.0 < fast_capacity <= 1.0:
            raise ValueError(f"a float fast_capacity is a share in (0, 1], got {fast_capacity}")
        if isinstance(fast_capacity, int) and fast_capacity < 1:
            raise ValueError(f"fast_capacity must be a positive byte count, got {fast_capacity}")
        self.task, self.default_case, self.order = task, case or DEFAULT_CASE, order
        self.hardware = str(hardware)
        self.table = _cost_table(self.hardware)
        device = device_from_table(self.table)
        slow = next((t for t in device.memory if t.name == "hbm"), None) or (
            device.memory[0] if device.memory else None)
        if slow is None:
            raise SchedgymError(f"cost table {hardware!r} lists no memory tier for slow memory")
        fast = next((t for t in device.memory if t.name in FAST_TIER_NAMES), None)
        self.slow_bandwidth = slow.bandwidth
        self.fast_bandwidth = float(fast_bandwidth or (
            fast.bandwidth if fast else FAST_BANDWIDTH_RATIO * slow.bandwidth))
        self.fast_capacity_arg = fast_capacity
        self.default_fast_capacity = fast.capacity_bytes if fast else DEFAULT_FAST_CAPACITY
        self.layout = EntityLayout(max_entities=max_candidates,
                                   n_features=len(CANDIDATE_FEATURES),
                                   n_globals=len(GLOBAL_FEATURES),
                                   n_special=int(task == "map"))
        self.observation_space = self.layout.observation_space()
        self.action_space = self.layout.action_space()
        self.buffers: BufferSet | None = None
        self.core: MemoryMapCore | None = None
        self._static: _Static | None = None

    # --- Gymnasium API -------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"case", "order"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; known: case, order")
        case = options.get("case") or self.default_case
        order = options.get("order") or self.order
        buffers = case if isinstance(case, BufferSet) else load_case(
            case, self.hardware, self.np_random)
        self._use(buffers, order)
        self.core.reset()
        return self._observe(), {"case": buffers.name, "capacity": self.core.capacity}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        core = self._require_core()
        reward = core.step(int(action))
        info: dict[str, Any] = {}
        if core.done:
            info["metrics"] = core.metrics()
            info["record"] = core.record()
        return self._observe(), float(reward), core.done, False, info

    def action_masks(self) -> np.ndarray:
        """True for the legal actions (MaskablePPO's hook)."""
        return self._require_core().action_mask()

    # --- snapshots -----------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A cheap snapshot of the episode (numpy copies), for search agents."""
        core = self._require_core()
        return {"buffers": self.buffers, "order": core.order_name, "core": core.get_state()}

    def set_state(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        """Restore a `get_state` snapshot (of any case); return its observation."""
        self._use(state["buffers"], state["order"])
        self.core.set_state(state["core"])
        return self._observe()

    # --- internals -----------------------------------------------------------------------

    def capacity_for(self, buffers: BufferSet) -> int:
        """The ``C`` of this env for a case (class docstring, Arguments)."""
        if self.task == "pack":
            return buffers.capacity or buffers.peak_live_bytes()
        arg = self.fast_capacity_arg
        if isinstance(arg, float):
            return max(1, int(arg * buffers.peak_live_bytes()))
        return int(arg or buffers.capacity or self.default_fast_capacity)

    def _use(self, buffers: BufferSet, order: str) -> None:
        if order not in ORDERS:
            raise ValueError(f"unknown buffer order {order!r}; known: {', '.join(ORDERS)}")
        if buffers is self.buffers and self.core is not None and self.core.order_name == order:
            return
        self.buffers = buffers
        self.core = MemoryMapCore(
            buffers, self.task, self.capacity_for(buffers), order=order,
            max_candidates=self.layout.max_entities, fast_bandwidth=self.fast_bandwidth,
            slow_bandwidth=self.slow_bandwidth)
        self._static = _Static(self.core)

    def _require_core(self) -> MemoryMapCore:
        if self.core is None:
            raise SchedgymError("MemoryMapEnv: call reset() before step() or action_masks()")
        return self.core

    def _observe(self) -> dict[str, np.ndarray]:
        core, st = self.core, self._static
        obs = self.layout.empty_observation()
        g = obs["globals"]
        g[0], g[10] = st.is_map, st.peak
        g[4] = core.k / core.buffers.n
        g[5] = core.height * st.inv_c
        g[8] = core.m / core.k if (core.k and st.is_map) else 0.0  # m: buffers made fast
        g[9] = (core.all_slow - core.total_time) / core.all_slow if core.all_slow > 0 else 0.0
        if core.done:
            return obs
        b = core.current
        g[1], g[2], g[3], g[6], g[7] = st.per_buffer[:, b]
        n = core.cand_offset.size
        off = core.cand_offset.astype(np.float64)
        top = off + float(core.buffers.size[b])
        gap = core.cand_gap.astype(np.float64)
        e = obs["entities"]
        e[:n, 0] = off * st.inv_c
        e[:n, 1] = top * st.inv_c
        e[:n, 2] = np.minimum(gap - (top - off), core.capacity) * st.inv_c
        e[:n, 3] = core.cand_offset + core.cand_gap >= core.limit  # in int64: exact
        e[:n, 4] = np.maximum(0.0, top - core.height) * st.inv_c
        e[:n, 5] = top <= core.capacity
        obs["entity_mask"][:n] = 1
        return obs


class _Static:
    """Per-case observation features, computed once per case."""

    def __init__(self, core: MemoryMapCore):
        bs = core.buffers
        self.inv_c = 1.0 / core.capacity
        self.is_map = float(core.task == "map")
        t0, t1 = bs.horizon
        span = max(t1 - t0, 1)
        times, live = bs.live_profile()
        first = np.searchsorted(times, bs.start)
        last = np.searchsorted(times, bs.end)  # live[first:last] covers the lifetime
        pairs = np.stack([first, last], axis=1).ravel()
        pressure = np.maximum.reduceat(np.append(live, 0), pairs)[::2]
        self.peak = float(live.max()) * self.inv_c
        gain = core.cost.solo_gain() if core.task == "map" else np.zeros(bs.n)
        self.per_buffer = np.stack([bs.size * self.inv_c, (bs.end - bs.start) / span,
                                    (bs.start - t0) / span, pressure * self.inv_c, gain])


# --- cases -----------------------------------------------------------------------------------


@functools.cache
def _cost_table(hardware: str):
    return load_cost_table(hardware)


@functools.cache
def _csv_case(path: str) -> BufferSet:
    return read_buffer_csv(path)


@functools.cache
def _model_case(model: str, table_name: str) -> BufferSet:
    table = _cost_table(table_name)
    return model_buffer_set(model, functools.partial(op_seconds, table), table.dtype_bytes)


def load_case(case: str, hardware: str = "h100", rng: Any = None) -> BufferSet:
    """Resolve a case string (class docstring) into a buffer set; ``hardware`` (a cost table's
    name or path) prices traced models, ``rng`` seeds random cases that name no seed."""
    if case.startswith("random"):
        return parse_random_case(case, rng)
    if case.startswith("model:") or case in MODEL_ZOO:
        model = case.removeprefix("model:")
        if model not in MODEL_ZOO:
            raise WorkloadError(f"unknown model {model!r}; zoo: {', '.join(MODEL_ZOO)}")
        return _model_case(model, hardware)
    family, _, name = case.partition(":")
    if family in ("minimalloc", "idealloc") and name:
        return _csv_case(str(benchmark_path(family, name)))
    if family == "file" and name:
        return read_buffer_csv(name)
    if Path(case).suffix == ".csv" or Path(case).exists():
        return read_buffer_csv(case)
    raise WorkloadError(
        f"unknown memory case {case!r}: use a zoo model ({', '.join(MODEL_ZOO)}), "
        "minimalloc:A..F, idealloc:resnet50, random[:N[:SEED]], file:PATH or a CSV path")


# --- validation ------------------------------------------------------------------------------


def validate(record: dict[str, Any]) -> dict[str, Any]:
    """Re-check an episode record from scratch and return the metrics it implies.

    A placement record: sizes positive, lifetimes non-empty, ids unique; every buffer placed in
    pack; fast buffers within ``[0, capacity)`` in map; no two placed buffers overlapping in
    time x address (a sweep over time against the live address intervals); the map task's
    modelled time recomputed op by op from the listed compute and accesses. A bound record
    (``record["bound"]``) is re-derived: the peak of live bytes, or the fractional knapsack.
    Raises ``RecordError`` naming the first fault.
    """
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise RecordError(f"not a memory-map record (format must be {RECORD_FORMAT!r})")
    task = record.get("task")
    if task not in TASKS:
        raise RecordError(f"record task {task!r} is not one of {TASKS}")
    try:
        cols = {k: np.asarray(record["buffers"][k], dtype=np.int64)
                for k in ("id", "start", "end", "size")}
        capacity = int(record["capacity"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"record buffers/capacity unreadable: {exc}") from exc
    ids, start, end, size = cols["id"], cols["start"], cols["end"], cols["size"]
    n = ids.size
    if n == 0 or any(c.shape != (n,) for c in cols.values()):
        raise RecordError("record buffers: empty or columns of different lengths")
    if len(set(ids.tolist())) != n:
        raise RecordError("record buffers: duplicate ids")
    for bad, why in ((size <= 0, "non-positive size"), (end <= start, "empty lifetime")):
        if bad.any():
            raise RecordError(f"buffer {int(ids[bad.argmax()])}: {why}")
    if capacity < 1:
        raise RecordError(f"capacity must be positive, got {capacity}")
    peak = _peak_live(start, end, size)
    bound = record.get("bound")
    if bound is not None:
        return _validate_bound(record, bound, task, capacity, peak, start, end, size)

    offset = np.asarray(record.get("offset", []), dtype=np.int64)
    if offset.shape != (n,):
        raise RecordError(f"record has {offset.size} offsets for {n} buffers")
    if np.any(offset < -1):
        raise RecordError(f"buffer {int(ids[(offset < -1).argmax()])}: offset below -1")
    fast = offset >= 0
    if task == "pack" and not fast.all():
        raise RecordError(f"pack: buffer {int(ids[(~fast).argmax()])} was left unplaced")
    if task == "map":
        over = fast & (offset + size > capacity)
        if over.any():
            i = int(over.argmax())
            raise RecordError(f"buffer {int(ids[i])} at offset {int(offset[i])} + size "
                              f"{int(size[i])} exceeds the fast capacity {capacity}")
    _check_no_overlap(ids, start, end, size, offset)
    height = int((offset + size)[fast].max()) if fast.any() else 0
    if task == "pack":
        return {"height": height, "capacity": capacity, "height_over_capacity": height / capacity,
                "solved": int(height <= capacity), "peak_live": peak,
                "height_over_peak": height / peak}
    op = _map_inputs(record, start, end, ids)
    in_fast = fast[op["buffer"]]
    f_bytes = np.zeros(op["m"])
    s_bytes = op["fixed"].copy()
    np.add.at(f_bytes, op["op"][in_fast], op["bytes"][in_fast])
    np.add.at(s_bytes, op["op"][~in_fast], op["bytes"][~in_fast])
    fbw, sbw = op["fast_bandwidth"], op["slow_bandwidth"]
    modelled = float(np.maximum(op["compute"], f_bytes / fbw + s_bytes / sbw).sum())
    slow = float(np.maximum(op["compute"], (f_bytes + s_bytes) / sbw).sum())
    moved = float(op["bytes"].sum())
    return {"modelled_time_s": modelled, "all_slow_time_s": slow,
            "speedup": slow / modelled if modelled > 0 else 1.0,
            "fast_byte_share": float(op["bytes"][in_fast].sum()) / moved if moved else 0.0,
            "fast_buffers": int(fast.sum()), "height": height, "capacity": capacity}


def _peak_live(start: np.ndarray, end: np.ndarray, size: np.ndarray) -> int:
    # Ends sort before starts at equal times: lifetimes are half-open.
    times = np.concatenate([end, start])
    delta = np.concatenate([-size, size])
    kind = np.concatenate([np.zeros(end.size), np.ones(start.size)])
    order = np.lexsort((kind, times))
    return int(np.cumsum(delta[order]).max())


def _check_no_overlap(ids, start, end, size, offset) -> None:
    """Sweep over time; the live fast buffers' address intervals are kept sorted by offset."""
    placed = np.flatnonzero(offset >= 0).tolist()
    events = sorted([(int(end[i]), 0, i) for i in placed] + [(int(start[i]), 1, i)
                                                             for i in placed])
    lows: list[int] = []
    owner: dict[int, int] = {}
    for _, kind, i in events:
        lo = int(offset[i])
        if kind == 0:
            del lows[bisect.bisect_left(lows, lo)]
            del owner[lo]
            continue
        hi = lo + int(size[i])
        k = bisect.bisect_left(lows, lo)
        for j in ([owner[lows[k]]] if k < len(lows) and lows[k] < hi else []) + (
                [owner[lows[k - 1]]] if k > 0 and lows[k - 1] + int(size[owner[lows[k - 1]]]) > lo
                else []):
            raise RecordError(
                f"buffers {int(ids[j])} and {int(ids[i])} overlap: addresses "
                f"[{int(offset[j])}, {int(offset[j] + size[j])}) and [{lo}, {hi}) while both "
                f"live at time {max(int(start[i]), int(start[j]))}")
        lows.insert(k, lo)
        owner[lo] = i


def _map_inputs(record: dict[str, Any], start, end, ids) -> dict[str, Any]:
    try:
        ops, acc, mem = record["ops"], record["accesses"], record["memory"]
        out = {"time": np.asarray(ops["time"], np.int64),
               "compute": np.asarray(ops["compute_s"], np.float64),
               "fixed": np.asarray(ops["fixed_bytes"], np.float64),
               "op": np.asarray(acc["op"], np.int64), "buffer": np.asarray(acc["buffer"], np.int64),
               "bytes": np.asarray(acc["bytes"], np.float64),
               "fast_bandwidth": float(mem["fast_bandwidth"]),
               "slow_bandwidth": float(mem["slow_bandwidth"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"map record: ops/accesses/memory unreadable: {exc}") from exc
    m = out["time"].size
    out["m"] = m
    if out["compute"].shape != (m,) or out["fixed"].shape != (m,):
        raise RecordError("map record: op columns of different lengths")
    a = out["op"]
    if not (a.shape == out["buffer"].shape == out["bytes"].shape):
        raise RecordError("map record: access columns of different lengths")
    if a.size and (a.min() < 0 or a.max() >= m or out["buffer"].min() < 0
                   or out["buffer"].max() >= ids.size):
        raise RecordError("map record: an access names an op or buffer out of range")
    if np.any(out["compute"] < 0) or np.any(out["fixed"] < 0) or np.any(out["bytes"] < 0):
        raise RecordError("map record: negative compute time or byte count")
    if out["fast_bandwidth"] <= 0 or out["slow_bandwidth"] <= 0:
        raise RecordError("map record: bandwidths must be positive")
    t, b = out["time"][a], out["buffer"]
    outside = (t < start[b]) | (t >= end[b])
    if outside.any():
        k = int(outside.argmax())
        raise RecordError(f"op {int(a[k])} at time {int(t[k])} touches buffer {int(ids[b[k]])} "
                          f"outside its lifetime [{int(start[b[k]])}, {int(end[b[k]])})")
    return out


def _validate_bound(record, bound, task, capacity, peak, start, end, size) -> dict[str, Any]:
    if bound == "peak-live" and task == "pack":
        return {"height": peak, "capacity": capacity, "height_over_capacity": peak / capacity,
                "peak_live": peak, "height_over_peak": 1.0}
    if bound == "knapsack" and task == "map":
        op = _map_inputs(record, start, end, np.asarray(record["buffers"]["id"]))
        lower, slow = _time_lp(op, start, end, size, capacity)
        return {"modelled_time_s": lower, "all_slow_time_s": slow,
                "speedup": slow / lower if lower > 0 else 1.0, "capacity": capacity}
    raise RecordError(f"unknown bound {bound!r} for the {task} task")


def _time_lp(op: dict[str, Any], start, end, size, capacity: int) -> tuple[float, float]:
    """Re-derive the map task's LP bound: variables are each buffer's fast fraction and each
    op's time (seconds); constraints are listed one by one."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix

    n, m = size.size, op["m"]
    fbw, sbw = op["fast_bandwidth"], op["slow_bandwidth"]
    total = op["fixed"].copy()
    np.add.at(total, op["op"], op["bytes"])
    slow = float(np.maximum(op["compute"], total / sbw).sum())
    scale = slow if slow > 0 else 1.0
    rows, cols, vals, rhs = [], [], [], []
    for j in range(m):  # time of op j >= its memory time with the fractions in fast memory
        rows.append(j)
        cols.append(n + j)
        vals.append(-1.0)
        rhs.append(-total[j] / sbw / scale)
    for j, b, nbytes in zip(op["op"].tolist(), op["buffer"].tolist(), op["bytes"].tolist(),
                            strict=True):
        rows.append(j)
        cols.append(b)
        vals.append(-nbytes * (1.0 / sbw - 1.0 / fbw) / scale)
    r = m
    for t in sorted(set(start.tolist())):  # the fractions live at each start fit in fast memory
        live = np.flatnonzero((start <= t) & (end > t))
        rows += [r] * live.size
        cols += live.tolist()
        vals += (size[live] / capacity).tolist()
        rhs.append(1.0)
        r += 1
    a_ub = csr_matrix((vals, (rows, cols)), shape=(r, n + m))
    bounds = [(0.0, 1.0)] * n + [(float(c) / scale, None) for c in op["compute"]]
    res = linprog([0.0] * n + [1.0] * m, A_ub=a_ub, b_ub=rhs, bounds=bounds, method="highs")
    if res.status != 0:
        raise RecordError(f"knapsack bound: the LP has no optimum ({res.message})")
    return float(res.fun) * scale, slow


# --- pictures --------------------------------------------------------------------------------


def plot_record(record: dict[str, Any], path: str | Path, *, title: str | None = None) -> None:
    """Write the time x address picture of a placement (map: with the per-op times below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    if record.get("bound") is not None:
        raise SchedgymError(f"a {record['bound']} bound record has no placement to draw")
    metrics = validate(record)
    task, capacity = record["task"], int(record["capacity"])
    b = record["buffers"]
    start, end, size = (np.asarray(b[k], np.float64) for k in ("start", "end", "size"))
    offset = np.asarray(record["offset"], np.float64)
    fast = offset >= 0
    unit, scale = _byte_unit(max(capacity, metrics["height"]))
    rows = 2 if task == "map" else 1
    fig, axes = plt.subplots(rows, 1, figsize=(11, 4.2 * rows + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.4][:rows]})
    ax = axes[0, 0]
    x0, x1, y0 = start[fast], end[fast], offset[fast] / scale
    y1 = y0 + size[fast] / scale
    boxes = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1),
                      np.stack([x0, y1], 1)], axis=1)
    colours = plt.get_cmap("tab20")(np.arange(int(fast.sum())) % 20)
    ax.add_collection(PolyCollection(boxes, facecolors=colours,
                                     edgecolors="black" if fast.sum() <= 1500 else "none",
                                     linewidths=0.3))
    times, live = live_profile(start, end, size)
    ax.step(times, live / scale, where="post", color="black", lw=1.0, ls=":",
            label="live bytes of all buffers" if task == "map" else "live bytes (lower bound)")
    ax.axhline(capacity / scale, color="crimson", lw=1.2, ls="--",
               label="fast capacity" if task == "map" else "capacity")
    ax.set_xlim(times[0], times[-1])
    ax.set_ylim(0, 1.05 * max(capacity, metrics["height"], live.max() if task == "pack" else 0)
                / scale)
    time_unit = "op step" if "ops" in record else "time"
    ax.set_xlabel(time_unit)
    ax.set_ylabel(f"address ({unit})")
    ax.legend(loc="upper right", fontsize=8)
    if task == "pack":
        summary = (f"height {metrics['height']:,} = {metrics['height_over_capacity']:.3f} x "
                   f"capacity, {metrics['height_over_peak']:.3f} x peak live")
    else:
        summary = (f"{int(fast.sum())}/{fast.size} buffers fast, speedup "
                   f"{metrics['speedup']:.3f} x all-slow, {metrics['fast_byte_share']:.1%} "
                   "of buffer bytes from fast memory")
    ax.set_title(f"{title or record.get('case', '')} [{task}, order {record.get('order')}]: "
                 f"{summary}", fontsize=10)
    if task == "map":
        _plot_op_times(axes[1, 0], record, fast)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _byte_unit(nbytes: float) -> tuple[str, float]:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= 4 * scale:
            return unit, float(scale)
    return "bytes", 1.0


def _plot_op_times(ax, record: dict[str, Any], fast: np.ndarray) -> None:
    ops, acc, mem = record["ops"], record["accesses"], record["memory"]
    t = np.asarray(ops["time"], np.float64)
    compute = np.asarray(ops["compute_s"])
    op, buf, nbytes = (np.asarray(acc[k]) for k in ("op", "buffer", "bytes"))
    f_bytes = np.bincount(op, weights=np.where(fast[buf], nbytes, 0.0), minlength=t.size)
    total = np.asarray(ops["fixed_bytes"]) + np.bincount(op, weights=nbytes, minlength=t.size)
    slow_t = np.maximum(compute, total / mem["slow_bandwidth"])
    mapped = np.maximum(compute, f_bytes / mem["fast_bandwidth"]
                        + (total - f_bytes) / mem["slow_bandwidth"])
    ax.step(t, slow_t * 1e6, where="post", color="lightcoral", lw=1.0, label="all slow")
    ax.step(t, mapped * 1e6, where="post", color="navy", lw=1.0, label="this mapping")
    ax.step(t, compute * 1e6, where="post", color="grey", lw=0.8, ls=":", label="compute")
    ax.set_xlabel("op step" if t.size and t[-1] < 1e5 else "time")
    ax.set_ylabel("op time (us)")
    ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8, ncol=3)


# --- benchmarks ------------------------------------------------------------------------------


def bench() -> list[dict[str, Any]]:
    """Env steps/s with random legal actions (both tasks), and greedy baselines placing an
    18,000-buffer random set through the env (seconds per episode, record validation apart)."""
    rows = []
    for task in TASKS:
        env = MemoryMapEnv(task=task, case="random:2000:0")
        rng = np.random.default_rng(0)
        env.reset(seed=0)
        steps, t0 = 0, time.perf_counter()
        done = False
        while not done:
            legal = np.flatnonzero(env.action_masks())
            _, _, done, _, _ = env.step(int(legal[rng.integers(legal.size)]))
            steps += 1
        rate = steps / (time.perf_counter() - t0)
        rows.append({"name": f"memmap {task} steps/s (random legal actions)", "value": rate,
                     "unit": "steps/s", "note": "random:2000:0, 32 candidates, h100 costs"})
    big = random_buffer_set(18000, 0, mean_live=64.0, name="random:18000:0:live64")
    for task, order, label in (("pack", "size", "best-fit by size"),
                               ("map", "size", "best-fit by size"),
                               ("map", "benefit", "msa (XLA-like order, best fit)")):
        env = MemoryMapEnv(task=task, case=big, order=order)
        env.reset(seed=0)
        t0 = time.perf_counter()
        done = False
        info: dict[str, Any] = {}
        while not done:
            _, _, done, _, info = env.step(env.core.best_fit())
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        validate(info["record"])
        rows.append({"name": f"memmap {task}: {label}, 18,000 buffers", "value": wall,
                     "unit": "s", "note": f"whole episode through env.step; validate() "
                     f"{time.perf_counter() - t1:.2f} s; about 64 buffers live at a time"})
    return rows
