"""The simulator core of `schedgym/Batching-v0`: one LLM serving replica run the way vLLM's v1
engine runs it, in plain numpy (no Gymnasium here).

Model of the engine (docs/batching.md gives the sources):

* Requests arrive over time into a waiting queue. Each engine step builds one batch under a token
  budget (at least the running sequences, so each can decode) and at most ``max_num_seqs``
  running sequences (vLLM's serving default for the GPU, `vllm_batch_defaults`), and the step's
  scheduler works in the
  stall-free order of Sarathi-Serve and vLLM v1: first one decode token for every running
  sequence that has finished its prefill, then the next chunks of running requests that are
  still prefilling (in admission order), then new admissions from the waiting queue, each with a
  prefill chunk of ``min(tokens still to compute, budget left)`` (chunked prefill).
  A *prefill-first* step (vLLM v0's default) pauses the decodes instead; when it schedules no
  prefill work it falls back to the decodes, as vLLM v0 does.
* vLLM v1's unified token model: a request of ``P`` prompt tokens that has produced ``G`` tokens
  has ``P + G`` known tokens, of which ``computed`` have KV entries; a step that brings
  ``computed`` up to ``P + G`` samples one new token at the step's end. A decode is the case
  ``P + G - computed == 1``.
* The KV cache is paged in 16-token blocks; a request holds ``ceil(computed / 16)`` blocks
  (allocated for a chunk before it runs). Capacity is ``(device memory x gpu_memory_utilization
  - model weights per GPU) / (KV bytes per token per GPU x 16)``. When a decode needs a block and
  none is free, the most recently admitted running request is preempted (vLLM's policy): its
  blocks are freed, its computed tokens drop to zero, it goes back to the front of the waiting
  queue and is later recomputed (prompt plus the tokens it had produced).
* A step lasts the cost table's price of its batch (`schedgym.envs.hardware.models.StepCost`:
  the dense layers over all batched tokens, prefill attention per chunk over its context, decode
  attention over the sequences' KV lengths) plus a CPU overhead of ``step_overhead_s +
  seq_overhead_s x sequences`` (see `EngineConfig`).

`BatchingEngine.set_budget`, `BatchingEngine.admit` and `BatchingEngine.run_step` are the
decisions, taken through the Gymnasium face (``env.py``) or, for speed, by a `QueueScheduler`
(vLLM's own FCFS or priority scheduling, the baselines' fast path) driving the engine directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np

from schedgym.envs.hardware.devices import load_profile
from schedgym.envs.hardware.models import Batch, ModelConfig, StepCost, attention_calls, get_model
from schedgym.errors import CostTableError, IllegalActionError, WorkloadError
from schedgym.workloads.serving import ServingTrace

DEFAULT_WINDOW = 128  # waiting requests a scheduler considers (the env's max_entities)
# vLLM's CPU backend sizes its KV cache by VLLM_CPU_KVCACHE_SPACE (default 4 GiB), not by memory.
CPU_KV_CACHE_BYTES = 4 << 30
GiB = 1 << 30


@lru_cache(maxsize=16)
def vllm_batch_defaults(hardware: str) -> tuple[int, int]:
    """vLLM's serving defaults ``(max_num_batched_tokens, max_num_seqs)`` for the device of the
    hardware profile ``hardware``, as ``EngineArgs.get_batch_defaults`` sets them for the OpenAI
    API server (vLLM 0.32, ``vllm/engine/arg_utils.py``): 8192 tokens and 1024 sequences on a GPU
    of at least 70 GiB that is not an A100 (H100, H200), 16384 and 1024 from 160 GiB, else 2048
    and 256 (A100, A40 and others, the CPU profile included)."""
    device = load_profile(hardware).devices[0]
    gib = device.tier("hbm").capacity_bytes / GiB if device.kind == "gpu" else 0.0
    if gib >= 70 and "a100" not in str(device.costs.device.get("name", "")).lower():
        return (16384 if gib >= 160 else 8192), 1024
    return 2048, 256


# Columns of the running-slot table (one row per running request, in admission order).
RID, PROMPT, OUTPUT, GEN, DONE, BLOCKS, OFFSET, CHUNK = range(8)
# Columns of the running-slot float table.
LAST, MAXGAP, TBT = range(3)


@dataclass(frozen=True)
class EngineConfig:
    """One serving replica: model, cost table, tensor parallelism and vLLM's scheduler limits.

    The CPU overhead defaults are a least-squares line through vidur's measured scheduler and
    input-preparation times of vLLM-style engines (microsoft/vidur
    ``data/profiling/a100/cpu_overheads.csv``, Llama-2-7B, TP 1, medians of SCHEDULE and
    PREPARE_INPUTS_E2E at batch sizes 8 to 64): 0.241 ms per step plus 29.4 us per sequence.
    Sampling runs on the device and detokenisation outside the engine loop in vLLM v1, so those
    columns are left out.
    """

    model: str = "llama-2-7b"
    hardware: str = "h100"
    tp: int = 1
    gpu_memory_utilization: float = 0.9  # vLLM's default
    # None: vLLM's serving defaults for the hardware (`vllm_batch_defaults`); read them through
    # `num_seqs` and `batched_tokens`
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    budgets: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192)
    # vLLM v0 without chunked prefill: max_num_batched_tokens = max(max_model_len, 2048), 4096
    # for the Llama-2 family.
    prefill_first_budget: int = 4096
    step_overhead_s: float = 2.41e-4
    seq_overhead_s: float = 2.94e-5
    kv_blocks: int | None = None  # override the capacity computed from memory (tests, studies)
    # tokens per KV block: vLLM's GPU default; its CPU backend takes multiples of 32 only
    block_size: int = 16
    # Admit a request only if the KV blocks of all its known tokens (not just its first chunk)
    # are free: vLLM >= 0.32's `scheduler_reserve_full_isl` admission gate (its default there)
    admit_full_sequence: bool = False
    # A running request whose next chunk's blocks are not free preempts the newest running
    # request, itself included, until they are (vLLM v1's rule); by default the chunk shrinks to
    # the free blocks instead (see set_budget: needed by prefill-first steps)
    preempt_for_whole_chunk: bool = False
    # Admissions leave this share of the blocks free for the running requests' growth (vLLM
    # v0's block-manager watermark): without it a prefill-first engine can readmit and preempt
    # the same request forever while its decodes stay paused.
    watermark: float = 0.01

    def __post_init__(self) -> None:
        # a 0 or 2.5 must not pass for "vLLM's default" or be rounded
        for name in ("max_num_seqs", "max_num_batched_tokens", "kv_blocks", "tp", "block_size"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | np.integer)
            ):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "budgets", tuple(int(b) for b in self.budgets))
        b = self.budgets
        if not b or any(x <= 0 for x in b) or list(b) != sorted(set(b)):
            raise ValueError(f"budgets must be distinct positive token counts, ascending: {b}")
        seqs, tokens = self.num_seqs, self.batched_tokens
        if seqs < 1 or b[-1] < seqs:
            raise ValueError(
                f"the largest budget ({b[-1]}) must hold a decode token for each of the "
                f"max_num_seqs={seqs} sequences"
            )
        if tokens not in b:
            raise ValueError(f"max_num_batched_tokens={tokens} must be one of the budgets {b}")
        if self.prefill_first_budget < seqs:
            raise ValueError("prefill_first_budget must be >= max_num_seqs")
        if not 0 <= self.watermark < 0.5:
            raise ValueError("watermark must be in [0, 0.5)")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.tp < 1 or self.step_overhead_s < 0 or self.seq_overhead_s < 0:
            raise ValueError("tp must be >= 1 and CPU overheads >= 0")
        # Tensor parallelism shards attention by heads, so vLLM refuses at startup a tp that does
        # not divide them (ModelConfig.verify_with_parallel_config: "Total number of attention
        # heads (32) must be divisible by tensor parallel size (3)."); no cost for that sharding.
        heads = get_model(self.model).heads
        if heads % self.tp:
            raise ValueError(
                f"tp must divide the {heads} attention heads of {self.model}, got {self.tp}"
            )
        if self.kv_blocks is not None and self.kv_blocks < 1:
            raise ValueError("kv_blocks must be >= 1")
        if self.block_size < 1:
            raise ValueError("block_size must be >= 1")

    @property
    def num_seqs(self) -> int:
        """The running-sequence limit: ``max_num_seqs``, or vLLM's default for the hardware."""
        if self.max_num_seqs is not None:
            return self.max_num_seqs
        return vllm_batch_defaults(self.hardware)[1]

    @property
    def batched_tokens(self) -> int:
        """vLLM v1's step token budget: ``max_num_batched_tokens``, or vLLM's default for the
        hardware."""
        if self.max_num_batched_tokens is not None:
            return self.max_num_batched_tokens
        return vllm_batch_defaults(self.hardware)[0]

    @property
    def max_tokens(self) -> int:
        return max(self.budgets[-1], self.prefill_first_budget)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Replica:
    """What a config implies: the model, its step prices and the KV capacity in blocks."""

    model: ModelConfig
    step_cost: StepCost
    kv_blocks: int
    memory_bytes: int
    memory_source: str


@lru_cache(maxsize=32)
def replica(config: EngineConfig) -> Replica:
    """Load the cost table and size the KV cache for ``config`` (cached: configs are frozen)."""
    model = get_model(config.model)
    if model.experts:
        raise CostTableError(
            f"model {model.name!r} is a mixture of experts; Batching-v0 serves dense models"
        )
    profile = load_profile(config.hardware)
    device = profile.devices[0]
    cost = StepCost(
        profile.costs, model, config.tp, max_tokens=config.max_tokens, max_seqs=config.num_seqs
    )
    if device.kind == "cpu":
        memory, source = CPU_KV_CACHE_BYTES, "vLLM CPU backend default KV space (4 GiB)"
        kv_bytes = memory
    else:
        tier = device.tier("hbm")
        memory, source = tier.capacity_bytes, tier.source
        kv_bytes = memory * config.gpu_memory_utilization - model.weight_bytes(config.tp)
    blocks = config.kv_blocks or int(
        kv_bytes // (model.kv_bytes_per_token(config.tp) * config.block_size)
    )
    if (1 - config.watermark) * blocks * config.block_size < config.max_tokens:
        raise CostTableError(
            f"{model.name} (tp={config.tp}) on {config.hardware}: the KV cache holds "
            f"{max(blocks, 0) * config.block_size} tokens, fewer than one "
            f"{config.max_tokens}-token batch (do the weights fit?)"
        )
    return Replica(model, cost, blocks, int(memory), source)


class _Log:
    """Append-only columns that grow by doubling, so logging a step costs a slice write."""

    def __init__(self, dtypes: dict[str, Any], capacity: int = 1024):
        self.cols = {k: np.zeros(capacity, dt) for k, dt in dtypes.items()}
        self.n = 0

    def append(self, count: int, **values: Any) -> None:
        end = self.n + count
        if end > next(iter(self.cols.values())).size:
            size = max(2 * end, 1024)
            for k, a in self.cols.items():
                grown = np.zeros(size, a.dtype)
                grown[: self.n] = a[: self.n]
                self.cols[k] = grown
        for k, v in values.items():
            self.cols[k][self.n : end] = v
        self.n = end

    def view(self, key: str) -> np.ndarray:
        return self.cols[key][: self.n]

    def snapshot(self) -> dict[str, np.ndarray]:
        return {k: a[: self.n].copy() for k, a in self.cols.items()}

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        n = next(iter(snap.values())).size
        self.n = 0
        self.append(n, **snap)


class BatchingEngine:
    """State and transitions of one replica serving ``trace``; see the module docstring.

    A step is driven as: ``set_budget(tokens, prefill_first)`` (schedules the running requests),
    any number of ``admit(position)`` of waiting requests, then ``run_step()`` (prices the batch,
    advances the clock, produces tokens, and prepares the next step: arrivals, decode block
    needs, preemptions). ``choice_needed()`` says whether the next step has anything a scheduler
    could decide; when not, any budget gives the same step.
    """

    def __init__(self, trace: ServingTrace, config: EngineConfig | None = None):
        self.trace = trace
        self.config = config or EngineConfig()
        rep = replica(self.config)
        self.model = rep.model
        self.kv_capacity = rep.kv_blocks
        self.block = self.config.block_size
        wm = self.config.watermark
        self.watermark_blocks = max(1, int(wm * self.kv_capacity)) if wm > 0 else 0
        self._cost = rep.step_cost
        self.n = trace.n_requests
        self.arrival = trace.arrival_s
        self.prompt = trace.prompt_tokens
        self.output = trace.output_tokens
        need = self.prompt + self.output
        room = (self.kv_capacity - self.watermark_blocks) * self.block
        if need.max() > room:
            i = int(np.argmax(need))
            raise WorkloadError(
                f"request {i} needs {need[i]} tokens of KV cache; the replica holds {room} "
                "(watermark kept)",
                trace.name,
            )
        decode_call = attention_calls(self.model, Batch((), (1,)), self.config.tp)[-1]
        self._decode_shape = {
            k: v for k, v in decode_call.params.items() if k not in ("batch", "context")
        }
        self._decode_count = decode_call.count
        self.ttft_target = np.array([c.ttft_s for c in trace.slo_classes])[trace.slo_class]
        self.tbt_target = np.array([c.tbt_s for c in trace.slo_classes])[trace.slo_class]
        self.token_offset = np.concatenate([[0], np.cumsum(self.output)[:-1]])
        # requests in order of TTFT deadline, to mark misses as the clock passes them
        deadline = self.arrival + self.ttft_target
        self._by_deadline = np.argsort(deadline, kind="stable")
        self._deadline_sorted = deadline[self._by_deadline]
        self.reset()

    # --- state ----------------------------------------------------------------------------

    _ARRAYS = (
        "generated",
        "admitted_at",
        "finished_at",
        "preemptions",
        "token_time",
        "max_gap",
        "missed",
        "slots",
        "slot_f",
    )
    _SCALARS = (
        "now",
        "next_arrival",
        "n_run",
        "free",
        "reserve",
        "budget_left",
        "step_budget",
        "prefill_first",
        "phase_open",
        "steps",
        "done",
        "n_missed",
        "_deadline_ptr",
        "until",
    )

    def reset(self) -> None:
        S = self.config.num_seqs
        self.generated = np.zeros(self.n, np.int64)
        self.admitted_at = np.full(self.n, np.nan)
        self.finished_at = np.full(self.n, np.nan)
        self.preemptions = np.zeros(self.n, np.int64)
        self.token_time = np.full(int(self.output.sum()), np.nan)
        self.max_gap = np.zeros(self.n)
        self.missed = np.zeros(self.n, bool)
        self.slots = np.zeros((S, 8), np.int64)
        self.slot_f = np.zeros((S, 3))
        self.waiting: list[int] = []
        self.now = float(self.arrival[0])
        self.next_arrival = 0
        self.n_run = 0
        self.free = self.kv_capacity
        self.reserve = 0  # blocks promised to this step's decodes
        self.budget_left = self.step_budget = 0
        self.prefill_first = False
        self.phase_open = False  # set_budget called, run_step not yet
        self.steps = 0
        self.done = False
        self.n_missed = 0
        self._deadline_ptr = 0
        self.until = np.inf  # a forecast's horizon (`forecast`); an episode runs to its end
        self.step_log = _Log(
            {"start": np.float64, "end": np.float64, "kv": np.int64, "entries": np.int64}
        )
        self.entry_log = _Log({"rid": np.int32, "tokens": np.int32})
        self.preempt_log = _Log({"step": np.int64, "rid": np.int64})
        self._prepare()

    def get_state(self) -> dict[str, Any]:
        """A snapshot (numpy copies) that `set_state` restores; cost grows with the log."""
        state: dict[str, Any] = {k: getattr(self, k).copy() for k in self._ARRAYS}
        state.update({k: getattr(self, k) for k in self._SCALARS})
        state["waiting"] = list(self.waiting)
        state["logs"] = [log.snapshot() for log in self._logs()]
        state["trace"] = self.trace
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        if state["trace"] is not self.trace:
            raise ValueError("set_state: the snapshot belongs to another trace")
        for k in self._ARRAYS:
            getattr(self, k)[...] = state[k]
        for k in self._SCALARS:
            setattr(self, k, state[k])
        self.waiting = list(state["waiting"])
        for log, snap in zip(self._logs(), state["logs"], strict=True):
            log.restore(snap)

    def _logs(self) -> tuple[_Log, _Log, _Log]:
        return self.step_log, self.entry_log, self.preempt_log

    def forecast(self, lengths: np.ndarray, horizon_s: float = np.inf) -> BatchingEngine:
        """A new engine holding what this engine's scheduler knows now, for planning: the
        requests that have arrived (none arrives later), each unfinished one's output length
        taken from ``lengths`` (``(n,)`` tokens, a guess per request, e.g. `bucket_lengths` of
        the predicted buckets) but at least one token more than it has produced, and everything
        else (clock, queue, running batch, KV blocks, tokens produced and their times, misses,
        the last step's length) as here. It ends ``horizon_s`` seconds from now
        (`past_horizon`), or when the arrived requests are served. Stepping it is a
        certainty-equivalent forecast (Bertsekas, "Dynamic Programming and Optimal Control",
        vol. 1, section 6.1). Raises ``ValueError`` for ``lengths`` of another size or a
        negative horizon."""
        lengths = np.asarray(lengths)
        if lengths.shape != (self.n,) or not horizon_s >= 0:
            raise ValueError(
                f"forecast: lengths must be ({self.n},) and the horizon >= 0 s, got "
                f"{lengths.shape} and {horizon_s}"
            )
        k = self.next_arrival
        produced = self.generated[:k].copy()
        rows = self.running
        produced[rows[:, RID]] = rows[:, GEN]
        output = self.output[:k].copy()
        live = np.isnan(self.finished_at[:k])
        output[live] = np.maximum(lengths[:k], produced + 1)[live]
        t = self.trace
        trace = ServingTrace(
            t.arrival_s[:k], t.prompt_tokens[:k], output, t.slo_class[:k], t.slo_classes, "known"
        )
        known = BatchingEngine(trace, self.config)
        for name in ("generated", "admitted_at", "finished_at", "preemptions", "max_gap", "missed"):
            getattr(known, name)[...] = getattr(self, name)[:k]
        # the tokens produced so far (finished requests keep their true lengths), at the new
        # offsets
        count = np.minimum(produced, output)
        skip = np.r_[0, np.cumsum(count)[:-1]]
        within = np.arange(count.sum())
        known.token_time[np.repeat(known.token_offset - skip, count) + within] = self.token_time[
            np.repeat(self.token_offset[:k] - skip, count) + within
        ]
        known.slots[...] = self.slots
        known.slot_f[...] = self.slot_f
        mine = known.slots[: self.n_run]
        mine[:, OUTPUT] = output[mine[:, RID]]
        mine[:, OFFSET] = known.token_offset[mine[:, RID]]
        # the scalars hold as they are: the TTFT deadlines passed so far (``_deadline_ptr``
        # counts them) all belong to requests that have arrived
        for name in self._SCALARS:
            setattr(known, name, getattr(self, name))
        known.until = self.now + horizon_s
        known.waiting = list(self.waiting)
        if self.step_log.n:  # the last step's length, which schedulers price steps with
            last = self.step_log.n - 1
            known.step_log.append(1, **{c: a[last] for c, a in self.step_log.cols.items()})
        return known

    # --- queries --------------------------------------------------------------------------

    @property
    def past_horizon(self) -> bool:
        """Whether a `forecast` has reached its horizon (never for an episode's engine)."""
        return self.now >= self.until

    @property
    def running(self) -> np.ndarray:
        """Slot rows of the running requests (a view; columns RID, PROMPT, ... above)."""
        return self.slots[: self.n_run]

    @property
    def free_for_admission(self) -> int:
        """Blocks an admission may take: free ones, less those promised to this step's decodes
        and the watermark kept for the running requests' growth."""
        return self.free - self.reserve - self.watermark_blocks

    @property
    def last_step_s(self) -> float:
        """Seconds the last engine step took (0.0 before the first): what a real engine has
        just measured."""
        n, cols = self.step_log.n, self.step_log.cols
        return float(cols["end"][n - 1] - cols["start"][n - 1]) if n else 0.0

    def step_time(self, batch: Batch) -> float:
        """Seconds an engine step of ``batch`` takes: the cost table's price of its kernels
        plus the CPU overhead ``step_overhead_s + seq_overhead_s x sequences``. A scheduler may
        ask it of batches it considers, as a profiled engine predicts its steps."""
        cfg = self.config
        n_seqs = len(batch.prefill) + len(batch.decode_contexts)
        return self._cost(batch) + cfg.step_overhead_s + cfg.seq_overhead_s * n_seqs

    def remaining_prompt(self, rids: np.ndarray) -> np.ndarray:
        """Tokens a waiting request must compute before its next token: its prompt plus what it
        had produced before a preemption."""
        return self.prompt[rids] + self.generated[rids]

    def fits(self, rids: np.ndarray) -> np.ndarray:
        """Whether each waiting request could be admitted now: a sequence slot, some budget, and
        KV blocks for the chunk it would get (for all its known tokens under
        ``admit_full_sequence``)."""
        if not self.phase_open or self.n_run >= self.config.num_seqs or self.budget_left < 1:
            return np.zeros(len(rids), bool)
        todo = self.remaining_prompt(rids)
        need = todo if self.config.admit_full_sequence else np.minimum(todo, self.budget_left)
        return -(-need // self.block) <= self.free_for_admission

    def choice_needed(self) -> bool:
        """Whether the budget or the admissions of the coming step can matter: a running request
        is still prefilling, or a waiting request could get a slot and a block."""
        rows = self.running
        if (rows[:, PROMPT] + rows[:, GEN] - rows[:, DONE] > 1).any():
            return True
        return (
            bool(self.waiting)
            and self.n_run < self.config.num_seqs
            and (self.free_for_admission >= 1)
        )

    # --- transitions ----------------------------------------------------------------------

    def set_budget(self, budget: int, prefill_first: bool = False) -> None:
        """Open the step: ``budget`` tokens, decodes first (or paused when ``prefill_first``),
        then the running prefills' next chunks in admission order."""
        if self.done:
            raise IllegalActionError("set_budget: the episode is over")
        if self.phase_open:
            raise IllegalActionError("set_budget: this step's budget is already set")
        if not self.n_run <= budget <= self.config.max_tokens:
            raise IllegalActionError(
                f"set_budget: {budget} tokens is outside {self.n_run}..{self.config.max_tokens} "
                "(one decode token for each running sequence..largest budget)"
            )
        self.phase_open = True
        self.prefill_first = prefill_first
        self.step_budget = self.budget_left = int(budget)
        rows = self.running
        remaining = rows[:, PROMPT] + rows[:, GEN] - rows[:, DONE]
        if not prefill_first:
            decodes = remaining == 1
            rows[decodes, CHUNK] = 1
            self.budget_left -= int(np.count_nonzero(decodes))
        prefilling = np.flatnonzero(remaining > 1)
        for j in prefilling.tolist():
            if j >= self.n_run or self.budget_left < 1:
                break
            row = self.slots[j]
            # The chunk shrinks to the blocks left above the watermark, newer requests are
            # preempted only when not one token fits, and a request with none newer waits
            # instead of preempting itself (vLLM preempts for the whole chunk, itself included):
            # otherwise a prompt longer than the free cache is readmitted and preempted forever
            # while prefill-first steps keep the decodes paused. Progress is then guaranteed:
            # decodes always get their blocks (preempting the newest), prefill work never takes
            # the watermark, and a prefill-first step without prefill work runs the decodes.
            if self.config.preempt_for_whole_chunk:
                want = int(min(remaining[j], self.budget_left))
                while (
                    room := (row[BLOCKS] + self.free_for_admission) * self.block - row[DONE]
                ) < want and self.n_run > j:
                    self._preempt_last()
                if j >= self.n_run:  # it was the newest: preempted itself
                    continue
            while (
                room := (row[BLOCKS] + self.free_for_admission) * self.block - row[DONE]
            ) < 1 and self.n_run - 1 > j:
                self._preempt_last()
            if room < 1:
                continue
            chunk = int(min(remaining[j], self.budget_left, room))
            blocks = -(-(int(row[DONE]) + chunk) // self.block)
            self.free -= int(blocks - row[BLOCKS])
            row[BLOCKS] = blocks
            row[CHUNK] = chunk
            self.budget_left -= chunk

    def admit(self, position: int) -> None:
        """Admit the waiting request at ``position`` of the queue with a chunk of
        ``min(tokens to compute, budget left)``."""
        if not self.phase_open:
            raise IllegalActionError("admit: set the step's budget first")
        if not 0 <= position < len(self.waiting):
            raise IllegalActionError(
                f"admit: queue position {position} is empty ({len(self.waiting)} waiting)"
            )
        rid = self.waiting[position]
        if self.n_run >= self.config.num_seqs:
            raise IllegalActionError(f"admit request {rid}: max_num_seqs running already")
        if self.budget_left < 1:
            raise IllegalActionError(f"admit request {rid}: no token budget left this step")
        todo = int(self.prompt[rid] + self.generated[rid])
        chunk = min(todo, self.budget_left)
        blocks = -(-chunk // self.block)
        need = -(-todo // self.block) if self.config.admit_full_sequence else blocks
        if need > self.free_for_admission:
            what = f"{todo} tokens" if self.config.admit_full_sequence else f"{chunk}-token chunk"
            raise IllegalActionError(
                f"admit request {rid}: its {what} needs {need} KV blocks, "
                f"{self.free_for_admission} free (watermark kept)"
            )
        del self.waiting[position]
        g = int(self.generated[rid])
        self.slots[self.n_run] = (
            rid,
            self.prompt[rid],
            self.output[rid],
            g,
            0,
            blocks,
            self.token_offset[rid],
            chunk,
        )
        last = self.token_time[self.token_offset[rid] + g - 1] if g else np.nan
        self.slot_f[self.n_run] = (last, self.max_gap[rid], self.tbt_target[rid])
        self.n_run += 1
        self.free -= blocks
        self.budget_left -= chunk
        if np.isnan(self.admitted_at[rid]):
            self.admitted_at[rid] = self.now

    def run_step(self) -> int:
        """Run the step as scheduled; return how many requests newly missed their SLO."""
        if not self.phase_open:
            raise IllegalActionError("run_step: set the step's budget first")
        n = self.n_run
        if n == 0:
            raise IllegalActionError("run_step: the batch is empty (admit a request first)")
        rows = self.slots[:n]
        remaining = rows[:, PROMPT] + rows[:, GEN] - rows[:, DONE]
        decodes = remaining == 1
        if self.prefill_first and not rows[:, CHUNK].any():
            rows[decodes, CHUNK] = 1  # nothing to prefill: vLLM v0 runs the decodes
        chunk = rows[:, CHUNK]
        sched = chunk > 0
        dec = decodes & sched
        # a decode opens a block when its computed tokens fill the last one; a 1-token prompt
        # (computed 0) was given its block on admission
        grow = dec & (rows[:, DONE] % self.block == 0) & (rows[:, DONE] > 0)
        rows[grow, BLOCKS] += 1
        self.free -= int(np.count_nonzero(grow))
        self.reserve = 0

        pre = sched & ~decodes
        prefill = ()
        if pre.any():
            c = chunk[pre]
            prefill = tuple(zip(c.tolist(), (rows[pre, DONE] + c).tolist(), strict=True))
        contexts = (rows[dec, DONE] + 1).tolist()
        start = self.now
        end = start + self.step_time(Batch(prefill, contexts))

        idx = np.flatnonzero(sched)
        self.step_log.append(
            1, start=start, end=end, kv=self.kv_capacity - self.free, entries=idx.size
        )
        self.entry_log.append(idx.size, rid=rows[idx, RID], tokens=chunk[idx])

        rows[:, DONE] += chunk
        rows[:, CHUNK] = 0
        produced = sched & (rows[:, DONE] == rows[:, PROMPT] + rows[:, GEN])
        new_misses = 0
        if produced.any():
            p = np.flatnonzero(produced)
            f = self.slot_f
            gen = rows[p, GEN]
            self.token_time[rows[p, OFFSET] + gen] = end
            later = p[gen > 0]
            if later.size:
                gap = end - f[later, LAST]
                np.maximum(f[later, MAXGAP], gap, out=gap)
                f[later, MAXGAP] = gap
            f[p, LAST] = end
            late = later[self._tpot_missed(later)]
            if late.size:
                new_misses += self._miss(rows[late, RID])
            rows[p, GEN] += 1
            fin = p[rows[p, GEN] == rows[p, OUTPUT]]
            if fin.size:
                self._finish(fin, end)
        self.now = end
        self.steps += 1
        self.phase_open = False
        new_misses += self._ttft_misses()
        self._prepare()
        return new_misses

    def fast_forward(self, max_steps: int = 256) -> int:
        """Run the coming steps while nobody has a choice (`choice_needed` is False: every
        running request decodes and nothing can be admitted), up to the first step after which
        that may change: an arrival, a finish, or a decode that would need a block not free.
        Returns the requests that newly missed their SLO. The steps are exactly those that
        ``set_budget`` + ``run_step`` would run one by one, computed together: the batch is
        fixed, so step k's price is step 0's price (`StepCost`) plus the change of its decode
        attention, whose mean context grows by k."""
        if self.done or self.phase_open or self.choice_needed():
            raise IllegalActionError("fast_forward: the coming step has a decision to make")
        n = self.n_run
        rows = self.slots[:n]
        done0, gen0 = rows[:, DONE].copy(), rows[:, GEN].copy()
        k_max = min(int((rows[:, OUTPUT] - gen0).min()), max_steps)
        ks = np.arange(k_max)
        # blocks needed by step k: slot i opens one whenever done0 + k is a multiple of 16
        residues = np.bincount((-done0) % self.block, minlength=self.block)
        opened = residues[ks % self.block]
        need = np.cumsum(opened)
        k_max = min(k_max, int(np.searchsorted(need, self.free, side="right")))
        ks = ks[:k_max]
        cfg = self.config
        mean0 = float(done0.mean()) + 1.0
        base = self._cost(Batch((), (done0 + 1).tolist()))
        dec = (
            self._cost.table.predict_many(
                "attention_decode", batch=n, context=mean0 + ks, **self._decode_shape
            )
            * self._decode_count
        )
        duration = base + (dec - dec[0]) + cfg.step_overhead_s + cfg.seq_overhead_s * n
        ends = self.now + np.cumsum(duration)
        if self.next_arrival < self.n:
            k_arrive = int(np.searchsorted(ends, self.arrival[self.next_arrival], side="left"))
            k_max = min(k_max, k_arrive + 1)
        ends, ks = ends[:k_max], ks[:k_max]
        starts_t = np.concatenate([[self.now], ends[:-1]])
        held = self.kv_capacity - self.free
        self.step_log.append(k_max, start=starts_t, end=ends, kv=held + need[:k_max], entries=n)
        self.entry_log.append(n * k_max, rid=np.tile(rows[:, RID], k_max), tokens=1)

        self.token_time[(rows[:, OFFSET] + gen0)[:, None] + ks] = ends
        f = self.slot_f[:n]
        worst = np.full(n, (ends[1:] - ends[:-1]).max() if k_max > 1 else 0.0)
        gap0 = np.where(gen0 > 0, ends[0] - f[:, LAST], 0.0)
        np.maximum(worst, gap0, out=worst)
        np.maximum(f[:, MAXGAP], worst, out=f[:, MAXGAP])
        f[:, LAST] = ends[-1]
        new_misses = 0
        late = self._tpot_missed(np.arange(n))
        if late.any():
            new_misses += self._miss(rows[late, RID])
        rows[:, DONE] += k_max
        rows[:, GEN] += k_max
        rows[:, BLOCKS] = -(-rows[:, DONE] // self.block)
        self.free -= int(need[k_max - 1])
        self.reserve = 0
        fin = np.flatnonzero(rows[:, GEN] == rows[:, OUTPUT])
        if fin.size:
            self._finish(fin, float(ends[-1]))
        self.now = float(ends[-1])
        self.steps += k_max
        new_misses += self._ttft_misses()
        self._prepare()
        return new_misses

    # --- internals ------------------------------------------------------------------------

    def _tpot_missed(self, slots: np.ndarray) -> np.ndarray:
        """Whether each running slot has surely missed its TPOT target: its decode time so far
        (last token - first token) over its output's ``output - 1`` gaps already exceeds it,
        the same expression `serving_metrics` applies at the finish."""
        rows = self.slots[slots]
        first = self.token_time[rows[:, OFFSET]]
        gaps = np.maximum(rows[:, OUTPUT] - 1, 1)
        return (self.slot_f[slots, LAST] - first) / gaps > self.slot_f[slots, TBT]

    def _miss(self, rids: np.ndarray) -> int:
        fresh = rids[~self.missed[rids]]
        self.missed[fresh] = True
        self.n_missed += fresh.size
        return int(fresh.size)

    def _finish(self, fin: np.ndarray, end: float) -> None:
        """Release the finished slots ``fin`` (their last token came at ``end``), keeping the
        running order."""
        n = self.n_run
        rows, f = self.slots[:n], self.slot_f[:n]
        rid = rows[fin, RID]
        self.finished_at[rid] = end
        self.generated[rid] = rows[fin, OUTPUT]
        self.max_gap[rid] = f[fin, MAXGAP]
        self.free += int(rows[fin, BLOCKS].sum())
        keep = np.ones(n, bool)
        keep[fin] = False
        m = n - fin.size
        self.slots[:m] = rows[keep]
        self.slot_f[:m] = f[keep]
        self.n_run = m

    def _ttft_misses(self) -> int:
        """Mark the requests whose TTFT deadline has passed without (or before) a first token."""
        ptr = self._deadline_ptr
        end = int(np.searchsorted(self._deadline_sorted, self.now, side="left"))
        if end == ptr:
            return 0
        self._deadline_ptr = end
        rid = self._by_deadline[ptr:end]
        first = self.token_time[self.token_offset[rid]]
        late = rid[~(first <= self._deadline_sorted[ptr:end])]
        return self._miss(late) if late.size else 0

    def _preempt_last(self) -> None:
        """Preempt the most recently admitted running request: free its blocks, forget its KV,
        put it at the front of the waiting queue (recompute)."""
        j = self.n_run - 1
        row = self.slots[j]
        rid = int(row[RID])
        remaining = row[PROMPT] + row[GEN] - row[DONE]
        if remaining == 1 and row[DONE] % self.block == 0 and row[DONE] > 0:
            self.reserve -= 1  # its decode no longer needs the block promised to it
        if self.phase_open and row[CHUNK] > 0:
            self.budget_left += int(row[CHUNK])
        self.free += int(row[BLOCKS])
        self.generated[rid] = row[GEN]
        self.max_gap[rid] = self.slot_f[j, MAXGAP]
        self.preemptions[rid] += 1
        self.preempt_log.append(1, step=self.steps, rid=rid)
        self.waiting.insert(0, rid)
        row[:] = 0
        self.n_run = j

    def _prepare(self) -> None:
        """Bring the next step's arrivals in, reserve blocks for its decodes (preempting when
        they do not fit), and end the episode when every request has finished."""
        while True:
            end = int(np.searchsorted(self.arrival, self.now, side="right"))
            if end > self.next_arrival:
                self.waiting.extend(range(self.next_arrival, end))
                self.next_arrival = end
            if self.n_run or self.waiting:
                break
            if self.next_arrival >= self.n:
                self.done = True
                return
            self.now = float(self.arrival[self.next_arrival])  # idle until the next arrival
        rows = self.running
        grow = (rows[:, PROMPT] + rows[:, GEN] - rows[:, DONE] == 1) & (
            rows[:, DONE] % self.block == 0
        )
        self.reserve = int(np.count_nonzero(grow))
        while self.reserve > self.free:
            self._preempt_last()

    # --- results --------------------------------------------------------------------------

    def summary_inputs(self) -> dict[str, np.ndarray]:
        """The per-request and per-step arrays the metrics are computed from."""
        return {
            "arrival": self.arrival,
            "admitted": self.admitted_at,
            "token_time": self.token_time,
            "output": self.output,
            "ttft_target": self.ttft_target,
            "tbt_target": self.tbt_target,
            "step_start": self.step_log.view("start"),
            "step_end": self.step_log.view("end"),
            "step_kv": self.step_log.view("kv"),
            "preemptions": self.preemptions,
        }


# An order maps (engine, waiting request ids) to one sort key per request, lowest first; None
# keeps the queue order (FCFS: arrival, preempted requests back at the front).
Order = Callable[["BatchingEngine", np.ndarray], np.ndarray]


class QueueScheduler:
    """The engine's own scheduling, as vLLM's scheduler does it: every step the same mode (a
    token budget, decodes first or prefill-first) and admissions strictly in one order (the
    step stops at the first request in order that does not fit). A prefill-first scheduler does
    not chunk prompts (vLLM v0): the whole prompt must fit the budget left, except a prompt
    longer than the whole budget, which is chunked when it comes first. Only the first
    ``window`` waiting requests are considered (the env's ``max_entities``).

    ``drive(engine)`` runs an episode to the end with these decisions and no observations;
    ``schedgym.baselines.batching`` turns the same decisions into env actions."""

    def __init__(
        self,
        order: Order | None = None,
        *,
        budget: int | None = None,
        prefill_first: bool = False,
        window: int = DEFAULT_WINDOW,
    ):
        self.order = order
        self.budget = budget  # None: the engine's prefill_first_budget / batched_tokens
        self.prefill_first = prefill_first
        self.window = window

    def step_budget(self, engine: BatchingEngine) -> int:
        if self.budget is not None:
            return self.budget
        cfg = engine.config
        return cfg.prefill_first_budget if self.prefill_first else cfg.batched_tokens

    def choose_admission(self, engine: BatchingEngine) -> int | None:
        """The queue position to admit next, or None to run the step."""
        if not engine.waiting:
            return None
        rids = np.asarray(engine.waiting[: self.window])
        pos = 0 if self.order is None else int(np.argmin(self.order(engine, rids)))
        rid = rids[pos : pos + 1]
        if not engine.fits(rid)[0]:
            return None
        if self.prefill_first:
            todo = int(engine.remaining_prompt(rid)[0])
            untouched = engine.budget_left == engine.step_budget
            if todo > engine.budget_left and not (untouched and todo > engine.step_budget):
                return None
        return pos

    def drive(self, engine: BatchingEngine) -> None:
        """Run ``engine`` to the end (a forecast to its horizon, `BatchingEngine.forecast`) with
        these decisions, no observations built; a step whose budget is already set is
        finished first, with these admissions."""
        while not engine.done and not engine.past_horizon:
            if not engine.phase_open:
                if not engine.choice_needed():
                    engine.fast_forward()
                    continue
                engine.set_budget(self.step_budget(engine), self.prefill_first)
            while (pos := self.choose_admission(engine)) is not None:
                engine.admit(pos)
            engine.run_step()


def reference_times(config: EngineConfig) -> tuple[float, float]:
    """Seconds of an unbatched decode step and of a lone 4,096-token prefill at 4k context,
    overhead included: the scale of Sarathi-Serve's SLOs (their strict TBT target is 5x the
    decode step of one 4k-context request)."""
    rep = replica(config)
    one = config.step_overhead_s + config.seq_overhead_s
    decode = rep.step_cost(Batch((), (4096,))) + one
    tokens = min(4096, config.max_tokens)
    prefill = rep.step_cost(Batch(((tokens, tokens),), ())) + one
    return decode, prefill
