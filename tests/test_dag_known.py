"""What a DAG scheduler knows (`DagSchedEnv.known_state`): planning with the simulator from it
must not see the jobs yet to arrive or the realised task times, and the rule rollouts' fast
`play_out` must return what stepping the env collects."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from schedgym.agents.muzero.models import SimulatorModel
from schedgym.agents.muzero.networks import MuZeroNet
from schedgym.agents.muzero.train import uniform_prior
from schedgym.envs.dag.core import known_instance
from schedgym.episode import make_env
from schedgym.errors import SchedgymError
from schedgym.policy import resolve_policy

ONLINE = {"mode": "online", "jobs": 4, "load": 0.8}


def _advance(env, obs, steps: int, rule: str = "heuristic:minmin"):
    policy = resolve_policy("dag", rule)
    policy.reset(env)
    for _ in range(steps):
        obs, *_ = env.step(policy.act(env, obs))
    return obs


def test_known_state_is_the_released_jobs_on_estimates():
    env = make_env("dag", sigma=0.5, **ONLINE).unwrapped
    obs = env.reset(seed=3, options={"case": "random:12"})[0]
    obs = _advance(env, obs, 15)
    inst, released = env.instance, env.core.n_released
    assert 1 <= released < inst.n_jobs, "the case must have jobs yet to arrive"
    real, mask, ready = env.get_state(), env.action_masks(), env.core.ready_tasks().copy()
    known_obs = env.set_state(env.known_state())
    known = env.instance
    assert known.n_jobs == released
    assert np.array_equal(known.arrival, inst.arrival[:released])
    assert np.all(known.factor == 1.0) and known.sigma == 0.0
    assert np.array_equal(known.cost, inst.cost[: known.n])
    # the same decision: the same ready tasks (so the same action indices), masks and rows
    assert np.array_equal(env.core.ready_tasks(), ready)
    assert np.array_equal(env.action_masks(), mask)
    # (times are in units of the instance's mean task time, here over other tasks)
    assert np.array_equal(known_obs["entity_mask"], obs["entity_mask"])
    p = known.platform.size
    assert np.array_equal(known_obs["entities"][:, :p], obs["entities"][:, :p])
    env.set_state(real)
    assert env.instance is inst


def test_known_state_of_a_single_dag_without_noise_is_the_state():
    env = make_env("dag").unwrapped
    env.reset(seed=0, options={"case": "topcuoglu"})
    assert env.known_state()[0] is env.instance


def test_known_instance_refuses_what_no_scheduler_has_released():
    env = make_env("dag", **ONLINE).unwrapped
    env.reset(seed=0, options={"case": "random:10"})
    with pytest.raises(SchedgymError, match="jobs must lie in 1..4"):
        known_instance(env.instance, 0)


def _root_value(env, rollout: str) -> float:
    net = MuZeroNet(
        env.observation_space,
        options=env.layout.options_per_entity,
        n_special=env.layout.n_special,
    )
    uniform_prior(net)
    model = SimulatorModel(net, resolve_policy("dag", rollout))
    _, _, values, _ = model.root([env], [env._observe()])
    model.finish()
    return float(values[0])


@pytest.mark.parametrize("what", ["arrivals", "times"])
def test_planning_value_does_not_depend_on_the_future(what):
    """Two episodes alike up to this decision but with other later arrivals (or other realised
    times) give the planner the same root value: it plans from what it knows. Planning from
    `get_state` (the oracle) gives different values."""
    env = make_env("dag", sigma=0.5, **ONLINE).unwrapped
    obs = env.reset(seed=5, options={"case": "random:12"})[0]
    _advance(env, obs, 12)
    inst, snap = env.instance, env.core.snapshot()
    released = env.core.n_released
    assert released < inst.n_jobs
    if what == "arrivals":
        arrival = inst.arrival.copy()
        arrival[released:] += 0.5 * (arrival[-1] - arrival[released - 1] + 1.0)
        other = replace(inst, arrival=arrival)
    else:
        rng = np.random.default_rng(0)
        other = replace(inst, factor=np.exp(0.5 * rng.standard_normal(inst.n)))
    values = []
    for case_inst in (inst, other):
        env.set_state((case_inst, env.case_name, snap))
        values.append(_root_value(env, "heuristic:minmin"))
        assert env.instance is case_inst, "the search must restore the real state"
    assert values[0] == values[1]
    # the oracle would see the difference: finishing by MinMin on the true states differs
    ends = []
    for case_inst in (inst, other):
        env.set_state((case_inst, env.case_name, snap))
        ends.append(resolve_policy("dag", "heuristic:minmin").play_out(env))
    assert ends[0] != ends[1]


@pytest.mark.parametrize(
    ("kwargs", "case", "rule"),
    [
        ({}, "topcuoglu", "heuristic:heft"),
        ({"sigma": 0.5}, "random:20", "heuristic:peft"),
        ({"sigma": 0.3, **ONLINE}, "random:10", "heuristic:minmin"),
    ],
)
def test_play_out_returns_what_stepping_collects(kwargs, case, rule):
    env = make_env("dag", **kwargs).unwrapped
    obs = env.reset(seed=7, options={"case": case})[0]
    obs = _advance(env, obs, 3, "heuristic:fcfs")
    start = env.get_state()
    policy = resolve_policy("dag", rule)
    fast = policy.play_out(env)
    env.set_state(start)
    policy.reset(env)
    total, done = 0.0, False
    while not done:
        obs, reward, done, _, _ = env.step(policy.act(env, obs))
        total += reward
    assert fast == pytest.approx(total, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("kwargs", [{"sigma": 0.3}, {"sigma": 0.5, **ONLINE}])
def test_at_the_end_a_rule_plays_out_nothing_and_refuses_to_act(kwargs):
    """The realised end's correction was part of the last step's reward: finishing a finished
    episode returns 0, and asking the rule for an action says the episode is over."""
    env = make_env("dag", **kwargs).unwrapped
    obs = env.reset(seed=2, options={"case": "random:8"})[0]
    heft = resolve_policy("dag", "heuristic:heft")
    heft.reset(env)
    done = False
    while not done:
        obs, _, done, _, _ = env.step(heft.act(env, obs))
    assert heft.play_out(env) == 0.0
    with pytest.raises(SchedgymError, match="the episode is over"):
        heft.act(env, obs)


def test_the_committed_online_planner_plays_a_valid_episode_and_repeats_it():
    """`policies/dag-online-muzero` on a small online case with noise: only legal actions (the
    env raises otherwise), a record the independent validator accepts (`run_episode` checks
    it), the same episode twice."""
    from pathlib import Path

    from schedgym.episode import run_episode

    if not (Path(__file__).resolve().parent.parent / "policies/dag-online-muzero").is_dir():
        pytest.skip("policies/dag-online-muzero is not committed in this checkout")
    kwargs = {"sigma": 0.3, **ONLINE, "jobs": 3}
    runs = [
        run_episode(
            "dag", "muzero:policies/dag-online-muzero@4", case="mlp", seed=1, env_kwargs=kwargs
        )
        for _ in range(2)
    ]
    assert runs[0].record == runs[1].record
    assert runs[0].metrics["mean_slowdown"] >= 1.0
