"""The observation layout every schedgym environment shares, so one policy serves them all.

An observation is a ``Dict``:

* ``entities``: ``float32[max_entities, n_features]``, one row per *actionable* entity (a job, a
  ready task, a waiting request, a cached expert, a candidate offset), zero-padded;
* ``entity_mask``: ``int8[max_entities]``, 1 where a row is a real entity;
* ``globals``: ``float32[n_globals]``, features of the whole state;
* optional context groups (``machines``, ``devices``, ...): ``float32[max_rows, n_features]`` with
  a matching ``<group>_mask``; rows that inform the decision but are not chosen.

Actions are ``Discrete(max_entities * options_per_entity + n_special)``: action
``i * options_per_entity + o`` picks option ``o`` (a device, say) for entity ``i``; the last
``n_special`` actions are the env's own (``run the step``, ``slow memory``). A permutation-
equivariant network scores each entity row and the special actions, so one checkpoint runs on
every instance size up to ``max_entities``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from schedgym.errors import IllegalActionError


def action_index(action: Any) -> int:
    """The action number ``action`` names: a Python or numpy integer, or a one-element integer
    array (what vectorised agents pass). Anything else (``0.5``, ``"3"``, ``True``, ``None``)
    raises `IllegalActionError` rather than being rounded or parsed into some action."""
    value = action
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item() if np.issubdtype(value.dtype, np.integer) else value
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise IllegalActionError(f"action {action!r} is not an integer action number")
    return int(value)


@dataclass(frozen=True)
class EntityLayout:
    max_entities: int
    n_features: int
    n_globals: int
    options_per_entity: int = 1
    n_special: int = 0
    context: dict[str, tuple[int, int]] = field(default_factory=dict)  # group -> (rows, features)

    @property
    def n_actions(self) -> int:
        return self.max_entities * self.options_per_entity + self.n_special

    def observation_space(self) -> spaces.Dict:
        box = lambda shape: spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)  # noqa: E731
        d: dict[str, spaces.Space] = {
            "entities": box((self.max_entities, self.n_features)),
            "entity_mask": spaces.Box(0, 1, shape=(self.max_entities,), dtype=np.int8),
            "globals": box((self.n_globals,)),
        }
        for name, (rows, feats) in self.context.items():
            d[name] = box((rows, feats))
            d[f"{name}_mask"] = spaces.Box(0, 1, shape=(rows,), dtype=np.int8)
        return spaces.Dict(d)

    def action_space(self) -> spaces.Discrete:
        return spaces.Discrete(self.n_actions)

    def empty_observation(self) -> dict[str, np.ndarray]:
        """Zeroed buffers of the right shapes, for envs to fill in place."""
        obs = {
            "entities": np.zeros((self.max_entities, self.n_features), np.float32),
            "entity_mask": np.zeros(self.max_entities, np.int8),
            "globals": np.zeros(self.n_globals, np.float32),
        }
        for name, (rows, feats) in self.context.items():
            obs[name] = np.zeros((rows, feats), np.float32)
            obs[f"{name}_mask"] = np.zeros(rows, np.int8)
        return obs

    def decode(self, action: int) -> tuple[int | None, int]:
        """``(entity, option)`` for an entity action, ``(None, k)`` for special action ``k``."""
        n = self.max_entities * self.options_per_entity
        if action >= n:
            return None, action - n
        return action // self.options_per_entity, action % self.options_per_entity
