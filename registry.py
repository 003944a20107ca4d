"""The environments schedgym ships: Gymnasium ids, and where each one's parts live.

Everything is named by import path and loaded lazily, so ``import schedgym`` stays cheap and a
user who only wants one environment never imports the others' dependencies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schedgym.errors import SchedgymError


@dataclass(frozen=True)
class EnvEntry:
    """One schedgym environment: its short CLI name and the package that serves it.

    Every problem's package ``schedgym.envs.<package>`` has the same rooms (docs/architecture.md):
    ``core`` (the numpy simulator), ``env`` (the Gymnasium face, class ``env_class``), ``record``
    (``validate(record) -> metrics`` and ``plot_record(record, path, ...)``) and ``bench``
    (``bench() -> rows`` for ``schedgym bench``); its heuristics and bounds live in
    ``schedgym.baselines.<package>`` as a ``POLICIES`` dict.
    """

    name: str  # short name used by the CLI: "jobshop"
    gym_id: str  # "schedgym/JobShop-v0"
    package: str  # the problem's package under schedgym.envs and schedgym.baselines: "jobshop"
    env_class: str  # "JobShopEnv"
    summary: str
    primary_metric: str  # the metric a policy is judged by in training curves and comparisons
    lower_is_better: bool = True

    @property
    def entry_point(self) -> str:
        """Gymnasium's entry point: ``schedgym.envs.jobshop.env:JobShopEnv``."""
        return f"schedgym.envs.{self.package}.env:{self.env_class}"

    @property
    def baselines(self) -> str:
        """The module holding the env's ``POLICIES`` dict ``{name: factory}``."""
        return f"schedgym.baselines.{self.package}"

    def module(self, room: str) -> Any:
        """One room of the env's package: ``core``, ``env``, ``record`` or ``bench``."""
        return importlib.import_module(f"schedgym.envs.{self.package}.{room}")

    def policies(self) -> dict[str, Callable[[], Any]]:
        """Factories of the env's heuristic and bound policies, keyed by full policy name."""
        return dict(importlib.import_module(self.baselines).POLICIES)


ENVIRONMENTS: tuple[EnvEntry, ...] = (
    EnvEntry(
        "jobshop",
        "schedgym/JobShop-v0",
        "jobshop",
        "JobShopEnv",
        "classic job-shop: dispatch the next operation of a job (active schedules)",
        "makespan",
    ),
    EnvEntry(
        "dag",
        "schedgym/DagSched-v0",
        "dag",
        "DagSchedEnv",
        "DAG tasks on heterogeneous accelerators: ready task x device, insertion-based EFT",
        "makespan",
    ),
    EnvEntry(
        "batching",
        "schedgym/Batching-v0",
        "batching",
        "BatchingEnv",
        "LLM continuous batching on one serving replica (vLLM-like engine)",
        "goodput_rps",
        lower_is_better=False,
    ),
    EnvEntry(
        "moe",
        "schedgym/MoEOffload-v0",
        "moe",
        "MoEOffloadEnv",
        "MoE expert offloading: which experts stay in GPU memory",
        "stall_per_token_s",
    ),
    EnvEntry(
        "memmap",
        "schedgym/MemoryMap-v0",
        "memory",
        "MemoryMapEnv",
        "memory mapping of tensors to fast/slow memory tiers (the mallocGame)",
        "modelled_time_s",
    ),
)


def env_entry(name: str) -> EnvEntry:
    """Look an environment up by short name (``jobshop``) or Gymnasium id."""
    for entry in ENVIRONMENTS:
        if name in (entry.name, entry.gym_id):
            return entry
    known = ", ".join(e.name for e in ENVIRONMENTS)
    raise SchedgymError(f"unknown env {name!r}; known: {known}")


def register_envs() -> None:
    """Register every schedgym environment with Gymnasium (idempotent)."""
    import gymnasium

    for entry in ENVIRONMENTS:
        if entry.gym_id not in gymnasium.registry:
            gymnasium.register(id=entry.gym_id, entry_point=entry.entry_point)
