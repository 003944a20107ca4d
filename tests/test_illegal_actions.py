"""`step` with an illegal action: `IllegalActionError` naming the action and why, state unchanged.

At states along episodes of each env (reached by a heuristic, under hypothesis-drawn settings
and seeds), every action the mask forbids (all of them, or a seeded sample of 24 where there
are more, plus the out-of-range -1, n and n + 7) is stepped. Each must raise
`IllegalActionError` whose message contains the action's number and a reason; ``get_state()``
and the mask must be exactly as before; then the episode goes on with the heuristic's legal
choices and its record passes ``validate``.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from playing import examples, make

from schedgym.errors import IllegalActionError
from schedgym.registry import env_entry

TRIED: Counter[str] = Counter()

# (env, its settings, case, a heuristic that plays the legal moves)
SETUPS = [
    ("jobshop", {"max_jobs": 8, "max_machines": 8}, "random:5x4", "heuristic:mor"),
    ("dag", {"dag": {"n": 10}}, "random", "heuristic:heft"),
    ("dag", {"mode": "online", "jobs": 2, "dag": {"n": 6}}, "random", "heuristic:fcfs"),
    ("batching", {"n_requests": 12, "max_entities": 4}, "azure-conv-synth", "heuristic:sarathi"),
    ("moe", {"tokens": 6, "capacity": 10, "cpu_offload": True}, "tinymoe-code", "heuristic:lru"),
    ("moe", {"tokens": 6, "capacity": 20, "prefetch": 2}, "tinymoe-docs", "heuristic:moe-infinity"),
    ("memmap", {"task": "map", "max_candidates": 8}, "random:12", "heuristic:msa"),
    ("memmap", {"task": "pack", "max_candidates": 8}, "random:12", "heuristic:best-fit-size"),
]


def _same(a: Any, b: Any) -> bool:
    """Deep equality of snapshots (dicts, sequences, numpy arrays, scalars, shared objects)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        names = [f.name for f in dataclasses.fields(a)]
        return type(a) is type(b) and all(_same(getattr(a, n), getattr(b, n)) for n in names)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return a is b or a == b


def _illegal(mask: np.ndarray, rng: np.random.Generator) -> list[int]:
    forbidden = np.flatnonzero(~mask)
    if forbidden.size > 24:
        forbidden = np.sort(rng.choice(forbidden, 24, replace=False))
    return [-1, *forbidden.tolist(), mask.size, mask.size + 7]


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nillegal actions tried: {dict(sorted(TRIED.items()))}")


@settings(max_examples=examples(40))
@given(
    setup=st.sampled_from(range(len(SETUPS))), seed=st.integers(0, 2**16), every=st.integers(1, 7)
)
def test_illegal_actions_raise_and_change_nothing(setup, seed, every):
    env_name, kwargs, case, heuristic = SETUPS[setup]
    env = make(env_name, kwargs)
    policy = env_entry(env_name).policies()[heuristic]()
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed, options={"case": case})
    inner = env.unwrapped
    policy.reset(inner)
    done, decision = False, 0
    while not done:
        if decision % every == 0:
            mask = np.asarray(inner.action_masks(), bool).copy()
            before = inner.get_state()
            for action in _illegal(mask, rng):
                with pytest.raises(IllegalActionError) as err:
                    env.step(action)
                message = str(err.value)
                assert re.search(rf"(?<![\d-]){action}(?!\d)", message), message
                assert len(message) > len(str(action)) + 10, message  # a reason, not just a number
                assert _same(inner.get_state(), before), (
                    f"{env_name}: action {action} changed state"
                )
                assert np.array_equal(inner.action_masks(), mask)
                TRIED[env_name] += 1
        obs, _, terminated, truncated, info = env.step(policy.act(inner, obs))
        done = terminated or truncated
        decision += 1
    env_entry(env_name).module("record").validate(info["record"])
    with pytest.raises(IllegalActionError):  # a finished episode takes no action at all
        env.step(0)


@pytest.mark.parametrize("setup", range(len(SETUPS)))
def test_non_integer_actions_are_refused_not_rounded(setup):
    # 0.5 once became action 0 and "3" action 3: an action is an integer or it is refused
    env_name, kwargs, case, _ = SETUPS[setup]
    env = make(env_name, kwargs)
    env.reset(seed=0, options={"case": case})
    inner = env.unwrapped
    legal = int(np.flatnonzero(inner.action_masks())[0])
    before = inner.get_state()
    for bad in (
        legal + 0.5,
        float(legal),
        np.float64(legal),
        str(legal),
        None,
        True,
        [legal],
        np.array([legal + 0.5]),
    ):
        with pytest.raises(IllegalActionError, match="not an integer"):
            env.step(bad)
        assert _same(inner.get_state(), before)
        TRIED[env_name] += 1
    env.step(np.array([legal]))  # what a vectorised agent passes
