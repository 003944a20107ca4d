"""Where a training run writes its TensorBoard logs: one folder per run, numbered as
Stable-Baselines3 numbers its own (``runs/ENV/ppo_1``, ``ppo_2``, ...), so that two runs of one
algorithm (two recipes, a rerun) show as two curves instead of one tangle of overlapping steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_folder(root: str | Path, env: str, algo: str, resume: bool = False) -> Path:
    """``root/env/algo_N``: ``N`` one past the highest run number there (SB3's
    ``get_latest_run_id``, the rule ``model.learn(tb_log_name=algo)`` follows), or the highest
    itself when ``resume`` is set and a run exists, so a resumed run extends its own curves as
    SB3's ``reset_num_timesteps=False`` does."""
    from stable_baselines3.common.utils import get_latest_run_id  # heavy; training only

    parent = Path(root) / env
    latest = get_latest_run_id(str(parent), algo)
    return parent / f"{algo}_{latest if resume and latest else latest + 1}"


def summary_writer(root: str | Path, env: str, algo: str, resume: bool = False) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter`` on `run_folder` (tensorboard is imported
    only here, when logs are asked for)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_folder(root, env, algo, resume)))
