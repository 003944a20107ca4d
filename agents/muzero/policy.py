"""A MuZero checkpoint as a ``Policy``: ``muzero:PATH`` or ``muzero:PATH@N`` (N simulations).

``PATH`` is a training folder (its ``model.pt``) or a ``.pt`` file written by
`schedgym.agents.muzero.train`; without ``@N`` the checkpoint's own evaluation budget is used.
Acting is deterministic: the search runs without Gumbel noise and takes the considered action
with the most visits and the largest ``logits + sigma(completed Q)``; only legal actions are
ever chosen (the root mask is the env's ``action_masks()``). A checkpoint saved with a fortified
planner (``"fortify": true``, ``schedgym train --fortify``) instead follows the best complete
sequence its searches have found (`MuZeroPolicy.act`; `schedgym.agents.muzero.models`).
A memory-mapping checkpoint trained in another buffer order than the env's (``"order"`` in its
training ``env_kwargs``) plays every episode in that order (`MuZeroPolicy.reset`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from schedgym.agents.muzero.models import Found, make_model
from schedgym.agents.muzero.networks import MuZeroNet
from schedgym.agents.muzero.search import SearchConfig, gumbel_search
from schedgym.errors import SchedgymError
from schedgym.policy import PolicyKind, check_spaces, unwrap_env

CHECKPOINT = "model.pt"


def parse_spec(spec: str) -> tuple[Path, int | None]:
    """``"PATH@N"`` -> ``(PATH, N)``, ``"PATH"`` -> ``(PATH, None)``; raises ``SchedgymError``
    (one line) when ``N`` is not a positive integer or ``PATH`` is empty."""
    path, at, budget = spec.rpartition("@")
    if not at:
        path, budget = spec, ""
    if not path:
        raise SchedgymError(f"muzero:{spec}: no checkpoint path (use muzero:PATH or PATH@N)")
    if at:
        if not budget.isdigit() or int(budget) < 1:
            raise SchedgymError(
                f"muzero:{spec}: the simulation budget after @ must be a positive integer, "
                f"got {budget!r}"
            )
        return Path(path), int(budget)
    return Path(path), None


def checkpoint_file(path: Path) -> Path:
    """``path/model.pt`` for a folder, else ``path``; raises ``SchedgymError`` when absent."""
    file = path / CHECKPOINT if path.is_dir() else path
    if not file.is_file():
        raise SchedgymError(f"no MuZero checkpoint at {file}")
    return file


def load_checkpoint(path: Path) -> tuple[MuZeroNet, dict[str, Any]]:
    """The network and the settings (``planner``, ``search``, ``order``) saved by
    `save_checkpoint`;
    raises ``SchedgymError`` naming the file when it cannot be read as one."""
    file = checkpoint_file(path)
    try:
        data = th.load(file, map_location="cpu", weights_only=False)
        if isinstance(data, dict) and "optimizer" in data and "observation_space" not in data:
            raise SchedgymError(
                f"{file}: a resume checkpoint of `schedgym train` (weights and optimizer, no "
                f"planner); plan with its folder's {CHECKPOINT}"
            )
        net = MuZeroNet(data["observation_space"], **data["net_kwargs"])
        net.load_state_dict(data["state_dict"])
    except SchedgymError:
        raise
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        raise SchedgymError(
            f"{file}: not a MuZero checkpoint ({type(err).__name__}: {err})"
        ) from err
    net.eval()
    return net, data


def save_checkpoint(
    file: Path,
    net: MuZeroNet,
    net_kwargs: dict[str, Any],
    planner: dict[str, Any],
    search: SearchConfig,
    order: str | None = None,
) -> None:
    """Write the weights, the observation space and the planning settings to ``file``:
    ``planner`` holds `make_model`'s keywords (``kind``, ``env``, ``rollout``, ``mix``,
    ``fortify``); ``order`` is the memory env's buffer order the policy plays in (None: the
    env's)."""
    th.save(
        {
            "state_dict": net.state_dict(),
            "observation_space": net.encoder._observation_space,
            "net_kwargs": net_kwargs,
            "planner": planner,
            "search": search.__dict__,
            "order": order,
        },
        file,
    )


def _at_least(value: float, other: float) -> bool:
    """``value >= other`` up to summation order: the same sequence's return, summed along
    another path, may differ in the last bits."""
    return value >= other - 1e-9 * max(1.0, abs(other))


class MuZeroPolicy:
    """Deterministic Gumbel MuZero planning with a checkpoint's network (module docstring).

    Either ``spec`` (``"PATH"`` or ``"PATH@N"``) or an in-memory ``net`` with ``planner``
    (`make_model`'s keywords; default: the simulator without rollouts), ``search`` (training's
    validation) and ``order`` (the memory env's buffer order to play in; None: the env's) is
    given."""

    kind: PolicyKind = "learned"

    def __init__(
        self,
        spec: str | None = None,
        name: str | None = None,
        *,
        net: MuZeroNet | None = None,
        planner: dict[str, Any] | None = None,
        search: SearchConfig | None = None,
        order: str | None = None,
        seed: int = 0,
    ):
        th.set_num_threads(1)
        if spec is not None:
            path, budget = parse_spec(spec)
            net, data = load_checkpoint(path)
            planner, search = data["planner"], SearchConfig(**data["search"])
            order = data.get("order")  # absent from checkpoints saved before it existed
            if budget is not None:
                search = replace(search, simulations=budget)
        if net is None:
            raise SchedgymError("MuZeroPolicy needs a checkpoint path or a network")
        self.net = net
        self.search = replace(search or SearchConfig(), gumbel_scale=0.0)
        self.model = make_model(
            **(planner or {"kind": "simulator"}), net=net, gamma=self.search.gamma
        )
        self.name = name or f"muzero:{spec}"
        self.order = order
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._held: Found | None = None  # a fortified policy's best sequence, less its past
        self._first_obs: Any = None  # the observation of `reset`'s own restart, if it made one

    def reset(self, env: Any) -> None:
        """Check that ``env`` gives the observations and actions the network was trained on
        (`schedgym.policy.check_spaces`: ``SchedgymError`` naming the first that differs), and
        reseed the search's generator, so every episode plans alike (acting draws no noise
        today, but a noisy variant would stay reproducible).

        A policy with an ``order`` restarts a memory-mapping episode that has not begun: the
        same buffer set, in ``order`` (`MemoryMapEnv`'s reset option; in whatever order the
        env began it). The order is the policy's choice, as each greedy heuristic's is
        (`schedgym.baselines.memory.run_in_order`); the instance, its capacity and the score
        stay the suite's. The first `act` then plans from that restart's observation, not the
        one its caller received before it (the caller's is of the raw env, beneath any
        wrapper). An episode already under way in another order raises ``SchedgymError``
        (this policy cannot follow it there), as does one not yet reset."""
        check_spaces(self.name, self.net.encoder._observation_space, self.net.n_actions, env)
        self._rng = np.random.default_rng(self._seed)
        self._held = None
        self._first_obs = None
        inner = unwrap_env(env)
        if self.order is None:
            return
        core = getattr(inner, "core", None)
        if core is None:
            raise SchedgymError(f"{self.name}: reset the env before the policy")
        if core.k == 0:
            self._first_obs, _ = inner.reset(options={"case": inner.buffers, "order": self.order})
        elif core.order_name != self.order:
            raise SchedgymError(
                f"{self.name}: plays the buffers in the {self.order!r} order, but this episode "
                f"is {core.k} decisions into the {core.order_name!r} order"
            )

    def act(self, env: Any, obs: Any) -> int:
        """Plan one decision. A fortified planner (``"fortify"`` in its planner settings) then
        compares the best complete sequence this search found with the one it holds from
        earlier decisions, re-valued from the current state (`SimulatorModel.replay`), keeps
        the better (on a tie the one through the action the search chose, then the held one),
        and takes its first action: its first path action, or its
        rollout policy's action once the path is spent. Bertsekas, Tsitsiklis and Wu's fortified
        rollout (J. Heuristics 1997): the episode's return is at least the best sequence's
        value at any decision, the first decision's rollout of the base heuristic included."""
        inner = unwrap_env(env)
        if self._first_obs is not None:
            obs, self._first_obs = self._first_obs, None
        result = gumbel_search(self.model, [inner], [obs], self.search, self._rng)
        if not getattr(self.model, "fortify", False):
            return int(result.action[0])
        found = self.model.found[0]
        best = max(found.values(), key=lambda f: f.value)
        if self._held is not None and self._held.path:  # a spent path is the root's rollout
            value = self.model.replay(inner, self._held.path, self._held.rollout)
            if value is not None and _at_least(value, best.value):
                best = replace(self._held, value=value)
        chosen = found.get(int(result.action[0]))
        if chosen is not None and _at_least(chosen.value, best.value):
            best = chosen
        self._held = Found(best.value, best.path[1:], best.rollout)
        if best.path:
            return best.path[0]
        rule = self.model.rollouts[best.rollout]
        rule.reset(inner)  # as the play-out that valued the sequence began
        return int(rule.act(inner, obs))
