"""Behaviour cloning: warm-start a PPO policy from a heuristic's decisions.

PPO from a uniform policy struggles where a poor policy makes episodes long or nearly every
action is ruinous (a batching policy that admits nothing runs thousands of idle engine steps; a
DAG policy that puts tasks on the CPU device is hundreds of times slower). So ``train`` can start
from a heuristic instead, as AlphaStar and much of the learned-scheduling literature do:

1. ``collect`` runs the heuristic on fresh training instances (the env's generator, reset seeds
   from ``DEMO_SEED_OFFSET``, apart from validation and test seeds) and keeps every decision's
   observation, action mask, action, and the return that followed it (validated episodes only:
   ``run_episode`` re-checks each record);
2. ``clone`` fits the policy to those actions (masked cross-entropy) and its value head to the
   returns (mean squared error, weighted as PPO weights it; divided by the reward scale PPO will
   train with when rewards are normalised), so PPO's first updates start from a critic that
   already knows the heuristic's returns.

PPO then fine-tunes from there; ``train`` saves the cloned policy as ``imitation.zip`` so what
PPO added can be measured against what cloning alone gave.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from tqdm.auto import tqdm

from schedgym.episode import run_episode
from schedgym.errors import SchedgymError
from schedgym.policy import resolve_policy
from schedgym.registry import env_entry

# Demonstration episodes reset with seeds from here: far from training envs' (0, 1000, ...),
# validation's (500,000 + i) and the test suites' (10,000-19,999).
DEMO_SEED_OFFSET = 900_000


def generator_kwargs(env_kwargs: dict[str, Any], i: int) -> dict[str, Any]:
    """Env arguments of vectorised env (or demonstration episode) ``i``. A list ``case`` is a
    mix of training generators (``["random:15x15", "random:50x20"]``), taken in turn."""
    case = env_kwargs.get("case")
    if isinstance(case, list | tuple):
        return {**env_kwargs, "case": case[i % len(case)]}
    return env_kwargs


class StepwiseHeuristic:
    """A heuristic that plans its episode in its own buffer order (``solve``, as the memory
    env's heuristics do), played decision by decision in the env's order instead: its ``act``
    rule is what a policy acting in that order can clone."""

    kind = "heuristic"

    def __init__(self, heuristic: Any):
        self.inner, self.name = heuristic, f"{heuristic.name} (per decision)"

    def reset(self, env: Any) -> None:
        self.inner.reset(env)

    def act(self, env: Any, obs: Any) -> int:
        return self.inner.act(env, obs)


def stepwise(env: str, spec: str) -> Any:
    """The policy ``spec`` as ``collect`` plays it: a heuristic with both a ``solve`` and an
    ``act`` is played by ``act`` (`StepwiseHeuristic`); anything else as resolved, so a solver
    that only plans whole episodes is still refused."""
    policy = resolve_policy(env_entry(env).name, spec)
    if getattr(policy, "kind", None) == "heuristic" and callable(getattr(policy, "solve", None)):
        return StepwiseHeuristic(policy)
    return policy


@dataclass
class Demonstrations:
    """Every decision of the demonstration episodes, in order; ``episode`` numbers each row's
    episode (clone holds the last episodes out to measure agreement)."""

    obs: dict[str, np.ndarray]
    masks: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    returns: np.ndarray  # discounted return from each decision on
    episode: np.ndarray

    def __len__(self) -> int:
        return len(self.actions)

    @classmethod
    def from_rows(
        cls,
        obs: list[dict[str, np.ndarray]],
        masks: list[np.ndarray],
        actions: list[int],
        rewards: list[float],
        episode: list[int],
        gamma: float,
    ) -> Demonstrations:
        """Stack decisions recorded in episode order, each row's discounted return from it on
        computed from the rewards (in float64, stored as float32)."""
        steps = np.asarray(rewards, dtype=np.float64)
        ep = np.asarray(episode)
        return cls(
            obs={k: np.stack([o[k] for o in obs]) for k in obs[0]},
            masks=np.stack(masks),
            actions=np.asarray(actions, dtype=np.int64),
            rewards=steps.astype(np.float32),
            returns=_running_sums(steps[::-1], ep[::-1], gamma)[::-1].astype(np.float32),
            episode=ep,
        )

    def running_returns(self, gamma: float) -> np.ndarray:
        """The discounted return accumulated up to each decision, the statistic SB3's
        ``VecNormalize`` scales rewards by (seeding it from here keeps cloning's value targets
        and PPO's rewards on one scale)."""
        return _running_sums(self.rewards, self.episode, gamma)


def _running_sums(rewards: np.ndarray, episode: np.ndarray, gamma: float) -> np.ndarray:
    """``acc = gamma * acc + r`` along the rows, restarting where ``episode`` changes. On the
    reversed rows it gives the discounted return from each decision on."""
    out = np.empty(len(rewards), dtype=np.float64)
    acc = 0.0
    for t in range(len(rewards)):
        if t and episode[t] != episode[t - 1]:
            acc = 0.0
        acc = acc * gamma + float(rewards[t])
        out[t] = acc
    return out


def collect(
    env: str,
    heuristic: str,
    episodes: int,
    env_kwargs: dict[str, Any],
    gamma: float = 1.0,
    progress: bool = True,
) -> Demonstrations:
    """``episodes`` validated episodes of ``heuristic`` on the env's training generator(s), each
    decision made in the env's own order (`stepwise`)."""
    obs: list[dict[str, np.ndarray]] = []
    masks: list[np.ndarray] = []
    actions: list[int] = []
    rewards: list[float] = []
    episode: list[int] = []

    def keep(o: Any, mask: np.ndarray, action: int, reward: float) -> None:
        # envs may reuse their observation buffers between steps: copy
        obs.append({k: np.array(v, dtype=np.float32) for k, v in o.items()})
        masks.append(np.array(mask, dtype=bool))
        actions.append(action)
        rewards.append(reward)

    if episodes < 1:
        raise SchedgymError(f"imitating {heuristic}: needs at least one episode, got {episodes}")
    for i in tqdm(range(episodes), desc=f"imitating {heuristic}", disable=not progress):
        first = len(rewards)
        run_episode(
            env,
            stepwise(env, heuristic),
            seed=DEMO_SEED_OFFSET + i,
            env_kwargs=generator_kwargs(env_kwargs, i),
            on_step=keep,
        )
        if len(rewards) == first:
            raise SchedgymError(
                f"imitating {heuristic}: it made no step decisions to clone (a solver policy "
                "plans whole episodes; clone a heuristic)"
            )
        episode.extend([i] * (len(rewards) - first))
    return Demonstrations.from_rows(obs, masks, actions, rewards, episode, gamma)


def clone(
    policy: MaskableActorCriticPolicy,
    demos: Demonstrations,
    epochs: int = 10,
    batch_size: int = 256,
    vf_coef: float = 0.5,
    return_scale: float = 1.0,
    holdout: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Fit ``policy`` to the demonstrations with its own optimizer, its value head to the
    returns divided by ``return_scale`` (the reward scale PPO will train with); returns the
    greedy policy's agreement with the heuristic on the held-out last episodes (and on the
    training ones)."""
    n_episodes = int(demos.episode.max()) + 1
    first_held = n_episodes - max(1, round(holdout * n_episodes)) if n_episodes > 1 else 1
    train_rows = np.flatnonzero(demos.episode < first_held)
    held_rows = np.flatnonzero(demos.episode >= first_held)
    rng = np.random.default_rng(seed)
    policy.set_training_mode(True)
    bar = tqdm(range(epochs), desc="cloning", disable=not progress)
    for _ in bar:
        order = rng.permutation(train_rows)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            obs, actions, masks, returns = _batch(policy, demos, rows)
            values, log_prob, _ = policy.evaluate_actions(obs, actions, action_masks=masks)
            value_loss = th.nn.functional.mse_loss(values.flatten(), returns / return_scale)
            loss = -log_prob.mean() + vf_coef * value_loss
            policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
            policy.optimizer.step()
        bar.set_postfix(loss=loss.item())
    policy.set_training_mode(False)
    return {
        "train_agreement": _agreement(policy, demos, train_rows, batch_size),
        "held_out_agreement": _agreement(policy, demos, held_rows, batch_size),
        "decisions": float(len(demos)),
        "episodes": float(n_episodes),
    }


def _batch(
    policy: MaskableActorCriticPolicy, demos: Demonstrations, rows: np.ndarray
) -> tuple[dict[str, th.Tensor], th.Tensor, np.ndarray, th.Tensor]:
    obs = {k: th.as_tensor(v[rows], device=policy.device) for k, v in demos.obs.items()}
    actions = th.as_tensor(demos.actions[rows], device=policy.device)
    returns = th.as_tensor(demos.returns[rows], device=policy.device)
    return obs, actions, demos.masks[rows], returns


def _agreement(
    policy: MaskableActorCriticPolicy, demos: Demonstrations, rows: np.ndarray, batch_size: int
) -> float:
    """Share of ``rows`` where the greedy masked action is the heuristic's."""
    if len(rows) == 0:
        return float("nan")
    same = 0
    with th.no_grad():
        for start in range(0, len(rows), batch_size):
            obs, actions, masks, _ = _batch(policy, demos, rows[start : start + batch_size])
            greedy = policy.get_distribution(obs, action_masks=masks).get_actions(True)
            same += int((greedy == actions).sum())
    return same / len(rows)
