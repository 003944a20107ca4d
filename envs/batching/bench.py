"""Batching-v0 speed for ``schedgym bench``."""

from __future__ import annotations

import time
from typing import Any

from schedgym.envs.batching.core import (
    BatchingEngine,
    EngineConfig,
    QueueScheduler,
)
from schedgym.envs.batching.env import (
    AZURE_CONV,
    DEFAULT_CASE,
    BatchingEnv,
    _file_trace,
    slo_classes,
)
from schedgym.envs.batching.record import engine_metrics
from schedgym.workloads.base import shared_data_dir
from schedgym.workloads.serving import (
    assign_slo,
    synthetic,
)

# --- benchmark --------------------------------------------------------------------------------


def bench() -> list[dict[str, Any]]:
    """Env steps/s under random legal actions, and the Azure conversation hour (19,366 requests)
    under FCFS on Llama-2-7B / H100 through the fast path (the policy drives the core)."""
    from schedgym.policy import RandomPolicy

    rows: list[dict[str, Any]] = []
    env = BatchingEnv()
    policy = RandomPolicy(0)
    obs, _ = env.reset(seed=0)
    policy.reset(env)
    decisions, engine_steps, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < 5.0:
        obs, _, done, _, _ = env.step(policy.act(env, obs))
        decisions += 1
        if done:
            engine_steps += env.core.steps
            obs, _ = env.reset(seed=decisions)
    wall = time.perf_counter() - start
    engine_steps += env.core.steps
    rows.append(
        {
            "name": "batching env.step calls/s (random legal actions)",
            "value": decisions / wall,
            "unit": "steps/s",
            "note": f"{DEFAULT_CASE}, observation built per call; "
            f"{engine_steps / wall:,.0f} engine steps/s",
        }
    )

    path = shared_data_dir() / AZURE_CONV
    if path.is_file():
        trace, what = _file_trace(str(path)), "Azure conversation trace 2023, the full hour"
    else:
        trace = synthetic(19366, 5.53, seed=0)
        what = "trace absent: synthetic stand-in at the trace's 5.53 req/s"
    config = EngineConfig()
    trace = assign_slo(trace, slo_classes(config), seed=0)
    engine = BatchingEngine(trace, config)
    start = time.perf_counter()
    QueueScheduler(prefill_first=True).drive(engine)  # heuristic:fcfs, vLLM v0's default
    wall = time.perf_counter() - start
    m = engine_metrics(engine)
    rows.append(
        {
            "name": "batching: FCFS over the Azure conv hour (llama-2-7b / h100)",
            "value": wall,
            "unit": "s",
            "note": (
                f"{what}; {trace.n_requests} requests, {m['steps']} engine steps, "
                f"{m['steps'] / wall:,.0f} steps/s, target < 20 s on one core"
            ),
        }
    )
    return rows
