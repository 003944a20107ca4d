"""The two models search plans with (`search.Model`), chosen by ``--model``.

* `SimulatorModel` (AlphaZero-style): the env's own simulator. A handle is a ``get_state()``
  snapshot; a step restores it into the root's env, steps the true transition and reward, and
  reads the true action mask; a terminal state is worth 0; `SimulatorModel.finish` restores the
  root states after the search. Legitimate here because the simulator is the scheduler's own
  model of its machine. (A scratch copy of the env would not do: some envs' snapshots share
  their core object with the env that took them.) With a ``rollout`` policy (a heuristic of the
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

Both evaluate every new node of a simulation in one batched network call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th

from schedgym.agents.muzero.networks import MuZeroNet, obs_to_tensor
from schedgym.policy import Policy, resolve_policy

MODELS = ("simulator", "learned")


def _numpy(*tensors: th.Tensor) -> list[np.ndarray]:
    return [t.detach().double().numpy() for t in tensors]


class SimulatorModel:
    """Plans with the true simulator, through the root envs themselves (module docstring);
    `finish` puts every env back in its root state.

    ``rollout``: a policy of the env that values each new node by playing to the end (``None``:
    the value network alone); ``mix`` in [0, 1] weighs its return against the network's value;
    ``gamma`` discounts the rollout's rewards as the search does. Raises ``ValueError`` for a
    ``mix`` outside [0, 1]."""

    def __init__(
        self, net: MuZeroNet, rollout: Policy | None = None, mix: float = 1.0, gamma: float = 1.0
    ):
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"the rollout mix must lie in [0, 1], got {mix}")
        self.net = net
        self.rollout, self.mix, self.gamma = rollout, mix, gamma
        self._envs: list[Any] = []
        self._roots: list[Any] = []

    def _play_out(self, env: Any, obs: Any) -> float:
        """The discounted return of ``rollout`` from ``env``'s state to the episode's end; the
        env may be left at the end (callers restore a snapshot). A policy's own ``play_out(env)``
        (the undiscounted return, computed without stepping the env: `NonDelayRule.play_out`)
        is used when ``gamma`` is 1."""
        fast = getattr(self.rollout, "play_out", None)
        if fast is not None and self.gamma == 1.0:
            return float(fast(env))
        self.rollout.reset(env)
        total, discount, done = 0.0, 1.0, False
        while not done:
            obs, reward, term, trunc, _ = env.step(int(self.rollout.act(env, obs)))
            total += discount * float(reward)
            discount *= self.gamma
            done = term or trunc
        return total

    def _mixed(self, values: np.ndarray, returns: np.ndarray) -> np.ndarray:
        return values if self.rollout is None else (1 - self.mix) * values + self.mix * returns

    def root(self, envs: list[Any], obs: list[dict[str, np.ndarray]]):
        self._envs = [env.unwrapped for env in envs]
        self._roots = [env.get_state() for env in self._envs]
        masks = np.stack([np.asarray(env.action_masks(), bool) for env in self._envs])
        with th.inference_mode():
            logits, values = _numpy(*self.net.predict(self.net.represent(obs_to_tensor(obs))[0]))
        returns = np.zeros(len(self._envs))
        if self.rollout is not None:
            for i, (env, o, state) in enumerate(zip(self._envs, obs, self._roots, strict=True)):
                returns[i] = self._play_out(env, o)
                env.set_state(state)
        return list(enumerate(self._roots)), logits, self._mixed(values, returns), masks

    def step(self, handles: list[Any], actions: np.ndarray):
        n, n_actions = len(handles), self.net.n_actions
        out, obs = [], []
        rewards, terminal, returns = np.zeros(n), np.zeros(n, bool), np.zeros(n)
        masks = np.zeros((n, n_actions), bool)
        for i, ((row, state), action) in enumerate(zip(handles, actions, strict=True)):
            env = self._envs[row]
            env.set_state(state)
            o, rewards[i], term, trunc, _ = env.step(int(action))
            terminal[i] = term or trunc
            out.append((row, env.get_state()))
            if not terminal[i]:
                masks[i] = env.action_masks()
                # envs may refill one observation buffer in place: keep this one's values
                obs.append({k: np.array(v) for k, v in o.items()})
                if self.rollout is not None:
                    returns[i] = self._play_out(env, o)
        logits, values = np.zeros((n, n_actions)), np.zeros(n)
        if obs:
            with th.inference_mode():
                lg, val = self.net.predict(self.net.represent(obs_to_tensor(obs))[0])
            logits[~terminal], values[~terminal] = _numpy(lg, val)
        return out, rewards, logits, self._mixed(values, returns), masks, terminal

    def finish(self) -> None:
        for env, state in zip(self._envs, self._roots, strict=True):
            env.set_state(state)


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

    def finish(self) -> None:
        """Nothing to restore: the learned model never touches the envs."""


def make_model(
    kind: str,
    net: MuZeroNet,
    env: str | None = None,
    rollout: str | None = None,
    mix: float = 1.0,
    gamma: float = 1.0,
) -> SimulatorModel | LearnedModel:
    """The model named by ``--model``; ``rollout`` names a policy of ``env`` (``--rollout``,
    e.g. ``heuristic:mwkr``) for `SimulatorModel`'s leaf values. Raises ``ValueError`` on
    another model name, or for a rollout with the learned model (it has no state to play a
    policy from); ``SchedgymError`` when ``env`` has no such policy."""
    if kind == "simulator":
        if rollout is None:
            return SimulatorModel(net, None, mix, gamma)
        if env is None:
            raise ValueError(f"rollout {rollout!r} given without the env it plays")
        return SimulatorModel(net, resolve_policy(env, rollout), mix, gamma)
    if kind == "learned":
        if rollout is not None:
            raise ValueError("rollouts need the true simulator: use --model simulator")
        return LearnedModel(net)
    raise ValueError(f"unknown model {kind!r}: use one of {', '.join(MODELS)}")
