"""DAgger's relabelling (agents/dagger.py): the learner's states, the heuristic's actions."""

from __future__ import annotations

import numpy as np
import pytest

from schedgym.agents.dagger import dagger, merge, relabel
from schedgym.agents.imitation import collect
from schedgym.agents.ppo import TrainConfig, train
from schedgym.baselines.dag import ListScheduler
from schedgym.envs.dag.env import DagSchedEnv
from schedgym.errors import SchedgymError


def _last_legal(env, obs) -> int:
    """A learner unlike HEFT: the highest-numbered legal action."""
    return int(np.flatnonzero(env.action_masks())[-1])


def test_relabel_keeps_the_learners_states_and_the_heuristics_actions():
    kwargs = {"case": "topcuoglu"}
    d = relabel("dag", _last_legal, "heuristic:heft", 2, kwargs, seed=7)
    assert len(d) == 20 and list(np.bincount(d.episode)) == [10, 10]  # one row per task
    # replay by hand: the learner drives, HEFT is asked in each state it reaches
    row, learner_moves = 0, []
    for i in range(2):
        env = DagSchedEnv(**kwargs)
        obs, _ = env.reset(seed=7 + i)
        heft = ListScheduler("heft")
        heft.reset(env)
        done, total = False, 0.0
        first = row
        while not done:
            for k, v in obs.items():
                np.testing.assert_array_equal(d.obs[k][row], v)
            assert d.actions[row] == heft.act(env, obs)
            learner_moves.append(_last_legal(env, obs))
            obs, reward, done, _, info = env.step(learner_moves[-1])
            total += reward
            row += 1
        # the returns are the learner's: minus its own SLR from the first decision
        assert d.returns[first] == pytest.approx(-info["metrics"]["slr"])
    assert np.any(d.actions != np.array(learner_moves))  # labels are not the learner's moves


def test_merge_puts_the_second_set_last_with_its_episodes_renumbered():
    a = relabel("dag", _last_legal, "heuristic:heft", 1, {"case": "topcuoglu"}, seed=1)
    b = relabel("dag", _last_legal, "heuristic:minmin", 2, {"case": "topcuoglu"}, seed=2)
    m = merge(a, b)
    assert len(m) == 30
    assert list(m.episode) == [0] * 10 + [1] * 10 + [2] * 10
    np.testing.assert_array_equal(m.actions[10:], b.actions)
    np.testing.assert_array_equal(m.obs["entities"][:10], a.obs["entities"])


def test_relabel_refuses_a_solver_and_zero_episodes():
    with pytest.raises(SchedgymError, match="heuristic that acts"):
        relabel("dag", _last_legal, "solver:cpsat", 1, {"case": "topcuoglu"}, seed=0)
    with pytest.raises(SchedgymError, match="at least one episode"):
        relabel("dag", _last_legal, "heuristic:heft", 0, {"case": "topcuoglu"}, seed=0)


def test_dagger_rounds_add_the_learners_episodes_and_call_back(tmp_path):
    """One round on Topcuoglu's 10-task DAG: 2 demonstration episodes and 3 played ones make 50
    rows (one per task each); the callback sees the round."""
    kwargs = {"case": "topcuoglu"}
    cfg = TrainConfig(
        env="dag",
        out=str(tmp_path),
        steps=1,
        n_envs=1,
        n_steps=8,
        env_kwargs=kwargs,
        tensorboard=None,
        layers=0,
        d_model=16,
    )
    model = train(cfg, progress=False)
    demos = collect("dag", "heuristic:heft", 2, kwargs, progress=False)
    seen = []
    stats = dagger(
        model,
        "dag",
        "heuristic:heft",
        demos,
        kwargs,
        rounds=1,
        episodes=3,
        epochs=1,
        batch_size=16,
        on_round=lambda k, m: seen.append((k, m is model)),
        progress=False,
    )
    assert seen == [(0, True)]
    assert stats[0]["decisions"] == 50 and stats[0]["episodes"] == 5
