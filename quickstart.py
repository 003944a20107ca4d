"""The README's main job: run the strongest pipeline schedgym has so far and explain the output.

(1) Price one LLM engine step on every shipped hardware profile with the measured cost tables;
(2) run every available environment's heuristic baselines on its default case, each episode
record re-checked by the environment's independent validator; (3) train a PPO agent briefly on
random 6x6 job shops and compare it, greedy, a Gumbel MuZero planner on its network (16
simulations per decision with the true simulator, leaves valued by MWKR rollouts) and a
fortified rollout of it (every legal job played out by the network itself) with every
dispatching rule on held-out instances.
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
        if not table.n_points():
            continue  # a roofline from published figures for one job (xeon-spr: MoE experts)
        model = get_model("tiny-llama-4l" if table.device.get("kind") == "cpu" else "llama-2-7b")
        seconds = StepCost(table, model)(DEMO_BATCH)
        rows.append(
            (name, table.device["name"], model.name, 1e3 * seconds, DEMO_BATCH.tokens / seconds)
        )
    print(format_table(["profile", "device", "model", "step ms", "tokens/s"], rows))
    print("   (GEMMs, norms and collectives from measured tables; see `schedgym list hardware`)\n")


def run_heuristics(seed: int) -> None:
    from schedgym.episode import run_episode
    from schedgym.registry import ENVIRONMENTS

    print(f"2. Heuristic baselines on each environment's default case ({len(ENVIRONMENTS)} envs)")
    for entry in ENVIRONMENTS:
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


# Held-out instances: seeds far from the small training seeds the env's generator is given.
QUICK_TEST_CASES = [f"random:6x6:{90_000 + i}" for i in range(20)]


def train_and_compare(steps: int, seed: int, out: str) -> None:
    import numpy as np

    from schedgym.agents.ppo import PPOPolicy, TrainConfig, train
    from schedgym.agents.rollout import RolloutPolicy
    from schedgym.episode import run_episode
    from schedgym.registry import env_entry

    print(
        f"\n3. PPO, trained now for {steps:,} steps on random 6x6 job shops, Gumbel MuZero "
        "planning on its network and a rollout of it, against the rules on "
        f"{len(QUICK_TEST_CASES)} held-out instances (greedy decoding; planning without noise)"
    )
    cfg = TrainConfig(
        env="jobshop",
        out=out,
        steps=steps,
        seed=seed,
        n_steps=256,
        batch_size=128,
        env_kwargs={"case": "random:6x6"},
        val_cases=QUICK_TEST_CASES[:4],
        eval_every=max(steps // 4, 1000),
    )
    train(cfg, heuristic="heuristic:mor")
    policies = [
        PPOPolicy(out, name="ppo (just trained)"),
        planner(out),
        RolloutPolicy(out, name="fortified rollout of ppo (every legal job played out)"),
    ] + sorted(n for n in env_entry("jobshop").policies() if n.startswith("heuristic:"))
    rows = []
    for policy in policies:
        spans = [
            run_episode("jobshop", policy, case=c, seed=seed).metrics["makespan"]
            for c in QUICK_TEST_CASES
        ]
        name = policy if isinstance(policy, str) else policy.name
        rows.append((name, float(np.mean(spans))))
    rows.sort(key=lambda r: r[1])
    print(format_table(["policy", "mean makespan (lower is better)"], rows))
    print(f"   checkpoint and curve in {out}/; watch training with `tensorboard --logdir runs`")


def planner(ppo: str, simulations: int = 16):
    """Gumbel MuZero planning with the true simulator, on the just-trained PPO network as prior,
    leaves valued by finishing with MWKR as the committed planner does (docs/agents.md): what
    lookahead adds to the same network."""
    from schedgym.agents.muzero.networks import MuZeroNet
    from schedgym.agents.muzero.policy import MuZeroPolicy
    from schedgym.agents.muzero.search import SearchConfig
    from schedgym.episode import make_env

    net = MuZeroNet(make_env("jobshop").observation_space)
    net.load_ppo(ppo)
    return MuZeroPolicy(
        net=net,
        planner={"kind": "simulator", "env": "jobshop", "rollout": "heuristic:mwkr"},
        search=SearchConfig(simulations=simulations),
        name=f"gumbel muzero @{simulations} (simulator, mwkr rollouts, ppo's network)",
    )


def quickstart(seed: int = 0, train_steps: int = 20_000, out: str = "runs/quickstart-ppo") -> None:
    start = time.perf_counter()
    price_demo_step()
    run_heuristics(seed)
    if train_steps > 0:
        train_and_compare(train_steps, seed, out)
    print(
        f"\ndone in {time.perf_counter() - start:.1f} s. Next: `schedgym run --env jobshop "
        "--policy heuristic:mor --case ta01 --gantt gantt.png`, `schedgym list`, "
        "`schedgym bench`."
    )
