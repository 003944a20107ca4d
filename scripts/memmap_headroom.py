"""How much any MemoryMap policy could gain over the XLA-like greedy on the torch-model suite.

    python scripts/memmap_headroom.py [--capacities 0.05,0.1,0.25,0.5] [--markdown]

For each fast-tier capacity (a share of each model's peak live bytes) it prints the mean
modelled time of all-slow memory, of the XLA-like greedy (``heuristic:msa``) and of the LP
relaxation (``bound:knapsack``, at most the modelled time of every placement), and the ratio
bound / greedy: no policy can go below it, so an issue target under that ratio is out of reach.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from schedgym.evaluate import run_episode
from schedgym.report import format_table
from schedgym.suites import SUITES

POLICIES = ("heuristic:all-slow", "heuristic:msa", "bound:knapsack")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capacities", default="0.05,0.1,0.25,0.5")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = ap.parse_args(argv)
    suite = SUITES["memmap/torch-models"]
    rows = []
    for capacity in (float(c) for c in args.capacities.split(",")):
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
            for p in POLICIES
        }
        ratio = mean["bound:knapsack"] / mean["heuristic:msa"]
        rows.append([capacity, *(mean[p] for p in POLICIES), ratio])
    print(format_table(["fast capacity", *POLICIES, "bound / msa"], rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
