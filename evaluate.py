"""One runner for every environment and policy: an episode in, validated metrics out.

Each env module (``schedgym.envs.<room>``) provides, beside its Gymnasium class:

* ``validate(record) -> dict``: re-checks an episode record from scratch (precedence, capacity,
  overlap, conservation) and returns the metrics it recomputed; raises ``RecordError``;
* ``plot_record(record, path, **kw) -> None``: the picture a person wants (Gantt, CDF, placement);
* ``bench() -> list[dict]``: its rows for ``schedgym bench``.

A ``bound`` policy may instead provide ``solve(env, case, seed) -> (metrics, record)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from schedgym.errors import RecordError, SchedgymError
from schedgym.policy import Policy, resolve_policy
from schedgym.registry import env_entry


@dataclass
class EpisodeResult:
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
    entry = env_entry(env_name)
    if not entry.available:
        raise SchedgymError(f"env {entry.name!r} is not available yet")
    return gym.make(entry.gym_id, disable_env_checker=True, **kwargs)


def run_episode(
    env_name: str,
    policy: Policy | str,
    *,
    case: str | None = None,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    validate: bool = True,
) -> EpisodeResult:
    """Run one episode of ``policy`` on ``case`` and return its validated metrics and record."""
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
                obs, _, terminated, truncated, info = env.step(action)
                decisions += 1
                done = terminated or truncated
            if "record" not in info or "metrics" not in info:
                raise SchedgymError(f"{entry.gym_id} ended without metrics and record in info")
            metrics, record = info["metrics"], info["record"]
    finally:
        env.close()
    wall = time.perf_counter() - start
    if validate:
        checked = entry.env_module().validate(record)
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
