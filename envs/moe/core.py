"""The MoE expert-offloading simulator: plain numpy, no Gymnasium.

A model's routed experts live in host memory; a cache of ``capacity`` of them lives in GPU
memory. Tokens are decoded step by step (``batch`` sequences at a time, each step needing the
union of their experts), layer by layer. A *visit* is one MoE layer of one step:

1. **prefetch** (``prefetch`` decisions per visit, before it): load one expert that is not
   resident, or skip; with a full cache, a second decision names the resident expert to evict
   (or cancels). Prefetched copies go onto the copy engine at once and overlap with compute.
2. the layer's attention and dense parts run (``pre_s``); then the router's choice is known;
3. **demand**: each needed expert that is not resident (ascending id) is a miss: it is copied
   (evicting, with a full cache, a resident expert the layer does not need: a decision), or,
   with ``cpu_offload``, computed on the CPU without entering the cache (the skip action);
4. the experts compute: on the GPU in the order their weights arrive, each as soon as it is
   there and the GPU is free; on the CPU in parallel. The layer ends when both are done.

One host-to-device copy engine serves the copies one at a time. A demand copy goes ahead of
prefetches still queued (not started) when it is issued, as MoE-Infinity's and HybriMoE's
copy queues do; copies otherwise run first come, first served, and a started copy is never
interrupted.

A needed expert is a **hit** only when its weights have landed in GPU memory by the moment the
router chooses it (``ready <= routed``); one resident but still in flight (or queued) then is
counted apart (``in_flight``), with the stall it costs (``in_flight_stall_s``: how much earlier
its layers would have ended had those copies landed by then). ``residency_rate`` counts both.

**Stall** is the layer's time beyond its reference: the shorter of the all-resident time
(pre-layer work plus every needed expert on the GPU) and the time of the layer's own GPU/CPU
split with every copy already landed. So stall is never negative, even when computing a miss on
a fast CPU beats the GPU, and it counts a CPU slower than the GPU as stall.

Experts are numbered globally, ``g = layer * n_experts + expert``. Actions: ``g`` picks expert
``g`` (prefetch target or eviction victim); ``n_slots`` (the one special action) skips: no
prefetch, cancel the prefetch, or compute the missed expert on the CPU.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from schedgym.envs.hardware.costs import KernelCostTable
from schedgym.envs.hardware.models import (
    Batch,
    KernelCall,
    ModelConfig,
    attention_calls,
    dense_calls,
    price,
)
from schedgym.errors import IllegalActionError, WorkloadError
from schedgym.workloads.moe import RoutingTrace

PREFETCH, PREFETCH_EVICT, EVICT, DONE = 0, 1, 2, 3
RECORD_FORMAT = "schedgym-moe-record/1"
PHASES = ("prefetch", "prefetch_evict", "evict", "done")
EVENT_KINDS = ("prefetch", "load", "cpu")  # event codes 0, 1, 2

# Leading dense (non-MoE) decoder layers, with their MLP width: DeepSeek-V2-Lite's config.json
# has num_hidden_layers 27 and first_k_dense_replace 1 (intermediate_size 10944), so 26 of its
# layers route experts.
FIRST_DENSE_LAYERS: dict[str, tuple[int, int]] = {"deepseek-v2-lite": (1, 10944)}


def moe_layers(model: ModelConfig) -> int:
    """Decoder layers of ``model`` that route experts."""
    return model.layers - FIRST_DENSE_LAYERS.get(model.name, (0, 0))[0]


def mlp_calls(model: ModelConfig, tokens: int, width: int) -> list[KernelCall]:
    """One (expert) MLP of ``width`` over ``tokens`` tokens: its GEMMs and the activation."""
    h = model.hidden
    return [
        KernelCall(
            "linear", {"tokens": tokens, "d_in": h, "d_out": width}, 2 if model.gated_mlp else 1
        ),
        KernelCall("activation", {"elements": tokens * width}),
        KernelCall("linear", {"tokens": tokens, "d_in": width, "d_out": h}),
    ]


@dataclass(frozen=True)
class Episode:
    """The routing of one episode, laid out for the simulator.

    ``step_tokens[s, b]`` is the trace token lane ``b`` decodes at step ``s`` (-1: idle); lane
    ``b`` decodes sequences ``b, b + batch, ...`` one after the other. Visit ``v = s * L + l``
    needs experts ``need_ids[need_ptr[v]:need_ptr[v + 1]]`` (global ids, ascending), each for
    ``need_cnt`` of the step's tokens.
    """

    trace: RoutingTrace
    batch: int
    step_tokens: np.ndarray
    need_ptr: np.ndarray
    need_ids: np.ndarray
    need_cnt: np.ndarray
    active: np.ndarray  # sequences decoding at each step
    contexts: np.ndarray  # their mean KV length (prompt + tokens so far)

    @property
    def n_layers(self) -> int:
        return self.trace.n_layers

    @property
    def n_experts(self) -> int:
        return self.trace.n_experts

    @property
    def n_steps(self) -> int:
        return int(self.step_tokens.shape[0])

    @property
    def n_visits(self) -> int:
        return int(self.need_ptr.size - 1)

    @property
    def max_needed(self) -> int:
        return int(np.diff(self.need_ptr).max())


def build_episode(trace: RoutingTrace, batch: int = 1, prompt_tokens: int = 512) -> Episode:
    if batch < 1:
        raise WorkloadError(f"batch must be >= 1, got {batch}", trace.name)
    starts, ends = trace.seq_starts, trace.seq_ends()
    lanes = [
        np.concatenate([np.arange(starts[i], ends[i]) for i in range(b, trace.n_seqs, batch)])
        if b < trace.n_seqs
        else np.zeros(0, np.int64)
        for b in range(batch)
    ]
    S = max(lane.size for lane in lanes)
    step_tokens = np.full((S, batch), -1, np.int64)
    for b, lane in enumerate(lanes):
        step_tokens[: lane.size, b] = lane
    L, E = trace.n_layers, trace.n_experts
    s_idx, b_idx = np.nonzero(step_tokens >= 0)
    tok = step_tokens[s_idx, b_idx]
    routing = trace.experts[tok].astype(np.int64)  # [n, L, k]
    flat = (s_idx[:, None, None] * L + np.arange(L)[None, :, None]) * E + routing
    counts = np.bincount(flat.ravel(), minlength=S * L * E)
    nz = np.flatnonzero(counts)
    need_ptr = np.zeros(S * L + 1, np.int64)
    np.cumsum(np.bincount(nz // E, minlength=S * L), out=need_ptr[1:])
    position = tok - starts[trace.seq_ids()[tok]]
    active = np.bincount(s_idx, minlength=S)
    contexts = np.bincount(s_idx, weights=prompt_tokens + position + 1.0, minlength=S) / active
    return Episode(
        trace,
        batch,
        step_tokens,
        need_ptr,
        (nz % (L * E)).astype(np.int32),
        counts[nz].astype(np.int32),
        active,
        contexts,
    )


@dataclass(frozen=True)
class MoECosts:
    """Seconds the simulator charges, from the cost tables (see `price_episode`)."""

    expert_bytes: int
    copy_s: float  # one expert over the host-to-device copy engine
    gpu_s: np.ndarray  # [batch + 1]: one expert's MLP on the GPU for n routed tokens
    cpu_s: np.ndarray | None  # same on the CPU (None: no CPU offload)
    pre_s: np.ndarray  # [steps]: per MoE layer, the step's attention, dense parts and head


def price_episode(
    episode: Episode,
    model: ModelConfig,
    gpu: KernelCostTable,
    cpu: KernelCostTable | None = None,
    bits: int | None = None,
) -> MoECosts:
    """Price copies from ``gpu``'s ``copy_h2d``, expert MLPs from its GEMMs (and ``cpu``'s),
    and the rest of each step from `dense_calls`/`attention_calls`, the LM head, shared experts
    and leading dense layers, spread evenly over the step's MoE layers."""
    nbytes = model.expert_bytes(bits)
    B = episode.batch
    gpu_s = np.zeros(B + 1)
    cpu_s = None if cpu is None else np.zeros(B + 1)
    for n in range(1, B + 1):
        gpu_s[n] = price(gpu, mlp_calls(model, n, model.intermediate))
        if cpu is not None:
            cpu_s[n] = price(cpu, mlp_calls(model, n, model.intermediate))
    n_moe = moe_layers(model)
    first_dense, dense_width = FIRST_DENSE_LAYERS.get(model.name, (0, 0))
    fixed = np.zeros(B + 1)
    for n in range(1, B + 1):
        calls = dense_calls(model, n) + [
            KernelCall("linear", {"tokens": n, "d_in": model.hidden, "d_out": model.vocab}),
            KernelCall(
                "linear", {"tokens": n, "d_in": model.hidden, "d_out": model.experts}, n_moe
            ),  # routers
        ]
        if model.shared_experts:
            calls += [
                KernelCall(c.kernel, c.params, c.count * n_moe)
                for c in mlp_calls(model, n, model.shared_intermediate)
            ]
        if first_dense:
            calls += [
                KernelCall(c.kernel, c.params, c.count * first_dense)
                for c in mlp_calls(model, n, dense_width)
            ]
        fixed[n] = price(gpu, calls)
    (attn,) = attention_calls(model, Batch(decode_contexts=[1]))
    params = dict(attn.params, batch=episode.active.astype(float), context=episode.contexts)
    attention = gpu.predict_many(attn.kernel, **params) * attn.count
    pre_s = (fixed[episode.active] + attention) / n_moe
    return MoECosts(nbytes, float(gpu.predict("copy_h2d", bytes=nbytes)), gpu_s, cpu_s, pre_s)


class MoECore:
    """State, legal actions and transitions of one offloading episode (see module docstring).

    The cache starts full when ``capacity`` allows: ``capacity // L`` experts of every layer
    (lowest ids; the first ``capacity % L`` layers one more), as a per-layer cache would hold.
    """

    def __init__(
        self,
        episode: Episode,
        costs: MoECosts,
        capacity: int,
        *,
        prefetch: int = 1,
        cpu_offload: bool = False,
        n_slots: int | None = None,
    ):
        L, E = episode.n_layers, episode.n_experts
        self.episode, self.costs = episode, costs
        self.n_layers, self.n_experts, self.n_global = L, E, L * E
        self.n_slots = self.n_global if n_slots is None else n_slots
        if self.n_slots < self.n_global:
            raise WorkloadError(
                f"{episode.trace.name}: {self.n_global} experts do not fit {self.n_slots} "
                "entity rows (the env's max_entities; where a learned policy's network fixes "
                f"it, that policy cannot play this model: use one trained with {self.n_global})"
            )
        if not 1 <= capacity <= self.n_global:
            raise WorkloadError(f"capacity must be in 1..{self.n_global} experts, got {capacity}")
        if capacity < episode.max_needed and not cpu_offload:
            raise WorkloadError(
                f"capacity {capacity} is below the {episode.max_needed} experts one layer of a "
                "step needs (enable cpu_offload or enlarge the cache)"
            )
        if prefetch < 0:
            raise WorkloadError(f"prefetch must be >= 0, got {prefetch}")
        if cpu_offload and costs.cpu_s is None:
            raise WorkloadError("cpu_offload needs CPU expert costs")
        self.capacity, self.prefetch, self.cpu_offload = capacity, prefetch, cpu_offload
        self.skip = self.n_slots
        per_layer, extra = divmod(capacity, L)
        initial = [
            layer * E + e for layer in range(L) for e in range(min(E, per_layer + (layer < extra)))
        ]
        self.initial = np.array(initial, np.int64)
        # Per-expert state lives in bytearrays and arrays: the per-visit hot path reads and
        # writes their scalars (fast in Python), policies and observations use numpy views of
        # the same memory.
        G = self.n_global
        self._resident = bytearray(G)
        self._needed = bytearray(G)
        self._ready = array("d", bytes(8 * G))  # when each expert's weights are (were) on GPU
        self._last_use = array("q", bytes(8 * G))  # last visit that needed it (-1: none)
        self._use_count = array("q", bytes(8 * G))
        self._bind_views()
        self._prefetched = bytearray(self.n_global)  # loaded by prefetch, not yet used
        self._need_ids = episode.need_ids.tolist()
        self._need_cnt = episode.need_cnt.tolist()
        self._need_ptr = episode.need_ptr.tolist()
        self._pre = costs.pre_s.tolist()
        self._gpu = costs.gpu_s.tolist()
        self._cpu = None if costs.cpu_s is None else costs.cpu_s.tolist()
        trace = episode.trace
        self.profile = np.zeros(self.n_global, np.float32)  # profiled choices per token
        if trace.calibration is not None:
            counts = trace.activation_counts(calibration=True).ravel()
            self.profile[:] = counts / trace.calibration.shape[0]
        self.meta: dict[str, Any] = {}  # what the env records about the case
        self.reset()

    # -- state ---------------------------------------------------------------------------------

    # the numpy views (name: buffer, dtype) of the per-expert buffers; a copy (deepcopy, pickle)
    # copies a view apart from its buffer, so the views are rebuilt on the copy's buffers
    _VIEWS = {
        "resident": ("_resident", np.bool_),
        "needed": ("_needed", np.bool_),
        "ready": ("_ready", np.float64),
        "last_use": ("_last_use", np.int64),
        "use_count": ("_use_count", np.int64),
    }

    def _bind_views(self) -> None:
        for view, (buffer, dtype) in self._VIEWS.items():
            setattr(self, view, np.frombuffer(getattr(self, buffer), dtype=dtype))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for view in self._VIEWS:
            state.pop(view, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind_views()

    def reset(self) -> None:
        self.resident[:] = False
        self.resident[self.initial] = True
        self.needed[:] = False
        self.ready[:] = 0.0
        self.last_use[:] = -1
        self.use_count[:] = 0
        self._prefetched[:] = bytes(self.n_global)
        self.n_resident = int(self.initial.size)
        self.visit = 0
        self.phase = PREFETCH
        self.prefetch_left = self.prefetch
        self.pending = -1  # the expert a decision is about (miss or prefetch target)
        self._misses: list[int] = []  # this visit's misses, in order
        self._miss_at = 0  # index of the miss being decided
        self._cpu_now: list[int] = []  # this visit's misses computed on the CPU
        self.clock = 0.0  # start of the current visit
        self.engine_free = 0.0  # when the copy engine finishes its queue
        self.stall_s = 0.0
        self.hits = self.accesses = self.demand_loads = self.prefetches = 0
        self.prefetch_hits = self.cpu_experts = self.in_flight = 0
        self.in_flight_stall_s = 0.0
        self._in_flight_now: list[int] = []  # this visit's needed experts still in flight
        # copies that may still move or hold the engine: [expert, issued, start, end, demand]
        self._copies: list[list] = []
        self._events: tuple | None = None  # persistent list: (event, previous) cells
        self._advance()

    # What a snapshot holds: arrays copied, scalars (and the shared event history) as they are,
    # lists copied, in-flight copies copied one level deep. One list of names serves both ways.
    _STATE_ARRAYS = ("resident", "needed", "ready", "last_use", "use_count")
    _STATE_SCALARS = (
        "n_resident", "visit", "phase", "prefetch_left", "pending", "_miss_at", "clock",
        "engine_free", "stall_s", "hits", "accesses", "demand_loads", "prefetches",
        "prefetch_hits", "cpu_experts", "_events", "in_flight", "in_flight_stall_s",
    )  # fmt: skip
    _STATE_LISTS = ("_misses", "_cpu_now", "_in_flight_now")

    def get_state(self) -> dict[str, Any]:
        """A cheap snapshot (array copies and scalars; the event history is shared)."""
        return {
            "arrays": tuple(getattr(self, n).copy() for n in self._STATE_ARRAYS),
            "prefetched": bytes(self._prefetched),
            "scalars": tuple(getattr(self, n) for n in self._STATE_SCALARS),
            "lists": tuple(list(getattr(self, n)) for n in self._STATE_LISTS),
            "copies": [list(c) for c in self._copies],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        for name, value in zip(self._STATE_ARRAYS, state["arrays"], strict=True):
            getattr(self, name)[:] = value
        self._prefetched[:] = state["prefetched"]
        for name, value in zip(self._STATE_SCALARS, state["scalars"], strict=True):
            setattr(self, name, value)
        for name, value in zip(self._STATE_LISTS, state["lists"], strict=True):
            setattr(self, name, list(value))
        self._copies = [list(c) for c in state["copies"]]

    @property
    def done(self) -> bool:
        return self.phase == DONE

    @property
    def step(self) -> int:
        return self.visit // self.n_layers

    @property
    def layer(self) -> int:
        return self.visit % self.n_layers

    @property
    def misses_left(self) -> int:
        """Misses of the current layer not yet decided (the pending one included)."""
        return len(self._misses) - self._miss_at if self.phase == EVICT else 0

    def needs(self, visit: int) -> list[int]:
        """Global ids of the experts visit ``visit`` needs (its routing, known after its
        router has run; policies that read later visits are bounds)."""
        return self._need_ids[self._need_ptr[visit] : self._need_ptr[visit + 1]]

    # -- legal actions ---------------------------------------------------------------------------

    def action_masks(self) -> np.ndarray:
        """Legal actions of the current decision (True = legal); all False once done."""
        mask = np.zeros(self.n_slots + 1, bool)
        if self.phase == PREFETCH:
            mask[: self.n_global] = ~self.resident
            mask[self.skip] = True
        elif self.phase == PREFETCH_EVICT:
            mask[: self.n_global] = self.resident
            mask[self.skip] = True
        elif self.phase == EVICT:
            mask[: self.n_global] = self.resident & ~self.needed
            mask[self.skip] = self.cpu_offload
        return mask

    def _illegal(self, action: int, why: str) -> IllegalActionError:
        return IllegalActionError(
            f"action {action} at visit {self.visit} (step {self.step}, layer {self.layer}, "
            f"phase {PHASES[self.phase]}): {why}"
        )

    # -- transitions -----------------------------------------------------------------------------

    def apply(self, action: int) -> None:
        """Take one decision and run the simulation up to the next one."""
        phase = self.phase
        if phase == DONE:
            raise self._illegal(action, "the episode is over")
        if not 0 <= action <= self.skip:
            raise self._illegal(action, f"out of range 0..{self.skip}")
        if action != self.skip and action >= self.n_global:
            raise self._illegal(action, f"padding row (the model has {self.n_global} experts)")
        if phase == PREFETCH:
            if action == self.skip:
                self.prefetch_left = 0
            elif self._resident[action]:
                raise self._illegal(action, f"expert {action} is already in GPU memory")
            elif self.n_resident < self.capacity:
                self._prefetch(action, -1)
            else:
                self.pending = action
                self.phase = PREFETCH_EVICT
                return
        elif phase == PREFETCH_EVICT:
            if action == self.skip:
                self.prefetch_left = 0  # cancelling ends this visit's prefetching
            else:
                if not self._resident[action]:
                    raise self._illegal(action, f"expert {action} is not in GPU memory")
                self._prefetch(self.pending, action)
            self.pending = -1
            self.phase = PREFETCH
        else:
            g = self.pending
            if action == self.skip:
                if not self.cpu_offload:
                    raise self._illegal(action, "CPU offload is off: a miss must be loaded")
                self._cpu_now.append(g)
                self._events = ((self.visit, 2, g, -1), self._events)
            else:
                if not self._resident[action]:
                    raise self._illegal(action, f"expert {action} is not in GPU memory")
                if self._needed[action]:
                    raise self._illegal(action, f"expert {action} is needed by this layer")
                self._load(g, action)
            self._miss_at += 1
        self._advance()

    def _evict(self, victim: int) -> None:
        self._resident[victim] = 0
        self._prefetched[victim] = 0
        self.n_resident -= 1

    def _prefetch(self, g: int, victim: int) -> None:
        if victim >= 0:
            self._evict(victim)
        self._resident[g] = 1
        self._prefetched[g] = 1
        self.n_resident += 1
        self._queue_copy(g, self.clock, demand=False)
        self.prefetches += 1
        self.prefetch_left -= 1
        self._events = ((self.visit, 0, g, victim), self._events)

    def _load(self, g: int, victim: int) -> None:
        """Demand copy of a miss, queued when the router's choice is known."""
        if victim >= 0:
            self._evict(victim)
        self._resident[g] = 1
        self.n_resident += 1
        self._queue_copy(g, self.clock + self._pre[self.visit // self.n_layers], demand=True)
        self.demand_loads += 1
        self._events = ((self.visit, 1, g, victim), self._events)

    def _queue_copy(self, g: int, issued: float, demand: bool) -> None:
        """Put expert ``g``'s copy on the copy engine at time ``issued``: a prefetch at the end of
        the queue, a demand copy ahead of every prefetch not started by then (behind the copies
        under way and earlier demand copies). Moved copies' ``ready`` times follow."""
        copy_s, ready = self.costs.copy_s, self._ready
        queue = [c for c in self._copies if c[3] > self.clock]  # the rest can no longer matter
        new = [g, issued, 0.0, 0.0, demand]
        if demand:
            fixed = [c for c in queue if c[4] or c[2] < issued]
            queue = fixed + [new] + [c for c in queue if not (c[4] or c[2] < issued)]
            at = len(fixed)
        else:
            queue.append(new)
            at = len(queue) - 1
        end = queue[at - 1][3] if at else 0.0
        for c in queue[at:]:
            c[2] = c[1] if c[1] > end else end
            end = c[3] = c[2] + copy_s
            ready[c[0]] = end
        self.engine_free = end
        self._copies = queue

    def _advance(self) -> None:
        """Run forward until a decision is needed or the episode ends."""
        n_visits = self.episode.n_visits
        while True:
            if self.phase == PREFETCH:
                if self.prefetch_left > 0 and self.n_resident < self.n_global:
                    return
                self._begin_visit()
            # demand phase: resolve this visit's misses in order
            misses = self._misses
            while self._miss_at < len(misses):
                g = misses[self._miss_at]
                if self.n_resident < self.capacity:
                    self._load(g, -1)
                    self._miss_at += 1
                else:
                    self.pending = g
                    self.phase = EVICT
                    return
            self._finish_visit()
            self.visit += 1
            if self.visit == n_visits:
                self.phase = DONE
                self.pending = -1
                return
            self.phase = PREFETCH
            self.prefetch_left = self.prefetch

    def _begin_visit(self) -> None:
        lo, hi = self._need_ptr[self.visit], self._need_ptr[self.visit + 1]
        res, needed, pre, ready = self._resident, self._needed, self._prefetched, self._ready
        routed = self.clock + self._pre[self.visit // self.n_layers]
        misses, late = [], []
        for g in self._need_ids[lo:hi]:
            needed[g] = 1
            if res[g]:
                if ready[g] > routed:
                    late.append(g)
                elif pre[g]:
                    self.prefetch_hits += 1
                pre[g] = 0
            else:
                misses.append(g)
        self.hits += hi - lo - len(misses) - len(late)
        self.in_flight += len(late)
        self._in_flight_now = late
        self.accesses += hi - lo
        self._misses = misses
        self._miss_at = 0
        self._cpu_now = []
        self.phase = EVICT

    def _finish_visit(self) -> None:
        v = self.visit
        lo, hi = self._need_ptr[v], self._need_ptr[v + 1]
        ids = self._need_ids[lo:hi]
        counts = self._need_cnt[lo:hi]
        routed = self.clock + self._pre[v // self.n_layers]
        gpu = self._gpu
        ideal = routed
        for n in counts:
            ideal += gpu[n]
        if self._misses or self.engine_free > routed:  # some needed copy may be in flight
            cpu_set, ready = self._cpu_now, self._ready
            on_gpu = [
                (ready[g], gpu[n], g) for g, n in zip(ids, counts, strict=True) if g not in cpu_set
            ]
            end = _gpu_end(routed, on_gpu)
            reference = ideal
            if cpu_set:
                cpu = self._cpu
                cpu_end = routed + sum(
                    cpu[n] for g, n in zip(ids, counts, strict=True) if g in cpu_set
                )
                end = cpu_end if cpu_end > end else end
                landed = routed + sum(c for _, c, _ in on_gpu)
                split = cpu_end if cpu_end > landed else landed
                reference = split if split < ideal else ideal
                self.cpu_experts += len(cpu_set)
            if self._in_flight_now:
                late = set(self._in_flight_now)
                sooner = _gpu_end(
                    routed, [(routed if g in late else at, c, g) for at, c, g in on_gpu]
                )
                if cpu_set:
                    sooner = cpu_end if cpu_end > sooner else sooner
                self.in_flight_stall_s += end - sooner
            self.stall_s += end - reference
            self.clock = end
        else:
            self.clock = ideal
        needed, last_use, use_count = self._needed, self._last_use, self._use_count
        for g in ids:
            needed[g] = 0
            last_use[g] = v
            use_count[g] += 1

    # -- results -------------------------------------------------------------------------------

    def events(self) -> list[tuple[int, int, int, int]]:
        """``(visit, kind, expert, victim)`` in the order they happened (kind: EVENT_KINDS)."""
        out, cell = [], self._events
        while cell is not None:
            out.append(cell[0])
            cell = cell[1]
        return out[::-1]

    def metrics(self) -> dict[str, float | int]:
        tokens = int(self.episode.active.sum())
        steps = max(1, self.visit // self.n_layers)
        copies = self.demand_loads + self.prefetches
        return {
            "hit_rate": self.hits / max(1, self.accesses),
            "hits": self.hits,
            "in_flight": self.in_flight,
            "in_flight_stall_s": self.in_flight_stall_s,
            "residency_rate": (self.hits + self.in_flight) / max(1, self.accesses),
            "accesses": self.accesses,
            "demand_loads": self.demand_loads,
            "prefetches": self.prefetches,
            "prefetch_hits": self.prefetch_hits,
            "cpu_experts": self.cpu_experts,
            "bytes_copied": copies * self.costs.expert_bytes,
            "stall_s": self.stall_s,
            "stall_per_token_s": self.stall_s / steps,
            "time_s": self.clock,
            "tokens": tokens,
            "tokens_per_s": tokens / self.clock if self.clock > 0 else 0.0,
        }


def _gpu_end(routed: float, on_gpu: list[tuple[float, float, int]]) -> float:
    """When the GPU finishes a layer's experts ``(ready, compute_s, expert)``: each in the order
    its weights arrive, as soon as they are there and the GPU is free."""
    end = routed
    for at, compute, _ in sorted(on_gpu):
        end = (at if at > end else end) + compute
    return end


def run_policy(core: MoECore, policy: Any) -> None:
    """The fast path: drive the core with a schedgym policy (``reset``/``act`` read the core,
    passed in place of the env), no observations encoded."""
    policy.reset(core)
    act = policy.act
    apply = core.apply
    while core.phase != DONE:
        apply(act(core, None))
