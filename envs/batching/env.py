"""`schedgym/Batching-v0`: continuous batching of LLM requests on one simulated serving replica.

Its ``record`` module holds the episode record, its independent replay `validate` and the TTFT/TBT
CDFs (`plot_record`); ``bench`` the env's steps/s and the Azure conversation hour under FCFS.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from schedgym.envs.batching.core import (
    DEFAULT_WINDOW,
    DONE,
    GEN,
    LAST,
    PROMPT,
    TBT,
    BatchingEngine,
    EngineConfig,
    QueueScheduler,
    reference_times,
)
from schedgym.envs.batching.features import (
    ENCODER_VERSION,
    ENTITY_FEATURES,
    GLOBAL_FEATURES,
    LENGTH_BUCKETS,
    SchedulerView,
    bucket_lengths,
    encode,
)
from schedgym.envs.batching.record import engine_metrics, make_record, plot_record, validate
from schedgym.envs.spaces import EntityLayout, action_index
from schedgym.errors import IllegalActionError, SchedgymError, WorkloadError
from schedgym.workloads.base import shared_data_dir
from schedgym.workloads.serving import (
    FAMILIES,
    ServingTrace,
    SLOClass,
    assign_slo,
    load_trace,
    synthetic,
)

__all__ = ["ENCODER_VERSION", "BatchingEnv", "CASES", "plot_record", "validate"]

DEFAULT_CASE = "azure-conv-synth"
DEFAULT_MAX_ENTITIES = DEFAULT_WINDOW
BUDGET_PHASE, ADMIT_PHASE = 0, 1
AZURE_CONV = "traces/azure-llm-2023/AzureLLMInferenceTrace_conv.csv"


@dataclass(frozen=True)
class Case:
    """A named episode: a workload and the replica that serves it.

    ``workload`` is a synthetic family (``conv``, ``code``: lengths calibrated to the Azure 2023
    traces), ``azure-conv`` (the real trace, from the reference data) or a trace file path.
    Synthetic arrivals come at ``rate`` requests/s, or at ``load`` x the replica's measured
    capacity for that family when no rate is given. File traces keep their own arrival times;
    ``n_requests`` keeps their first requests (more than the file holds is refused).
    """

    workload: str = "conv"
    n_requests: int | None = 600
    load: float | None = 1.0
    rate: float | None = None
    process: str = "poisson"
    cv: float = 1.0
    slo_mix: tuple[float, float] = (0.5, 0.5)
    engine: EngineConfig = EngineConfig()

    def __post_init__(self) -> None:
        if self.n_requests is not None and (
            not isinstance(self.n_requests, int | np.integer) or self.n_requests < 1
        ):
            raise WorkloadError(f"n_requests must be a positive integer, got {self.n_requests!r}")
        for key in ("load", "rate"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise WorkloadError(f"{key} must be a positive number, got {value!r}")


_H100_70B_TP4 = EngineConfig(model="llama-2-70b", tp=4)
CASES: dict[str, Case] = {
    "azure-conv-synth": Case(),
    "azure-conv-bursty": Case(process="gamma", cv=3.0, load=0.8),
    "azure-code-synth": Case(workload="code"),
    "azure-conv": Case(workload="azure-conv", n_requests=None, load=None),
    "azure-conv-on-a100": Case(
        workload="azure-conv", n_requests=None, load=None, engine=EngineConfig(hardware="a100")
    ),
    "azure-conv-a100": Case(engine=EngineConfig(hardware="a100")),
    "azure-conv-70b-tp4": Case(engine=_H100_70B_TP4),
    "azure-conv-70b-tp8": Case(engine=replace(_H100_70B_TP4, tp=8)),
    "azure-conv-tiny-cpu": Case(
        n_requests=200, engine=EngineConfig(model="tiny-llama-4l", hardware="cpu")
    ),
}
_CASE_FIELDS = {f.name for f in fields(Case)} - {"engine"}
_ENGINE_FIELDS = {f.name for f in fields(EngineConfig)}


def slo_classes(config: EngineConfig) -> tuple[SLOClass, SLOClass]:
    """The two SLO classes of every case, scaled to the replica as Sarathi-Serve scales its TBT
    SLOs (strict: 5x, relaxed: 25x the decode step of one request at 4k context). TTFT targets
    are 5x and 25x a lone 4k-token prefill."""
    decode, prefill = reference_times(config)
    return (
        SLOClass("interactive", ttft_s=5 * prefill, tbt_s=5 * decode),
        SLOClass("relaxed", ttft_s=25 * prefill, tbt_s=25 * decode),
    )


@lru_cache(maxsize=32)
def measured_capacity(config: EngineConfig, family: str, n: int = 800) -> float:
    """Requests/s the replica sustains on ``family`` lengths: ``n`` requests all waiting at
    t=0, vLLM v1's default schedule (decodes first, FCFS, largest budget), completions per second
    between the 20th and the 80th percentile of finish times (the saturated middle)."""
    trace = synthetic(n, 1e9, family=family, seed=12345)
    engine = BatchingEngine(trace, config)
    QueueScheduler().drive(engine)
    done = np.sort(engine.finished_at)
    lo, hi = int(0.2 * n), int(0.8 * n)
    return (hi - lo) / float(done[hi] - done[lo])


@lru_cache(maxsize=4)
def _file_trace(path: str) -> ServingTrace:
    return load_trace(path)


def resolve_case(name: str, overrides: dict[str, Any] | None = None) -> Case:
    """``NAME`` (a key of `CASES`), ``NAME:N`` (its first/only N requests) or a trace file path
    (``file:PATH`` or a path ending in .csv), with field overrides applied."""
    overrides = dict(overrides or {})
    base, _, count = name.partition(":") if not name.startswith("file:") else (name, "", "")
    if name.startswith("file:") or name.endswith(".csv"):
        case = Case(workload=name.removeprefix("file:"), n_requests=None, load=None)
    elif base in CASES:
        case = CASES[base]
        if count:
            try:
                case = replace(case, n_requests=int(count))
            except ValueError:
                raise WorkloadError(f"case {name!r}: the part after ':' must be a count") from None
    else:
        raise WorkloadError(
            f"unknown batching case {name!r}; known: {', '.join(CASES)}, NAME:N, file:PATH"
        )
    unknown = set(overrides) - _CASE_FIELDS - _ENGINE_FIELDS
    if unknown:
        raise ValueError(f"unknown BatchingEnv argument(s): {', '.join(sorted(unknown))}")
    engine = replace(case.engine, **{k: v for k, v in overrides.items() if k in _ENGINE_FIELDS})
    return replace(case, engine=engine, **{k: v for k, v in overrides.items() if k in _CASE_FIELDS})


def build_trace(case: Case, rng: np.random.Generator) -> ServingTrace:
    """The case's requests, with SLO classes (and synthetic arrivals and lengths) from ``rng``."""
    classes = slo_classes(case.engine)
    if case.workload in FAMILIES:
        rate = case.rate
        if rate is None:
            if case.load is None:
                raise WorkloadError(f"synthetic case needs a rate or a load: {case}")
            rate = case.load * measured_capacity(case.engine, case.workload)
        return synthetic(
            case.n_requests or Case.n_requests,
            rate,
            family=case.workload,
            process=case.process,
            cv=case.cv,
            slo_classes=classes,
            slo_mix=case.slo_mix,
            seed=rng,
        )
    path = shared_data_dir() / AZURE_CONV if case.workload == "azure-conv" else case.workload
    if not Path(path).is_file():
        raise WorkloadError(
            "trace file not found (reference data lives in ../shared/data or $SCHEDGYM_DATA)",
            path,
        )
    if case.load is not None:
        raise WorkloadError(
            "a load (share of capacity) applies to synthetic workloads; give "
            "rate= (requests/s) to replay a trace faster or slower",
            path,
        )
    trace = _file_trace(str(path))
    if case.n_requests:
        # a shorter replay than asked would pass for the asked one: refuse it
        if case.n_requests > trace.n_requests:
            raise WorkloadError(
                f"{case.n_requests} requests asked (n_requests or NAME:N), the trace holds "
                f"{trace.n_requests}",
                path,
            )
        trace = trace.head(case.n_requests)
    if case.rate is not None:
        trace = trace.at_rate(case.rate)
    return assign_slo(trace, classes, case.slo_mix, rng)


class LegalDiscrete(spaces.Discrete):
    """The env's ``Discrete`` action space, whose ``sample()`` without a mask draws one of the
    env's legal actions (its current ``action_masks()``), so that code sampling blindly (random
    agents, Gymnasium's ``check_env``) never sends an illegal action. It pickles and copies as a
    plain ``Discrete``."""

    def __init__(self, n: int, env: BatchingEnv):
        super().__init__(n)
        self._env = weakref.ref(env)

    def sample(self, mask: np.ndarray | None = None, probability: np.ndarray | None = None):
        env = self._env()
        if mask is None and probability is None and env is not None and env.core is not None:
            if not env.core.done:
                mask = env.action_masks().astype(np.int8)
        return super().sample(mask, probability)

    def __reduce__(self) -> tuple[Any, ...]:
        return (spaces.Discrete, (int(self.n),))


class BatchingEnv(gym.Env):
    """
    ## Description

    One LLM serving replica run the way vLLM's v1 engine runs it (continuous batching, chunked
    prefill, a paged KV cache of 16-token blocks whose capacity is device memory x 0.9 minus
    the model's weights, preemption by recompute), every engine step priced by the measured
    kernel costs of the chosen cost table (``h100``, ``a100``, ``cpu``; Llama-2-7B, Llama-2-70B
    with tensor parallelism, a 4-layer TinyLlama on the CPU table) plus a per-step CPU overhead.
    Requests arrive from the Azure LLM inference trace 2023 or from generators calibrated to it,
    each with an SLO class (a TTFT and a TBT target). The policy decides what a real engine's
    scheduler plugin decides (vLLM's ``scheduler_cls``): per engine step, the token budget, and
    which waiting request to admit next. See docs/batching.md for the engine model and sources.

    ## Action Space

    ``Discrete(max_entities + len(budgets) + 2)``, in two phases per engine step:

    * *budget phase*: action ``max_entities + k`` sets the step's token budget to ``budgets[k]``
      (default 256, 512, 1024, 2048, 4096, 8192) with decodes first (Sarathi-Serve, vLLM v1);
      ``max_entities + len(budgets)`` is a *prefill-first* step (vLLM v0: decodes paused while
      prompts are admitted, budget ``prefill_first_budget`` = 4096). The engine then schedules
      the running requests: decodes, and the next chunks of requests still prefilling; it
      preempts the newest running request if their KV blocks do not fit.
    * *admission phase*: action ``i < max_entities`` admits the ``i``-th waiting request (queue
      order: arrival, preempted requests first) with a prefill chunk of
      ``min(tokens to compute, budget left)``; legal when it gets a sequence slot, some budget
      and the KV blocks of that chunk beyond a 1 % watermark (vLLM v0's) kept for the running
      requests' growth. The last action, ``max_entities + len(budgets) + 1``,
      runs the step.

    ``action_masks()`` gives the legal actions (never all False while the episode runs); any
    other action raises ``IllegalActionError`` saying why; ``action_space.sample()`` without a
    mask draws a legal one. Decisions with a single legal action are taken by the env itself:
    steps whose budget cannot matter (every running request decodes and nothing can be
    admitted) run at once, and so does a step in which nothing more can be admitted.

    ## Observation Space

    The shared entity layout (``schedgym.envs.spaces.EntityLayout``), a ``Dict`` of:

    * ``entities`` ``(max_entities, 12)`` float32, one row per waiting request in queue order:
      prompt, tokens to compute, tokens produced before a preemption, waiting time and deadline
      slack relative to its targets, its TTFT and TBT targets (log10 s), a *noisy predicted
      output-length bucket* (the true output length is never shown: the prediction is the true
      length times ``exp(N(0, length_noise^2))``, bucketed at 32, 64, ..., 1024 tokens), a
      preempted flag, whether it fits now, the chunk it would get and that chunk's KV blocks;
    * ``entity_mask`` ``(max_entities,)`` int8: 1 for real rows;
    * ``globals`` ``(15,)`` float32: phase, budget and budget left, prefill-first flag, free
      KV, running and decoding sequences, prefill work left, queue length and tokens, recent
      arrival rate, least TBT slack of the running decodes, mean context, last step time,
      progress (see ``GLOBAL_FEATURES``).

    ## Rewards

    ``-1/N`` for each request at the moment it surely misses its SLO (its TTFT deadline passes
    without a first token, or its decode time so far already exceeds ``output - 1`` times its
    TPOT target), ``N`` requests in the episode. The return is ``SLO attainment - 1`` in
    DistServe's sense (TTFT and mean TPOT); goodput is attainment x N / duration.

    ## Starting State

    An idle replica and the case named by ``reset(options={"case": ...})``, else the
    constructor's ``case``, else ``"azure-conv-synth"``: 600 requests with Azure-conversation
    lengths arriving as a Poisson process at the replica's measured capacity (load 1.0),
    Llama-2-7B on the H100 table, SLO classes half interactive, half relaxed. Synthetic arrivals
    and lengths, SLO classes and length-prediction noise are drawn from the seed given to
    ``reset``: same seed and case, same episode. Cases: ``azure-conv-synth``,
    ``azure-conv-bursty`` (Gamma arrivals, CV 3, load 0.8), ``azure-code-synth``,
    ``azure-conv-a100``, ``azure-conv-70b-tp4``, ``azure-conv-70b-tp8``, ``azure-conv-tiny-cpu``
    (synthetic); ``azure-conv`` and ``azure-conv-on-a100`` (the real hour, 19,366 requests, read
    from ``../shared/data``); ``NAME:N`` for the first N requests; ``file:PATH`` for any Azure,
    BurstGPT or vidur trace file.

    ## Episode End

    Terminated when every request has finished; an episode is never truncated (a planning
    forecast set by ``set_state(env.known_state())`` is, at its horizon). The last step's
    ``info`` holds ``metrics`` (throughput, goodput, SLO attainment, TTFT and TBT
    mean/p50/p90/p99, queueing delay, end-to-end latency, preemptions, KV utilisation, steps)
    and ``record`` (every request's timeline and every step's batch), which `validate` replays.

    ## Arguments

    * ``case`` (``None``: ``"azure-conv-synth"``): the case ``reset`` uses when its options name
      none;
    * ``max_entities`` (128): waiting requests observed (and admissible) at once;
    * ``length_noise`` (0.5): sigma of the log-normal error of the predicted output length;
    * ``forecast_s`` (4.0): the horizon of ``known_state()``'s forecasts, simulated seconds;
    * any field of ``Case`` (``n_requests``, ``load``, ``rate``, ``process``, ``cv``,
      ``slo_mix``) or of ``EngineConfig`` (``model``, ``hardware``, ``tp``, ``max_num_seqs``,
      ``kv_blocks``, ``watermark``, CPU overheads, ...) overrides the case's; ``rate`` replays a
      trace file at that mean rate.

    ``get_state()``/``set_state(state)`` snapshot and restore an episode; ``known_state()`` is
    the state of what the scheduler knows now, for planners (`BatchingEnv.known_state`); the
    simulator core is ``env.core`` (`BatchingEngine`), its workload ``env.trace``.

    ## Version History

    * v0: initial version; ``known_state`` and ``forecast_s`` added later (episodes
      unchanged).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        case: str | None = None,
        max_entities: int = DEFAULT_MAX_ENTITIES,
        length_noise: float = 0.5,
        forecast_s: float = 4.0,
        **overrides: Any,
    ):
        if max_entities < 1 or length_noise < 0:
            raise ValueError("max_entities must be >= 1 and length_noise >= 0")
        if not 0 < forecast_s < np.inf:
            raise ValueError(f"forecast_s must be a positive number of seconds, got {forecast_s}")
        self.default_case = case or DEFAULT_CASE
        self.overrides = overrides
        self.length_noise = length_noise
        self.forecast_s = forecast_s
        self.budgets = resolve_case(self.default_case, overrides).engine.budgets
        self._budget_array = np.asarray(self.budgets)
        nb = len(self.budgets)
        self.layout = EntityLayout(
            max_entities, len(ENTITY_FEATURES), len(GLOBAL_FEATURES), n_special=nb + 2
        )
        self.observation_space = self.layout.observation_space()
        self.action_space = LegalDiscrete(self.layout.n_actions, self)
        self.prefill_first_action = max_entities + nb
        self.run_action = max_entities + nb + 1
        self.core: BatchingEngine | None = None
        self.trace: ServingTrace | None = None
        self.case_name = self.default_case
        self.phase = BUDGET_PHASE
        self._mask: np.ndarray | None = None

    # --- Gymnasium API -------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        name = (options or {}).get("case") or self.default_case
        case = resolve_case(name, self.overrides)
        if case.engine.budgets != self.budgets:
            raise WorkloadError(
                f"case {name!r} has budgets {case.engine.budgets}; this env was "
                f"built for {self.budgets}"
            )
        trace = build_trace(case, self.np_random)
        noisy = trace.output_tokens * np.exp(
            self.length_noise * self.np_random.standard_normal(trace.n_requests)
        )
        self._use(trace, case.engine, np.searchsorted(LENGTH_BUCKETS, noisy, side="right"))
        self.case_name = name
        self.phase = BUDGET_PHASE
        self._advance()
        info = {
            "case": name,
            "requests": trace.n_requests,
            "kv_blocks": self.core.kv_capacity,
            "slo_classes": [c.name for c in trace.slo_classes],
        }
        return self._observe(), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        core = self._require_core()
        a = action_index(action)
        if core.done:
            raise IllegalActionError("the episode is over; call reset()")
        if core.past_horizon:
            raise IllegalActionError("the forecast has reached its horizon; restore a state")
        if not 0 <= a < self.layout.n_actions or not self.action_masks()[a]:
            raise IllegalActionError(f"action {a} is illegal: {self._why(a)}")
        missed = core.n_missed
        self._apply(a)
        self._advance()
        reward = -(core.n_missed - missed) / core.n
        info: dict[str, Any] = {}
        if core.done:
            info["metrics"] = engine_metrics(core)
            info["record"] = make_record(core, self.case_name)
        return self._observe(), reward, core.done, not core.done and core.past_horizon, info

    def action_masks(self) -> np.ndarray:
        """True for the legal actions (MaskablePPO's hook)."""
        self._require_core()
        if self._mask is None:
            self._mask = self._compute_mask()
        return self._mask.copy()

    def budget_action(self, budget: int, prefill_first: bool = False) -> int:
        """The action that opens a step with ``budget`` tokens (or the prefill-first step)."""
        if prefill_first:
            return self.prefill_first_action
        if budget not in self.budgets:
            raise IllegalActionError(f"budget {budget} is not one of {self.budgets}")
        return self.layout.max_entities + self.budgets.index(budget)

    # --- snapshots -----------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A snapshot of the episode (numpy copies), for search agents."""
        core = self._require_core()
        return {
            "core": core.get_state(),
            "phase": self.phase,
            "case": self.case_name,
            "predicted": self._predicted,
            "config": core.config,
        }

    def known_state(self) -> dict[str, Any]:
        """The state of what the scheduler knows now, for planners to `set_state` and step
        (`schedgym.agents.muzero.models.SimulatorModel` plans from it): the requests arrived so
        far and none later, each unfinished one's output length guessed from its predicted
        bucket (`bucket_lengths`, what the observation shows), the rest of the engine as it is
        (`BatchingEngine.forecast`). Stepping it is truncated ``forecast_s`` simulated seconds
        from now; its rewards are ``-1/k`` per miss, ``k`` the requests arrived. The episode's
        own state is untouched."""
        core = self._require_core()
        known = core.forecast(bucket_lengths(self._predicted), self.forecast_s)
        return {
            "core": known.get_state(),
            "phase": self.phase,
            "case": self.case_name,
            "predicted": self._predicted[: known.n],
            "config": core.config,
        }

    def set_state(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        """Restore a `get_state` (or `known_state`) snapshot; return its observation."""
        trace = state["core"]["trace"]
        if self.core is None or trace is not self.trace:
            self._use(trace, state["config"], state["predicted"])
        self.core.set_state(state["core"])
        self.phase = state["phase"]
        self.case_name = state["case"]
        self._mask = None
        return self._observe()

    # --- internals -----------------------------------------------------------------------

    def _use(self, trace: ServingTrace, config: EngineConfig, predicted: np.ndarray) -> None:
        self.trace = trace
        self.core = BatchingEngine(trace, config)
        self._predicted = predicted
        self._mask = None
        self._mean_rate = trace.n_requests / max(trace.span_s, 1e-9)
        self._max_budget = float(config.budgets[-1])
        self._min_tbt = float(self.core.tbt_target.min())

    def _require_core(self) -> BatchingEngine:
        if self.core is None:
            raise SchedgymError("BatchingEnv: call reset() before step() or action_masks()")
        return self.core

    def _visible(self) -> np.ndarray:
        return np.asarray(self.core.waiting[: self.layout.max_entities], dtype=np.int64)

    def _compute_mask(self) -> np.ndarray:
        core = self.core
        mask = np.zeros(self.layout.n_actions, bool)
        if core.done or core.past_horizon:
            return mask
        E = self.layout.max_entities
        if self.phase == BUDGET_PHASE:
            # a budget must hold one decode token for each running sequence
            mask[E : self.prefill_first_action] = self._budget_array >= core.n_run
            mask[self.prefill_first_action] = True
        else:
            rids = self._visible()
            mask[: rids.size] = core.fits(rids)
            mask[self.run_action] = core.n_run > 0
        return mask

    def _apply(self, a: int) -> None:
        core, E = self.core, self.layout.max_entities
        if self.phase == BUDGET_PHASE:
            if a == self.prefill_first_action:
                core.set_budget(core.config.prefill_first_budget, True)
            else:
                core.set_budget(self.budgets[a - E], False)
            self.phase = ADMIT_PHASE
        elif a == self.run_action:
            core.run_step()
            self.phase = BUDGET_PHASE
        else:
            core.admit(a)
        self._mask = None

    def _advance(self) -> None:
        """Take the decisions that have a single legal action, until a real choice or the end."""
        core = self.core
        while not core.done and not core.past_horizon:
            if self.phase == BUDGET_PHASE and not core.choice_needed():
                core.fast_forward()
                self._mask = None
                continue
            mask = self.action_masks()
            legal = np.flatnonzero(mask)
            if legal.size == 0:
                raise SchedgymError(f"BatchingEnv: no legal action at step {core.steps} (a bug)")
            if legal.size > 1:
                return
            self._apply(int(legal[0]))

    def _why(self, a: int) -> str:
        E, core = self.layout.max_entities, self.core
        if not 0 <= a < self.layout.n_actions:
            return f"outside 0..{self.layout.n_actions - 1}"
        if self.phase == BUDGET_PHASE:
            if E <= a < self.prefill_first_action:
                return (
                    f"budget {self.budgets[a - E]} cannot hold a decode token for each of the "
                    f"{core.n_run} running sequences"
                )
            return "the step's budget must be chosen first (a budget or prefill-first action)"
        if E <= a < self.run_action:
            return "the budget of this step is already set; admit requests or run the step"
        if a == self.run_action:
            return "the batch is empty: admit a request first"
        if a >= len(core.waiting):
            return f"queue position {a} is empty ({len(core.waiting)} waiting)"
        rid = core.waiting[a]
        if core.n_run >= core.config.num_seqs:
            return f"request {rid} cannot run: max_num_seqs={core.config.num_seqs} running"
        if core.budget_left < 1:
            return f"request {rid} cannot run: no token budget left this step"
        chunk = min(int(core.remaining_prompt(np.array([rid]))[0]), core.budget_left)
        return (
            f"request {rid}'s {chunk}-token chunk needs {-(-chunk // core.block)} KV blocks, "
            f"{core.free_for_admission} may be taken (watermark kept)"
        )

    def _observe(self) -> dict[str, np.ndarray]:
        core, layout = self.core, self.layout
        obs = layout.empty_observation()
        if core.done:
            obs["globals"][-1] = 1.0
            return obs
        now = core.now
        rids = self._visible()
        gen = core.generated[rids]
        rows = core.running
        f = core.slot_f[: core.n_run]
        waiting = np.asarray(core.waiting, dtype=np.int64)
        recent = np.searchsorted(core.arrival, [now - 5.0, now], side="right")
        view = SchedulerView(
            now=now,
            w_prompt=core.prompt[rids],
            w_generated=gen,
            w_arrival=core.arrival[rids],
            w_ttft=core.ttft_target[rids],
            w_tbt=core.tbt_target[rids],
            w_last_token=core.token_time[core.token_offset[rids] + np.maximum(gen - 1, 0)],
            w_predicted=self._predicted[rids],
            w_fits=self.action_masks()[: rids.size],
            n_waiting=len(core.waiting),
            waiting_tokens=float(core.remaining_prompt(waiting).sum()) if waiting.size else 0.0,
            r_remaining=rows[:, PROMPT] + rows[:, GEN] - rows[:, DONE],
            r_generated=rows[:, GEN],
            r_computed=rows[:, DONE],
            r_last_token=f[:, LAST],
            r_tbt=f[:, TBT],
            admitting=self.phase == ADMIT_PHASE,
            step_budget=core.step_budget,
            budget_left=core.budget_left,
            prefill_first=core.prefill_first,
            free_blocks=core.free_for_admission,
            kv_capacity=core.kv_capacity,
            max_num_seqs=core.config.num_seqs,
            max_budget=self._max_budget,
            block_size=core.block,
            recent_arrivals=int(recent[1] - recent[0]),
            mean_rate=self._mean_rate,
            last_step_s=core.last_step_s,
            min_tbt=self._min_tbt,
            finished=int(np.count_nonzero(~np.isnan(core.finished_at))),
            n_requests=core.n,
        )
        return encode(view, obs)
