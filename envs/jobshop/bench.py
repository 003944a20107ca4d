"""JobShop-v0 speed for ``schedgym bench``: steps/s beside JSSEnv and job-shop-lib's envs."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from schedgym.envs.jobshop.core import DISPATCH_RULES, JobShopCore, non_delay_plan
from schedgym.envs.jobshop.env import JobShopEnv
from schedgym.workloads.jobshop import (
    JobShopInstance,
    benchmark_instance,
    format_orlibrary,
)

# --- bench -----------------------------------------------------------------------------------

BENCH_CASE = "ta01"


Rollout = tuple[
    Callable[[], Any],  # reset() -> legal actions
    Callable[[Any], tuple[bool, Any]],  # step(action) -> (done, legal actions)
    Callable[[Any, np.random.Generator], Any],  # choose(legal actions, rng) -> action
]


def _steps_per_second(rollout: Rollout, seconds: float, rng: np.random.Generator) -> float:
    """Steps/s of whole episodes of random legal actions, timing only the env's own calls
    (reset and step); choosing the action is not timed."""
    reset, step, choose = rollout
    steps, spent = 0, 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        legal = reset()
        spent += time.perf_counter() - t0
        done = False
        while not done:
            action = choose(legal, rng)
            t0 = time.perf_counter()
            done, legal = step(action)
            spent += time.perf_counter() - t0
            steps += 1
    return steps / spent


def _pick(mask: np.ndarray, rng: np.random.Generator) -> int:
    legal = np.flatnonzero(mask)
    return int(legal[rng.integers(legal.size)])


def _ours(instance: JobShopInstance) -> Rollout:
    env = JobShopEnv(instance.name)

    def reset() -> np.ndarray:
        env.reset(seed=0)
        return env.action_masks()

    def step(action: int) -> tuple[bool, np.ndarray]:
        _, _, done, _, _ = env.step(action)
        return done, env.action_masks()

    return reset, step, _pick


def _jssenv(instance: JobShopInstance) -> Rollout:
    from JSSEnv.envs import JssEnv

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / instance.name
        path.write_text(format_orlibrary(instance))
        env = JssEnv({"instance_path": path})

    def reset() -> np.ndarray:
        return env.reset()["action_mask"]  # JSSEnv keeps the old gym reset signature

    def step(action: int) -> tuple[bool, np.ndarray]:
        obs, _, done, _, _ = env.step(action)
        return done, obs["action_mask"]

    return reset, step, _pick


def _job_shop_lib(instance: JobShopInstance) -> Rollout:
    from job_shop_lib.benchmarking import load_benchmark_instance
    from job_shop_lib.graphs import build_resource_task_graph
    from job_shop_lib.reinforcement_learning import SingleJobShopGraphEnv

    env = SingleJobShopGraphEnv(
        build_resource_task_graph(load_benchmark_instance(instance.name)),
        feature_observer_configs=["is_ready", "duration", "earliest_start_time", "is_scheduled"],
    )

    def reset() -> list:
        return env.reset()[1]["available_operations_with_ids"]

    def step(action: tuple[int, int]) -> tuple[bool, list]:
        _, _, done, _, info = env.step(action)
        return done, info["available_operations_with_ids"]

    def choose(available: list, rng: np.random.Generator) -> tuple[int, int]:
        _, machine, job = available[rng.integers(len(available))]
        return job, machine

    return reset, step, choose


def _row(name: str, value: float, unit: str, note: str) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "note": note}


def bench(seconds: float = 2.0, rounds: int = 5) -> list[dict[str, Any]]:
    """Rows for ``schedgym bench``: steps/s of random legal actions on ta01 in this env and, in
    the same run, in JSSEnv's ``jss-v1`` and job-shop-lib's ``SingleJobShopGraphEnv``, with the
    ratios; and complete MOR schedules/s through the core's non-delay fast path.

    Each env runs ``rounds`` slices of ``seconds / rounds``, interleaved with the others so that
    load from other processes hits all alike; each reports its best slice.
    """
    instance = benchmark_instance(BENCH_CASE)
    envs: dict[str, Rollout] = {"jobshop": _ours(instance)}
    notes = {
        "jobshop": "random legal actions, whole episodes; timed: reset, step and action_masks",
        "JSSEnv jss-v1": "JSSEnv: pip install plotly && pip install --no-deps jssenv",
        "job-shop-lib SingleJobShopGraphEnv": "resource-task graph, 4 feature observers",
    }
    rows: list[dict[str, Any]] = []
    for label, make in (
        ("JSSEnv jss-v1", _jssenv),
        ("job-shop-lib SingleJobShopGraphEnv", _job_shop_lib),
    ):
        try:
            envs[label] = make(instance)
        except ImportError as exc:
            name = f"{label} {BENCH_CASE} random steps/s"
            rows.append(_row(name, math.nan, "steps/s", f"not installed ({exc.name})"))
    best = dict.fromkeys(envs, 0.0)
    for _ in range(rounds):
        for label, rollout in envs.items():
            rate = _steps_per_second(rollout, seconds / rounds, np.random.default_rng(0))
            best[label] = max(best[label], rate)
    for label, rate in best.items():
        rows.append(_row(f"{label} {BENCH_CASE} random steps/s", rate, "steps/s", notes[label]))
        if label != "jobshop":
            ratio = best["jobshop"] / rate
            rows.append(_row(f"jobshop speed-up over {label}", ratio, "x", "same run, best slices"))
    core = JobShopCore(instance)
    rule = DISPATCH_RULES["mor"](instance)
    rate = 0.0
    for _ in range(rounds):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / rounds:
            core.reset()
            non_delay_plan(core, rule)
            count += 1
        rate = max(rate, count / (time.perf_counter() - t0))
    note = f"non-delay fast path on the core, makespan {core.makespan}"
    rows.append(_row(f"jobshop {BENCH_CASE} MOR schedules/s", rate, "schedules/s", note))
    return rows
