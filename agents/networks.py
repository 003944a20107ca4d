"""A permutation-equivariant policy and value network for every schedgym environment.

All environments share one observation layout (``envs/spaces.py``): padded entity rows, optional
context rows (machines, devices), and globals. The network

1. embeds each entity row, each context row and the globals with shared MLPs (one per group),
2. mixes them with a small Transformer encoder over ``[globals, entities, context]``, padding
   masked out, so each entity sees the whole state; with ``layers=0`` there is no attention
   (its cost grows with the square of the rows: 50 ms a decision for one layer over the 1,024
   experts of OLMoE on one core): the globals token adds the mean of the present rows'
   embeddings (DeepSets; Zaheer et al., NeurIPS 2017) and each entity is scored from its own
   row and that token, linear in the rows,
3. scores each entity with one shared head (``options_per_entity`` logits per entity) and the
   environment's special actions from the globals token; the value comes from the globals token.

Nothing depends on an entity's position, so permuting the entities permutes the logits, and one
checkpoint runs on every instance size up to ``max_entities``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch as th
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

GROUP_KEYS = ("entities", "entity_mask", "globals")


def _mlp(n_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, d), nn.ReLU(), nn.Linear(d, d))


def _context_groups(space: gym.spaces.Dict) -> list[str]:
    return sorted(k for k in space.spaces if k not in GROUP_KEYS and not k.endswith("_mask"))


class EntityEncoder(BaseFeaturesExtractor):
    """Features = ``[entity embeddings (flattened), globals token]``, size ``(N + 1) * d``.

    ``layers`` Transformer layers mix the tokens; ``layers=0`` pools them instead (see the
    module docstring)."""

    def __init__(
        self, observation_space: gym.spaces.Dict, d_model: int = 64, layers: int = 2, heads: int = 4
    ):
        n_entities, n_features = observation_space["entities"].shape
        super().__init__(observation_space, features_dim=(n_entities + 1) * d_model)
        self.n_entities, self.d_model = n_entities, d_model
        self.groups = _context_groups(observation_space)
        self.embed_entities = _mlp(n_features, d_model)
        self.embed_globals = _mlp(observation_space["globals"].shape[0], d_model)
        self.embed_context = nn.ModuleDict(
            {g: _mlp(observation_space[g].shape[1], d_model) for g in self.groups}
        )
        # a learned tag per token type, so attention can tell jobs from machines
        self.type_tag = nn.Parameter(th.zeros(2 + len(self.groups), d_model))
        self.mixer = None
        if layers:
            layer = nn.TransformerEncoderLayer(
                d_model, heads, 2 * d_model, dropout=0.0, batch_first=True
            )
            self.mixer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        batch = obs["entities"].shape[0]
        tokens = [
            (self.embed_globals(obs["globals"]) + self.type_tag[0]).unsqueeze(1),
            self.embed_entities(obs["entities"]) + self.type_tag[1],
        ]
        present = [
            th.ones(batch, 1, dtype=th.bool, device=obs["globals"].device),
            obs["entity_mask"] > 0.5,
        ]
        for i, g in enumerate(self.groups):
            tokens.append(self.embed_context[g](obs[g]) + self.type_tag[2 + i])
            present.append(obs[f"{g}_mask"] > 0.5)
        tokens, present = th.cat(tokens, dim=1), th.cat(present, dim=1)
        if self.mixer is not None:
            mixed = self.mixer(tokens, src_key_padding_mask=~present)
        else:
            rows = present[:, 1:].unsqueeze(-1).float()
            pooled = (tokens[:, 1:] * rows).sum(1) / rows.sum(1).clamp(min=1.0)
            mixed = th.cat([(tokens[:, 0] + pooled).unsqueeze(1), tokens[:, 1:]], dim=1)
        entities = mixed[:, 1 : 1 + self.n_entities] * present[:, 1 : 1 + self.n_entities, None]
        return th.cat([entities.flatten(1), mixed[:, 0]], dim=1)


class EntityHeads(nn.Module):
    """Replaces SB3's MLP extractor: the actor keeps the whole feature vector (the action head
    splits it per entity); the critic reads only the globals token."""

    def __init__(self, features_dim: int, d_model: int, d_value: int = 64):
        super().__init__()
        self.d_model = d_model
        self.latent_dim_pi = features_dim
        self.latent_dim_vf = d_value
        self.value = nn.Sequential(nn.Linear(d_model, d_value), nn.ReLU())

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        return features

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return self.value(features[:, -self.d_model :])


class EntityActionHead(nn.Module):
    """One shared scorer per entity (``options`` logits each) plus the special actions."""

    def __init__(self, n_entities: int, d_model: int, options: int, n_special: int):
        super().__init__()
        self.n_entities, self.d_model = n_entities, d_model
        self.score = nn.Sequential(
            nn.Linear(2 * d_model, d_model), nn.ReLU(), nn.Linear(d_model, options)
        )
        self.special = nn.Linear(d_model, n_special) if n_special else None

    def forward(self, latent: th.Tensor) -> th.Tensor:
        batch = latent.shape[0]
        pooled = latent[:, -self.d_model :]
        entities = latent[:, : -self.d_model].view(batch, self.n_entities, self.d_model)
        both = th.cat([entities, pooled.unsqueeze(1).expand_as(entities)], dim=-1)
        logits = self.score(both).flatten(1)
        if self.special is not None:
            logits = th.cat([logits, self.special(pooled)], dim=1)
        return logits


class EntityPolicy(MaskableActorCriticPolicy):
    """``MaskablePPO`` policy over the shared entity layout (see the module docstring).

    ``policy_kwargs``: ``options_per_entity`` and ``n_special`` (from the env's ``layout``),
    ``d_model``, ``layers``, ``heads``.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        action_space: gym.spaces.Discrete,
        lr_schedule: Any,
        options_per_entity: int = 1,
        n_special: int = 0,
        d_model: int = 64,
        layers: int = 2,
        heads: int = 4,
        **kwargs: Any,
    ):
        n_entities = observation_space["entities"].shape[0]
        if n_entities * options_per_entity + n_special != action_space.n:
            raise ValueError(
                f"layout mismatch: {n_entities} entities x {options_per_entity} options + "
                f"{n_special} special actions != {action_space.n} actions"
            )
        self._layout = (n_entities, options_per_entity, n_special, d_model)
        kwargs.setdefault("features_extractor_class", EntityEncoder)
        kwargs.setdefault(
            "features_extractor_kwargs", {"d_model": d_model, "layers": layers, "heads": heads}
        )
        self._arch = {
            "options_per_entity": options_per_entity,
            "n_special": n_special,
            "d_model": d_model,
            "layers": layers,
            "heads": heads,
        }
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = EntityHeads(self.features_dim, self._layout[3])

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        n_entities, options, n_special, d_model = self._layout
        self.action_net = EntityActionHead(n_entities, d_model, options, n_special)
        # small initial logits (as SB3 does for its action layer): a near-uniform first policy
        self.action_net.apply(lambda m: self.init_weights(m, gain=0.01))
        self.optimizer = self.optimizer_class(
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self._arch)
        return data
