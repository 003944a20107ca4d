"""The entity network of ``agents/networks.py`` as an RLlib ``RLModule`` (RLlib's new API
stack), with the action mask inside the observation.

RLlib's env runners know nothing of ``action_masks()``, so ``MaskedObservation`` adds the mask
to each observation under ``"action_mask"`` (float32 0/1, one per action), as RLlib's own
action-masking example does (``rllib/examples/rl_modules/classes/action_masking_rlm.py``).
``EntityRLModule`` reads the other keys with the same permutation-equivariant ``EntityEncoder``
the SB3 policy uses, scores actions with the same ``EntityActionHead`` and the value with the
same globals-token critic, and adds ``log(mask)`` (clamped to RLlib's ``FLOAT_MIN``) to the
logits, so sampling, the greedy action and PPO's ratios all see only legal actions. Nothing
depends on the number of entities but the padding, so a module trained on 6x6 job shops runs on
any instance up to its ``max_*`` sizes.

This module imports Ray at import time; ``agents/rllib.py`` loads it only when Ray is there.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.torch_utils import FLOAT_MIN
from torch import nn

from schedgym.agents.networks import EntityActionHead, EntityEncoder, EntityHeads

MASK_KEY = "action_mask"


class MaskedObservation(gym.ObservationWrapper):
    """Adds the env's ``action_masks()`` to its Dict observation as ``"action_mask"``
    (``float32[n_actions]``, 1 = legal)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        n = env.action_space.n
        self.observation_space = gym.spaces.Dict(
            {
                **env.observation_space.spaces,
                MASK_KEY: gym.spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32),
            }
        )

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mask = np.asarray(self.env.unwrapped.action_masks(), dtype=np.float32)
        return {**observation, MASK_KEY: mask}

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()


class EntityRLModule(TorchRLModule, ValueFunctionAPI):
    """PPO's policy and value over the entity layout. ``model_config``: ``options_per_entity``
    and ``n_special`` (the env's ``layout``), ``d_model``, ``layers``, ``heads``. Observations:
    the env's Dict plus ``"action_mask"`` (``MaskedObservation``), batched ``[B, ...]``;
    outputs logits ``[B, n_actions]`` with illegal actions at ``FLOAT_MIN`` and values ``[B]``.
    """

    def setup(self) -> None:
        cfg = self.model_config
        spaces = {k: v for k, v in self.observation_space.spaces.items() if k != MASK_KEY}
        inner = gym.spaces.Dict(spaces)
        n_entities = inner["entities"].shape[0]
        options, n_special = int(cfg["options_per_entity"]), int(cfg["n_special"])
        if n_entities * options + n_special != self.action_space.n:
            raise ValueError(
                f"layout mismatch: {n_entities} entities x {options} options + {n_special} "
                f"special actions != {self.action_space.n} actions"
            )
        d_model = int(cfg.get("d_model", 64))
        self.encoder = EntityEncoder(
            inner, d_model, int(cfg.get("layers", 2)), int(cfg.get("heads", 4))
        )
        self.critic = EntityHeads(self.encoder.features_dim, d_model)
        self.value_out = nn.Linear(self.critic.latent_dim_vf, 1)
        self.action_head = EntityActionHead(n_entities, d_model, options, n_special)
        # small initial logits, as SB3 (and the SB3 policy here) start: a near-uniform policy
        for m in self.action_head.modules():
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight, gain=0.01)
                nn.init.zeros_(m.bias)

    def _features(self, batch: dict[str, Any]) -> torch.Tensor:
        obs = batch[Columns.OBS]
        return self.encoder({k: v for k, v in obs.items() if k != MASK_KEY})

    def _logits(self, batch: dict[str, Any], features: torch.Tensor) -> torch.Tensor:
        mask = batch[Columns.OBS][MASK_KEY]
        return self.action_head(features) + torch.clamp(torch.log(mask), min=FLOAT_MIN)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features = self._features(batch)
        return {Columns.ACTION_DIST_INPUTS: self._logits(batch, features)}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features = self._features(batch)
        return {
            Columns.ACTION_DIST_INPUTS: self._logits(batch, features),
            Columns.EMBEDDINGS: features,
        }

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        features = self._features(batch) if embeddings is None else embeddings
        return self.value_out(self.critic.forward_critic(features)).squeeze(-1)
