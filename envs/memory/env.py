"""`schedgym/MemoryMap-v0`: the mallocGame, mapping tensors to fast and slow memory.

Its ``record`` module holds the independent re-check `validate` and the time x address picture
of a placement (`plot_record`); ``bench`` steps/s and the greedy baselines on an 18,000-buffer set.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from schedgym.envs.hardware import device_from_table, load_cost_table
from schedgym.envs.hardware.scratchpads import SCRATCHPADS, get_scratchpad
from schedgym.envs.memory.core import (
    ORDERS,
    TASKS,
    MemoryMapCore,
    MsaCore,
    flops_seconds,
    op_seconds,
)
from schedgym.envs.spaces import EntityLayout, action_index
from schedgym.errors import SchedgymError, WorkloadError
from schedgym.workloads.memory import (
    BufferSet,
    benchmark_path,
    model_buffer_set,
    parse_random_case,
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
# The fast tiers: the cost table's device with an L2-like cache (the defaults above), or a
# datasheet scratchpad (envs/hardware/scratchpads.py).
FAST_TIERS = ("l2", *SCRATCHPADS)

CANDIDATE_FEATURES = (
    "offset",  # candidate offset / C
    "top",  # (offset + size) / C
    "slack",  # min(gap - size, C) / C: room left in the gap once the buffer sits in it
    "ceiling",  # 1 if the gap is the topmost one (unbounded in pack, up to C in map)
    "growth",  # max(0, offset + size - height) / C: how much the height would grow
    "within",  # 1 if offset + size <= C
)
# Names the observation features' meaning, order and scale; exported policies record it.
ENCODER_VERSION = "memmap-features-1"
# The msa task's candidates are windows: these columns follow CANDIDATE_FEATURES there.
WINDOW_FEATURES = (
    "span",  # (hi - lo) / ops: op steps the window holds its space
    "coverage",  # share of the buffer's accessed bytes served from fast memory
    "prefetch",  # 1 if a prefetch brings the buffer in
    "eviction",  # 1 if an eviction takes it out
    "lead",  # prefetch: all-slow time of the ops it overlaps / its copy time, capped at 4, / 4
)
GLOBAL_FEATURES = (
    "map",  # 1 in the map and msa tasks, 0 in pack
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
    * ``task="msa"``: XLA's memory-space assignment over time (``core.MsaCore``):
      each decision gives one buffer a fast *window*, the accesses served from fast memory and
      the op steps the buffer holds its address, reached by a prefetch (slow to fast) issued at a
      chosen earlier op or by the write itself, and ended, when the buffer is read again later,
      by an eviction (fast to slow). Copies run one at a time on a copy engine at
      ``copy_bandwidth``, overlap compute and hold their space; an op that needs an unfinished
      copy stalls. The score is the modelled time, the end of the last op.
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

    ``Discrete(max_candidates + 1)`` in map and msa, ``Discrete(max_candidates)`` in pack (which
    has no slow memory). In msa a candidate is a window and an address (`MsaCore` lists them:
    the whole window at every gap that fits, then each eviction and prefetch window at its
    best-fit address); the rest of this paragraph describes map and pack. Action
    ``i < max_candidates`` places the current buffer at candidate ``i``: the candidates are the
    bottoms of the free gaps, over the buffer's lifetime, between the placed buffers overlapping
    it in time (0 and their top edges, MiniMalloc's canonical positions), in ascending order,
    kept where the buffer fits (map: below ``C``); when more fit, the lowest
    ``max_candidates - 1`` and the topmost. Action ``max_candidates`` leaves the buffer in slow
    memory (map and msa). ``action_masks()`` marks exactly these; it is never all False (pack:
    the topmost gap is unbounded; map and msa: slow memory). Any other action
    raises ``schedgym.errors.IllegalActionError`` (a ``ValueError``) saying why.

    ## Observation Space

    The shared entity layout (``schedgym.envs.spaces.EntityLayout``), a ``Dict`` of:

    * ``entities`` ``(max_candidates, 6)`` float32, one row per candidate: offset, top, slack
      in its gap, topmost-gap flag, height growth, within-capacity flag (``CANDIDATE_FEATURES``);
    * msa adds 5 columns per candidate window (``WINDOW_FEATURES``): op steps held, share of
      the buffer's accessed bytes served fast, prefetch flag, eviction flag, prefetch lead;
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
    * msa: the op time saved by the step over the all-slow time; the last step also subtracts
      the stalls of the whole schedule, known once every copy is placed, so the return is again
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
    ``capacity``; msa adds ``stall_s``, ``prefetches``, ``evictions``, ``copy_bytes``) and
    ``record`` (buffers, offsets with -1 for slow memory, ops and accesses for map; msa adds each
    buffer's window, every copy with its start and end, and each op's start), which `validate`
    re-checks.

    ## Arguments

    * ``task`` (``"map"``): ``"map"``, ``"msa"`` or ``"pack"``;
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
    * ``max_candidates`` (32): candidate rows, and the action space's size less one;
    * ``copy_bandwidth`` (``None``): bytes/s of the msa task's copy engine; ``None`` means the
      slow tier's bandwidth, as a copy streams from or to it;
    * ``fast_tier`` (``"l2"``): ``"l2"`` derives the tiers from ``hardware`` as above (a
      cache-like fast tier); a scratchpad name (``"trn1-sbuf"``: one AWS Trainium
      NeuronCore-v2, `envs.hardware.scratchpads`) takes the fast tier's size and bandwidth, the
      slow tier's and copy bandwidth from its datasheet, and prices traced ops by their FLOPs at
      its peak; explicit ``fast_capacity``, ``fast_bandwidth`` and ``copy_bandwidth`` still win.

    ``get_state()``/``set_state(state)`` snapshot and restore an episode (numpy copies); the
    simulator core is ``env.core`` (`memory_core.MemoryMapCore`), the case ``env.buffers``.

    ## Version History

    * v0: initial version; the ``msa`` task added later, leaving ``map`` and ``pack`` as they
      were.
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
        copy_bandwidth: float | None = None,
        fast_tier: str = "l2",
    ):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        if order not in ORDERS:
            raise ValueError(f"unknown buffer order {order!r}; known: {', '.join(ORDERS)}")
        if isinstance(max_candidates, bool) or not isinstance(max_candidates, int | np.integer):
            raise ValueError(f"max_candidates must be an integer >= 1, got {max_candidates!r}")
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        if fast_tier not in FAST_TIERS:
            raise ValueError(f"unknown fast_tier {fast_tier!r}; known: {', '.join(FAST_TIERS)}")
        if fast_capacity is not None and (
            isinstance(fast_capacity, bool)
            or not isinstance(fast_capacity, int | float | np.integer | np.floating)
        ):
            raise ValueError(
                "fast_capacity must be a byte count (an integer) or a share in (0, 1] (a "
                f"float), got {fast_capacity!r}"
            )
        # 0 or NaN must not fall back to the tier's default unnoticed
        for name, value in (("fast_bandwidth", fast_bandwidth), ("copy_bandwidth", copy_bandwidth)):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float | np.integer | np.floating)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"{name} must be a positive number of bytes/s, got {value!r}")
        if isinstance(fast_capacity, float | np.floating) and not 0.0 < fast_capacity <= 1.0:
            raise ValueError(f"a float fast_capacity is a share in (0, 1], got {fast_capacity}")
        if isinstance(fast_capacity, int | np.integer) and fast_capacity < 1:
            raise ValueError(f"fast_capacity must be a positive byte count, got {fast_capacity}")
        self.task, self.default_case, self.order = task, case or DEFAULT_CASE, order
        self.hardware, self.fast_tier = str(hardware), fast_tier
        self.table = _cost_table(self.hardware)
        self.fast_capacity_arg = fast_capacity
        if fast_tier == "l2":
            device = device_from_table(self.table)
            slow = next((t for t in device.memory if t.name == "hbm"), None) or (
                device.memory[0] if device.memory else None
            )
            if slow is None:
                raise SchedgymError(f"cost table {hardware!r} lists no memory tier for slow memory")
            fast = next((t for t in device.memory if t.name in FAST_TIER_NAMES), None)
            self.slow_bandwidth = slow.bandwidth
            fast_default = fast.bandwidth if fast else FAST_BANDWIDTH_RATIO * slow.bandwidth
            # A copy between the tiers streams from or to the slow tier, so moves at its speed.
            copy_default = slow.bandwidth
            self.default_fast_capacity = fast.capacity_bytes if fast else DEFAULT_FAST_CAPACITY
        else:
            pad = get_scratchpad(fast_tier)
            self.slow_bandwidth, fast_default = pad.slow_bandwidth, pad.bandwidth
            copy_default, self.default_fast_capacity = pad.copy_bandwidth, pad.capacity_bytes
        self.fast_bandwidth = float(fast_default if fast_bandwidth is None else fast_bandwidth)
        self.copy_bandwidth = float(copy_default if copy_bandwidth is None else copy_bandwidth)
        self.layout = EntityLayout(
            max_entities=max_candidates,
            n_features=len(CANDIDATE_FEATURES) + len(WINDOW_FEATURES) * (task == "msa"),
            n_globals=len(GLOBAL_FEATURES),
            n_special=int(task != "pack"),
        )
        self.observation_space = self.layout.observation_space()
        self.action_space = self.layout.action_space()
        self.buffers: BufferSet | None = None
        self.core: MemoryMapCore | None = None
        self._static: _Static | None = None

    # --- Gymnasium API -------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"case", "order"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; known: case, order")
        case = options.get("case") or self.default_case
        order = options.get("order") or self.order
        buffers = (
            case
            if isinstance(case, BufferSet)
            else load_case(case, self.hardware, self.np_random, self.fast_tier)
        )
        self._use(buffers, order)
        self.core.reset()
        return self._observe(), {"case": buffers.name, "capacity": self.core.capacity}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        core = self._require_core()
        reward = core.step(action_index(action))
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
        common = {
            "order": order,
            "max_candidates": self.layout.max_entities,
            "fast_bandwidth": self.fast_bandwidth,
            "slow_bandwidth": self.slow_bandwidth,
        }
        if self.task == "msa":
            self.core = MsaCore(
                buffers, self.capacity_for(buffers), copy_bandwidth=self.copy_bandwidth, **common
            )
        else:
            self.core = MemoryMapCore(buffers, self.task, self.capacity_for(buffers), **common)
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
        if self.task == "msa":
            self._observe_windows(e, b, n)
        obs["entity_mask"][:n] = 1
        return obs

    def _observe_windows(self, e: np.ndarray, b: int, n: int) -> None:
        core = self.core
        lo, hi, i, j, kind = core.cand[:5, :n]
        ops, nbytes = core.accesses(b)
        cum = np.concatenate(([0.0], np.cumsum(nbytes)))
        e[:n, 6] = (hi - lo) / max(core.cost.compute.size, 1)
        e[:n, 7] = (cum[j + 1] - cum[i]) / cum[-1] if cum[-1] > 0 else 0.0
        pre = kind >= 0
        e[:n, 8] = pre
        e[:n, 9] = (kind < 0) & (j < ops.size - 1)
        overlap = core.elapsed_cum[ops[i]] - core.elapsed_cum[np.maximum(lo, 0)]
        c = max(float(core.copy_s[b]), 1e-30)
        e[:n, 10] = np.where(pre, np.minimum(overlap / c, 4.0) / 4.0, 0.0)


class _Static:
    """Per-case observation features, computed once per case."""

    def __init__(self, core: MemoryMapCore):
        bs = core.buffers
        self.inv_c = 1.0 / core.capacity
        self.is_map = float(core.task != "pack")
        t0, t1 = bs.horizon
        span = max(t1 - t0, 1)
        times, live = bs.live_profile()
        first = np.searchsorted(times, bs.start)
        last = np.searchsorted(times, bs.end)  # live[first:last] covers the lifetime
        pairs = np.stack([first, last], axis=1).ravel()
        pressure = np.maximum.reduceat(np.append(live, 0), pairs)[::2]
        self.peak = float(live.max()) * self.inv_c
        gain = core.cost.solo_gain() if core.task != "pack" else np.zeros(bs.n)
        self.per_buffer = np.stack(
            [
                bs.size * self.inv_c,
                (bs.end - bs.start) / span,
                (bs.start - t0) / span,
                pressure * self.inv_c,
                gain,
            ]
        )


# --- cases -----------------------------------------------------------------------------------


@functools.cache
def _cost_table(hardware: str):
    return load_cost_table(hardware)


@functools.cache
def _csv_case(path: str) -> BufferSet:
    return read_buffer_csv(path)


@functools.cache
def _model_case(model: str, table_name: str, fast_tier: str = "l2") -> BufferSet:
    if fast_tier != "l2":  # the scratchpad's chip, priced from its datasheet
        pad = get_scratchpad(fast_tier)
        price = functools.partial(flops_seconds, pad.peak_flops, pad.dtype_bytes)
        return model_buffer_set(model, price, pad.dtype_bytes)
    table = _cost_table(table_name)
    return model_buffer_set(model, functools.partial(op_seconds, table), table.dtype_bytes)


def load_case(
    case: str, hardware: str = "h100", rng: Any = None, fast_tier: str = "l2"
) -> BufferSet:
    """Resolve a case string (class docstring) into a buffer set; ``hardware`` (a cost table's
    name or path) prices traced models, or with a scratchpad ``fast_tier`` its chip's peak
    FLOP/s does; ``rng`` seeds random cases that name no seed."""
    if case.startswith("random"):
        return parse_random_case(case, rng)
    if case.startswith("model:") or case in MODEL_ZOO:
        model = case.removeprefix("model:")
        if model not in MODEL_ZOO:
            raise WorkloadError(f"unknown model {model!r}; zoo: {', '.join(MODEL_ZOO)}")
        return _model_case(model, hardware, fast_tier)
    family, _, name = case.partition(":")
    if family in ("minimalloc", "idealloc") and name:
        return _csv_case(str(benchmark_path(family, name)))
    if family == "file" and name:
        return read_buffer_csv(name)
    if Path(case).suffix == ".csv" or Path(case).exists():
        return read_buffer_csv(case)
    raise WorkloadError(
        f"unknown memory case {case!r}: use a zoo model ({', '.join(MODEL_ZOO)}), "
        "minimalloc:A..F, idealloc:resnet50, random[:N[:SEED]], file:PATH or a CSV path"
    )
