"""One episode of one policy on one environment, validated: the runner every caller shares.

Training (``schedgym.agents``: demonstrations, validation against a heuristic), evaluation
(``schedgym.evaluate``: suites in parallel processes) and the CLI's ``run`` all play episodes
through ``run_episode``, so every episode anywhere is run, timed and validated the same way: the
env's own ``record.validate`` re-checks the episode record from scratch and its recomputed metrics
must equal the ones the env reported.

A policy that provides ``solve(env, case, seed) -> (metrics, record)`` (solvers and bounds) is
asked for its answer instead of being stepped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from schedgym.errors import RecordError, SchedgymError
from schedgym.policy import Policy, resolve_policy
from schedgym.registry import EnvEntry, env_entry


@dataclass
class EpisodeResult:
    """One validated episode: the env's short name, the case (None: the env's default), the
    policy's name and kind, the episode metrics and JSON-serialisable record, the number of
    decisions, the wall time of the whole episode and of each decision (seconds)."""

    env: str
    case: str | None
    policy: str
    kind: str
    metrics: dict[str, Any]
    record: dict[str, Any]
    decisions: int
    wall_s: float
    decision_s: list[float] = field(default_factory=list)


def make_env(env_name: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` by short name or id, without the passive checker's per-step overhead."""
    return gym.make(env_entry(env_name).gym_id, disable_env_checker=True, **kwargs)


def check_record(entry: EnvEntry, record: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Validate ``record`` with the env's own ``validate`` and check that the metrics it
    recomputes equal ``metrics`` wherever both have a number; raise ``RecordError``."""
    checked = entry.module("record").validate(record)
    for key, value in checked.items():
        if (
            key in metrics
            and isinstance(value, int | float)
            and isinstance(metrics[key], int | float)
        ):
            if abs(value - metrics[key]) > 1e-6 * max(1.0, abs(value)):
                raise RecordError(
                    f"{entry.name}: metric {key} reported {metrics[key]} but the record "
                    f"gives {value}"
                )


def run_episode(
    env_name: str,
    policy: Policy | str,
    *,
    case: str | None = None,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    validate: bool = True,
    on_step: Callable[[Any, np.ndarray, int, float], None] | None = None,
) -> EpisodeResult:
    """Run one episode of ``policy`` on ``case`` and return its validated metrics and record.

    ``on_step(obs, mask, action, reward)``, when given, sees every decision: the observation and
    action mask the policy acted on, its action, and the reward that followed (imitation
    learning records heuristics' episodes through it)."""
    entry = env_entry(env_name)
    if isinstance(policy, str):
        policy = resolve_policy(entry.name, policy, seed=seed)
    env = make_env(entry.name, **(env_kwargs or {}))
    options = {} if case is None else {"case": case}
    start = time.perf_counter()
    solve = getattr(policy, "solve", None)
    decision_s: list[float] = []
    try:
        if callable(solve):
            metrics, record = solve(env.unwrapped, case, seed)
            decisions = 0
        else:
            obs, info = env.reset(seed=seed, options=options)
            policy.reset(env.unwrapped)
            decisions, done = 0, False
            while not done:
                t0 = time.perf_counter()
                action = policy.act(env.unwrapped, obs)
                decision_s.append(time.perf_counter() - t0)
                mask = env.unwrapped.action_masks() if on_step else None
                next_obs, reward, terminated, truncated, info = env.step(action)
                if on_step:
                    on_step(obs, mask, int(action), float(reward))
                obs = next_obs
                decisions += 1
                done = terminated or truncated
            if "record" not in info or "metrics" not in info:
                raise SchedgymError(f"{entry.gym_id} ended without metrics and record in info")
            metrics, record = info["metrics"], info["record"]
    finally:
        env.close()
    wall = time.perf_counter() - start
    if validate:
        check_record(entry, record, metrics)
    return EpisodeResult(
        entry.name,
        case,
        policy.name,
        policy.kind,
        dict(metrics),
        record,
        decisions,
        wall,
        decision_s,
    )
