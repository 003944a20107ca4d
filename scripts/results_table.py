"""Collect ``policies/*/results.json`` (written by ``scripts/train_policies.py``) into a table.

python scripts/results_table.py > docs/results-table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schedgym.report import format_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_policies import RECIPES  # noqa: E402  (the recipes name each reference baseline)


def main() -> int:
    root = Path(__file__).resolve().parent.parent / "policies"
    rows = []
    for path in sorted(root.glob("*/results.json")):
        r = json.loads(path.read_text())
        ppo, best = r["scores"]["ppo"], r["scores"][r["best_heuristic"]]
        recipe = r.get("recipe", r["env"])  # memmap-msa: the memory env's msa task
        named = RECIPES[recipe].baseline
        arrow = " ↓" if r["lower_is_better"] else " ↑"
        rows.append(
            (
                recipe,
                r["metric"] + arrow,
                ppo,
                r["scores"].get("imitation"),
                named,
                round(ppo / r["scores"][named], 3),
                r["best_heuristic"],
                best,
                round(ppo / best, 3),
                r["steps"],
                round(r["train_wall_s"] / 60, 1),
                r["target"],
            )
        )
    headers = [
        "env",
        "metric",
        "PPO (greedy)",
        "cloned, before PPO",
        "reference heuristic",
        "PPO / it",
        "best heuristic",
        "its score",
        "PPO / best",
        "steps",
        "train min",
        "target",
    ]
    print(format_table(headers, rows, markdown=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
