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

# A packing plan as large as the issue asks heuristics and env.step to stay usable on.
LARGE = 20_000
# (task, heuristic, order, core rule): each heuristic of baselines/memory.py as it plays, its
# order and its per-buffer rule (imported from there would point the imports up a layer)
_GREEDIES = [
    (f"heuristic:{rule.replace('_', '-')}-{order}", order, rule)
    for rule in ("best_fit", "first_fit")
    for order in ("start", "size", "area")
]
LARGE_RUNS = (
    [("pack", name, order, rule) for name, order, rule in _GREEDIES]
    + [("pack", "heuristic:msa", "benefit", "best_fit")]
    + [("map", name, order, rule) for name, order, rule in _GREEDIES]
    + [
        ("map", "heuristic:msa", "benefit", "best_fit"),
        ("map", "heuristic:all-slow", "start", "slow"),
    ]
    + [
        ("msa", "heuristic:msa (prefetch and eviction)", "benefit", "xla_choice"),
        ("msa", "heuristic:best-fit-size", "size", "best_fit"),
    ]
)

# --- benchmarks ------------------------------------------------------------------------------


def bench(large: int = LARGE) -> list[dict[str, Any]]:
    """Env steps/s with random legal actions (every task), and every heuristic placing a
    20,000-buffer random set through the env in the pack and map tasks, XLA's and best fit by
    size in the msa task (seconds per episode, record validation apart); ``large`` buffers
    instead of 20,000 for a quick check."""
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
    big = random_buffer_set(large, 0, mean_live=64.0, name=f"random:{large}:0:live64")
    for task, label, order, rule in LARGE_RUNS:
        env = MemoryMapEnv(task=task, case=big, order=order)
        env.reset(seed=0)
        t0 = time.perf_counter()
        done = False
        info: dict[str, Any] = {}
        while not done:
            core = env.core
            _, _, done, _, info = env.step(
                core.slow_action if rule == "slow" else getattr(core, rule)()
            )
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        validate(info["record"])
        rows.append(
            {
                "name": f"memmap {task}: {label}, {large:,} buffers",
                "value": wall,
                "unit": "s",
                "note": f"whole episode through env.step ({wall / large * 1e6:.0f} us/step); "
                f"validate() {time.perf_counter() - t1:.2f} s; about 64 buffers live at a time",
            }
        )
    return rows
