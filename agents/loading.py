"""Resolve learned-policy names (``ppo:PATH``) to ``Policy`` objects for the CLI and evaluator."""

from __future__ import annotations

from schedgym.errors import SchedgymError
from schedgym.policy import Policy


def load_policy(env_name: str, spec: str) -> Policy:
    algo, _, path = spec.partition(":")
    if algo == "ppo":
        from schedgym.agents.ppo import PPOPolicy

        return PPOPolicy(path, name=spec)
    raise SchedgymError(f"learned policy kind {algo!r} is not available yet ({spec!r})")
