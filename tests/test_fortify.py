"""The fortified planner (``"fortify"``: `MuZeroPolicy` follows the best complete sequence its
searches have found): Bertsekas, Tsitsiklis and Wu's guarantee against the base heuristic, the
bookkeeping against stepping the env, and its refusals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch as th

from schedgym.agents.muzero.models import SimulatorModel, make_model
from schedgym.agents.muzero.networks import MuZeroNet
from schedgym.agents.muzero.policy import MuZeroPolicy
from schedgym.agents.muzero.search import SearchConfig
from schedgym.cli import main as cli_main
from schedgym.episode import make_env, run_episode
from schedgym.errors import SchedgymError
from schedgym.policy import resolve_policy

PLANNER = {"kind": "simulator", "env": "jobshop", "rollout": "heuristic:mwkr"}
# two of the prior's actions considered, one visit each: the search then picks between them by
# their rollouts, and neither need be the rule's own choice
NARROW = SearchConfig(simulations=8, max_considered=2)


def narrow_planner(fortify: bool) -> MuZeroPolicy:
    th.manual_seed(3)  # an untrained prior: its two favourites are arbitrary
    net = MuZeroNet(make_env("jobshop").observation_space)
    return MuZeroPolicy(net=net, planner={**PLANNER, "fortify": fortify}, search=NARROW)


def test_fortified_planning_never_ends_worse_than_its_rollout_rule():
    """Fortified rollout's guarantee (Bertsekas, Tsitsiklis and Wu, J. Heuristics 1997): the
    final schedule is no longer than the base heuristic's from the first state, whatever the
    search considers. The plain search over an arbitrary prior's two favourites has no such
    guarantee and loses to MWKR on some of these shops, so the check can fail."""
    plain, fortified = narrow_planner(False), narrow_planner(True)
    plain_worse = 0
    for seed in range(8):
        case = f"random:6x6:{seed}"
        mwkr = run_episode("jobshop", "heuristic:mwkr", case=case).metrics["makespan"]
        ends = {
            name: run_episode("jobshop", policy, case=case).metrics["makespan"]
            for name, policy in (("plain", plain), ("fortified", fortified))
        }
        assert ends["fortified"] <= mwkr, (case, ends, mwkr)
        plain_worse += ends["plain"] > mwkr
    assert plain_worse >= 1


def test_the_held_sequence_only_improves_and_is_what_the_episode_returns():
    """Return so far plus the held sequence's value never falls from one decision to the next
    (a held sequence, re-valued by `replay`, is only replaced by a better one; with 8
    simulations the tree's paths run deeper than one step, so it is often not among what the
    next search finds), and at the end it is the episode's return: the values the search
    recorded for paths and rollouts are what stepping the env collects. A policy object plays
    the same episode twice (``reset`` drops the held sequence)."""
    policy = narrow_planner(True)
    improved, runs = 0, []
    for case in [f"random:6x6:{seed}" for seed in range(8)] + ["random:6x6:0"]:
        env = make_env("jobshop")
        obs, _ = env.reset(seed=0, options={"case": case})
        policy.reset(env)
        total, done, seen, actions = 0.0, False, [], []
        while not done:
            action = policy.act(env, obs)
            seen.append(total + policy._held.value)
            obs, reward, term, trunc, _ = env.step(action)
            total += reward
            actions.append(action)
            done = term or trunc
        assert np.all(np.diff(seen) >= -1e-9), case
        assert seen[-1] == pytest.approx(total, abs=1e-9), case
        improved += seen[0] < total - 1e-9  # later searches beat the first decision's best
        runs.append(actions)
    assert improved >= 1
    assert runs[0] == runs[-1]


def test_replay_values_a_sequence_as_stepping_it_does_and_refuses_an_illegal_one():
    env = make_env("jobshop")
    obs, _ = env.reset(seed=0, options={"case": "random:6x6:1"})
    rule = resolve_policy("jobshop", "heuristic:mwkr")
    model = SimulatorModel(MuZeroNet(env.observation_space), rule, fortify=True)
    before = env.unwrapped.get_state()
    value = model.replay(env, (2, 2, 4), 0)
    assert env.unwrapped.core.n_done == 0  # left where it was
    total = 0.0
    for action in (2, 2, 4):
        obs, reward, *_ = env.step(action)
        total += reward
    assert value == pytest.approx(total + rule.play_out(env), abs=1e-12)
    env.unwrapped.set_state(before)
    job_of_six_ops = (0,) * 7  # job 0 has six operations: a seventh dispatch is masked
    assert model.replay(env, job_of_six_ops, 0) is None
    assert env.unwrapped.core.n_done == 0


def test_fortification_needs_the_simulator_and_a_rollout(capsys):
    net = MuZeroNet(make_env("jobshop").observation_space)
    with pytest.raises(ValueError, match="needs a rollout policy"):
        SimulatorModel(net, fortify=True)
    with pytest.raises(ValueError, match="fortification needs the true simulator"):
        make_model("learned", net, fortify=True)
    assert cli_main(["train", "--env", "jobshop", "--fortify", "--steps", "10"]) == 2
    assert "--fortify and --anchor are options of --algo muzero" in capsys.readouterr().err


def test_a_fortified_online_dag_planner_plays_valid_episodes():
    """On the online DAG problem the held sequence was found on the jobs released so far;
    arrivals since make `replay` re-value it from what is known now, and a path whose actions
    no longer fit is dropped, never forced: the episode is legal, validated and reproducible."""
    kwargs = {"mode": "online", "jobs": 3, "load": 0.8, "platform": "hetero"}
    env = make_env("dag", **kwargs)
    layout = env.unwrapped.layout
    net = MuZeroNet(env.observation_space, layout.options_per_entity, layout.n_special)
    planner = {"kind": "simulator", "env": "dag", "rollout": "heuristic:minmin", "fortify": True}
    policy = MuZeroPolicy(net=net, planner=planner, search=SearchConfig(simulations=4))
    results = [
        run_episode("dag", policy, case="random:8", seed=3, env_kwargs=kwargs) for _ in range(2)
    ]
    assert results[0].metrics == results[1].metrics


def test_several_rollout_rules_each_play_from_the_node_on_dags():
    """A DAG rule's fast play-out leaves the env at the episode's end; with several rules each
    must still start from the node: the value is the best of their own returns (the best of
    HEFT's and PEFT's here), and a fortified planner over them never ends above the better
    rule's makespan."""
    env = make_env("dag")
    obs, _ = env.reset(seed=1, options={"case": "daggen:16"})
    layout = env.unwrapped.layout
    net = MuZeroNet(env.observation_space, layout.options_per_entity, layout.n_special)
    rules = [resolve_policy("dag", f"heuristic:{r}") for r in ("heft", "peft")]
    singles = []
    for rule in rules:
        state = env.unwrapped.get_state()
        singles.append(SimulatorModel(net, rule)._play_out(env.unwrapped, obs)[0])
        obs = env.unwrapped.set_state(state)
    assert SimulatorModel(net, rules)._play_out(env.unwrapped, obs) == (
        max(singles),
        int(np.argmax(singles)),
    )
    planner = {"kind": "simulator", "env": "dag", "rollout": "heuristic:heft,heuristic:peft"}
    search = SearchConfig(simulations=4, max_considered=2)
    policy = MuZeroPolicy(net=net, planner={**planner, "fortify": True}, search=search)
    for seed in (1, 4):
        ends = [
            run_episode("dag", p, case="daggen:16", seed=seed).metrics["makespan"]
            for p in (policy, "heuristic:heft", "heuristic:peft")
        ]
        assert ends[0] <= min(ends[1:]) + 1e-9, (seed, ends)


def test_replay_and_fortification_refuse_what_they_cannot_honour():
    env = make_env("jobshop")
    env.reset(seed=0, options={"case": "random:6x6:1"})
    net = MuZeroNet(env.observation_space)
    model = SimulatorModel(net, resolve_policy("jobshop", "heuristic:mwkr"), fortify=True)
    for path, rollout, match in (
        ((10**6,), 0, "action 1000000"),
        ((-1,), 0, "action -1"),
        ((0.5,), 0, "action 0.5"),
        ((0,), 3, "no rollout policy 3"),
    ):
        with pytest.raises(ValueError, match=match):
            model.replay(env, path, rollout)
    with pytest.raises(ValueError, match="deterministic rollout policies"):
        MuZeroPolicy(net=net, planner={**PLANNER, "rollout": "random", "fortify": True})


def test_resuming_with_other_planner_settings_is_refused(tmp_path):
    """``--resume`` keeps the validated ``model.pt`` unless validation improves on it, so
    resuming under other planner settings would leave it disagreeing with config.json."""
    from schedgym.agents.muzero.train import MuZeroConfig, train

    cfg = MuZeroConfig(
        env="jobshop",
        out=str(tmp_path / "js"),
        steps=10,
        n_envs=1,
        env_kwargs={"case": "random:3x3", "max_jobs": 3, "max_machines": 3},
        val_cases=["random:3x3:20000"],
        eval_every=10,
        simulations=2,
        rollout="heuristic:mwkr",
        tensorboard=None,
    )
    train(cfg, progress=False)
    with pytest.raises(SchedgymError, match="resume with the same planner or train afresh"):
        train(replace(cfg, steps=20, fortify=True), resume=True, progress=False)


def test_a_learned_policy_of_another_env_is_named_in_one_line(capsys):
    assert cli_main(["run", "--env", "dag", "--policy", "muzero:policies/jobshop-muzero"]) == 2
    err = capsys.readouterr().err
    assert "trained on jobshop" in err and "not on dag" in err and err.count("\n") == 1
