"""DagSched-v0 speed for ``schedgym bench``: env steps/s and HEFT schedules/s."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from schedgym.envs.dag.core import (
    RULES,
    DagCore,
    plan,
)
from schedgym.envs.dag.env import DagSchedEnv

# -- speed -----------------------------------------------------------------------------------

BENCH_CASE = "random:100"


def _row(name: str, value: float, unit: str, note: str) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "note": note}


def bench(seconds: float = 2.0, rounds: int = 4) -> list[dict[str, Any]]:
    """Rows for ``schedgym bench``: steps/s of random legal actions through the Gymnasium face,
    and complete HEFT schedules/s on the core, both on one 100-task random op DAG on the
    ``hetero`` platform (each the best of ``rounds`` slices of ``seconds / rounds``)."""
    env = DagSchedEnv(case=BENCH_CASE)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    inst, empty = env.instance, env.get_state()
    steps_rate = heft_rate = 0.0
    for _ in range(rounds):
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / rounds:
            env.set_state(empty)
            done = False
            while not done:
                legal = np.flatnonzero(env.action_masks())
                _, _, done, _, _ = env.step(int(legal[rng.integers(len(legal))]))
                steps += 1
        steps_rate = max(steps_rate, steps / (time.perf_counter() - t0))
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / rounds:
            core = DagCore(inst)
            plan(core, RULES["heft"](inst))  # ranks included: they are part of HEFT's cost
            count += 1
        heft_rate = max(heft_rate, count / (time.perf_counter() - t0))
    return [
        _row(
            f"dag {BENCH_CASE} random steps/s",
            steps_rate,
            "steps/s",
            "random legal actions, whole episodes; timed: step (observation, reward, record at "
            "the end) and action_masks; 100 tasks on hetero (H100, A100, A40, CPU)",
        ),
        _row(
            f"dag {BENCH_CASE} HEFT schedules/s",
            heft_rate,
            "schedules/s",
            f"ranks + insertion-based EFT on the core, makespan {core.makespan() * 1e3:.3f} ms",
        ),
    ]
