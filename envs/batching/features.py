"""Batching-v0's observation encoder, in numpy only.

One function, `encode`, turns what an LLM serving scheduler knows at a decision (the waiting
and running requests, free KV blocks, the step's token budget, the clock) into Batching-v0's
observation. The Gymnasium env (``env.py``) and the vLLM scheduler plugin
(``schedgym.plugins.vllm``) both call it, so a policy sees the same features in training and in
the serving engine. This module imports numpy and nothing else (no torch, SB3 or Gymnasium):
a serving process loads it cheaply. `ENCODER_VERSION` names the features' meaning; an exported
policy records it and the plugin refuses a policy encoded otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Bump when a feature's meaning, order or scale changes: exported policies are refused then.
ENCODER_VERSION = "batching-features-1"
# Output-length buckets a length predictor reports (tokens): [0,32), [32,64), ... [1024, inf).
LENGTH_BUCKETS = np.array([32, 64, 128, 256, 512, 1024])


def bucket_lengths(predicted: np.ndarray) -> np.ndarray:
    """Output lengths (tokens, ``(n,)`` int64) guessed from predicted buckets (``(n,)`` indices
    into `LENGTH_BUCKETS`, 0..6): each bucket's geometric middle, the two open buckets closed at
    16 and 2,048 tokens."""
    edges = np.r_[16, LENGTH_BUCKETS, 2048].astype(float)
    middle = np.sqrt(edges[:-1] * edges[1:])
    return np.round(middle[np.asarray(predicted)]).astype(np.int64)


ENTITY_FEATURES = (
    "prompt",  # prompt tokens / 4096
    "to_compute",  # tokens to prefill before the next token (prompt + produced) / 4096
    "produced",  # tokens produced before a preemption / 512
    "waited",  # (now - arrival) / TTFT target
    "slack",  # time to the next deadline (first token, or next token after a preemption) / target
    "ttft_target",  # log10 of the TTFT target in seconds
    "tbt_target",  # log10 of the TBT target in seconds
    "predicted_output",  # noisy predicted output-length bucket / top bucket
    "preempted",  # 1 if the request has produced tokens (waits for a recompute)
    "fits",  # 1 if it can be admitted now
    "chunk",  # prefill tokens it would get now / largest budget
    "chunk_blocks",  # KV blocks that chunk needs / free blocks (capped at 2)
)
GLOBAL_FEATURES = (
    "admitting",  # 0 while choosing the budget, 1 while admitting
    "budget",  # this step's budget / largest budget (0 before it is chosen)
    "budget_left",  # budget left / largest budget
    "prefill_first",  # 1 if this step pauses decodes
    "kv_free",  # free KV blocks (after this step's decodes) / capacity
    "running",  # running sequences / max_num_seqs
    "decoding",  # running sequences in their decode phase / max_num_seqs
    "prefill_left",  # prompt tokens the running requests still have to compute / largest budget
    "waiting",  # waiting requests / max_entities
    "waiting_tokens",  # prompt tokens waiting / KV capacity in tokens
    "arrival_rate",  # arrivals over the last 5 s / (5 s x the workload's mean rate)
    "tbt_slack",  # least (time to the next token's deadline) over running decodes / its target
    "context",  # mean KV length of the running requests / 4096
    "last_step",  # duration of the last step / the tightest TBT target
    "progress",  # finished requests / all requests
)


@dataclass(frozen=True)
class SchedulerView:
    """What a scheduler knows at one decision, as numpy arrays (times in seconds, lengths in
    tokens, KV in blocks).

    Waiting requests (``w_*``, shape ``(k,)``, queue order, only the first ``max_entities``):
    ``w_prompt`` prompt tokens, ``w_generated`` tokens produced before a preemption,
    ``w_arrival`` arrival time, ``w_ttft`` and ``w_tbt`` SLO targets, ``w_last_token`` time of
    the last token produced (read only where ``w_generated > 0``), ``w_predicted`` predicted
    output-length bucket (index into `LENGTH_BUCKETS`, 0..6), ``w_fits`` whether it can be
    admitted now. ``n_waiting`` and ``waiting_tokens`` count the whole queue (tokens still to
    compute).

    Running requests (``r_*``, shape ``(n,)``): ``r_remaining`` tokens known but not yet computed
    (1 for a decode), ``r_generated``, ``r_computed`` tokens with KV entries, ``r_last_token``,
    ``r_tbt``.

    Step and replica: ``admitting`` (budget chosen, admitting now), ``step_budget`` and
    ``budget_left`` tokens, ``prefill_first``, ``free_blocks`` an admission may take,
    ``kv_capacity`` blocks, ``max_num_seqs``, ``max_budget`` (largest budget), ``block_size``
    tokens per KV block, ``recent_arrivals`` over the last 5 s, ``mean_rate`` the workload's
    mean arrival rate (requests/s), ``last_step_s``, ``min_tbt`` the tightest TBT target,
    ``finished`` and ``n_requests``.
    """

    now: float
    w_prompt: np.ndarray
    w_generated: np.ndarray
    w_arrival: np.ndarray
    w_ttft: np.ndarray
    w_tbt: np.ndarray
    w_last_token: np.ndarray
    w_predicted: np.ndarray
    w_fits: np.ndarray
    n_waiting: int
    waiting_tokens: float
    r_remaining: np.ndarray
    r_generated: np.ndarray
    r_computed: np.ndarray
    r_last_token: np.ndarray
    r_tbt: np.ndarray
    admitting: bool
    step_budget: int
    budget_left: int
    prefill_first: bool
    free_blocks: int
    kv_capacity: int
    max_num_seqs: int
    max_budget: float
    block_size: int
    recent_arrivals: int
    mean_rate: float
    last_step_s: float
    min_tbt: float
    finished: int
    n_requests: int


def empty_observation(max_entities: int) -> dict[str, np.ndarray]:
    """Zeroed observation buffers: ``entities`` ``(max_entities, 12)`` float32, ``entity_mask``
    ``(max_entities,)`` int8, ``globals`` ``(15,)`` float32."""
    return {
        "entities": np.zeros((max_entities, len(ENTITY_FEATURES)), np.float32),
        "entity_mask": np.zeros(max_entities, np.int8),
        "globals": np.zeros(len(GLOBAL_FEATURES), np.float32),
    }


def encode(view: SchedulerView, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fill ``obs`` (zeroed buffers from `empty_observation`) with the observation of ``view``
    (features in the order of `ENTITY_FEATURES` and `GLOBAL_FEATURES`) and return it. Raises
    ``ValueError`` when more waiting requests are given than ``obs`` has rows."""
    v = view
    k = v.w_prompt.size
    if k > obs["entities"].shape[0]:
        raise ValueError(f"{k} waiting requests given, the observation has room for fewer")
    now, max_b = v.now, v.max_budget
    free = max(v.free_blocks, 0)
    if k:
        e = obs["entities"]
        gen = v.w_generated
        todo = v.w_prompt + gen
        preempted = gen > 0
        slack = np.where(
            preempted,
            (v.w_last_token + v.w_tbt - now) / v.w_tbt,
            (v.w_arrival + v.w_ttft - now) / v.w_ttft,
        )
        chunk = np.minimum(todo, v.budget_left if v.admitting else max_b)
        e[:k, 0] = v.w_prompt / 4096.0
        e[:k, 1] = todo / 4096.0
        e[:k, 2] = gen / 512.0
        e[:k, 3] = (now - v.w_arrival) / v.w_ttft
        e[:k, 4] = slack
        e[:k, 5] = np.log10(v.w_ttft)
        e[:k, 6] = np.log10(v.w_tbt)
        e[:k, 7] = v.w_predicted / len(LENGTH_BUCKETS)
        e[:k, 8] = preempted
        e[:k, 9] = v.w_fits
        e[:k, 10] = chunk / max_b
        e[:k, 11] = np.minimum(-(-chunk // v.block_size) / max(free, 1), 2.0)
        obs["entity_mask"][:k] = 1
    remaining = v.r_remaining
    decoding = remaining == 1
    n_run = remaining.size
    live = decoding & (v.r_generated > 0)
    slack = (v.r_last_token[live] + v.r_tbt[live] - now) / v.r_tbt[live]
    admitting = v.admitting
    obs["globals"][:] = (
        float(admitting),
        v.step_budget / max_b if admitting else 0.0,
        v.budget_left / max_b if admitting else 0.0,
        float(v.prefill_first and admitting),
        free / v.kv_capacity,
        n_run / v.max_num_seqs,
        np.count_nonzero(decoding) / v.max_num_seqs,
        remaining[~decoding].sum() / max_b,
        v.n_waiting / obs["entities"].shape[0],
        v.waiting_tokens / (float(v.block_size) * v.kv_capacity),
        v.recent_arrivals / (5.0 * v.mean_rate),
        slack.min() if slack.size else 1.0,
        v.r_computed.mean() / 4096.0 if n_run else 0.0,
        v.last_step_s / v.min_tbt,
        v.finished / v.n_requests,
    )
    return obs
