"""Baseline schedulers of `schedgym/Batching-v0`: what vLLM, Sarathi-Serve and the classic queue
disciplines do, as policies over the env's decisions.

Each policy is a step mode (token budget; decodes first or prefill-first) and an order over the
waiting queue. Admission is strict in that order, as vLLM's scheduler does: the step stops at the
first request in order that does not fit (KV blocks, sequence slots, budget; for
``heuristic:sarathi-guard`` also the running requests' pace, `GuardPolicy`). Policies see what a
real scheduler knows (prompt lengths, arrival times, SLO classes, the engine's state); only
the oracles ``oracle:srpt`` and ``oracle:sarathi-srpt`` read the true output lengths (they see
the future without being optimal: SRPT does not maximise goodput at SLO).

The decisions are the engine's `QueueScheduler` (vLLM's own scheduling); every policy can also
``drive(engine)`` the simulator core directly, without building observations, which is the fast
path of the speed benchmark. It makes the same decisions as ``act`` through the env, because the
env asks only when a choice exists and the core exposes the same state to both.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import numpy as np

from schedgym.envs.batching.core import DONE, RID, BatchingEngine, Order, QueueScheduler
from schedgym.envs.batching.env import BUDGET_PHASE
from schedgym.envs.hardware import Batch


def shortest_prompt(engine: BatchingEngine, rids: np.ndarray) -> np.ndarray:
    """SJF on the tokens still to prefill (prompt, plus produced tokens after a preemption)."""
    return engine.remaining_prompt(rids)


def earliest_deadline(engine: BatchingEngine, rids: np.ndarray) -> np.ndarray:
    """EDF: the TTFT deadline, or for a preempted request the deadline of its next token."""
    g = engine.generated[rids]
    last = engine.token_time[engine.token_offset[rids] + np.maximum(g - 1, 0)]
    return np.where(
        g > 0, last + engine.tbt_target[rids], engine.arrival[rids] + engine.ttft_target[rids]
    )


def moore_hodgson(processing: np.ndarray, deadline: np.ndarray, start: float) -> np.ndarray:
    """The jobs to give up so that as many as possible finish by their deadlines on one machine.

    Moore-Hodgson's algorithm (Moore, "An n job, one machine sequencing algorithm for minimizing
    the number of late jobs", Management Science 15(1), 1968, with Hodgson's simplification; it
    is optimal for ``1 || sum U_j``, Pinedo, "Scheduling", 2016, section 3.3): take the jobs in
    earliest-due-date order and, whenever the one just added would finish late, drop the
    longest job taken so far. The kept jobs, run in due-date order from ``start``, all finish
    in time.

    Args:
        processing: ``(n,)`` processing times (seconds), non-negative.
        deadline: ``(n,)`` due dates (seconds, the clock of ``start``).
        start: when the machine is free (seconds).

    Returns:
        ``(n,)`` bool, True for the jobs given up (a minimum number of them).
    """
    late = np.zeros(len(processing), bool)
    taken: list[tuple[float, int]] = []  # heap of (-processing, job)
    t = start
    for j in np.argsort(deadline, kind="stable"):
        t += float(processing[j])
        heapq.heappush(taken, (-float(processing[j]), int(j)))
        if t > deadline[j]:
            neg, longest = heapq.heappop(taken)
            t += neg
            late[longest] = True
    return late


def ttft_guard(engine: BatchingEngine, rids: np.ndarray) -> np.ndarray:
    """Earliest deadline first over the requests that can still make it; the rest last.

    SCORPIO's TTFT guard (Tang et al., "Serving the Right Requests at the Right Time for
    Heterogeneous SLOs in LLM Inference", 2025: least-deadline-first reordering, unattainable
    requests rejected). Nothing is rejected here, since every request must be served; an
    unattainable request waits behind the attainable ones, where its lateness costs no one.
    Unattainable: it has already missed its SLO, or `moore_hodgson` gives it up when each
    waiting request's prefill is priced at ``ceil(tokens to compute / step budget)`` steps of
    the last step's measured length (chunked prefill computes one budget of prompt a step).
    Deadlines as `earliest_deadline`.
    """
    deadline = earliest_deadline(engine, rids)
    steps = np.ceil(engine.remaining_prompt(rids) / max(engine.step_budget, 1))
    lost = engine.missed[rids].copy()
    live = np.flatnonzero(~lost)
    lost[live] = moore_hodgson(steps[live] * engine.last_step_s, deadline[live], engine.now)
    return deadline + 1e9 * lost  # lexicographic (lost, deadline): traces are hours, not 1e9 s


def shortest_remaining_output(engine: BatchingEngine, rids: np.ndarray) -> np.ndarray:
    """SRPT on the true remaining output length: an oracle no real scheduler has."""
    return engine.output[rids] - engine.generated[rids]


class QueuePolicy(QueueScheduler):
    """A `QueueScheduler` (one step mode, one admission order) as a schedgym policy."""

    def __init__(self, name: str, order: Order | None, *, kind: str = "heuristic", **kw: Any):
        super().__init__(order, **kw)
        self.name = name
        self.kind = kind

    def reset(self, env: Any) -> None:
        self.window = env.layout.max_entities

    def act(self, env: Any, obs: Any) -> int:
        engine = env.core
        if env.phase == BUDGET_PHASE:
            return env.budget_action(self.step_budget(engine), self.prefill_first)
        pos = self.choose_admission(engine)
        return env.run_action if pos is None else pos

    def play_out(self, env: Any) -> float:
        """The return of finishing ``env``'s episode with these decisions from its current
        state (a planning forecast's, `BatchingEnv.known_state`, up to its horizon): the env's
        rewards summed, ``-(requests newly missing their SLO) / N``, computed on the core
        without building observations (the planners' fast path, `SimulatorModel`). Leaves
        ``env`` at the end: callers restore a snapshot."""
        engine = env.core
        missed = engine.n_missed
        self.drive(engine)
        return -(engine.n_missed - missed) / engine.n


class GuardPolicy(QueuePolicy):
    """SCORPIO's two guards on Sarathi-Serve's stall-free steps (Tang et al., 2025).

    TTFT guard: admissions in `ttft_guard` order. TPOT guard: the request next in that order is
    admitted only while the running requests keep their pace: the step its admission makes (one
    decode for every running request beside the newcomer's first chunk, ``min(tokens to
    compute, budget left)``) must take at most the tightest TBT target among the running
    requests, priced by `BatchingEngine.step_time` (the cost model, what a profiled engine
    predicts; SCORPIO's predictor plays this part). Else the step runs without it. An empty
    batch always admits, so every step has work. No constant is tuned.
    """

    def __init__(self, name: str, budget: int = 512):
        super().__init__(name, ttft_guard, budget=budget)

    def choose_admission(self, engine: BatchingEngine) -> int | None:
        pos = super().choose_admission(engine)
        if pos is None or engine.n_run == 0:
            return pos
        rows = engine.running
        todo = int(engine.remaining_prompt(np.array([engine.waiting[pos]]))[0])
        chunk = min(todo, engine.budget_left)
        step = engine.step_time(Batch(((chunk, chunk),), (rows[:, DONE] + 1).tolist()))
        return pos if step <= engine.tbt_target[rows[:, RID]].min() else None


def _policy(name: str, order: Order | None, **kw: Any) -> Callable[[], QueuePolicy]:
    return lambda: QueuePolicy(name, order, **kw)


POLICIES: dict[str, Callable[[], QueuePolicy]] = {
    # vLLM v0's default scheduler: prefill-first, no chunking, FCFS, 4096-token batches
    "heuristic:fcfs": _policy("heuristic:fcfs", None, prefill_first=True),
    # vLLM v1's default: decodes first, chunked prefill, FCFS, the GPU's max_num_batched_tokens
    "heuristic:vllm-v1": _policy("heuristic:vllm-v1", None),
    # Sarathi-Serve: stall-free batching with a small chunk budget
    "heuristic:sarathi": _policy("heuristic:sarathi", None, budget=512),
    # other orders on vLLM v0's prefill-first steps (vLLM's priority scheduling)...
    "heuristic:sjf": _policy("heuristic:sjf", shortest_prompt, prefill_first=True),
    "heuristic:edf": _policy("heuristic:edf", earliest_deadline, prefill_first=True),
    "oracle:srpt": _policy(
        "oracle:srpt", shortest_remaining_output, prefill_first=True, kind="oracle"
    ),
    # ...and on Sarathi-Serve's stall-free steps
    "heuristic:sarathi-sjf": _policy("heuristic:sarathi-sjf", shortest_prompt, budget=512),
    "heuristic:sarathi-edf": _policy("heuristic:sarathi-edf", earliest_deadline, budget=512),
    # SCORPIO's guards: EDF over the requests that can still make it, admissions held while
    # the running requests' pace would suffer
    "heuristic:sarathi-guard": lambda: GuardPolicy("heuristic:sarathi-guard"),
    "oracle:sarathi-srpt": _policy(
        "oracle:sarathi-srpt", shortest_remaining_output, budget=512, kind="oracle"
    ),
}
