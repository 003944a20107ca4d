"""Train the committed PPO policy of one environment and measure it against the best heuristic.

    python scripts/train_policies.py RECIPE [--steps N] [--out DIR]

A recipe is named for its env, or for its env and task (``memmap-msa``: the memory env's msa
task) or suites (``moe-synth``: the MoE env's 256- and 1,024-expert generator suites).

Each recipe names the training generator (fresh instances from the env's seeded generator at
every reset), validation cases, and a test set disjoint from both (seeds from 10,000 up; training
generators are seeded with 0 and 1,000). The policy lands in ``policies/<recipe>-ppo/`` with its
config, training curve and ``results.json``: mean primary metric of PPO (greedy) and of every
heuristic on the test set, and the ratio to the best heuristic, as measured, met or not.
Budgets are sized for about an hour on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from schedgym.agents.ppo import PPOPolicy, TrainConfig, train
from schedgym.episode import run_episode
from schedgym.registry import env_entry


@dataclass
class Recipe:
    env_kwargs: dict[str, Any]
    val_cases: list[str]
    test_cases: list[tuple[str, int]]  # (case, reset seed)
    metric: str
    baseline: str
    steps: int
    target: str  # the recipe's target, in words
    ppo: dict[str, Any] = field(default_factory=dict)
    env: str | None = None  # the env it trains on, when the recipe's name is not the env's
    # the test cases' env arguments, when not the training ones (shorter training episodes)
    test_kwargs: dict[str, Any] | None = None


RECIPES: dict[str, Recipe] = {
    "jobshop": Recipe(
        env_kwargs={"case": "random:15x15"},
        val_cases=[f"random:15x15:{20_000 + i}" for i in range(4)],
        test_cases=[(f"ta{i:02d}", 0) for i in range(1, 11)],
        metric="gap",
        baseline="heuristic:mor",
        steps=300_000,
        target="mean gap on Taillard 15x15 below MOR's 20.5 %",
    ),
    "dag": Recipe(
        # the leaderboard's dag/random-noisy setting; PPO from a uniform policy put tasks on the
        # hetero platform's CPU (hundreds of times slower) and stayed 2.2x HEFT: clone PEFT first
        env_kwargs={"case": "random:50", "sigma": 0.5, "platform": "hetero"},
        val_cases=["random:50"] * 6,
        test_cases=[("random:50", 10_000 + i) for i in range(20)],
        metric="makespan",
        baseline="heuristic:heft",
        steps=80_000,
        target="mean makespan at most 0.97x HEFT's on the noisy-duration suite",
        ppo={
            "imitate": "heuristic:peft",
            "imitate_episodes": 100,
            "imitate_epochs": 20,
            "learning_rate": 1e-4,
        },
    ),
    "moe": Recipe(
        # trained on routing recorded on held-out stdlib code, tested on the documentation domain
        env_kwargs={"case": "tinymoe-code", "max_entities": 32},
        val_cases=["tinymoe-code"] * 2,
        test_cases=[("tinymoe-docs", 10_000 + i) for i in range(5)],
        metric="stall_per_token_s",
        baseline="heuristic:lru",
        steps=150_000,
        target="stall time at most 0.9x LRU's on held-out routing traces",
        # from scratch PPO reached 0.87x LRU but stayed 8 % behind MoE-Infinity: clone it first
        ppo={
            "imitate": "heuristic:moe-infinity",
            "imitate_episodes": 20,
            "imitate_epochs": 10,
            "learning_rate": 1e-4,
            "normalize_reward": True,
        },
    ),
    "moe-synth": Recipe(
        # the moe/mixtral-synth and moe/olmoe-synth settings (256 and 1,024 experts) from their
        # generators' training seeds. One network for both, padded to OLMoE's 1,024 rows, scores
        # each expert from its own row and the pooled rest (layers=0): one attention layer over
        # 1,024 rows costs 50 ms a decision on one core, 8 minutes an OLMoE episode. Training is on
        # 64-token episodes (a quarter or half of the suites'), so the demonstrations fit in memory
        env="moe",
        env_kwargs={"case": ["mixtral", "olmoe"], "max_entities": 1024, "tokens": 64},
        val_cases=["mixtral", "olmoe"],
        test_cases=[("mixtral", 10_000), ("olmoe", 10_000)],
        test_kwargs={"max_entities": 1024},
        metric="stall_per_token_s",
        baseline="heuristic:moe-infinity",
        steps=30_000,
        target="a learned row on the 256- and 1,024-expert suites within 1.1x MoE-Infinity",
        ppo={
            "layers": 0,
            # an epoch of cloning (35k decisions x 1,024 rows): over 2 min at d=64, 65-85 s at 32
            "d_model": 32,
            "eval_every": 10_000,  # a validation plays 8,000 decisions
            "imitate": "heuristic:moe-infinity",
            "imitate_episodes": 8,
            "imitate_epochs": 10,
            "learning_rate": 1e-4,
            "normalize_reward": True,
        },
    ),
    "batching": Recipe(
        # the leaderboard's batching/azure-conv-synth setting. From a uniform policy PPO learned
        # to admit almost nothing in 40k steps (a poor policy's episodes are long, so the budget
        # bought few of them): clone Sarathi-EDF first
        env_kwargs={"case": "azure-conv-synth"},
        val_cases=["azure-conv-synth"] * 4,
        test_cases=[("azure-conv-synth", 10_000 + i) for i in range(3)],
        metric="goodput_rps",
        baseline="heuristic:sarathi-edf",
        steps=100_000,
        target="goodput at least 1.1x the best heuristic's on the calibrated Azure suite",
        ppo={
            "imitate": "heuristic:sarathi-edf",
            "imitate_episodes": 10,
            "imitate_epochs": 8,
            "learning_rate": 1e-4,
            "normalize_reward": True,
            "eval_every": 10_000,
        },
    ),
    "memmap": Recipe(
        # fast memory a quarter of the peak live bytes: placement choices matter
        env_kwargs={"case": "random:64", "fast_capacity": 0.25},
        val_cases=[f"random:64:{20_000 + i}" for i in range(4)],
        test_cases=[
            (m, 10_000) for m in ("gpt2-tiny", "gpt2-small", "resnet18", "resnet-tiny", "mlp")
        ],
        metric="modelled_time_s",
        baseline="heuristic:msa",
        steps=100_000,
        target="modelled time at most 0.97x the XLA-like greedy's on the torch-model suite",
    ),
    "memmap-msa": Recipe(
        # the msa task (prefetch and eviction) at the memmap/msa-resnet18 suite's fast tier, 10 %
        # of the peak live bytes. Trained on random sets and GPT-2 tiny only: the suite's
        # ResNet-18 (and the other test models) are never seen. From a uniform policy PPO
        # learned to leave every buffer slow within 90k steps (a prefetch that stalls costs more
        # than it saves, and random ones mostly stall): clone XLA's rule first, played in the
        # env's buffer order
        env="memmap",
        env_kwargs={
            "task": "msa",
            "case": ["random:64", "random:128", "gpt2-tiny"],
            "fast_capacity": 0.1,
        },
        val_cases=[f"random:96:{20_000 + i}" for i in range(4)],
        test_cases=[(m, 10_000) for m in ("resnet18", "resnet-tiny", "mlp", "gpt2-small")],
        metric="modelled_time_s",
        baseline="heuristic:msa",
        steps=150_000,
        target="modelled time below XLA's memory-space assignment's on held-out models",
        ppo={
            "n_envs": 3,
            "imitate": "heuristic:msa",
            "imitate_episodes": 60,
            "imitate_epochs": 10,
            "learning_rate": 1e-4,
            "normalize_reward": True,
        },
    ),
}


def evaluate(env: str, recipe: Recipe, policy: Any) -> float:
    kwargs = recipe.env_kwargs if recipe.test_kwargs is None else recipe.test_kwargs
    values = [
        run_episode(env, policy, case=c, seed=s, env_kwargs=kwargs).metrics[recipe.metric]
        for c, s in recipe.test_cases
    ]
    return float(np.mean(values))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", choices=sorted(RECIPES), help="an env, or memmap-msa, or moe-synth")
    ap.add_argument("--steps", type=int, help="override the recipe's training steps")
    ap.add_argument("--out", help="output folder (default policies/RECIPE-ppo)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    recipe = RECIPES[args.recipe]
    env = recipe.env or args.recipe
    out = Path(args.out or f"policies/{args.recipe}-ppo")
    cfg = TrainConfig(
        env=env,
        out=str(out),
        steps=args.steps or recipe.steps,
        seed=args.seed,
        env_kwargs=recipe.env_kwargs,
        val_cases=recipe.val_cases,
        **{"eval_every": max((args.steps or recipe.steps) // 10, 2000), **recipe.ppo},
    )
    start = time.perf_counter()
    train(cfg, heuristic=recipe.baseline)
    train_s = time.perf_counter() - start
    entry = env_entry(env)
    scores = {"ppo": evaluate(env, recipe, PPOPolicy(out))}
    if cfg.imitate:  # what cloning alone gave, before PPO
        scores["imitation"] = evaluate(env, recipe, PPOPolicy(out / "imitation.zip"))
    for name in sorted(n for n in entry.policies() if n.startswith("heuristic:")):
        scores[name] = evaluate(env, recipe, name)
    heuristics = {k: v for k, v in scores.items() if k.startswith("heuristic:")}
    pick = min if entry.lower_is_better else max
    best = pick(heuristics, key=heuristics.get)
    result = {
        "env": env,
        "recipe": args.recipe,
        "metric": recipe.metric,
        "lower_is_better": entry.lower_is_better,
        "test_cases": recipe.test_cases,
        "scores": scores,
        "best_heuristic": best,
        "ratio_to_best_heuristic": scores["ppo"] / scores[best],
        "target": recipe.target,
        "train_wall_s": train_s,
        "steps": cfg.steps,
        "command": f"python scripts/train_policies.py {args.recipe}"
        + (f" --steps {args.steps}" if args.steps else ""),
    }
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    for key in (
        "checkpoints",
        "last.zip",
        "best_model.zip",
        "evaluations.npz",
        "imitation.zip",
        "reward_norm.pkl",
    ):
        path = out / key
        if path.is_dir():
            for f in path.iterdir():
                f.unlink()
            path.rmdir()
        elif path.exists():
            path.unlink()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
