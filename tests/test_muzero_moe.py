"""Gumbel MuZero on MoE offloading: the committed policy plans with the learned model, so a
decision reads the observation and the legal moves and nothing of the routing yet to come."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from schedgym.agents.muzero.policy import MuZeroPolicy
from schedgym.episode import make_env
from schedgym.leaderboard import learned_policies
from schedgym.suites import SUITES

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "policies" / "moe-muzero"


class MaskOnly:
    """All a real scheduler has at a decision besides its observation: the legal moves. No
    ``core``, ``get_state`` or ``set_state``, so a planner that reads the simulator (and with
    it the routing of the tokens yet to be decoded) fails on it."""

    def __init__(self, mask: np.ndarray):
        self._mask = np.array(mask, bool)

    def action_masks(self) -> np.ndarray:
        return self._mask


def _committed() -> MuZeroPolicy:
    if not (POLICY / "model.pt").is_file():
        pytest.skip("policies/moe-muzero is not committed in this checkout")
    return MuZeroPolicy(str(POLICY))


def _committed_config() -> str:
    if not (POLICY / "config.json").is_file():
        pytest.skip("policies/moe-muzero is not committed in this checkout")
    return (POLICY / "config.json").read_text()


def test_the_moe_planner_decides_from_the_observation_and_the_mask_alone():
    """Along 60 decisions of a training-domain episode, the committed policy picks the same
    legal action whether it is handed the env or only the mask; the simulator planner, handed
    the mask alone, cannot plan at all (the contrast that makes this a test)."""
    policy = _committed()
    config = json.loads(_committed_config())
    assert config["model"] == "learned" and config["rollout"] is None
    env = make_env("moe", case="tinymoe-code", max_entities=config["env_kwargs"]["max_entities"])
    obs, _ = env.reset(seed=20_000)
    policy.reset(env)
    for _ in range(60):
        mask = np.array(env.unwrapped.action_masks(), bool)
        action = policy.act(env, obs)
        assert mask[action]
        assert policy.act(MaskOnly(mask), obs) == action
        obs, _, term, _, _ = env.step(action)
        assert not term
    oracle = MuZeroPolicy(net=policy.net, planner={"kind": "simulator"}, search=policy.search)
    with pytest.raises(AttributeError):
        oracle.act(MaskOnly(env.unwrapped.action_masks()), obs)


def test_the_moe_planner_trains_on_another_domain_than_the_suite():
    """Recorded routing is finite, so seeds cannot keep it apart from the tests (suites.py):
    the policy trains and validates on tinymoe-code, the suite decodes tinymoe-docs."""
    config = json.loads(_committed_config())
    suite_cases = {c.case for c in SUITES["moe/tinymoe-test"].cases}
    assert suite_cases == {"tinymoe-docs"}
    assert config["env_kwargs"]["case"] == "tinymoe-code"
    assert not set(config["val_cases"]) & suite_cases


def test_the_large_moe_suites_skip_the_32_row_planner_and_the_tiny_one_runs_it():
    names = [n for n, _ in learned_policies("moe", ROOT) if n.startswith("muzero:")]
    if not names:
        pytest.skip("policies/moe-muzero is not committed in this checkout")
    for suite in ("moe/mixtral-synth", "moe/olmoe-synth"):
        assert "32 expert rows" in SUITES[suite].skip.get(names[0], ""), suite
    assert names[0] not in SUITES["moe/tinymoe-test"].skip


def test_schedgym_run_plans_under_the_padding_the_network_was_trained_with(capsys):
    """`schedgym run` takes a learned policy's ``max_*`` env arguments from its config.json, as
    `schedgym evaluate` does: the MoE env's own default (1,664 rows) would not fit the
    32-row network."""
    from schedgym.cli import main

    _committed()
    main(
        ["run", "--env", "moe", "--policy", f"muzero:{POLICY}@2", "--case", "tinymoe-code"]
        + ["--env-kwargs", '{"tokens": 4}']
    )
    out = capsys.readouterr().out
    assert "policy=muzero:" in out and "stall_per_token_s" in out
