"""The README's main job: run the strongest pipeline schedgym has so far and explain the output.

Today that is (1) pricing one LLM engine step on every shipped hardware profile with the measured
cost tables, and (2) running every available environment's heuristic baselines on its default
case, each episode record re-checked by the environment's independent validator.
"""

from __future__ import annotations

import time

from tqdm import tqdm

from schedgym.envs.hardware import Batch, StepCost, builtin_tables, get_model, load_cost_table
from schedgym.report import format_table

# One engine step of a busy serving replica: a 512-token prefill chunk and 64 decodes.
DEMO_BATCH = Batch(prefill=[(512, 512)], decode_contexts=[1024] * 64)


def price_demo_step() -> None:
    print("1. What one engine step costs (a 512-token prefill chunk + 64 decodes at 1k context)")
    rows = []
    for name in builtin_tables():
        table = load_cost_table(name)
        model = get_model("tiny-llama-4l" if table.device.get("kind") == "cpu" else "llama-2-7b")
        seconds = StepCost(table, model)(DEMO_BATCH)
        rows.append(
            (name, table.device["name"], model.name, 1e3 * seconds, DEMO_BATCH.tokens / seconds)
        )
    print(format_table(["profile", "device", "model", "step ms", "tokens/s"], rows))
    print("   (GEMMs, norms and collectives from measured tables; see `schedgym list hardware`)\n")


def run_heuristics(seed: int) -> None:
    from schedgym.evaluate import run_episode
    from schedgym.registry import ENVIRONMENTS

    available = [e for e in ENVIRONMENTS if e.available]
    print(
        f"2. Heuristic baselines on each environment's default case ({len(available)} of "
        f"{len(ENVIRONMENTS)} environments built so far)"
    )
    for entry in available:
        names = ["random"] + sorted(n for n in entry.policies() if n.startswith("heuristic:"))
        results = []
        for name in tqdm(names, desc=entry.name, leave=False):
            results.append(run_episode(entry.name, name, seed=seed))
        keys = [k for k, v in results[0].metrics.items() if isinstance(v, int | float)][:6]
        rows = [
            (
                r.policy,
                *(r.metrics.get(k) for k in keys),
                r.decisions,
                1e6 * r.wall_s / max(r.decisions, 1),
            )
            for r in results
        ]
        print(f"\n{entry.gym_id}")
        print(format_table(["policy", *keys, "decisions", "us/decision"], rows))
    missing = [e.name for e in ENVIRONMENTS if not e.available]
    if missing:
        print(f"\n   not built yet: {', '.join(missing)}")


def quickstart(seed: int = 0) -> None:
    start = time.perf_counter()
    price_demo_step()
    run_heuristics(seed)
    print(
        f"\ndone in {time.perf_counter() - start:.1f} s. Next: `schedgym run --env jobshop "
        "--policy heuristic:mor --case ta01 --gantt gantt.png`, `schedgym list`, "
        "`schedgym bench`."
    )
