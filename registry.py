"""The environments schedgym ships: Gymnasium ids, and where each one's parts live.

Everything is named by import path and loaded lazily, so ``import schedgym`` stays cheap and a
user who only wants one environment never imports the others' dependencies.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schedgym.errors import SchedgymError


@dataclass(frozen=True)
class EnvEntry:
    """One schedgym environment: its short CLI name and the modules that serve it."""

    name: str  # short name used by the CLI: "jobshop"
    gym_id: str  # "schedgym/JobShop-v0"
    entry_point: str  # "schedgym.envs.jobshop:JobShopEnv"
    baselines: str  # module holding a POLICIES dict {name: factory}
    summary: str
    primary_metric: str  # the metric a policy is judged by in training curves and comparisons
    lower_is_better: bool = True

    def _load(self, attr_path: str) -> Any:
        module_name, _, attr = attr_path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("schedgym"):
                raise SchedgymError(f"env {self.name!r} is not available yet ({exc.name})") from exc
            raise
        return getattr(module, attr) if attr else module

    @property
    def available(self) -> bool:
        module_name = self.entry_point.partition(":")[0]
        return importlib.util.find_spec(module_name) is not None

    def env_module(self) -> Any:
        return self._load(self.entry_point.partition(":")[0])

    def policies(self) -> dict[str, Callable[[], Any]]:
        """Factories of the env's heuristic and bound policies, keyed by full policy name."""
        module = importlib.util.find_spec(self.baselines)
        if module is None:
            return {}
        return dict(self._load(self.baselines).POLICIES)


ENVIRONMENTS: tuple[EnvEntry, ...] = (
    EnvEntry(
        "jobshop",
        "schedgym/JobShop-v0",
        "schedgym.envs.jobshop:JobShopEnv",
        "schedgym.baselines.jobshop",
        "classic job-shop: dispatch the next operation of a job (active schedules)",
        "makespan",
    ),
    EnvEntry(
        "dag",
        "schedgym/DagSched-v0",
        "schedgym.envs.dag:DagSchedEnv",
        "schedgym.baselines.dag",
        "DAG tasks on heterogeneous accelerators: ready task x device, insertion-based EFT",
        "makespan",
    ),
    EnvEntry(
        "batching",
        "schedgym/Batching-v0",
        "schedgym.envs.batching.env:BatchingEnv",
        "schedgym.baselines.batching",
        "LLM continuous batching on one serving replica (vLLM-like engine)",
        "goodput_rps",
        lower_is_better=False,
    ),
    EnvEntry(
        "moe",
        "schedgym/MoEOffload-v0",
        "schedgym.envs.moe_offload:MoEOffloadEnv",
        "schedgym.baselines.moe",
        "MoE expert offloading: which experts stay in GPU memory",
        "stall_per_token_s",
    ),
    EnvEntry(
        "memmap",
        "schedgym/MemoryMap-v0",
        "schedgym.envs.memory_map:MemoryMapEnv",
        "schedgym.baselines.memory",
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
