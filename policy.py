"""The one protocol every scheduler implements, and the resolver from policy names to objects.

A policy name is a string the CLI and the evaluator resolve against an environment:

* ``heuristic:NAME``, ``solver:NAME``, ``oracle:NAME`` and ``bound:NAME``: entries of the env's
  baselines module ``POLICIES`` dict;
* ``random``: uniform over the legal actions, seeded;
* ``ppo:PATH`` and other learned kinds: checkpoints loaded by the class registered under that
  prefix in the ``schedgym.policies`` entry-point group (``pyproject.toml``; another package can
  register its own kind the same way), called as ``cls(PATH, name=NAME)``;
* ``package.module:function``: a user's callable ``f(env, obs) -> int`` wrapped as a policy.

Heuristics may read the simulator state, but only what a real scheduler could know. The other kinds
mean exactly this (DESIGN.md §3): a ``solver`` spends large compute for a feasible answer (a
time-limited CP-SAT run is an upper bound on the optimum, not a bound); an ``oracle`` sees the
future (true output lengths, future expert accesses) without being optimal; a ``bound`` is a
proven limit that no policy can pass.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from schedgym.errors import SchedgymError
from schedgym.randomness import SeedLike, as_generator

LEARNED_GROUP = "schedgym.policies"
PolicyKind = Literal["heuristic", "learned", "solver", "oracle", "bound"]
# the prefixes of policy names that the env's baselines module resolves
BASELINE_KINDS = ("heuristic", "solver", "oracle", "bound")


@runtime_checkable
class Policy(Protocol):
    """Chooses one action of a schedgym env per call, honouring ``env.action_masks()``."""

    name: str
    kind: PolicyKind

    def reset(self, env: Any) -> None:
        """Called after every ``env.reset``; may read the instance the env now holds."""

    def act(self, env: Any, obs: Any) -> int:
        """Return a legal action for the env's current state."""


def unwrap_env(env: Any, cls: type | None = None) -> Any:
    """The env beneath any Gymnasium wrappers; with ``cls``, refuse any other kind of env."""
    inner = getattr(env, "unwrapped", env)
    if cls is not None and not isinstance(inner, cls):
        raise SchedgymError(f"this policy needs a {cls.__name__}, got {type(inner).__name__}")
    return inner


def check_spaces(name: str, observation_space: Any, n_actions: int, env: Any) -> None:
    """Check that ``env`` gives the observations and actions a network was trained on
    (``observation_space``, a gymnasium space, and ``n_actions`` discrete actions); raises
    ``SchedgymError`` naming the first part whose shape differs (a memory policy trained on
    the map task's 6 candidate features cannot read the msa task's 11; a checkpoint of
    another env differs in every part)."""
    env = unwrap_env(env)
    trained, given = _shapes(observation_space), _shapes(env.observation_space)
    trained["actions"], given["actions"] = (n_actions,), (int(env.action_space.n),)
    for key, shape in trained.items():
        if key not in given:
            raise SchedgymError(
                f"{name}: trained on observations with a part {key!r}, which this env's lack: "
                "a checkpoint of another env or task?"
            )
        if given[key] != shape:
            raise SchedgymError(
                f"{name}: trained on {key} of shape {shape}, this env gives {given[key]}; "
                "evaluate it under the env arguments it was trained with (the max_* sizes and "
                "the task in its training config.json)"
            )


def _shapes(space: Any) -> dict[str, tuple[int, ...]]:
    """Each part's shape of a ``Dict`` observation space (the whole space's otherwise)."""
    if hasattr(space, "spaces") and isinstance(space.spaces, dict):
        return {k: tuple(v.shape) for k, v in space.spaces.items()}
    return {"observation": tuple(space.shape)}


def legal_actions(env: Any) -> np.ndarray:
    """Indices of the legal actions of ``env`` (through any Gymnasium wrappers)."""
    inner = unwrap_env(env)
    legal = np.flatnonzero(np.asarray(inner.action_masks(), dtype=bool))
    if legal.size == 0:
        raise SchedgymError(f"{type(inner).__name__}: action mask is all False")
    return legal


class RandomPolicy:
    """Uniform over legal actions; seeded so the same seed gives the same episode."""

    kind: PolicyKind = "heuristic"

    def __init__(self, seed: SeedLike = 0):
        self.name = "random"
        self._seed = seed
        self._rng = as_generator(seed)

    def reset(self, env: Any) -> None:
        self._rng = as_generator(self._seed)

    def act(self, env: Any, obs: Any) -> int:
        return int(self._rng.choice(legal_actions(env)))


class CallablePolicy:
    """Wraps a user's ``f(env, obs) -> int`` given as ``package.module:function``."""

    kind: PolicyKind = "heuristic"

    def __init__(self, name: str, fn: Callable[[Any, Any], int]):
        self.name = name
        self._fn = fn

    def reset(self, env: Any) -> None:
        reset = getattr(self._fn, "reset", None)
        if callable(reset):
            reset(env)

    def act(self, env: Any, obs: Any) -> int:
        return int(self._fn(env, obs))


def learned_kinds() -> dict[str, EntryPoint]:
    """The learned-policy prefixes (``ppo``) and their loaders, from the ``schedgym.policies``
    entry-point group. Resolving through entry points keeps this module below ``agents``:
    nothing here imports a checkpoint's framework until such a name is resolved."""
    return {ep.name: ep for ep in entry_points(group=LEARNED_GROUP)}


def resolve_policy(env_name: str, spec: str, seed: SeedLike = 0) -> Policy:
    """Turn a policy name (see the module docstring) into a policy object for ``env_name``."""
    from schedgym.registry import env_entry

    if spec == "random":
        return RandomPolicy(seed)
    prefix, _, rest = spec.partition(":")
    if not rest:
        raise SchedgymError(
            f"unknown policy {spec!r}: use heuristic:NAME, solver:NAME, oracle:NAME, bound:NAME, "
            "random, ppo:PATH, muzero:PATH[@N] or module:function (see `schedgym list`)"
        )
    if prefix in BASELINE_KINDS:
        entry = env_entry(env_name)
        table = entry.policies()
        if spec not in table:
            known = ", ".join(sorted(table)) or "none yet"
            raise SchedgymError(f"env {env_name!r} has no policy {spec!r}; known: {known}")
        return table[spec]()
    loaders = learned_kinds()
    if prefix in loaders:
        return loaders[prefix].load()(rest, name=spec)
    try:
        module = importlib.import_module(prefix)
        fn = getattr(module, rest)
    except (ImportError, AttributeError) as exc:
        raise SchedgymError(f"cannot import policy callable {spec!r}: {exc}") from exc
    if not callable(fn):
        raise SchedgymError(f"policy {spec!r} is not callable")
    return CallablePolicy(spec, fn)
