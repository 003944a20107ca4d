"""PPO on the shared entity network: it learns, honours the mask, reloads, and is size-free."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from schedgym.agents.networks import EntityPolicy
from schedgym.agents.ppo import PPOPolicy, TrainConfig, train
from schedgym.evaluate import run_episode

CASE = "random:6x6:7"  # one fixed instance: a few hundred steps must already help


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo")
    cfg = TrainConfig(
        env="jobshop",
        out=str(out),
        steps=2048,
        n_envs=2,
        seed=0,
        env_kwargs={"case": CASE},
        n_steps=128,
        batch_size=64,
        n_epochs=4,
        learning_rate=1e-3,
        tensorboard=None,
        eval_every=10**9,
    )
    train(cfg, progress=False)
    return out


def _greedy_makespan(policy) -> float:
    return run_episode("jobshop", policy, case=CASE, seed=0).metrics["makespan"]


def test_training_improves_over_the_untrained_policy(trained, tmp_path):
    untrained = tmp_path / "untrained"
    cfg = TrainConfig(
        env="jobshop",
        out=str(untrained),
        steps=1,
        n_envs=1,
        n_steps=8,
        batch_size=8,
        env_kwargs={"case": CASE},
        tensorboard=None,
    )
    train(cfg, progress=False)
    before = _greedy_makespan(PPOPolicy(untrained))
    after = _greedy_makespan(PPOPolicy(trained))
    assert after < before


def test_checkpoint_reloads_and_acts_identically(trained):
    a, b = PPOPolicy(trained), PPOPolicy(trained)
    env = gym.make("schedgym/JobShop-v0", disable_env_checker=True, case="random:10x5:3")
    obs, _ = env.reset(seed=1)
    done = False
    while not done:
        act = a.act(env, obs)
        assert act == b.act(env, obs)
        obs, _, done, _, _ = env.step(act)


def test_network_runs_on_two_instance_sizes_and_respects_the_mask(trained):
    policy = PPOPolicy(trained)
    for case in ("random:3x3:1", "random:30x10:2"):
        env = gym.make("schedgym/JobShop-v0", disable_env_checker=True, case=case)
        obs, _ = env.reset(seed=0)
        done, steps = False, 0
        while not done:
            mask = env.unwrapped.action_masks()
            act = policy.act(env, obs)
            assert mask[act], f"illegal action {act} on {case}"
            obs, _, done, _, _ = env.step(act)
            steps += 1
        n_jobs, n_machines = map(int, case.split(":")[1].split("x"))
        assert steps == n_jobs * n_machines


def test_entity_network_is_permutation_equivariant():
    env = gym.make("schedgym/JobShop-v0", disable_env_checker=True)
    space = env.observation_space
    layout = env.unwrapped.layout
    torch.manual_seed(0)
    policy = EntityPolicy(
        space,
        env.action_space,
        lambda _: 1e-3,
        options_per_entity=layout.options_per_entity,
        n_special=0,
    )
    obs, _ = env.reset(seed=0, options={"case": "random:6x6:1"})
    perm = np.r_[np.random.default_rng(0).permutation(6), np.arange(6, layout.max_entities)]
    shuffled = dict(obs, entities=obs["entities"][perm], entity_mask=obs["entity_mask"][perm])
    with torch.no_grad():
        logits = [
            policy.get_distribution(policy.obs_to_tensor(o)[0]).distribution.logits[0]
            for o in (obs, shuffled)
        ]
    np.testing.assert_allclose(
        logits[1][:6].numpy(), logits[0][perm[:6]].numpy(), rtol=1e-4, atol=1e-5
    )
