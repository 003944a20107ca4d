"""The two models search plans with (`search.Model`), chosen by ``--model``.

* `SimulatorModel` (AlphaZero-style): the env's own simulator. A handle holds a ``get_state()``
  snapshot (and the node's observation, for a deferred network call); a step restores it into
  the root's env, steps the true transition and reward, and reads the true action mask; a
  terminal state is worth 0; `SimulatorModel.finish` restores the root states after the
  search. Legitimate here because the simulator is the scheduler's own model of its machine,
  as long as the search starts from what the scheduler knows: where an env's state also holds
  what is not yet revealed (the DAG env's jobs yet to arrive and realised task times), its
  ``known_state()`` gives the state without it, and the search plans from that (the dynamics
  then assume no further arrivals and the estimated times); elsewhere from ``get_state()``.
  (A scratch copy of the env would not do: some envs' snapshots share their core object with
  the env that took them.) With a ``rollout`` policy (a heuristic of the
  env, ``--rollout heuristic:mor``) every new node, the root included, is also valued by playing
  that policy to the episode's end: the leaf value is ``(1 - mix) * v_net + mix * z``, ``z`` the
  rollout's return, AlphaGo's mixing parameter lambda (Silver et al., Nature 2016, "Searching
  with policy networks and value networks"). On a static instance the rollout's return is the
  exact value of finishing by that heuristic, so the search becomes a rollout algorithm over
  the prior's candidates, which never ends worse than the heuristic it completes with
  (Bertsekas, Tsitsiklis and Wu, J. Heuristics 1997) when ``mix`` is 1 and every legal action
  is considered.
* `LearnedModel` (MuZero): the dynamics network `MuZeroNet.dynamics_step`. A handle is a latent
  state and its entity padding; below the root the mask is the root's padding (every option of
  a real entity, every special action), since the network cannot know which moves the true
  state would allow; no state is terminal.

With ``anchor`` the root's prior ranks the first rollout policy's own action first
(`ANCHOR_NATS` above the best other legal logit): it is always among the considered actions, and
where the search values it as high as any other the decision is the base heuristic's, as a
rollout algorithm breaks its ties (Bertsekas, Tsitsiklis and Wu, J. Heuristics 1997, where
keeping the base's choice on ties is what makes the rollout no worse than its base for a
sequentially improving heuristic). Without it a tie goes to the network's favourite, which on
batching (a decision's play-out often sees no miss either way) turned the planner into its
PPO prior (docs/results.md).

With ``fortify`` (acting only, `SimulatorModel.found` and `SimulatorModel.replay`), the policy
keeps the best complete action sequence any search of the episode has found (a tree path and
the rollout that finished it) and follows it until a search finds a better one: Bertsekas,
Tsitsiklis and Wu's *fortified* rollout (J. Heuristics 1997, section 2; Bertsekas, "Rollout,
Policy Iteration, and Distributed Reinforcement Learning", 2020, section 2.3.1), which ends no
worse than the best rollout it has seen, the base heuristic's from the first state included,
where the plain rollout algorithm only does so for "sequentially improving" heuristics.

Both evaluate every new node of a simulation in one batched network call, except that with pure
rollout values (``mix`` 1) `SimulatorModel` defers a node's network call until a simulation
descends through it (`SimulatorModel.lazy`): the value is the rollout's, so only a visited
node's prior is ever needed, and on the job shop that cuts 16 network calls a decision to 1-2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th

from schedgym.agents.muzero.networks import MuZeroNet, obs_to_tensor
from schedgym.policy import Policy, RandomPolicy, resolve_policy

MODELS = ("simulator", "learned")
# the anchored action's logit lead: more than the last-bit noise of equal returns (completed Q
# is normalised over at least 1e-8), far less than any real difference of values
ANCHOR_NATS = 1e-3


def _numpy(*tensors: th.Tensor) -> list[np.ndarray]:
    return [t.detach().double().numpy() for t in tensors]


class SimulatorModel:
    """Plans with the true simulator, through the root envs themselves (module docstring);
    `finish` puts every env back in its root state.

    ``rollout``: a policy of the env, or several, that value each new node by playing to the
    end (``None``: the value network alone); with several the value is the best of their
    returns, Bertsekas's "superheuristic": the best of several base heuristics is itself a base
    heuristic, and a rollout on it never ends worse than any of them (Bertsekas, Tsitsiklis and
    Wu, J. Heuristics 1997, section 3). ``mix`` in [0, 1] weighs that return against the
    network's value; ``gamma`` discounts the rollout's rewards as the search does.

    ``fortify``: also record, per root, the best complete sequence the search found (`found`),
    for a fortified rollout policy (module docstring). ``anchor``: rank the first rollout
    policy's action first in the root's prior (module docstring). Raises ``ValueError`` for a
    ``mix`` outside [0, 1], ``fortify`` or ``anchor`` without a rollout policy (a sequence needs
    a completion; an anchor, a base), or ``fortify`` with ``random`` among them (a held
    sequence must end as it was valued)."""

    def __init__(
        self,
        net: MuZeroNet,
        rollout: Policy | Sequence[Policy] | None = None,
        mix: float = 1.0,
        gamma: float = 1.0,
        fortify: bool = False,
        anchor: bool = False,
    ):
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"the rollout mix must lie in [0, 1], got {mix}")
        self.net = net
        if rollout is None:
            rollout = ()
        self.rollouts = tuple(rollout) if isinstance(rollout, Sequence) else (rollout,)
        if fortify and not self.rollouts:
            raise ValueError("a fortified planner needs a rollout policy to finish its sequences")
        if anchor and not self.rollouts:
            raise ValueError("an anchored planner needs a rollout policy to anchor to")
        if fortify and any(isinstance(p, RandomPolicy) for p in self.rollouts):
            # a held sequence ends in its rollout policy's moves: they must be the ones valued
            raise ValueError("a fortified planner needs deterministic rollout policies, not random")
        self.mix, self.gamma, self.fortify, self.anchor = mix, gamma, fortify, anchor
        self._envs: list[Any] = []
        self._roots: list[Any] = []
        self.found: list[dict[int | None, Found]] = []

    def _play_out(
        self, env: Any, obs: dict[str, np.ndarray], only: int | None = None
    ) -> tuple[float, int]:
        """The best discounted return of the rollout policies (or of policy ``only``) from
        ``env``'s state to the episode's end, and the index of the policy that gave it; the env
        may be left at an end (callers restore a snapshot). A policy's own ``play_out(env)``
        (the undiscounted return, computed without stepping the env: `NonDelayRule.play_out`)
        is used when ``gamma`` is 1."""
        chosen = [(k, p) for k, p in enumerate(self.rollouts) if only is None or k == only]
        # every play-out may leave the env at an end (a fast one too: `ListScheduler.play_out`)
        start = env.get_state() if len(chosen) > 1 else None
        best, which, o = -math.inf, 0, obs
        for n, (k, policy) in enumerate(chosen):
            if n:
                o = env.set_state(start)
            fast = getattr(policy, "play_out", None)
            if fast is not None and self.gamma == 1.0:
                total = float(fast(env))
            else:
                policy.reset(env)
                total, discount, done = 0.0, 1.0, False
                while not done:
                    o, reward, term, trunc, _ = env.step(int(policy.act(env, o)))
                    total += discount * float(reward)
                    discount *= self.gamma
                    done = term or trunc
            if total > best:
                best, which = total, k
        return best, which

    def _record(self, row: int, path: tuple[int, ...], value: float, rollout: int) -> None:
        """Keep ``path`` (then ``rollout`` to the end) if it is the best complete sequence found
        through its first action (the key ``None``: the root's own rollout); only when
        fortified, as nothing else reads it."""
        if not self.fortify:
            return
        key = path[0] if path else None
        held = self.found[row].get(key)
        if held is None or value > held.value:
            self.found[row][key] = Found(value, path, rollout)

    def replay(self, env: Any, path: Sequence[int], rollout: int) -> float | None:
        """The discounted return, from what the scheduler knows of ``env``'s current state, of
        taking ``path`` and then following rollout policy ``rollout`` to the end (``None`` if an
        action of ``path`` is illegal there or the episode ends before it is done); ``env`` is
        left as it was. A fortified policy re-values the sequence it holds with this each
        decision, so arrivals and noise since it was found count. Raises ``ValueError`` for an
        action outside ``0..A-1`` or a rollout index the model does not have."""
        if not 0 <= rollout < len(self.rollouts):
            raise ValueError(f"replay: no rollout policy {rollout} (0..{len(self.rollouts) - 1})")
        bad = [
            a for a in path if not (isinstance(a, int | np.integer) and 0 <= a < self.net.n_actions)
        ]
        if bad:
            raise ValueError(f"replay: action {bad[0]!r} is not one of 0..{self.net.n_actions - 1}")
        env = env.unwrapped
        root = env.get_state()
        state = env.known_state() if hasattr(env, "known_state") else root
        try:
            o = env.set_state(state)
            total, discount, done = 0.0, 1.0, False
            for action in path:
                if done or not env.action_masks()[action]:
                    return None
                o, reward, term, trunc, _ = env.step(int(action))
                total += discount * float(reward)
                discount *= self.gamma
                done = term or trunc
            return total if done else total + discount * self._play_out(env, o, rollout)[0]
        finally:
            env.set_state(root)

    def _mixed(self, values: np.ndarray, returns: np.ndarray) -> np.ndarray:
        return values if not self.rollouts else (1 - self.mix) * values + self.mix * returns

    def root(self, envs: list[Any], obs: list[dict[str, np.ndarray]]):
        self._envs = [env.unwrapped for env in envs]
        self._roots = [env.get_state() for env in self._envs]
        # plan from what the scheduler knows where the env's state holds more (module docstring)
        known = [
            env.known_state() if hasattr(env, "known_state") else root
            for env, root in zip(self._envs, self._roots, strict=True)
        ]
        masks = np.stack([np.asarray(env.action_masks(), bool) for env in self._envs])
        with th.inference_mode():
            logits, values = _numpy(*self.net.predict(self.net.represent(obs_to_tensor(obs))[0]))
        if self.anchor:
            base = self.rollouts[0]
            for i, (env, o) in enumerate(zip(self._envs, obs, strict=True)):
                base.reset(env)
                logits[i, int(base.act(env, o))] = logits[i, masks[i]].max() + ANCHOR_NATS
        returns = np.zeros(len(self._envs))
        self.found = [{} for _ in self._envs]
        if self.rollouts:
            for i, (env, o, state) in enumerate(zip(self._envs, obs, known, strict=True)):
                if state is not self._roots[i]:
                    o = env.set_state(state)
                returns[i], which = self._play_out(env, o)
                self._record(i, (), returns[i], which)
                env.set_state(self._roots[i])
        # a handle: (root row, snapshot, observation or None, path from the root, its return)
        handles = [(i, state, None, (), 0.0) for i, state in enumerate(known)]
        return handles, logits, self._mixed(values, returns), masks

    @property
    def lazy(self) -> bool:
        """With pure rollout values (``mix`` 1) a new node needs the network only for its
        prior, and only once a simulation descends through it: `step` then leaves its logits
        to `logits` (``None``), which saves all but a few network calls per search."""
        return bool(self.rollouts) and self.mix == 1.0

    def step(self, handles: list[Any], actions: np.ndarray):
        n, n_actions = len(handles), self.net.n_actions
        out, obs = [], []
        rewards, terminal, returns = np.zeros(n), np.zeros(n, bool), np.zeros(n)
        masks = np.zeros((n, n_actions), bool)
        for i, ((row, state, _, path, gain), action) in enumerate(
            zip(handles, actions, strict=True)
        ):
            env = self._envs[row]
            env.set_state(state)
            o, rewards[i], term, trunc, _ = env.step(int(action))
            terminal[i] = term or trunc
            # envs may refill one observation buffer in place: keep this one's values
            o = None if terminal[i] else {k: np.array(v) for k, v in o.items()}
            path, gain = (*path, int(action)), gain + self.gamma ** len(path) * rewards[i]
            out.append((row, env.get_state(), o, path, gain))
            if terminal[i]:
                if self.rollouts:
                    self._record(row, path, gain, 0)
                continue
            masks[i] = env.action_masks()
            obs.append(o)
            if self.rollouts:
                returns[i], which = self._play_out(env, o)
                self._record(row, path, gain + self.gamma ** len(path) * returns[i], which)
        if self.lazy:
            return out, rewards, None, returns, masks, terminal
        logits, values = np.zeros((n, n_actions)), np.zeros(n)
        if obs:
            with th.inference_mode():
                lg, val = self.net.predict(self.net.represent(obs_to_tensor(obs))[0])
            logits[~terminal], values[~terminal] = _numpy(lg, val)
        return out, rewards, logits, self._mixed(values, returns), masks, terminal

    def logits(self, handles: list[Any]) -> np.ndarray:
        """The prior's logits ``(n, A)`` at non-terminal nodes that `step` left unevaluated."""
        with th.inference_mode():
            latent = self.net.represent(obs_to_tensor([h[2] for h in handles]))[0]
            return _numpy(self.net.predict(latent)[0])[0]

    def finish(self) -> None:
        for env, state in zip(self._envs, self._roots, strict=True):
            env.set_state(state)


@dataclass(frozen=True)
class Found:
    """A complete action sequence from a search's root: ``path`` (root actions down the tree),
    then rollout policy ``rollout`` to the episode's end; ``value`` its discounted return."""

    value: float
    path: tuple[int, ...]
    rollout: int


class LearnedModel:
    """Plans with the learned dynamics (module docstring)."""

    def __init__(self, net: MuZeroNet):
        self.net = net

    def root(self, envs: list[Any], obs: list[dict[str, np.ndarray]]):
        masks = np.stack([np.asarray(env.action_masks(), bool) for env in envs])
        with th.inference_mode():
            latent, present = self.net.represent(obs_to_tensor(obs))
            logits, values = self.net.predict(latent)
        return (list(zip(latent, present, strict=True)), *_numpy(logits, values), masks)

    def step(self, handles: list[Any], actions: np.ndarray):
        with th.inference_mode():
            latent = th.stack([h[0] for h in handles])
            present = th.stack([h[1] for h in handles])
            latent, reward = self.net.dynamics_step(latent, present, th.as_tensor(actions))
            logits, values = self.net.predict(latent)
            masks = self.net.presence_mask(present).numpy()
        terminal = np.zeros(len(handles), bool)
        return (
            list(zip(latent, present, strict=True)),
            *_numpy(reward, logits, values),
            masks,
            terminal,
        )

    def logits(self, handles: list[Any]) -> np.ndarray:
        """The prediction network's logits ``(n, A)`` at latent states (`search.Model`'s
        protocol; `step` always returns them, so search needs this only from other callers)."""
        with th.inference_mode():
            return _numpy(self.net.predict(th.stack([h[0] for h in handles]))[0])[0]

    def finish(self) -> None:
        """Nothing to restore: the learned model never touches the envs."""


def make_model(
    kind: str,
    net: MuZeroNet,
    env: str | None = None,
    rollout: str | None = None,
    mix: float = 1.0,
    gamma: float = 1.0,
    fortify: bool = False,
    anchor: bool = False,
) -> SimulatorModel | LearnedModel:
    """The model named by ``--model``; ``rollout`` names a policy of ``env`` (``--rollout``,
    e.g. ``heuristic:mwkr``), or several joined by commas (``heuristic:mwkr,heuristic:mor``:
    the best of their returns), for `SimulatorModel`'s leaf values; ``fortify`` records the
    searches' best sequences for a fortified rollout policy; ``anchor`` ranks the first rollout
    policy's action first at the root. Raises ``ValueError`` on another model name, for a
    rollout, ``fortify`` or ``anchor`` with the learned model (it has no state to play a policy
    from), or ``fortify`` or ``anchor`` without a rollout; ``SchedgymError`` when ``env`` has no
    such policy."""
    if kind == "simulator":
        if rollout is None:
            return SimulatorModel(net, None, mix, gamma, fortify, anchor)
        if env is None:
            raise ValueError(f"rollout {rollout!r} given without the env it plays")
        policies = [resolve_policy(env, name.strip()) for name in rollout.split(",")]
        return SimulatorModel(net, policies, mix, gamma, fortify, anchor)
    if kind == "learned":
        if rollout is not None:
            raise ValueError("rollouts need the true simulator: use --model simulator")
        if fortify or anchor:
            raise ValueError(
                f"{'fortification' if fortify else 'an anchor'} needs the true simulator and a "
                "rollout policy"
            )
        return LearnedModel(net)
    raise ValueError(f"unknown model {kind!r}: use one of {', '.join(MODELS)}")
