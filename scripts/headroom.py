"""How far any policy could get past the best heuristic, where a target is near that limit.

    python scripts/headroom.py memmap [--capacities 0.05,0.1,0.25,0.5] [--markdown]
    python scripts/headroom.py msa [--capacities 0.05,0.1,0.15,0.25] [--markdown]
    python scripts/headroom.py msa --fast-tier trn1-sbuf [--capacities ...] [--markdown]
    python scripts/headroom.py msa-suites [--markdown]
    python scripts/headroom.py batching [--horizon 4] [--base POLICY] [--known] [--seeds S,...]
                                        [--markdown]
    python scripts/headroom.py moe [--suite SUITE] [--capacities 0.25,0.5,0.75] [--markdown]

``memmap``: for each fast-tier capacity (a share of each model's peak live bytes) on the
torch-model suite, the mean modelled time of all-slow memory, of the XLA-like greedy
(``heuristic:msa``) and of the LP relaxation (``bound:knapsack``, at most the modelled time of
every placement), and the ratio bound / greedy: no policy goes below it.

``msa``: the same on the msa task (prefetch and eviction over time), model by model: the
all-slow time, ``heuristic:msa`` (XLA's memory-space assignment), the best of the other greedies
(best and first fit in three orders, each keeping a buffer fast from its write to its last use),
the msa task's LP relaxation, and bound / best greedy. ``--fast-tier`` picks the fast tier
(``l2``, the default, or a datasheet scratchpad such as ``trn1-sbuf``); a capacity of ``full``
is the tier's own size.

``msa-suites``: on each msa-task suite (``memmap/msa-*``), the speedup over all-slow memory of
XLA's heuristic, the best other greedy, a one-step lookahead search (at every decision, each
legal action followed by XLA's rule to the end, the best kept: a policy-improvement step over
XLA's rule, in the env's buffer order), each committed checkpoint trained on the msa task (PPO's,
and MuZero's at its saved budget), and the LP bound above them all.

``batching``: on the azure-conv-synth suite, per case, a base heuristic (``--base``, default
``heuristic:sarathi-guard``, the suite's best), a clairvoyant one-step lookahead over it, and a
ceiling no policy can pass. Goodput is on-time
requests over the span from the first arrival to the last finish; the ceiling counts every
request on time and lets each finish as early as physics allows, its output tokens one per
decode step at the cheapest step the replica has (one sequence, context 1, overheads
included), from its arrival. The lookahead (``batching_lookahead``) plays the base out for
``--horizon`` simulated seconds on the true engine, future arrivals and output lengths
included, from each candidate: an oracle no scheduler can be, and not a bound either, but a
measure of what knowing the future buys one decision at a time. With ``--known`` the play-outs
start instead from what the scheduler knows (`BatchingEngine.forecast`: the requests arrived so
far, each at its predicted output length, no later arrivals): an honest planner, a
certainty-equivalent rollout over the base. ``--seeds`` plays the suite's case at other seeds
(validation seeds 500,000 and up, never the suite's, for choices).

``moe``: for each cache size (a share of all routed experts) on an MoE suite (``--suite``,
default ``moe/tinymoe-test``), the mean stall per token of MoE-Infinity, of the next-use rule (the
best heuristic on every MoE suite), of Belady's MIN run as demand paging (``oracle:belady`` with
prefetch 0: it reads the future routing), and of ``bound:min-copies`` (no policy without CPU
offload stalls less), with bound / MoE-Infinity.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from schedgym.episode import run_episode
from schedgym.report import format_table
from schedgym.suites import SUITES


def memmap(capacities: list[float | None], markdown: bool, fast_tier: str = "l2") -> str:
    policies = ("heuristic:all-slow", "heuristic:msa", "bound:knapsack")
    suite = SUITES["memmap/torch-models"]
    rows = []
    for capacity in capacities:
        kwargs = {**suite.env_kwargs, "fast_capacity": capacity, "fast_tier": fast_tier}
        mean = {
            p: float(
                np.mean(
                    [
                        run_episode(
                            "memmap", p, case=c.case, seed=c.seed, env_kwargs=kwargs
                        ).metrics["modelled_time_s"]
                        for c in suite.cases
                    ]
                )
            )
            for p in policies
        }
        ratio = mean["bound:knapsack"] / mean["heuristic:msa"]
        rows.append([capacity or "full", *(mean[p] for p in policies), ratio])
    return format_table(["fast capacity", *policies, "bound / msa"], rows, markdown)


def msa(capacities: list[float | None], markdown: bool, fast_tier: str = "l2") -> str:
    from schedgym.baselines.memory import POLICIES

    greedies = [
        n
        for n in POLICIES
        if n.startswith("heuristic:") and n not in ("heuristic:msa", "heuristic:all-slow")
    ]
    rows = []
    for case in ("gpt2-tiny", "gpt2-small", "resnet-tiny", "resnet18", "mlp"):
        for capacity in capacities:
            kwargs = {"task": "msa", "fast_capacity": capacity, "fast_tier": fast_tier}

            def time_of(policy: str, case: str = case, kwargs: dict = kwargs) -> float:
                return run_episode(
                    "memmap", policy, case=case, seed=10000, env_kwargs=kwargs
                ).metrics["modelled_time_s"]

            slow, xla, bound = (
                time_of(p) for p in ("heuristic:all-slow", "heuristic:msa", "bound:knapsack")
            )
            best = min(time_of(p) for p in greedies)
            rows.append([case, capacity or "full", slow, xla, best, bound, bound / min(xla, best)])
    return format_table(
        [
            "model",
            "fast capacity",
            "all-slow",
            "heuristic:msa",
            "best other greedy",
            "bound:knapsack",
            "bound / best greedy",
        ],
        rows,
        markdown,
    )


def lookahead(env: Any, candidates: Callable[[], list[int]], score: Callable[[int], float]) -> None:
    """Run ``env``'s episode to its end by one-step lookahead: at every decision each of
    ``candidates()`` is scored by ``score(action)`` on the env restored to the decision's state
    (higher is better; it may step the env on), and the best is taken, ties to the earliest
    candidate (Bertsekas, Tsitsiklis and Wu, J. Heuristics 1997: a rollout of the policy the
    play-outs follow)."""
    while not env.core.done:
        options = candidates()
        if len(options) > 1:
            state, scores = env.get_state(), []
            for action in options:
                env.set_state(state)
                scores.append(score(action))
            env.set_state(state)
            options = [options[int(np.argmax(scores))]]
        env.step(options[0])


def stepped(env: Any, play_out: Callable[[], float]) -> Callable[[int], float]:
    """A `lookahead` score: take the action on ``env`` itself, then ``play_out()``."""

    def score(action: int) -> float:
        env.step(action)
        return play_out()

    return score


def lookahead_speedup(case: str, seed: int, env_kwargs: dict) -> float:
    """Speedup of one-step lookahead over XLA's rule (module docstring) on one msa case."""
    from schedgym.envs.memory.env import MemoryMapEnv

    env = MemoryMapEnv(**env_kwargs)
    env.reset(seed=seed, options={"case": case})

    def finish() -> float:
        while not env.core.done:
            env.step(env.core.xla_choice())
        return env.core.metrics()["speedup"]

    lookahead(env, lambda: np.flatnonzero(env.action_masks()).tolist(), stepped(env, finish))
    return env.core.metrics()["speedup"]


def batching_lookahead(
    case: str, seed: int, horizon_s: float, base_name: str, known: bool = False
) -> dict[str, float]:
    """The metrics of a one-step lookahead over the heuristic ``base_name`` (module docstring)
    on one batching case: candidates are every step budget, or the base's admission, running
    the step and the first three waiting requests by EDF and by SJF; a play-out is the base
    for ``horizon_s`` simulated seconds, scored by the requests it sees miss their SLO. On the
    true engine (future arrivals and output lengths included: clairvoyant), or with ``known``
    on `BatchingEngine.forecast`, what a scheduler could forecast (honest)."""
    from schedgym.baselines.batching import POLICIES, earliest_deadline, shortest_prompt
    from schedgym.envs.batching.env import BUDGET_PHASE, BatchingEnv
    from schedgym.envs.batching.features import bucket_lengths
    from schedgym.envs.batching.record import engine_metrics

    env = BatchingEnv()
    env.reset(seed=seed, options={"case": case})
    base = POLICIES[base_name]()
    base.reset(env)
    E = env.layout.max_entities

    def candidates() -> list[int]:
        legal = np.flatnonzero(env.action_masks())
        if env.phase == BUDGET_PHASE:
            first = base.act(env, None)
            return sorted(legal.tolist(), key=lambda a: a != first)
        queue = legal[legal < E]
        rids = np.asarray(env.core.waiting)[queue]
        keep = [base.act(env, None), *legal[legal >= E].tolist()]
        for order in (earliest_deadline, shortest_prompt):
            keep += queue[np.argsort(order(env.core, rids), kind="stable")[:3]].tolist()
        return list(dict.fromkeys(keep))

    def missed_soon(engine: Any) -> float:
        engine.until = engine.now + horizon_s  # restored with the state by `lookahead`
        missed = engine.n_missed
        base.drive(engine)
        return -float(engine.n_missed - missed)

    def forecast(action: int) -> float:
        engine = env.core.forecast(guessed)
        if env.phase == BUDGET_PHASE:
            prefill_first = action == env.prefill_first_action
            engine.set_budget(
                engine.config.prefill_first_budget if prefill_first else env.budgets[action - E],
                prefill_first,
            )
        elif action == env.run_action:
            engine.run_step()
        else:
            engine.admit(action)
        return missed_soon(engine)

    guessed = bucket_lengths(env._predicted)
    score = forecast if known else stepped(env, lambda: missed_soon(env.core))
    lookahead(env, candidates, score)
    return engine_metrics(env.core)


def msa_suites(markdown: bool) -> str:
    import json
    from pathlib import Path

    from schedgym.baselines.memory import POLICIES
    from schedgym.leaderboard import learned_policies

    root = Path(__file__).resolve().parent.parent

    def trained_on_msa(name: str) -> bool:
        folder = root / name.partition(":")[2].partition("@")[0]
        settings = json.loads((folder / "config.json").read_text())
        return settings.get("env_kwargs", {}).get("task") == "msa"

    # every committed checkpoint trained on the msa task, PPO's and MuZero's at its saved budget
    learned = dict(p for p in learned_policies("memmap", root) if trained_on_msa(p[0]))
    greedies = [n for n in POLICIES if n.startswith("heuristic:") and n != "heuristic:msa"]
    rows = []
    for suite in (s for name, s in SUITES.items() if name.startswith("memmap/msa-")):
        kwargs = dict(suite.env_kwargs)

        def speedup(policy: str, kwargs: dict = kwargs, suite=suite) -> float:
            return float(
                np.mean(
                    [
                        run_episode(
                            "memmap", policy, case=c.case, seed=c.seed, env_kwargs=kwargs
                        ).metrics["speedup"]
                        for c in suite.cases
                    ]
                )
            )

        search = float(np.mean([lookahead_speedup(c.case, c.seed, kwargs) for c in suite.cases]))
        rows.append(
            [
                suite.name,
                speedup("heuristic:msa"),
                max(speedup(p) for p in greedies),
                search,
                *(speedup(spec) for spec in learned.values()),
                speedup("bound:knapsack"),
            ]
        )
    headers = [
        "suite",
        "heuristic:msa",
        "best other greedy",
        "lookahead search",
        *learned,
        "bound:knapsack",
    ]
    return format_table(headers, rows, markdown)


def batching(
    markdown: bool, horizon_s: float, base: str, known: bool = False, seeds: list[int] | None = None
) -> str:
    from tqdm.auto import tqdm

    from schedgym.envs.batching.core import Batch, EngineConfig, replica

    suite = SUITES["batching/azure-conv-synth"]
    config = EngineConfig()  # the suite's replica: Llama-2-7B on the H100 table
    fastest_step = (
        replica(config).step_cost(Batch((), (1,))) + config.step_overhead_s + config.seq_overhead_s
    )
    cases = suite.cases
    if seeds:
        cases = tuple(replace(cases[0], seed=seed) for seed in seeds)
    rows = []
    for c in tqdm(cases, desc="batching cases", unit="case"):
        result = run_episode("batching", base, case=c.case, seed=c.seed)
        requests = result.record["requests"]
        arrival = np.asarray(requests["arrival_s"])
        finish = arrival + (np.asarray(requests["output_tokens"]) - 1) * fastest_step
        ceiling = len(arrival) / float(finish.max() - arrival.min())
        search = batching_lookahead(c.case, c.seed, horizon_s, base, known)
        rows.append(
            [
                str(c.seed),
                result.metrics["goodput_rps"],
                result.metrics["slo_attainment"],
                search["goodput_rps"],
                search["slo_attainment"],
                ceiling,
            ]
        )
    rows.append(["mean", *(float(np.mean([r[i] for r in rows])) for i in range(1, 6))])
    good, search, ceiling = rows[-1][1], rows[-1][3], rows[-1][5]
    head = [
        "seed",
        f"{base} goodput",
        "attainment",
        f"{'known' if known else 'clairvoyant'} lookahead {horizon_s:g} s goodput",
        "attainment",
        "ceiling",
    ]
    table = format_table(head, rows, markdown)
    return (
        f"{table}\n\nlookahead / {base} = {search / good:.3f}, "
        f"ceiling / {base} = {ceiling / good:.3f}"
    )


def moe(capacities: list[float | None], markdown: bool, suite_name: str) -> str:
    suite = SUITES[suite_name]
    runs = (
        ("heuristic:moe-infinity", {}),
        ("heuristic:next-use", {}),
        ("oracle:belady", {"prefetch": 0}),
        ("bound:min-copies", {}),
    )
    rows = []
    for fraction in capacities:
        base = {**suite.env_kwargs, "cache_fraction": fraction}
        mean = [
            float(
                np.mean(
                    [
                        run_episode(
                            "moe", p, case=c.case, seed=c.seed, env_kwargs={**base, **extra}
                        ).metrics["stall_per_token_s"]
                        for c in suite.cases
                    ]
                )
            )
            for p, extra in runs
        ]
        rows.append([fraction, *mean, mean[3] / mean[0]])
    head = [
        "cache share",
        "MoE-Infinity",
        "next-use rule",
        "MIN, demand paging",
        "bound:min-copies",
        "bound / MoE-Inf",
    ]
    return format_table(head, rows, markdown)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "env",
        choices=["memmap", "msa", "msa-suites", "batching", "moe"],
        help="which headroom to measure (each described above)",
    )
    ap.add_argument(
        "--capacities",
        help="fast-tier shares of each model's peak live bytes, or 'full' for the tier's size "
        "(default 0.05,0.1,0.25,0.5); moe: shares of the routed experts cached (default "
        "0.25,0.5,0.75)",
    )
    ap.add_argument("--markdown", action="store_true", help="a Markdown table")
    ap.add_argument(
        "--suite",
        default="moe/tinymoe-test",
        choices=[name for name in SUITES if name.startswith("moe/")],
        help="moe: the suite whose cases are played (default moe/tinymoe-test)",
    )
    ap.add_argument(
        "--horizon",
        type=float,
        default=4.0,
        help="batching: simulated seconds of each lookahead play-out (default 4, about twice "
        "the relaxed class's TTFT target)",
    )
    ap.add_argument(
        "--base",
        default="heuristic:sarathi-guard",
        help="batching: the heuristic the lookahead plays out and is compared with (default "
        "heuristic:sarathi-guard, the suite's best; the earlier figures used "
        "heuristic:sarathi-sjf)",
    )
    ap.add_argument(
        "--known",
        action="store_true",
        help="batching: play each candidate out from what the scheduler knows (the requests "
        "arrived so far at their predicted output lengths, no later arrivals) instead of the "
        "true future",
    )
    ap.add_argument(
        "--seeds",
        help="batching: comma-separated seeds of the suite's case to play instead of the "
        "suite's own (e.g. validation seeds 500000,500001)",
    )
    ap.add_argument(
        "--fast-tier", default="l2", help="memmap, msa: the fast tier, l2 or trn1-sbuf (default l2)"
    )
    args = ap.parse_args(argv)
    default = "0.25,0.5,0.75" if args.env == "moe" else "0.05,0.1,0.25,0.5"
    text = args.capacities or default
    capacities = []
    for item in text.split(","):
        if item == "full" and args.env != "moe":
            capacities.append(None)
            continue
        try:
            value = float(item)
        except ValueError:
            value = float("nan")
        top = 1.0 if args.env == "moe" else np.inf
        if not 0.0 < value < top:
            ap.error(
                f"--capacities: {item!r} is not "
                + (
                    "a share of the experts strictly between 0 and 1 (at 1 every expert stays "
                    "cached and there is nothing to decide)"
                    if args.env == "moe"
                    else "a positive share of the peak live bytes or 'full'"
                )
            )
        capacities.append(value)
    if args.env == "memmap":
        print(memmap(capacities, args.markdown, args.fast_tier))
    elif args.env == "msa":
        print(msa(capacities, args.markdown, args.fast_tier))
    elif args.env == "msa-suites":
        print(msa_suites(args.markdown))
    elif args.env == "moe":
        print(moe(capacities, args.markdown, args.suite))
    else:
        from schedgym.baselines.batching import POLICIES

        if args.base not in POLICIES:
            ap.error(
                f"--base {args.base!r} is not a batching heuristic; one of {', '.join(POLICIES)}"
            )
        try:
            seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
        except ValueError:
            seeds = [-1]
        if seeds is not None and min(seeds) < 0:
            ap.error(f"--seeds: {args.seeds!r} is not a comma-separated list of seeds >= 0")
        print(batching(args.markdown, args.horizon, args.base, args.known, seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
