"""Playing whole episodes for the property tests: every decision checked against the mask.

Imported by the legality and determinism tests (pytest puts ``tests/`` on ``sys.path``). Only
the registry's public face is used (``env_entry``: Gymnasium id, baselines, ``validate``), so the
helpers follow the environments wherever their modules live.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from schedgym.errors import SchedgymError
from schedgym.registry import env_entry

# Tallies reported by the property tests' summary line (states visited, episodes, refusals),
# and the refusals' reasons (their first words), to tell accepted refusals from faults.
TALLY: Counter[str] = Counter()
REFUSALS: Counter[str] = Counter()


# SCHEDGYM_FUZZ_SCALE=N multiplies every property test's example count (a long local hunt; CI
# runs the counts as written, derandomized).
FUZZ_SCALE = int(os.environ.get("SCHEDGYM_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    """The example count of a property test: ``n``, times ``SCHEDGYM_FUZZ_SCALE``."""
    return n * FUZZ_SCALE


class IllegalChoice(AssertionError):
    """A policy chose an action its env's mask forbids."""


@dataclass
class Played:
    """One episode: the env's metrics and record, decisions taken, and every action."""

    metrics: dict[str, Any]
    record: dict[str, Any]
    decisions: int
    actions: list[int] = field(default_factory=list)


def make(env_name: str, kwargs: dict[str, Any]) -> gym.Env:
    """The env by short name, built the way the CLI builds it (no passive checker)."""
    return gym.make(env_entry(env_name).gym_id, disable_env_checker=True, **kwargs)


def play(
    env_name: str,
    policy_name: str,
    kwargs: dict[str, Any],
    seed: int,
    case: str | None = None,
    *,
    max_decisions: int = 200_000,
) -> Played | None:
    """Run ``policy_name`` on one episode and validate its record with the env's ``validate``.

    Before every step the action mask must allow something and the policy's action must be one
    the mask allows (`IllegalChoice` otherwise, naming env, settings, seed, decision and action).
    Returns None when the configuration or the policy refuses the case up front with a
    `SchedgymError` (the configuration is not accepted, or the policy does not apply to it,
    e.g. static pinning without calibration routing); such refusals are tallied.
    """
    entry = env_entry(env_name)
    where = f"{env_name} {policy_name} {kwargs} case={case} seed={seed}"
    try:
        env = make(env_name, kwargs)
        policy = entry.policies()[policy_name]()
        options = {} if case is None else {"case": case}
        if callable(getattr(policy, "solve", None)) and _solver_only(policy):
            metrics, record = policy.solve(env.unwrapped, case, seed)
            _validate(entry, record, where)
            TALLY["solver records"] += 1
            return Played(metrics, record, 0)
        obs, info = env.reset(seed=seed, options=options)
        policy.reset(env.unwrapped)
    except SchedgymError as exc:
        _refused(policy_name, exc)
        return None
    actions: list[int] = []
    done = False
    while not done:
        mask = np.asarray(env.unwrapped.action_masks(), dtype=bool)
        if not mask.any():
            raise IllegalChoice(f"{where}: all-False mask at decision {len(actions)}")
        try:
            action = int(policy.act(env.unwrapped, obs))
        except SchedgymError as exc:
            if actions:  # a policy may refuse a case, but not halfway through it
                raise
            _refused(policy_name, exc)
            return None
        if not 0 <= action < mask.size or not mask[action]:
            raise IllegalChoice(
                f"{where}: decision {len(actions)} chose action {action}, legal are "
                f"{np.flatnonzero(mask)[:20].tolist()}"
            )
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        if len(actions) > max_decisions:
            raise AssertionError(f"{where}: no end after {max_decisions} decisions")
    env.close()
    TALLY["states"] += len(actions)
    TALLY["episodes"] += 1
    _validate(entry, info["record"], where)
    return Played(info["metrics"], info["record"], len(actions), actions)


def _refused(policy_name: str, exc: Exception) -> None:
    TALLY["refused configurations"] += 1
    reason = str(exc).split(": ", 1)[-1]
    REFUSALS[f"{policy_name}: {reason[:70]}"] += 1


def _solver_only(policy: Any) -> bool:
    """Bounds and solvers that compute a whole record at once: their ``act`` refuses to step."""
    if getattr(policy, "kind", "") not in ("bound", "solver"):
        return False
    try:
        policy.act(None, None)
    except SchedgymError:
        return True
    except Exception:  # noqa: BLE001 - a stepping bound fails on a None env: it steps
        return False
    return False


def _validate(entry: Any, record: dict[str, Any], where: str) -> None:
    try:
        entry.module("record").validate(record)
    except SchedgymError as exc:
        raise AssertionError(f"{where}: record fails validation: {exc}") from exc
    TALLY["records validated"] += 1


def digest(record: dict[str, Any]) -> str:
    """SHA-256 of the record as canonical JSON (sorted keys; floats as Python prints them)."""
    text = json.dumps(record, sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"record holds a {type(value).__name__}")
