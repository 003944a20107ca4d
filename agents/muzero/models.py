"""The two models search plans with (`search.Model`), chosen by ``--model``.

* `SimulatorModel` (AlphaZero-style): the env's own simulator. A handle is a ``get_state()``
  snapshot; a step restores it into the root's env, steps the true transition and reward, and
  reads the true action mask; a terminal state is worth 0; `SimulatorModel.finish` restores the
  root states after the search. Legitimate here because the simulator is the scheduler's own
  model of its machine. (A scratch copy of the env would not do: some envs' snapshots share
  their core object with the env that took them.)
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

MODELS = ("simulator", "learned")


def _numpy(*tensors: th.Tensor) -> list[np.ndarray]:
    return [t.detach().double().numpy() for t in tensors]


class SimulatorModel:
    """Plans with the true simulator, through the root envs themselves (module docstring);
    `finish` puts every env back in its root state."""

    def __init__(self, net: MuZeroNet):
        self.net = net
        self._envs: list[Any] = []
        self._roots: list[Any] = []

    def root(self, envs: list[Any], obs: list[dict[str, np.ndarray]]):
        self._envs = [env.unwrapped for env in envs]
        self._roots = [env.get_state() for env in self._envs]
        masks = np.stack([np.asarray(env.action_masks(), bool) for env in self._envs])
        with th.inference_mode():
            logits, values = self.net.predict(self.net.represent(obs_to_tensor(obs))[0])
        return (list(enumerate(self._roots)), *_numpy(logits, values), masks)

    def step(self, handles: list[Any], actions: np.ndarray):
        n, n_actions = len(handles), self.net.n_actions
        out, obs = [], []
        rewards, terminal = np.zeros(n), np.zeros(n, bool)
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
        logits, values = np.zeros((n, n_actions)), np.zeros(n)
        if obs:
            with th.inference_mode():
                lg, val = self.net.predict(self.net.represent(obs_to_tensor(obs))[0])
            logits[~terminal], values[~terminal] = _numpy(lg, val)
        return out, rewards, logits, values, masks, terminal

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


def make_model(kind: str, net: MuZeroNet) -> SimulatorModel | LearnedModel:
    """The model named by ``--model``; raises ``ValueError`` on another name."""
    if kind == "simulator":
        return SimulatorModel(net)
    if kind == "learned":
        return LearnedModel(net)
    raise ValueError(f"unknown model {kind!r}: use one of {', '.join(MODELS)}")
