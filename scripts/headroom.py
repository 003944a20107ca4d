"""How far any policy could get past the best heuristic, where a target is near that limit.

    python scripts/headroom.py memmap [--capacities 0.05,0.1,0.25,0.5] [--markdown]
    python scripts/headroom.py batching [--markdown]

``memmap``: for each fast-tier capacity (a share of each model's peak live bytes) on the
torch-model suite, the mean modelled time of all-slow memory, of the XLA-like greedy
(``heuristic:msa``) and of the LP relaxation (``bound:knapsack``, at most the modelled time of
every placement), and the ratio bound / greedy: no policy goes below it.

``batching``: on the azure-conv-synth suite, Sarathi-EDF's goodput beside a ceiling no policy can
pass. Goodput is on-time requests over the span from the first arrival to the last finish; the
ceiling counts every request on time and lets each finish as early as physics allows, its
output tokens one per decode step at the cheapest step the replica has (one sequence, context
1, overheads included), from its arrival.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from schedgym.episode import run_episode
from schedgym.report import format_table
from schedgym.suites import SUITES


def memmap(capacities: list[float], markdown: bool) -> str:
    policies = ("heuristic:all-slow", "heuristic:msa", "bound:knapsack")
    suite = SUITES["memmap/torch-models"]
    rows = []
    for capacity in capacities:
        kwargs = {**suite.env_kwargs, "fast_capacity": capacity}
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
        rows.append([capacity, *(mean[p] for p in policies), ratio])
    return format_table(["fast capacity", *policies, "bound / msa"], rows, markdown)


def batching(markdown: bool) -> str:
    from schedgym.envs.batching.core import Batch, EngineConfig, replica

    suite = SUITES["batching/azure-conv-synth"]
    config = EngineConfig()  # the suite's replica: Llama-2-7B on the H100 table
    fastest_step = (
        replica(config).step_cost(Batch((), (1,))) + config.step_overhead_s + config.seq_overhead_s
    )
    rows = []
    for c in suite.cases:
        result = run_episode("batching", "heuristic:sarathi-edf", case=c.case, seed=c.seed)
        requests = result.record["requests"]
        arrival = np.asarray(requests["arrival_s"])
        finish = arrival + (np.asarray(requests["output_tokens"]) - 1) * fastest_step
        ceiling = len(arrival) / float(finish.max() - arrival.min())
        rows.append([str(c.seed), result.metrics["goodput_rps"], ceiling])
    good, ceiling = (float(np.mean([r[i] for r in rows])) for i in (1, 2))
    rows.append(["mean", good, ceiling])
    table = format_table(["seed", "sarathi-edf goodput", "ceiling"], rows, markdown)
    return f"{table}\n\nceiling / Sarathi-EDF = {ceiling / good:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("env", choices=["memmap", "batching"])
    ap.add_argument("--capacities", default="0.05,0.1,0.25,0.5", help="memmap: fast-tier shares")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = ap.parse_args(argv)
    if args.env == "memmap":
        print(memmap([float(c) for c in args.capacities.split(",")], args.markdown))
    else:
        print(batching(args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
