"""DAgger: the cloned policy plays, the heuristic labels the states it reaches, clone again.

Behaviour cloning (``agents/imitation.py``) fits the policy on the states the heuristic visits. A
policy that errs drifts to states the heuristic never showed it, and its errors compound: Ross,
Gordon & Bagnell ("A Reduction of Imitation Learning and Structured Prediction to No-Regret
Online Learning", AISTATS 2011) bound cloning's extra cost by O(T^2) of the per-step error over
T decisions, against O(T) for DAgger, which plays the current policy on fresh instances, records
the heuristic's action in every state the policy reaches, adds those rows to the
demonstrations and fits again (their algorithm 3.1 with beta = 0 after the first round: the
learner alone drives). Online DAG episodes are hundreds of decisions long, so the drift is real:
a MinMin clone agreeing on 79 % of held-out decisions scored 8.6 % above MinMin's mean
slowdown on validation (docs/results.md).

Used by ``scripts/train_policies.py`` (a recipe's ``dagger`` settings) after ``agents.ppo.train``
has cloned the heuristic; each round's policy is saved for validation to choose among.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from schedgym.agents.imitation import Demonstrations, clone, generator_kwargs, stepwise
from schedgym.episode import make_env
from schedgym.errors import SchedgymError
from schedgym.registry import env_entry

# Rounds' episodes reset with seeds from here: apart from the demonstrations' (900,000 + i),
# validation's (500,000 + i), the training envs' (0, 1000, ...) and the test suites'
# (10,000-19,999).
DAGGER_SEED_OFFSET = 950_000


def relabel(
    env: str,
    learner: Callable[[Any, Any], int],
    heuristic: str,
    episodes: int,
    env_kwargs: dict[str, Any],
    seed: int,
    gamma: float = 1.0,
) -> Demonstrations:
    """``episodes`` episodes driven by ``learner(env, obs) -> action``, each state labelled with
    the action ``heuristic`` would take there (its ``act``, as `imitation.stepwise` plays it).

    Episode ``i`` resets with ``seed + i`` on the ``i``-th generator of ``env_kwargs``' case mix.
    Rewards and returns are the learner's (the value head then fits the policy that drives).
    Raises ``SchedgymError`` for fewer than one episode or a heuristic that cannot act step by
    step (a solver)."""
    if episodes < 1:
        raise SchedgymError(f"relabelling with {heuristic}: needs at least one episode")
    teacher = stepwise(env, heuristic)
    if not callable(getattr(teacher, "act", None)) or getattr(teacher, "kind", "") != "heuristic":
        raise SchedgymError(f"relabelling with {heuristic}: it must be a heuristic that acts")
    name = env_entry(env).name
    obs_rows: list[dict[str, np.ndarray]] = []
    masks, labels, rewards, episode = [], [], [], []
    for i in range(episodes):
        e = make_env(name, **generator_kwargs(env_kwargs, i))
        obs, _ = e.reset(seed=seed + i)
        raw = e.unwrapped
        teacher.reset(raw)
        done = False
        while not done:
            masks.append(np.array(raw.action_masks(), dtype=bool))
            obs_rows.append({k: np.array(v, dtype=np.float32) for k, v in obs.items()})
            labels.append(int(teacher.act(raw, obs)))
            obs, reward, done, _, _ = e.step(learner(raw, obs))
            rewards.append(float(reward))
            episode.append(i)
    return Demonstrations.from_rows(obs_rows, masks, labels, rewards, episode, gamma)


def merge(first: Demonstrations, then: Demonstrations) -> Demonstrations:
    """``first``'s rows, then ``then``'s, episodes renumbered after ``first``'s (so ``clone``'s
    held-out rows, the last episodes, stay ``then``'s)."""
    offset = int(first.episode.max()) + 1
    return Demonstrations(
        obs={k: np.concatenate([first.obs[k], then.obs[k]]) for k in first.obs},
        masks=np.concatenate([first.masks, then.masks]),
        actions=np.concatenate([first.actions, then.actions]),
        rewards=np.concatenate([first.rewards, then.rewards]),
        returns=np.concatenate([first.returns, then.returns]),
        episode=np.concatenate([first.episode, then.episode + offset]),
    )


def dagger(
    model: Any,
    env: str,
    heuristic: str,
    demos: Demonstrations,
    env_kwargs: dict[str, Any],
    *,
    rounds: int,
    episodes: int,
    epochs: int,
    batch_size: int,
    gamma: float = 1.0,
    on_round: Callable[[int, Any], None] | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """``rounds`` rounds of DAgger on a cloned ``MaskablePPO`` ``model`` (trained in place):
    each plays ``episodes`` fresh training instances greedily (seeds ``DAGGER_SEED_OFFSET +
    1000 * round + i``), relabels them with ``heuristic``, puts them before the rows so far
    (``demos`` first: the heuristic's own episodes stay the held-out ones) and clones ``epochs``
    epochs. ``on_round(k, model)`` runs after round ``k`` (to save or validate it). Returns
    each round's ``clone`` statistics."""

    def learner(raw: Any, obs: Any) -> int:
        action, _ = model.predict(obs, action_masks=raw.action_masks(), deterministic=True)
        return int(action)

    stats = []
    for k in tqdm(range(rounds), desc="DAgger", disable=not progress):
        played = relabel(
            env, learner, heuristic, episodes, env_kwargs, DAGGER_SEED_OFFSET + 1000 * k, gamma
        )
        demos = merge(played, demos)
        stats.append(
            {
                "round": float(k),
                **clone(model.policy, demos, epochs=epochs, batch_size=batch_size, progress=False),
            }
        )
        if on_round is not None:
            on_round(k, model)
    return stats
