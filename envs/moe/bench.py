"""MoEOffload-v0 speed for ``schedgym bench``."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from schedgym.envs.moe.core import (
    run_policy,
)
from schedgym.envs.moe.env import MoEOffloadEnv, plot_hit_rate_curve

# --- benchmarks ---------------------------------------------------------------------------------


def bench() -> list[dict[str, Any]]:
    """LRU and Belady on the fast path over 100,000 token-layer visits (Mixtral, 3,125 tokens x
    32 layers, half the experts cached), and the env's steps/s with random legal actions."""
    from schedgym.policy import RandomPolicy, resolve_policy

    rows = []
    env = MoEOffloadEnv("mixtral", tokens=3125, prefetch=0)
    for name in ("heuristic:lru", "heuristic:lru-layer", "oracle:belady"):
        core = env.make_core("mixtral", 0)
        start, cpu = time.perf_counter(), time.process_time()
        run_policy(core, resolve_policy("moe", name))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        rows.append(
            {
                "name": f"moe: {name} fast path, {core.episode.n_visits:,} token-layer visits",
                "value": wall,
                "unit": "s",
                "note": f"mixtral synthetic, capacity {core.capacity}/{core.n_global}, "
                f"hit rate {core.metrics()['hit_rate']:.3f}, {cpu:.2f} s of CPU; "
                "target < 2 s for LRU",
            }
        )
    for case, kwargs in (("tinymoe-code", {}), ("olmoe", {"max_entities": 1024})):
        env = MoEOffloadEnv(case, **kwargs)
        policy = RandomPolicy(0)
        obs, _ = env.reset(seed=0)
        policy.reset(env)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < 3.0:
            obs, _, done, _, _ = env.step(policy.act(env, obs))
            steps += 1
            if done:
                obs, _ = env.reset(seed=steps)
        wall = time.perf_counter() - start
        rows.append(
            {
                "name": f"moe: env steps/s, {case} (random legal actions)",
                "value": steps / wall,
                "unit": "steps/s",
                "note": f"{env.core.n_global} experts, max_entities {env.layout.max_entities}, "
                "observation encoding included",
            }
        )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        plot_hit_rate_curve(["heuristic:lru"], Path(tmp) / "curve.png", "tinymoe-code")
        rows.append(
            {
                "name": "moe: hit-rate curve, tinymoe-code, LRU at 8 cache sizes",
                "value": time.perf_counter() - start,
                "unit": "s",
                "note": "plot included",
            }
        )
    return rows
