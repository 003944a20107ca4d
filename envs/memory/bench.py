"""MemoryMap-v0 speed for ``schedgym bench``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from schedgym.envs.memory.core import (
    TASKS,
)
from schedgym.envs.memory.env import MemoryMapEnv
from schedgym.envs.memory.record import validate
from schedgym.workloads.memory import (
    random_buffer_set,
)

# --- benchmarks ------------------------------------------------------------------------------


def bench() -> list[dict[str, Any]]:
    """Env steps/s with random legal actions (every task), and greedy baselines placing an
    18,000-buffer random set through the env (seconds per episode, record validation apart)."""
    rows = []
    for task in TASKS:
        env = MemoryMapEnv(task=task, case="random:2000:0")
        rng = np.random.default_rng(0)
        env.reset(seed=0)
        steps, t0 = 0, time.perf_counter()
        done = False
        while not done:
            legal = np.flatnonzero(env.action_masks())
            _, _, done, _, _ = env.step(int(legal[rng.integers(legal.size)]))
            steps += 1
        rate = steps / (time.perf_counter() - t0)
        rows.append(
            {
                "name": f"memmap {task} steps/s (random legal actions)",
                "value": rate,
                "unit": "steps/s",
                "note": "random:2000:0, 32 candidates, h100 costs",
            }
        )
    big = random_buffer_set(18000, 0, mean_live=64.0, name="random:18000:0:live64")
    for task, order, label in (
        ("pack", "size", "best-fit by size"),
        ("map", "size", "best-fit by size"),
        ("map", "benefit", "msa (XLA-like order, best fit)"),
        ("msa", "benefit", "heuristic:msa (prefetch and eviction)"),
    ):
        env = MemoryMapEnv(task=task, case=big, order=order)
        env.reset(seed=0)
        rule = "xla_choice" if task == "msa" else "best_fit"
        t0 = time.perf_counter()
        done = False
        info: dict[str, Any] = {}
        while not done:
            _, _, done, _, info = env.step(getattr(env.core, rule)())
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        validate(info["record"])
        rows.append(
            {
                "name": f"memmap {task}: {label}, 18,000 buffers",
                "value": wall,
                "unit": "s",
                "note": f"whole episode through env.step; validate() "
                f"{time.perf_counter() - t1:.2f} s; about 64 buffers live at a time",
            }
        )
    return rows
