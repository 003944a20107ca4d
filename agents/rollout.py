"""A fortified rollout over a PPO checkpoint: plan each decision by playing the network out.

The rollout algorithm (Bertsekas, Tsitsiklis and Wu, "Rollout algorithms for combinatorial
optimization", J. Heuristics 3, 1997; Bertsekas, "Rollout, Policy Iteration, and Distributed
Reinforcement Learning", 2020, ch. 2) improves a *base policy* by one step of lookahead: at
every decision each candidate action is taken on a copy of the env and the base policy plays the
episode out from there; the action whose play-out returns the most is taken (ties go to the
base policy's preference). Here the base policy is a PPO checkpoint's greedy policy, so a
decision costs one play-out of the network per candidate. The play-outs of all candidates run
in lockstep, each of their steps one batched network call: the network, not the simulator, is
what a decision spends its time on.

*Fortified* (Bertsekas, Tsitsiklis and Wu, section 2): the policy keeps the best complete action
sequence the play-outs have found so far and follows it unless a later decision's play-outs
find a better one, so an episode returns at least what the base policy returns from its first
state. The plain rollout guarantees that only for "sequentially consistent" bases, and a
network is not one.

Honest only where the play-outs start from nothing a real scheduler would not know
(docs/agents.md, "Two models"). The job shop and memory mapping hold nothing more, and acting
on them is deterministic, so the policy plays out from their state and fortifies. The DAG env
offers ``known_state()`` (the jobs not yet released dropped, the estimated task times taken as
the realised ones): the play-outs start from that, and the policy does not fortify, since the
env need not follow a sequence planned on estimates. Batching and MoE offloading hold the
future (true output lengths, arrivals, expert routing) and offer no ``known_state``: the policy
refuses them, and any other env without one, rather than be an oracle.

Policy name: ``rollout:PATH`` (every legal action is a candidate) or ``rollout:PATH@K`` (the
base policy's ``K`` most probable actions; ``@1`` is the base policy itself, played without
play-outs), with ``PATH`` a ``ppo:`` checkpoint folder or zip; a ``PATH`` that contains ``@``
needs its ``@K``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from schedgym.agents.ppo import PPOPolicy
from schedgym.errors import SchedgymError
from schedgym.policy import PolicyKind, unwrap_env

# envs whose state holds nothing a scheduler would not know (module docstring); another env
# opts in by offering known_state()
FULLY_KNOWN = [["schedgym", "envs", "jobshop"], ["schedgym", "envs", "memory"]]


def parse_spec(spec: str) -> tuple[Path, int | None]:
    """``PATH`` or ``PATH@K`` to ``(path, K or None)``; ``SchedgymError`` for a ``K`` below 1
    or not an integer."""
    base, at, count = spec.rpartition("@")
    if not at:
        return Path(spec), None
    if not (count.isascii() and count.isdigit()) or int(count) < 1:
        raise SchedgymError(
            f"rollout:{spec}: the number of candidates after '@' must be an integer >= 1"
        )
    return Path(base), int(count)


class RolloutPolicy:
    """Fortified rollout (module docstring) with a PPO checkpoint's greedy policy as the base.

    ``spec``: ``PATH`` or ``PATH@K`` (module docstring). A decision plays the base policy out
    from every candidate action, in lockstep on copies of the env: about ``candidates x steps
    left`` env steps and ``steps left`` batched network calls of up to ``candidates`` rows.
    Raises ``SchedgymError`` for a bad ``spec`` or a checkpoint that is not PPO's (`PPOPolicy`),
    and at `reset` for an env whose observations or actions the network was not trained on, or
    one without ``get_state``/``set_state``.
    """

    kind: PolicyKind = "learned"

    def __init__(self, spec: str, name: str | None = None):
        path, self.candidates = parse_spec(spec)
        self.base = PPOPolicy(path)
        self.net = self.base.model.policy
        self.name = name or f"rollout:{spec}"
        self._pool: list[Any] = []
        # the fortified sequence still to play: (action, the reward it was found to give)
        self._held: list[tuple[int, float]] = []

    def reset(self, env: Any) -> None:
        """Check ``env`` against the network and forget the previous episode's sequence."""
        self.base.reset(env)
        inner = unwrap_env(env)
        if not (hasattr(inner, "get_state") and hasattr(inner, "set_state")):
            raise SchedgymError(
                f"{self.name}: {type(inner).__name__} has no get_state/set_state to play out from"
            )
        home = type(inner).__module__.split(".")[:3]  # ["schedgym", "envs", "jobshop"]
        if not hasattr(inner, "known_state") and home not in FULLY_KNOWN:
            raise SchedgymError(
                f"{self.name}: {type(inner).__name__}'s state holds what a scheduler cannot know "
                "(the future) and it offers no known_state(), so play-outs from it would be an "
                "oracle; plan it with a learned model instead (schedgym train --algo muzero "
                "--model learned)"
            )
        self._pool, self._held = [], []

    def _logits(self, obs: list[dict[str, np.ndarray]], masks: np.ndarray) -> np.ndarray:
        """The base policy's masked logits ``(len(obs), A)`` for a batch of observations.

        The network runs on the rows up to the last present one of each group (entities and
        every context group), not on the padding: a 15x15 job shop fills 15 of 100 job rows and
        15 of 20 machine rows, and the Transformer's cost grows with the rows. Padding is masked
        out of attention and scores nothing, so the kept logits are the full network's
        (`tests/test_rollout.py` checks); the encoder and action head take their row count from
        the ``n_entities`` attribute (``agents/networks.py``), set here for the call.
        """
        batch = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
        encoder, head = self.net.features_extractor, self.net.action_net
        n_full = encoder.n_entities
        n_special = head.special.out_features if head.special is not None else 0
        options = (masks.shape[1] - n_special) // n_full
        chosen = masks[:, : n_full * options].reshape(len(obs), n_full, options).any(axis=2)
        for key, mask in [("entities", "entity_mask")] + [(g, f"{g}_mask") for g in encoder.groups]:
            needed = batch[mask] > 0
            if key == "entities":  # a legal action's row is never cut, present or not
                needed = needed | chosen
            kept = np.flatnonzero(needed.any(axis=0))
            rows = int(kept[-1]) + 1 if len(kept) else 1
            batch[key], batch[mask] = batch[key][:, :rows], batch[mask][:, :rows]
        rows = batch["entities"].shape[1]
        tensor = {k: th.as_tensor(v, dtype=th.float32) for k, v in batch.items()}
        try:
            encoder.n_entities = head.n_entities = rows
            with th.inference_mode():
                latent = self.net.mlp_extractor.forward_actor(self.net.extract_features(tensor))
                kept = self.net.action_net(latent).numpy()
        finally:
            encoder.n_entities = head.n_entities = n_full
        logits = np.full(masks.shape, -np.inf, dtype=np.float32)
        logits[:, : rows * options] = kept[:, : rows * options]
        logits[:, n_full * options :] = kept[:, rows * options :]
        logits[~masks] = -np.inf
        return logits

    def _play_outs(
        self, state: Any, actions: np.ndarray, like: Any
    ) -> list[list[tuple[int, float]]]:
        """Each action's sequence from ``state`` as ``(action, reward)`` pairs: the action, then
        the base policy greedily to the episode's end, all actions' play-outs in lockstep."""
        while len(self._pool) < len(actions):
            self._pool.append(copy.deepcopy(like))
        sequences: list[list[tuple[int, float]]] = [[] for _ in actions]
        live, moves = list(range(len(actions))), [int(a) for a in actions]
        for k in live:
            self._pool[k].set_state(state)
        while live:
            still, obs = [], []
            for k, action in zip(live, moves, strict=True):
                o, reward, term, trunc, _ = self._pool[k].step(action)
                sequences[k].append((action, float(reward)))
                if not (term or trunc):
                    still.append(k)
                    # envs may refill one observation buffer in place: keep this one's values
                    obs.append({key: np.array(v) for key, v in o.items()})
            live = still
            if live:
                masks = np.stack([np.asarray(self._pool[k].action_masks(), bool) for k in live])
                moves = [int(a) for a in self._logits(obs, masks).argmax(axis=1)]
        return sequences

    def act(self, env: Any, obs: Any) -> int:
        inner = unwrap_env(env)
        mask = np.asarray(inner.action_masks(), bool)
        legal = np.flatnonzero(mask)
        if len(legal) == 0:
            raise SchedgymError(f"{self.name}: no legal action in this state")
        fortify = not hasattr(inner, "known_state")
        if not (fortify and self._held and mask[self._held[0][0]]):
            self._held = []
        if len(legal) == 1:  # a forced move: nothing to compare, and no network call
            self._held = self._held[1:]
            return int(legal[0])
        logits = self._logits([obs], mask[None])[0]
        # candidates in the base policy's order of preference, so ties go to its favourite
        order = legal[np.argsort(-logits[legal], kind="stable")]
        candidates = order[: self.candidates]
        if len(candidates) == 1:  # @1: the base policy itself, nothing to compare
            return int(candidates[0])
        state = inner.get_state() if fortify else inner.known_state()
        sequences = self._play_outs(state, candidates, inner)
        returns = [sum(r for _, r in seq) for seq in sequences]
        best = int(np.argmax(returns))  # the first maximum: the base's favourite among ties
        if not self._held or returns[best] > sum(r for _, r in self._held):
            self._held = sequences[best]
        action = self._held[0][0]
        self._held = self._held[1:] if fortify else []
        return int(action)
