"""`schedgym/MoEOffload-v0`: which mixture-of-experts experts live in GPU memory.

`plot_hit_rate_curve` draws hit rate against cache size for any policies; `simulate` runs a
policy on the fast path. Its ``record`` module holds the independent replay `validate` and the
per-layer hit rates (`plot_record`); ``bench`` the LRU fast path on 100,000 token-layer visits and
the env's steps/s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from schedgym.envs.hardware.devices import load_cost_table
from schedgym.envs.hardware.models import MODELS, ModelConfig, get_model
from schedgym.envs.moe.core import (
    FIRST_DENSE_LAYERS,
    PREFETCH,
    PREFETCH_EVICT,
    RECORD_FORMAT,
    MoECore,
    build_episode,
    moe_layers,
    price_episode,
    run_policy,
)
from schedgym.envs.spaces import EntityLayout, action_index
from schedgym.errors import SchedgymError, WorkloadError
from schedgym.workloads.moe import (
    PROFILES,
    RoutingTrace,
    generate_routing,
    load_trace,
    tinymoe_file,
    tinymoe_trace,
)

DEFAULT_CASE = "tinymoe-code"

EXPERT_FEATURES = (
    "resident",  # 1 if the expert is in GPU memory (or its copy is queued)
    "copy_left",  # seconds until its copy lands / one copy's seconds (0 once there)
    "needed",  # 1 if the current layer's tokens need it (demand phase)
    "pending",  # 1 for the miss or prefetch target this decision is about
    "layers_ahead",  # layers until its layer runs again / layers
    "recency",  # 1 / (1 + steps since its last use); 0 if never used
    "frequency",  # uses per step so far / batch
    "profile",  # share of profiling tokens that chose it (calibration routing; 0 if none)
)
# Names the observation features' meaning, order and scale; exported policies record it.
ENCODER_VERSION = "moe-features-1"
GLOBAL_FEATURES = (
    "phase_prefetch",
    "phase_prefetch_evict",
    "phase_evict",
    "layer",  # current layer / layers
    "progress",  # visits done / visits
    "capacity",  # cache slots / experts
    "free",  # free slots / cache slots
    "copy_backlog",  # copy-engine queue / one copy's seconds
    "pre_layer",  # attention and dense work of the layer / one copy's seconds
    "gpu_expert",  # one expert's GPU time for one token / one copy's seconds
    "cpu_offload",  # 1 if a miss may run on the CPU
    "cpu_expert",  # one expert's CPU time for one token / one copy's seconds
    "misses_left",  # undecided misses of this layer / most experts a layer needs
    "prefetch_left",  # prefetches still allowed before this layer / per layer
    "load",  # experts a step needs per layer / experts per layer
)


@dataclass(frozen=True)
class CasePreset:
    source: str  # "tinymoe:<domain>" or "synth:<routing profile>"
    model: str
    cache_fraction: float  # share of all routed experts the GPU caches
    tokens: int  # tokens decoded per episode (all lanes together)
    about: str


CASES: dict[str, CasePreset] = {
    "tinymoe-code": CasePreset(
        "tinymoe:code",
        "mixtral-8x7b",
        0.5,
        512,
        "routing of the tiny MoE on held-out stdlib sources, Mixtral-8x7B experts",
    ),
    "tinymoe-docs": CasePreset(
        "tinymoe:docs",
        "mixtral-8x7b",
        0.5,
        512,
        "routing of the tiny MoE on held-out pydoc topics, Mixtral-8x7B experts",
    ),
    "mixtral": CasePreset(
        "synth:mixtral-8x7b",
        "mixtral-8x7b",
        0.5,
        256,
        "generator calibrated to Mixtral's Table 5; 4 of 8 experts per layer cached",
    ),
    "olmoe": CasePreset(
        "synth:olmoe-1b-7b",
        "olmoe-1b-7b",
        0.25,
        128,
        "generator calibrated to OLMoE's expert skew; a quarter of the experts cached",
    ),
    "qwen": CasePreset(
        "synth:qwen1.5-moe-a2.7b",
        "qwen1.5-moe-a2.7b",
        0.25,
        128,
        "generator (OLMoE-like skew), Qwen1.5-MoE-A2.7B; a quarter cached",
    ),
    "deepseek": CasePreset(
        "synth:deepseek-v2-lite",
        "deepseek-v2-lite",
        0.25,
        128,
        "generator (OLMoE-like skew), DeepSeek-V2-Lite's 26 MoE layers; a quarter cached",
    ),
}
# Rows every preset fits in, so one env (and one policy) serves them all by default.
DEFAULT_MAX_ENTITIES = max(
    moe_layers(get_model(p.model)) * get_model(p.model).experts for p in CASES.values()
)


def model_for_trace(trace: RoutingTrace, model: str | None) -> ModelConfig:
    """The model whose experts price ``trace``: named, or the first whose experts and k match.
    A trace of fewer layers than the model's MoE layers prices that many layers of it."""
    candidates = [get_model(model)] if model else [m for m in MODELS.values() if m.experts]
    for m in candidates:
        if (m.experts, m.top_k) == (trace.n_experts, trace.top_k) and (
            trace.n_layers <= moe_layers(m)
        ):
            if trace.n_layers == moe_layers(m):
                return m
            dense = FIRST_DENSE_LAYERS.get(m.name, (0, 0))[0]
            return replace(m, layers=trace.n_layers + dense)
    named = f"model {model!r} does not match" if model else "no shipped MoE model matches"
    raise WorkloadError(
        f"{named} a trace of {trace.n_layers} layers x {trace.n_experts} experts, "
        f"top-{trace.top_k}",
        trace.name,
    )


def _window(
    trace: RoutingTrace, first_seq: int, tokens: int, path: object, case: str | None = None
) -> RoutingTrace:
    """``trace.window``, its refusal (more ``tokens`` than the file records: recorded routing
    is never replayed) re-labelled with the file and, for a named case, the case."""
    try:
        return trace.window(first_seq, tokens)
    except WorkloadError as exc:
        reason = exc.reason if case is None else f"case {case}: {exc.reason}"
        raise WorkloadError(reason, str(path)) from None


class MoEOffloadEnv(gym.Env):
    """
    ## Description

    Serving a mixture-of-experts model whose experts do not all fit in GPU memory: a cache of
    ``capacity`` experts lives on the GPU, the rest in host memory, as in Mixtral-offloading,
    MoE-Infinity and HybriMoE. Tokens are decoded one step at a time (``batch`` sequences per
    step, needing the union of their experts), layer by layer. Before each MoE layer the agent
    may prefetch an expert; when the layer's router picks an expert that is not cached (a miss)
    and the cache is full, the agent picks the cached expert to evict, or, with ``cpu_offload``,
    runs the missed expert on the CPU. Copies queue on one host-to-device copy engine priced by
    the GPU cost table's ``copy_h2d``; prefetched copies overlap with compute; a layer waits for
    the experts it needs. Expert MLPs are priced from the table's GEMMs (3 per expert for the
    tokens routed to it), attention and the dense parts from ``dense_calls``/``attention_calls``
    (see ``schedgym.envs.moe.core`` for the exact time model). Belady's MIN is the hit-rate bound.

    ## Action Space

    ``Discrete(max_entities + 1)``. Experts are numbered ``g = layer * n_experts + expert``;
    action ``g`` names expert ``g``, action ``max_entities`` is *skip*. Three kinds of decision,
    told apart by the ``phase_*`` globals:

    * *prefetch* (before each layer, ``prefetch`` times): ``g`` not in GPU memory starts copying
      it; skip prefetches nothing more before this layer;
    * *prefetch_evict* (a prefetch into a full cache): ``g`` in GPU memory is evicted for it;
      skip cancels the prefetch;
    * *evict* (a miss into a full cache): ``g`` in GPU memory and not needed by this layer is
      evicted; skip computes the miss on the CPU (only with ``cpu_offload``).

    ``action_masks()`` gives exactly these (never all False while the episode runs); any other
    action raises ``schedgym.errors.IllegalActionError`` (a ``ValueError``) saying why.

    ## Observation Space

    The shared entity layout (``schedgym.envs.spaces.EntityLayout``), a ``Dict`` of:

    * ``entities`` ``(max_entities, 8)`` float32, one row per expert: resident, copy time left,
      needed by this layer, is this decision's expert, layers until its layer runs, recency,
      uses per step, profiled share;
    * ``entity_mask`` ``(max_entities,)`` int8: 1 for the model's experts;
    * ``globals`` ``(15,)`` float32: phase (3 one-hot), layer, progress, capacity, free slots,
      copy-engine backlog, the layer's other work, one expert's GPU and CPU time (all times in
      units of one expert copy), CPU offload on, misses left, prefetches left, experts needed per
      layer.

    ## Rewards

    ``-(stall added by the step) / (seconds of one expert copy)``: the return is minus the
    episode's stall in units of expert copies. Stall is the time a layer takes beyond what it
    would with every needed expert in GPU memory.

    ## Starting State

    The case named by ``reset(options={"case": ...})``, else the constructor's ``case``, else
    ``"tinymoe-code"``: 512 tokens of routing the tiny MoE (trained here on Python sources)
    recorded on held-out code, priced as Mixtral-8x7B experts over its 4 layers on an H100, half
    of the 32 experts cached. The cache starts full with the lowest-numbered experts of every
    layer in equal shares. The seed picks the window of a recorded trace (or draws a synthetic
    one); same seed and case, same episode.

    ## Episode End

    Terminated after the last layer of the last step; never truncated. The last step's ``info``
    holds ``metrics`` (hit rate, hits, accesses, demand loads, prefetches, prefetch hits, CPU
    experts, bytes copied, stall, stall per token, time, tokens, tokens/s) and ``record`` (the
    routing, the costs charged, the starting cache and every load, eviction, prefetch and CPU
    choice), which `validate` replays.

    ## Arguments

    * ``case`` (``None``: ``"tinymoe-code"``): ``tinymoe-code``, ``tinymoe-docs``, ``mixtral``,
      ``olmoe``, ``qwen``, ``deepseek`` (see ``CASES``), or a routing file (``.jsonl``, ``.npy``,
      ``.npz``; ``file:PATH`` also works);
    * ``model`` (the case's): a name in ``schedgym.envs.hardware.MODELS``;
    * ``bits`` (``None``: fp16): bits per expert weight (8, 4, 2 scale the bytes copied);
    * ``capacity`` (``None``): cached experts; else ``cache_fraction`` of all routed experts;
    * ``cache_fraction`` (``None``: the case's);
    * ``batch`` (1): sequences decoded together;
    * ``tokens`` (``None``: the case's, a file's all): routed tokens per episode (all lanes
      together); a recorded trace or file is never replayed, so more than it holds is refused;
    * ``prefetch`` (1): prefetch decisions before each layer (0: none);
    * ``cpu_offload`` (False): allow computing a miss on the CPU;
    * ``gpu`` (``"h100"``) and ``cpu`` (``"cpu"``): cost tables (names or paths);
    * ``prompt_tokens`` (512): KV length before the first decoded token;
    * ``max_entities`` (``None``: 1664, the largest preset): entity rows.

    ``get_state()``/``set_state(state)`` snapshot and restore an episode; the simulator core is
    ``env.core`` (`schedgym.envs.moe.core.MoECore`).

    ## Version History

    * v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        case: str | None = None,
        *,
        model: str | None = None,
        bits: int | None = None,
        capacity: int | None = None,
        cache_fraction: float | None = None,
        batch: int = 1,
        tokens: int | None = None,
        prefetch: int = 1,
        cpu_offload: bool = False,
        gpu: str = "h100",
        cpu: str = "cpu",
        prompt_tokens: int = 512,
        max_entities: int | None = None,
    ):
        if bits is not None and bits not in (2, 3, 4, 8, 16):
            raise WorkloadError(f"bits must be 2, 3, 4, 8 or 16, got {bits!r}")
        if cache_fraction is not None and not (
            isinstance(cache_fraction, int | float) and 0 < cache_fraction <= 1
        ):
            raise WorkloadError(f"cache_fraction must be in (0, 1], got {cache_fraction!r}")
        for name, value, least in (
            ("tokens", tokens, 1),
            ("capacity", capacity, 1),
            ("batch", batch, 1),
            ("prefetch", prefetch, 0),
            ("prompt_tokens", prompt_tokens, 0),
            ("max_entities", max_entities, 1),
        ):
            if value is None and name in ("tokens", "capacity", "max_entities"):
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
                raise WorkloadError(f"{name} must be an integer >= {least}, got {value!r}")
        if not isinstance(cpu_offload, bool):
            raise WorkloadError(f"cpu_offload must be true or false, got {cpu_offload!r}")
        if model is not None and not get_model(model).experts:
            moe = ", ".join(m.name for m in MODELS.values() if m.experts)
            raise WorkloadError(f"model {model!r} routes no experts; a mixture of experts: {moe}")
        self.default_case = case or DEFAULT_CASE
        self.settings = {
            "model": model,
            "bits": bits,
            "capacity": capacity,
            "cache_fraction": cache_fraction,
            "batch": batch,
            "tokens": tokens,
            "prefetch": prefetch,
            "cpu_offload": cpu_offload,
            "gpu": gpu,
            "cpu": cpu,
            "prompt_tokens": prompt_tokens,
            "max_entities": max_entities,
        }
        self.gpu_table = load_cost_table(gpu)
        self.cpu_table = load_cost_table(cpu) if cpu_offload else None
        self.layout = EntityLayout(
            max_entities=max_entities or DEFAULT_MAX_ENTITIES,
            n_features=len(EXPERT_FEATURES),
            n_globals=len(GLOBAL_FEATURES),
            n_special=1,
        )
        self.observation_space = self.layout.observation_space()
        self.action_space = self.layout.action_space()
        self.core: MoECore | None = None
        self._meta: dict[str, Any] = {}

    # --- building episodes -------------------------------------------------------------------

    def make_core(
        self,
        case: str | None,
        seed: int | None,
        *,
        capacity: int | None = None,
        prefetch: int | None = None,
        all_resident: bool = False,
    ) -> MoECore:
        """The simulator core of ``case`` for ``seed`` under this env's settings (``capacity``
        and ``prefetch`` override them; ``all_resident`` caches every expert)."""
        case = case or self.default_case
        seed = 0 if seed is None else int(seed)
        s = self.settings
        trace, preset = self._trace(case, seed)
        model = model_for_trace(trace, s["model"] or (preset.model if preset else None))
        episode = build_episode(trace, s["batch"], s["prompt_tokens"])
        costs = price_episode(episode, model, self.gpu_table, self.cpu_table, s["bits"])
        G = trace.n_layers * trace.n_experts
        if all_resident:
            capacity = G
        elif capacity is None:
            capacity = s["capacity"]
        if capacity is None:
            fraction = s["cache_fraction"] or (preset.cache_fraction if preset else 0.5)
            capacity = max(episode.max_needed, round(fraction * G))
        core = MoECore(
            episode,
            costs,
            int(capacity),
            prefetch=0 if all_resident else (s["prefetch"] if prefetch is None else prefetch),
            cpu_offload=s["cpu_offload"],
            n_slots=self.layout.max_entities,
        )
        core.meta = {
            "case": case,
            "seed": seed,
            "trace": trace.name,
            "source": trace.source,
            "model": model.name,
            "moe_layers": trace.n_layers,
            "bits": s["bits"],
            "gpu": self.gpu_table.name,
            "cpu": None if self.cpu_table is None else self.cpu_table.name,
            "all_resident": all_resident,
        }
        return core

    def _trace(self, case: str, seed: int) -> tuple[RoutingTrace, CasePreset | None]:
        preset = CASES.get(case)
        tokens = self.settings["tokens"]
        if preset is None:
            path = case.removeprefix("file:")
            if not Path(path).suffix:
                known = ", ".join(CASES)
                raise WorkloadError(f"unknown case {case!r}; known: {known}, or a routing file")
            model = self.settings["model"]
            m = get_model(model) if model else None
            trace = load_trace(
                path, n_experts=m.experts if m else None, top_k=m.top_k if m else None
            )
            if tokens is not None:
                trace = _window(trace, 0, tokens, path)
            return trace, None
        tokens = tokens or preset.tokens
        kind, _, name = preset.source.partition(":")
        if kind == "synth":
            return generate_routing(PROFILES[name], tokens, seed, calibration_tokens=tokens), preset
        trace = tinymoe_trace(name)
        first = int(np.random.default_rng(seed).integers(trace.n_seqs))
        return _window(trace, first, tokens, tinymoe_file(name), case), preset

    # --- Gymnasium API -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31))
        case = (options or {}).get("case") or self.default_case
        core = self.make_core(case, seed)
        if core.done:
            raise SchedgymError(
                f"case {case!r} needs no decision (every expert it uses stays cached and "
                "none is left to prefetch)"
            )
        self._use(core)
        return self._encode(), {"case": case, "trace": core.meta["trace"]}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        core = self._require_core()
        before = core.stall_s
        core.apply(action_index(action))
        reward = -(core.stall_s - before) * self._inv_copy
        info: dict[str, Any] = {}
        if core.done:
            info["metrics"] = core.metrics()
            info["record"] = self.make_record(core)
        return self._encode(), float(reward), core.done, False, info

    def action_masks(self) -> np.ndarray:
        """True for the legal actions (MaskablePPO's hook)."""
        return self._require_core().action_masks()

    # --- snapshots -----------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A cheap snapshot of the episode, for search agents."""
        core = self._require_core()
        return {"core": core, "state": core.get_state()}

    def set_state(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        """Restore a `get_state` snapshot (of any episode of this env); return its observation."""
        self._use(state["core"])
        self.core.set_state(state["state"])
        return self._encode()

    # --- records -------------------------------------------------------------------------------

    def make_record(self, core: MoECore) -> dict[str, Any]:
        """The JSON-serialisable episode record `validate` replays."""
        ep, costs = core.episode, core.costs
        return {
            "format": RECORD_FORMAT,
            **core.meta,
            "settings": dict(self.settings),
            "n_layers": core.n_layers,
            "n_experts": core.n_experts,
            "capacity": core.capacity,
            "batch": ep.batch,
            "prefetch": core.prefetch,
            "cpu_offload": core.cpu_offload,
            "expert_bytes": costs.expert_bytes,
            "costs": {
                "copy_s": costs.copy_s,
                "gpu_s": costs.gpu_s.tolist(),
                "cpu_s": None if costs.cpu_s is None else costs.cpu_s.tolist(),
                "pre_s": costs.pre_s.tolist(),
            },
            "routing": ep.trace.experts.tolist(),
            "steps": ep.step_tokens.tolist(),
            "initial": core.initial.tolist(),
            "events": [list(e) for e in core.events()],
        }

    # --- internals -----------------------------------------------------------------------------

    def _require_core(self) -> MoECore:
        if self.core is None:
            raise SchedgymError("call reset() before step()")
        return self.core

    def _use(self, core: MoECore) -> None:
        self.core = core
        self._inv_copy = 1.0 / core.costs.copy_s
        self._layer_of = np.repeat(np.arange(core.n_layers), core.n_experts)

    def _encode(self) -> dict[str, np.ndarray]:
        core = self._require_core()
        obs = self.layout.empty_observation()
        G, L = core.n_global, core.n_layers
        inv = self._inv_copy
        rows = obs["entities"]
        rows[:G, 0] = core.resident
        rows[:G, 1] = np.maximum(core.ready - core.clock, 0.0) * inv
        rows[:G, 2] = core.needed
        if core.pending >= 0:
            rows[core.pending, 3] = 1.0
        rows[:G, 4] = ((self._layer_of - core.layer) % L) / L
        used = core.last_use >= 0
        rows[:G, 5] = np.where(used, L / (L + core.visit - core.last_use), 0.0)
        steps = max(1, core.visit // L)
        rows[:G, 6] = core.use_count / (steps * core.episode.batch)
        rows[:G, 7] = core.profile
        obs["entity_mask"][:G] = 1
        g = obs["globals"]
        if not core.done:
            g[core.phase] = 1.0
        ep, costs = core.episode, core.costs
        g[3] = core.layer / L
        g[4] = core.visit / ep.n_visits
        g[5] = core.capacity / G
        g[6] = (core.capacity - core.n_resident) / core.capacity
        g[7] = max(0.0, core.engine_free - core.clock) * inv
        g[8] = costs.pre_s[min(core.step, ep.n_steps - 1)] * inv
        g[9] = costs.gpu_s[1] * inv
        g[10] = float(core.cpu_offload)
        g[11] = 0.0 if costs.cpu_s is None else costs.cpu_s[1] * inv
        g[12] = core.misses_left / ep.max_needed
        if core.phase in (PREFETCH, PREFETCH_EVICT):
            g[13] = core.prefetch_left / max(1, core.prefetch)
        g[14] = ep.max_needed / core.n_experts
        return obs


# --- the fast path and the hit-rate curve -------------------------------------------------------


def simulate(
    policy: Any,
    case: str | None = None,
    seed: int = 0,
    *,
    capacity: int | None = None,
    **env_kwargs: Any,
) -> tuple[dict, dict]:
    """Run ``policy`` (a name or object) on ``case`` without observations: (metrics, record)."""
    from schedgym.policy import resolve_policy

    if capacity is not None:  # a solver builds its own core from the env's settings
        env_kwargs = {**env_kwargs, "capacity": capacity}
    env = MoEOffloadEnv(case, **env_kwargs)
    if isinstance(policy, str):
        policy = resolve_policy("moe", policy, seed=seed)
    solve = getattr(policy, "solve", None)
    if callable(solve):
        return solve(env, case, seed)
    core = env.make_core(case, seed)
    run_policy(core, policy)
    return core.metrics(), env.make_record(core)


def hit_rate_curve(
    policies: list[str],
    case: str | None = None,
    seed: int = 0,
    capacities: list[int] | None = None,
    **env_kwargs: Any,
) -> dict[str, list[tuple[int, float, float]]]:
    """``{policy: [(capacity, hit_rate, stall_per_token_s), ...]}`` over cache sizes, from the
    fewest experts a layer needs up to nine tenths of all experts (8 sizes) unless given."""
    env = MoEOffloadEnv(case, **env_kwargs)
    probe = env.make_core(case, seed, all_resident=True)
    if capacities is None:
        lo, hi = probe.episode.max_needed, max(probe.episode.max_needed, int(0.9 * probe.n_global))
        capacities = sorted({int(round(c)) for c in np.linspace(lo, hi, 8)})
    curves: dict[str, list[tuple[int, float, float]]] = {}
    for name in policies:
        points = []
        for c in capacities:
            metrics, _ = simulate(name, case, seed, capacity=c, **env_kwargs)
            if "hit_rate" not in metrics:
                raise SchedgymError(f"{name} has no hit rate to draw against cache size")
            points.append((c, metrics["hit_rate"], metrics["stall_per_token_s"]))
        curves[name] = points
    return curves


def plot_hit_rate_curve(
    policies: list[str] | str,
    path: str | Path,
    case: str | None = None,
    seed: int = 0,
    capacities: list[int] | None = None,
    **env_kwargs: Any,
) -> dict[str, list[tuple[int, float, float]]]:
    """Write a PNG of hit rate (left) and stall per token (right) against cache size for each
    policy, running it at several cache sizes on the fast path; return the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(policies, str):
        policies = [policies]
    curves = hit_rate_curve(policies, case, seed, capacities, **env_kwargs)
    fig, (ax_hit, ax_stall) = plt.subplots(1, 2, figsize=(11, 4))
    for name, points in curves.items():
        c, hit, stall = zip(*points, strict=True)
        style = "--" if name.startswith(("oracle:", "bound:")) else "-"
        ax_hit.plot(c, hit, style, marker="o", label=name)
        ax_stall.plot(c, np.array(stall) * 1e3, style, marker="o", label=name)
    ax_hit.set(
        xlabel="experts cached in GPU memory",
        ylabel="hit rate",
        ylim=(0, 1.02),
        title=f"hit rate vs cache size: {case or DEFAULT_CASE}",
    )
    ax_stall.set(
        xlabel="experts cached in GPU memory",
        ylabel="stall per token (ms)",
        title="stall per token",
    )
    for ax in (ax_hit, ax_stall):
        ax.grid(alpha=0.3)
    ax_hit.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return curves
