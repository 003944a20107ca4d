"""MuZero's three functions on the shared entity encoder (Schrittwieser et al., Nature 2020).

* representation ``h``: `schedgym.agents.networks.EntityEncoder`; the latent state is its
  feature vector ``(B, (N + 1) * d)``: one token per entity (padding zeroed) and the globals
  token last, so the latent keeps the observation's permutation symmetry;
* prediction ``f``: `EntityActionHead` (one shared scorer per entity, the special actions from
  the globals token) and a value MLP on the globals token: exactly PPO's actor and critic heads,
  so a PPO checkpoint's weights load into ``h`` and ``f`` (`MuZeroNet.load_ppo`);
* dynamics ``g``: the chosen entity's token gets a learned embedding of the chosen option (a
  special action tags the globals token instead), a residual Transformer layer mixes the tokens
  under the root's entity padding, and a reward MLP reads the new globals token and the moved
  entity's token.

With the simulator model only ``h`` and ``f`` are used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from torch import nn

from schedgym.agents.networks import EntityActionHead, EntityEncoder


def _head(d_model: int, hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(), nn.Linear(hidden, 1))


class MuZeroNet(nn.Module):
    """``h``, ``f`` and ``g`` over one env's observation layout (module docstring).

    ``options`` and ``n_special`` come from the env's ``layout``; ``d_model``, ``layers``,
    ``heads`` size the encoder as PPO's; ``dynamics_layers`` the dynamics' Transformer."""

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        options: int = 1,
        n_special: int = 0,
        d_model: int = 64,
        layers: int = 2,
        heads: int = 4,
        dynamics_layers: int = 1,
    ):
        super().__init__()
        self.encoder = EntityEncoder(observation_space, d_model, layers, heads)
        self.n_entities, self.d_model = self.encoder.n_entities, d_model
        self.options, self.n_special = options, n_special
        self.n_actions = self.n_entities * options + n_special
        self.policy_head = EntityActionHead(self.n_entities, d_model, options, n_special)
        self.value_head = _head(d_model)
        self.option_embed = nn.Embedding(options, d_model)
        self.special_embed = nn.Embedding(max(n_special, 1), d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 2 * d_model, dropout=0.0, batch_first=True
        )
        self.dynamics = nn.TransformerEncoder(layer, dynamics_layers, enable_nested_tensor=False)
        self.reward_head = _head(2 * d_model)

    def represent(self, obs: dict[str, th.Tensor]) -> tuple[th.Tensor, th.Tensor]:
        """``(latent (B, (N+1)*d), present (B, N) bool)`` of a batch of observations."""
        return self.encoder(obs), obs["entity_mask"] > 0.5

    def predict(self, latent: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``(logits (B, A), value (B,))``; logits unmasked."""
        value = self.value_head(latent[:, -self.d_model :]).squeeze(-1)
        return self.policy_head(latent), value

    def dynamics_step(
        self, latent: th.Tensor, present: th.Tensor, action: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        """``(next latent, reward (B,))`` after ``action`` ``(B,)`` long."""
        batch = latent.shape[0]
        tokens = latent.view(batch, self.n_entities + 1, self.d_model)
        rows = th.arange(batch, device=latent.device)
        entity_moves = action < self.n_entities * self.options
        entity = th.where(entity_moves, action // self.options, self.n_entities)
        tag = th.where(
            entity_moves.unsqueeze(-1),
            self.option_embed(th.where(entity_moves, action % self.options, 0)),
            self.special_embed((action - self.n_entities * self.options).clamp(min=0)),
        )
        tagged = tokens.clone()
        tagged[rows, entity] = tagged[rows, entity] + tag
        keep = th.cat([present, th.ones(batch, 1, dtype=th.bool, device=latent.device)], dim=1)
        mixed = tokens + self.dynamics(tagged, src_key_padding_mask=~keep)
        mixed = mixed * keep.unsqueeze(-1)
        # the reward reads the new globals token beside the moved entity's token (the globals
        # token again for a special action): what the move costs depends mostly on that row
        reward = self.reward_head(th.cat([mixed[:, -1], mixed[rows, entity]], dim=-1))
        reward = reward.squeeze(-1)
        return mixed.flatten(1), reward

    def presence_mask(self, present: th.Tensor) -> th.Tensor:
        """``(B, A)`` bool: every option of a present entity and every special action, the
        mask the learned model plans under below the root."""
        entity = present.repeat_interleave(self.options, dim=1)
        special = th.ones(present.shape[0], self.n_special, dtype=th.bool, device=present.device)
        return th.cat([entity, special], dim=1)

    def load_ppo(self, path: str) -> None:
        """Copy a PPO checkpoint's encoder, actor head and critic into ``h`` and ``f``
        (the warm start); raises ``ValueError`` when the architectures differ."""
        from sb3_contrib import MaskablePPO

        from schedgym.agents.ppo import _model_file

        ppo = MaskablePPO.load(_model_file(Path(path)), device="cpu").policy
        value = ppo.mlp_extractor.value[0]
        try:
            self.encoder.load_state_dict(ppo.features_extractor.state_dict())
            self.policy_head.load_state_dict(ppo.action_net.state_dict())
            self.value_head[0].load_state_dict(value.state_dict())
            self.value_head[2].load_state_dict(ppo.value_net.state_dict())
        except RuntimeError as exc:
            first = str(exc).splitlines()[1:2] or [str(exc)]
            raise ValueError(f"--init-from {path}: not this network's shape: {first[0]}") from None


def obs_to_tensor(obs: list[dict[str, Any]]) -> dict[str, th.Tensor]:
    """Stack a list of observation dicts into a batch of float tensors."""
    return {k: th.as_tensor(np.stack([o[k] for o in obs])).float() for k in obs[0]}
