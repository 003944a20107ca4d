"""Baselines for `schedgym/MoEOffload-v0`: expert caching and prefetching heuristics, and bounds.

Every policy reads the simulator core (``env.core``; the fast path `run_policy` passes the core
itself). Heuristics see what a serving system sees: what is resident, when each expert was last
used and how often, the routing of the layers already run, and offline profiling (the trace's
calibration routing). The oracle reads the future routing.

* ``heuristic:lru-layer``: LRU within the missed expert's layer, as Mixtral-offloading's
  per-layer caches (Eliseev & Mazur, 2023); global LRU when that layer has no candidate.
* ``heuristic:lru``: global LRU over all cached experts.
* ``heuristic:lfu``: least frequently used so far (ties: least recently).
* ``heuristic:fiddler``: Fiddler's execution rule (Kamahori et al., ICLR 2025, arXiv 2402.07033,
  Algorithm 1; its code's ``latency_cpu * tokens`` against ``latency_gpu``): with CPU offload, a
  miss runs on the CPU when the CPU's time for its tokens is below the copy plus the GPU's time,
  both from the env's cost tables; otherwise it is loaded, evicting as ``heuristic:lru-layer``.
* ``heuristic:static``: pin the experts most often chosen in offline profiling (calibration
  routing), prefetching them in; the remaining slots run LRU.
* ``heuristic:moe-infinity``: activation-aware caching and prefetching in the manner of
  MoE-Infinity (Xue et al., 2024): per-sequence expert activation matrices (EAM), prediction from
  the most similar EAM of a finished sequence, priority = activation probability x layer
  proximity x global activation frequency (its ``priority_score``), for both prefetch (highest
  first, up to the visit's prefetch budget) and eviction (lowest first).
* ``heuristic:next-use``: Belady's rule on predicted next uses, the "follow the predictions"
  of learning-augmented caching (Lykouris & Vassilvitskii, ICML 2018) with a count-based
  predictor: a `RoutingModel` fitted on the trace's calibration routing (offline profiling, as
  ``heuristic:static``) predicts from the routing revealed so far whether each expert is needed
  the next time its layer runs, and the expert with the latest expected next use is evicted.
  It never prefetches. ``nextuse:PATH`` (`schedgym.agents.nextuse`) learns the same decision.
* ``oracle:belady``: Belady's MIN (evict the expert needed furthest in the future), prefetching
  the expert needed soonest whenever it is needed before the expert it would evict, and with
  CPU offload computing a miss on the CPU when it is needed later than every candidate victim.
  An oracle, not a bound: it reads the future routing but does not minimise stall, and with
  copies that take time its hit rate is not the highest possible either. What it does bound,
  without CPU offload and run as demand paging (``prefetch=0``): no policy, prefetching or not,
  copies fewer experts over the episode (MIN minimises the loads of any schedule; with
  prefetches on, its own early copies can add loads), and no policy has a higher hit rate
  (``tests/test_moe.py`` checks both).
* ``oracle:belady-demand``: Belady's MIN as demand paging (Belady 1966): ``oracle:belady``
  without its prefetches, so, without CPU offload, no policy copies fewer experts (below).
  Neither oracle bounds stall, and which stalls less depends on the case: on the tiny MoE's
  and Mixtral's suites ``oracle:belady``'s earliest-opportunity prefetches evict experts MIN
  would keep and stall more than several heuristics, while on OLMoE's they pay (docs/moe.md).
* ``bound:infinite``: every expert in GPU memory (``solve``): the stall-free ceiling.
* ``bound:min-copies``: a lower bound on every policy's stall without CPU offload (``solve``):
  Belady's MIN gives the fewest copies that can serve the first ``v`` visits, for every ``v``;
  the one copy engine moves them one after another from time 0, so visit ``v`` cannot end before
  they have landed and one expert has computed, and its elapsed time beyond the visits' reference
  (all-resident) times is stall (`min_copies_stall`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from schedgym.envs.moe.core import EVICT, PREFETCH, MoECore
from schedgym.envs.moe.record import bound_metrics
from schedgym.errors import SchedgymError
from schedgym.policy import unwrap_env

_NEVER = np.iinfo(np.int64).max // 4


def _core_of(env: Any) -> MoECore:
    # the fast path passes the core itself; a Gymnasium env may come wrapped (gym.make)
    return getattr(unwrap_env(env), "core", env)


class _CachePolicy:
    """Dispatches on the core's phase; subclasses rank victims, and prefetch if they wish."""

    name = "heuristic:base"
    kind = "heuristic"

    def reset(self, env: Any) -> None:
        self.core = _core_of(env)

    def act(self, env: Any, obs: Any) -> int:
        core = self.core
        if core.phase == EVICT:
            candidates = core.resident & ~core.needed
            if not candidates.any():
                # A cache smaller than the layer's needs, all of them resident: nothing may be
                # evicted, and (cpu_offload being on, as the core requires then) the miss runs
                # on the CPU, the one legal action.
                return core.skip
            return self.evict(core, candidates)
        if core.phase == PREFETCH:
            return self.prefetch(core)
        return self.prefetch_victim(core)

    def evict(self, core: MoECore, candidates: np.ndarray) -> int:
        raise NotImplementedError

    def prefetch(self, core: MoECore) -> int:
        return core.skip

    def prefetch_victim(self, core: MoECore) -> int:
        return core.skip


class LRU(_CachePolicy):
    name = "heuristic:lru"

    def evict(self, core: MoECore, candidates: np.ndarray) -> int:
        return int(np.where(candidates, core.last_use, _NEVER).argmin())


class LRUPerLayer(_CachePolicy):
    name = "heuristic:lru-layer"

    def evict(self, core: MoECore, candidates: np.ndarray) -> int:
        E = core.n_experts
        lo = core.pending // E * E
        own = candidates[lo : lo + E]
        if own.any():
            return lo + int(np.where(own, core.last_use[lo : lo + E], _NEVER).argmin())
        return int(np.where(candidates, core.last_use, _NEVER).argmin())


class Fiddler(LRUPerLayer):
    """Fiddler's rule for a missed expert: compute it where it finishes sooner, the CPU (its
    tokens' CPU time) or the GPU (one copy plus the GPU time), queueing ignored as Fiddler's
    latency model ignores it; loads evict as ``heuristic:lru-layer``. Without CPU offload it
    is ``heuristic:lru-layer``."""

    name = "heuristic:fiddler"

    def evict(self, core: MoECore, candidates: np.ndarray) -> int:
        if core.cpu_offload:
            ep, costs = core.episode, core.costs
            at = ep.need_ptr[core.visit] + core.needs(core.visit).index(core.pending)
            n = int(ep.need_cnt[at])
            if costs.cpu_s[n] < costs.copy_s + costs.gpu_s[n]:
                return core.skip
        return super().evict(core, candidates)


class LFU(_CachePolicy):
    name = "heuristic:lfu"

    def evict(self, core: MoECore, candidates: np.ndarray) -> int:
        key = core.use_count * (core.episode.n_visits + 2) + core.last_use + 1
        return int(np.where(candidates, key, _NEVER).argmin())


class StaticPinning(_CachePolicy):
    """Pin the ``capacity - max_needed`` experts profiling chose most often; LRU in the rest."""

    name = "heuristic:static"

    def reset(self, env: Any) -> None:
        super().reset(env)
        core = self.core
        trace = core.episode.trace
        if trace.calibration is None:
            raise SchedgymError(
                f"{self.name} pins experts from offline profiling, and trace {trace.name!r} has "
                "no calibration routing"
            )
        counts = trace.activation_counts(calibration=True).ravel()
        n_pin = max(0, core.capacity - core.episode.max_needed)
        order = np.argsort(-counts, kind="stable")[:n_pin]
        self.pinned = np.zeros(core.n_global, bool)
        self.pinned[order[counts[order] > 0]] = True

    def evict(self, core: MoECore, candidates: np.ndarray) -> int:
        free = candidates & ~self.pinned
        pool = free if free.any() else candidates
        return int(np.where(pool, core.last_use, _NEVER).argmin())

    def prefetch(self, core: MoECore) -> int:
        missing = self.pinned & ~core.resident
        if not missing.any():
            return core.skip
        if core.n_resident >= core.capacity and not (core.resident & ~self.pinned).any():
            return core.skip
        return int(missing.argmax())

    def prefetch_victim(self, core: MoECore) -> int:
        return self.evict(core, core.resident)


class MoEInfinity(_CachePolicy):
    """Activation-aware caching and prefetching (see the module docstring).

    Each lane's running sequence accumulates its EAM (``counts[layer, expert]`` of its tokens so
    far); finished sequences' EAMs are kept as activation ratios (the latest ``memory``). An
    expert's predicted activation probability is the mean of the running sequences' own ratio
    and the ratio in the stored EAM most cosine-similar to theirs; its priority is that times
    the layer proximity ``1 - d / (L + 1)``, ``d`` the layers until its layer runs again, times
    the expert's share of every activation seen so far plus 1e-6 (the frequency term of
    ``priority_score`` in MoE-Infinity's ``moe_infinity/memory/expert_priority_score.py``, which
    multiplies the predicted EAM, the layer decay and the global expert frequency). It prefetches
    the highest-priority experts likelier than ``threshold`` to be needed, as many as the visit's
    prefetch budget allows (its demand copies go ahead of queued prefetches), each evicting the
    lowest-priority resident expert when that ranks below it; a miss evicts the lowest-priority
    candidate.
    """

    name = "heuristic:moe-infinity"

    def __init__(self, memory: int = 128, threshold: float = 0.5):
        self.memory, self.threshold = memory, threshold

    def reset(self, env: Any) -> None:
        super().reset(env)
        core = self.core
        ep = core.episode
        L, E = core.n_layers, core.n_experts
        self.lane_eam = np.zeros((ep.batch, L * E))
        self.lane_tokens = np.zeros(ep.batch)
        self.library = np.zeros((0, L * E))  # activation ratios of finished sequences
        self.unit = np.zeros((0, L * E))  # the same, L2-normalised for cosine similarity
        self.seen_step = 0  # steps whose routing is folded into the EAMs
        tokens = ep.step_tokens
        self.starts_seq = np.zeros(tokens.shape, bool)
        valid = tokens >= 0
        self.starts_seq[valid] = np.isin(tokens[valid], ep.trace.seq_starts)
        self.offsets = (np.arange(L) * E)[:, None]

    def _update(self, core: MoECore) -> None:
        """Fold the routing of steps whose every layer has run into the lanes' EAMs."""
        ep = core.episode
        done_steps = core.visit // core.n_layers
        for s in range(self.seen_step, done_steps):
            for b, tok in enumerate(ep.step_tokens[s].tolist()):
                if tok < 0:
                    continue
                if self.starts_seq[s, b] and self.lane_tokens[b]:
                    self._store(self.lane_eam[b] / self.lane_tokens[b])
                    self.lane_eam[b] = 0.0
                    self.lane_tokens[b] = 0.0
                g = (ep.trace.experts[tok].astype(np.int64) + self.offsets).ravel()
                self.lane_eam[b, g] += 1.0
                self.lane_tokens[b] += 1.0
        self.seen_step = max(self.seen_step, done_steps)

    def _store(self, ratio: np.ndarray) -> None:
        keep = self.memory - 1
        self.library = np.vstack([self.library[-keep:], ratio[None, :]])
        self.unit = np.vstack([self.unit[-keep:], (ratio / np.linalg.norm(ratio))[None, :]])

    def _probability(self, core: MoECore) -> np.ndarray:
        self._update(core)
        current = self.lane_eam.sum(axis=0)
        own = current / max(1.0, self.lane_tokens.sum())
        if not self.library.shape[0] or not current.any():
            return own
        best = int((self.unit @ current).argmax())
        return 0.5 * (own + self.library[best])

    def _priority(self, core: MoECore, prob: np.ndarray, next_layer: int) -> np.ndarray:
        L = core.n_layers
        distance = (np.arange(L) - next_layer) % L  # layers until each layer runs again
        proximity = 1.0 - distance / (L + 1.0)
        uses = core.use_count
        frequency = uses / max(1, int(uses.sum())) + 1e-6
        return (prob.reshape(L, -1) * proximity[:, None]).ravel() * frequency

    def evict(self, core: MoECore, candidates: np.ndarray) -> int:
        # the current layer's other experts come back only after every other layer
        priority = self._priority(core, self._probability(core), core.layer + 1)
        return int(np.where(candidates, priority, np.inf).argmin())

    def prefetch(self, core: MoECore) -> int:
        prob = self._probability(core)
        priority = self._priority(core, prob, core.layer)
        gain = np.where(core.resident | (prob < self.threshold), -np.inf, priority)
        target = int(gain.argmax())
        if gain[target] == -np.inf:
            return core.skip
        self._victim = int(np.where(core.resident, priority, np.inf).argmin())
        if core.n_resident >= core.capacity and priority[self._victim] >= gain[target]:
            return core.skip
        return target

    def prefetch_victim(self, core: MoECore) -> int:
        return self._victim


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1.0 - 1e-4)
    return np.log(p / (1.0 - p))


@dataclass(frozen=True)
class RoutingModel:
    """Per-layer routing statistics of a trace's tokens: ``prior[j, e]`` (shape ``[L, E]``), the
    share of tokens that choose expert ``e`` at layer ``j``; ``repeat[j, a, b]`` (``[L, E, E]``),
    the probability that a token chooses ``b`` at layer ``j`` when the previous token of its
    sequence chose ``a`` there; ``cross[j, a, b]``, that it chooses ``b`` at layer ``j`` when it
    chose ``a`` at layer ``j - 1`` (``cross[0]`` unused). Counts are smoothed towards the prior
    with ``alpha`` pseudo-tokens.

    Consecutive tokens' repeated choices are Mixtral's Table 5 (Jiang et al., 2024); choices of
    adjacent layers predicting each other are what Pre-gated MoE and AdapMoE prefetch on."""

    prior: np.ndarray
    repeat: np.ndarray
    cross: np.ndarray

    @classmethod
    def fit(
        cls, routing: np.ndarray, n_experts: int, starts: np.ndarray, alpha: float = 1.0
    ) -> RoutingModel:
        """From ``routing[token, layer, rank]`` (int) whose sequences begin at ``starts``."""
        T, L, k = routing.shape
        chose = np.zeros((T, L, n_experts))
        for r in range(k):
            chose[np.arange(T)[:, None], np.arange(L)[None, :], routing[:, :, r]] = 1.0
        prior = chose.mean(axis=0)
        follows = np.ones(T, bool)
        follows[np.asarray(starts)] = False
        t = np.flatnonzero(follows)
        repeat = np.zeros((L, n_experts, n_experts))
        cross = np.zeros((L, n_experts, n_experts))
        for j in range(L):
            for table, before, after in (
                (repeat, chose[t - 1, j], chose[t, j]),
                (cross, chose[:, j - 1] if j else None, chose[:, j]),
            ):
                if before is not None:
                    table[j] = (before.T @ after + alpha * prior[j]) / (
                        before.sum(axis=0)[:, None] + alpha
                    )
        return cls(prior, repeat, cross)

    def next_use_probability(
        self, current: np.ndarray, known: int, previous: np.ndarray | None
    ) -> np.ndarray:
        """``p[j, e]``: the probability expert ``(j, e)`` is needed the next time layer ``j``
        runs, given ``current[j, e]`` (1 where the running step chose it, for its layers up to
        ``known``) and ``previous`` (the step before, or None when a sequence starts).

        Log-odds add up naive-Bayes fashion: the prior's, plus each observed choice's shift
        (``repeat`` from the previous step's same layer, ``cross`` from the layer before,
        itself the prediction when not yet known)."""
        L = self.prior.shape[0]
        base = _logit(self.prior)
        p = np.zeros_like(self.prior)
        expected = None
        for j in range(L):
            z = base[j].copy()
            if j > known:  # still to run in this step
                if previous is not None:
                    z += ((_logit(self.repeat[j]) - base[j]) * previous[j][:, None]).sum(axis=0)
                if j:
                    before = current[j - 1] if j - 1 <= known else expected
                    z += ((_logit(self.cross[j]) - base[j]) * before[:, None]).sum(axis=0)
            else:  # runs next in the following step: its choice at this step repeats or not
                z += ((_logit(self.repeat[j]) - base[j]) * current[j][:, None]).sum(axis=0)
            p[j] = 1.0 / (1.0 + np.exp(-z))
            expected = p[j]
        return p


class PredictedNextUse(_CachePolicy):
    """Belady's rule on predicted next uses (see the module docstring): ``next_use`` gives each
    expert's visits until its layer runs again, ``ahead``, and the `RoutingModel`'s probability
    ``p`` that it is needed then; if not, it is taken to come back at its profiled rate, so its
    expected next use is ``ahead + (1 - p) * L / prior``, and the candidate with the latest is
    evicted. Never prefetches. Raises ``SchedgymError`` at `reset` for a trace without
    calibration routing."""

    name = "heuristic:next-use"

    def reset(self, env: Any) -> None:
        super().reset(env)
        core = self.core
        ep, trace = core.episode, core.episode.trace
        if trace.calibration is None:
            raise SchedgymError(
                f"{self.name} fits its routing model on offline profiling, and trace "
                f"{trace.name!r} has no calibration routing"
            )
        self.routing = RoutingModel.fit(trace.calibration, trace.n_experts, np.array([0]))
        steps = ep.step_tokens
        active = steps >= 0
        starts = np.zeros(steps.shape, bool)
        starts[active] = np.isin(steps[active], trace.seq_starts)
        # a step where every decoding lane begins a sequence: nothing before it predicts it
        self.fresh = (starts | ~active).all(axis=1)
        self.layer_of = np.repeat(np.arange(core.n_layers), core.n_experts)

    def step_use(self, core: MoECore, step: int, layers: int) -> np.ndarray:
        """``[L, E]``: 1 where step ``step`` needed the expert, over its first ``layers``."""
        use = np.zeros(core.n_global)
        L = core.n_layers
        for v in range(step * L, step * L + layers):
            use[core.needs(v)] = 1.0
        return use.reshape(L, -1)

    def next_use(self, core: MoECore) -> tuple[np.ndarray, np.ndarray]:
        """``(ahead, p)``, each ``[n_global]``, from the routing revealed so far."""
        L, s, layer = core.n_layers, core.step, core.layer
        known = layer if core.phase == EVICT else layer - 1
        current = self.step_use(core, s, known + 1)
        previous = None if self.fresh[s] or s == 0 else self.step_use(core, s - 1, L)
        p = self.routing.next_use_probability(current, known, previous).ravel()
        return (self.layer_of - layer - 1) % L + 1, p

    def evict(self, core: MoECore, candidates: np.ndarray) -> int:
        ahead, p = self.next_use(core)
        rate = np.maximum(self.routing.prior.ravel(), 1e-3)
        expected = ahead + (1.0 - p) * core.n_layers / rate
        return int(np.where(candidates, expected, -np.inf).argmax())


class Belady(_CachePolicy):
    """Belady's MIN with prefetching at the earliest opportunity, and bypass (see the module
    docstring): the fewest copies for the residency it keeps, not the least stall, which
    ``oracle:belady-demand`` beats where its prefetches evict experts needed sooner."""

    name = "oracle:belady"
    kind = "oracle"

    def reset(self, env: Any) -> None:
        super().reset(env)
        core = self.core
        ep = core.episode
        ids = ep.need_ids.astype(np.int64)
        visit = np.repeat(np.arange(ep.n_visits), np.diff(ep.need_ptr))
        order = np.lexsort((visit, ids))
        nxt = np.full(ids.size, _NEVER, np.int64)
        same = ids[order][1:] == ids[order][:-1]
        nxt[order[:-1][same]] = visit[order][1:][same]
        self.after = nxt  # per occurrence: the next visit needing the same expert
        self.next_use = np.full(core.n_global, _NEVER, np.int64)
        first = order[np.r_[True, ~same]]
        self.next_use[ids[first]] = visit[first]
        self.synced = 0  # visits whose occurrences have moved next_use past them

    def _sync(self, core: MoECore) -> None:
        if self.synced < core.visit:
            ep = core.episode
            lo, hi = ep.need_ptr[self.synced], ep.need_ptr[core.visit]
            # an expert needed by several passed visits takes its last occurrence's next use
            ids = ep.need_ids[lo:hi][::-1]
            _, last = np.unique(ids, return_index=True)
            self.next_use[ids[last]] = self.after[lo:hi][::-1][last]
            self.synced = core.visit

    def evict(self, core: MoECore, candidates: np.ndarray) -> int:
        self._sync(core)
        key = np.where(candidates, self.next_use, -1)
        victim = int(key.argmax())
        if core.cpu_offload:
            ep = core.episode
            lo = ep.need_ptr[core.visit]
            at = lo + core.needs(core.visit).index(core.pending)
            if self.after[at] >= key[victim]:
                return core.skip
        return victim

    def prefetch(self, core: MoECore) -> int:
        self._sync(core)
        soon = np.where(core.resident, _NEVER, self.next_use)
        target = int(soon.argmin())
        if soon[target] >= _NEVER:
            return core.skip
        if core.n_resident >= core.capacity:
            victim = int(np.where(core.resident, self.next_use, -1).argmax())
            if self.next_use[victim] <= soon[target]:
                return core.skip
        return target

    def prefetch_victim(self, core: MoECore) -> int:
        self._sync(core)
        return int(np.where(core.resident, self.next_use, -1).argmax())


class BeladyDemand(Belady):
    """Belady's MIN as demand paging (see the module docstring): ``oracle:belady``'s evictions
    and CPU bypass, never a prefetch."""

    name = "oracle:belady-demand"

    def prefetch(self, core: MoECore) -> int:
        return core.skip


class InfiniteCache:
    """Every expert in GPU memory: no miss, no stall (the throughput ceiling)."""

    name = "bound:infinite"
    kind = "bound"

    def reset(self, env: Any) -> None:
        """Nothing to prepare: `solve` runs the whole episode."""

    def act(self, env: Any, obs: Any) -> int:
        raise SchedgymError(f"{self.name} is a solver: run it through solve()")

    def solve(self, env: Any, case: str | None, seed: int) -> tuple[dict, dict]:
        env = unwrap_env(env)
        core = env.make_core(case, seed, all_resident=True)
        return core.metrics(), env.make_record(core)


def min_copies(core: MoECore) -> np.ndarray:
    """Belady's MIN (Belady 1966) over the episode's expert requests from ``core``'s initial
    cache: ``out[v]`` (shape ``[n_visits]``, int64) is the fewest copies any caching schedule of
    ``core.capacity`` experts makes to serve visits ``0..v``.

    Each visit's needed experts are requests in ascending id order. Serving a visit's set at once
    is a restriction of serving it one request at a time, and MIN's copy count on the whole
    sequence is also the minimum for each of its prefixes (its evictions are MIN's choices there
    too), so ``out`` bounds every schedule, prefetching ones included (a prefetch is a copy)."""
    ep = core.episode
    ids = ep.need_ids.astype(np.int64)
    far = ids.size  # beyond the last request: never needed again
    nxt = np.full(ids.size, far, np.int64)
    order = np.lexsort((np.arange(ids.size), ids))
    same = ids[order][1:] == ids[order][:-1]
    nxt[order[:-1][same]] = order[1:][same]
    first = dict(zip(ids[order][::-1].tolist(), order[::-1].tolist(), strict=True))
    next_use = {int(g): first.get(int(g), far) for g in core.initial}
    heap = [(-u, g) for g, u in next_use.items()]  # lazy max-heap on next use
    heapq.heapify(heap)
    out = np.zeros(ep.n_visits, np.int64)
    copies, ptr = 0, ep.need_ptr.tolist()
    for v in range(ep.n_visits):
        for i in range(ptr[v], ptr[v + 1]):
            g = int(ids[i])
            if g not in next_use:
                copies += 1
                if len(next_use) >= core.capacity:
                    while True:
                        u, victim = heapq.heappop(heap)
                        if next_use.get(victim) == -u:
                            break
                    del next_use[victim]
            next_use[g] = int(nxt[i])
            heapq.heappush(heap, (-next_use[g], g))
        out[v] = copies
    return out


def min_copies_stall(core: MoECore) -> tuple[float, int, float]:
    """``(stall_s, copies, reference_s)``: the stall no policy without CPU offload can go below
    on ``core``'s episode, MIN's copies (`min_copies`) and the episode's all-resident time.

    Visit ``v`` ends at ``sum(reference[:v+1]) + stall so far``, where ``reference`` is the
    all-resident time (pre-layer work plus each needed expert on the GPU, seconds). It cannot
    end before ``min_copies[v]`` copies of ``copy_s`` seconds have run one after another from
    time 0 and the expert of the last one has computed (at least the cheapest GPU expert time),
    so the stall is at least the largest such difference over ``v`` (0 if none is positive)."""
    ep, costs = core.episode, core.costs
    visit = np.repeat(np.arange(ep.n_visits), np.diff(ep.need_ptr))
    experts = np.bincount(visit, np.asarray(costs.gpu_s)[ep.need_cnt], minlength=ep.n_visits)
    reference = costs.pre_s[np.arange(ep.n_visits) // ep.n_layers] + experts
    copies = min_copies(core)
    fastest = float(np.min(costs.gpu_s[1:]))
    gap = np.where(copies > 0, copies * costs.copy_s + fastest - np.cumsum(reference), 0.0)
    stall = max(0.0, float(gap.max(initial=0.0)))
    return stall, int(copies[-1]) if copies.size else 0, float(reference.sum())


class MinCopiesBound(InfiniteCache):
    """MIN's copies through one copy engine: a lower bound on stall (`min_copies_stall`)."""

    name = "bound:min-copies"

    def solve(self, env: Any, case: str | None, seed: int) -> tuple[dict, dict]:
        env = unwrap_env(env)
        core = env.make_core(case, seed)
        if core.cpu_offload:
            raise SchedgymError(
                f"{self.name} holds without CPU offload only (a miss computed on the CPU copies "
                "nothing)"
            )
        stall, copies, reference = min_copies_stall(core)
        ep = core.episode
        record = env.make_record(core)
        record["bound"] = "min-copies"
        metrics = bound_metrics(
            stall, copies, reference, int(ep.active.sum()), ep.n_steps, core.costs.expert_bytes
        )
        return metrics, record


POLICIES: dict[str, Callable[[], Any]] = {
    "heuristic:lru-layer": LRUPerLayer,
    "heuristic:lru": LRU,
    "heuristic:lfu": LFU,
    "heuristic:fiddler": Fiddler,
    "heuristic:static": StaticPinning,
    "heuristic:moe-infinity": MoEInfinity,
    "heuristic:next-use": PredictedNextUse,
    "oracle:belady": Belady,
    "oracle:belady-demand": BeladyDemand,
    "bound:infinite": InfiniteCache,
    "bound:min-copies": MinCopiesBound,
}
