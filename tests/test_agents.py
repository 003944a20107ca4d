"""PPO on the shared entity network: it learns, honours the mask, reloads, and is size-free."""

from __future__ import annotations

import json
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import VecNormalize

from schedgym.agents.imitation import DEMO_SEED_OFFSET, collect
from schedgym.agents.networks import EntityPolicy
from schedgym.agents.ppo import PPOPolicy, TrainConfig, make_vec_env, train
from schedgym.episode import run_episode
from schedgym.errors import SchedgymError

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


@pytest.mark.parametrize("layers", [2, 0])
def test_entity_network_is_permutation_equivariant_and_blind_to_padding(layers):
    """Both mixers (attention, and the pooling of ``layers=0``) must permute the logits with
    the entities and ignore whatever the padding rows hold."""
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
        layers=layers,
    )
    obs, _ = env.reset(seed=0, options={"case": "random:6x6:1"})
    rng = np.random.default_rng(0)
    perm = np.r_[rng.permutation(6), np.arange(6, layout.max_entities)]
    shuffled = dict(obs, entities=obs["entities"][perm], entity_mask=obs["entity_mask"][perm])
    garbage = obs["entities"].copy()
    garbage[6:] = rng.normal(size=garbage[6:].shape)
    padded = dict(obs, entities=garbage)
    with torch.no_grad():
        logits = [
            policy.get_distribution(policy.obs_to_tensor(o)[0]).distribution.logits[0]
            for o in (obs, shuffled, padded)
        ]
    n = 6 * layout.options_per_entity
    assert logits[0][:n].std() > 0  # the check below is not between constants
    np.testing.assert_allclose(
        logits[1][:6].numpy(), logits[0][perm[:6]].numpy(), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(logits[2][:n].numpy(), logits[0][:n].numpy(), rtol=1e-4, atol=1e-5)


def test_cloning_mor_plays_like_mor_on_held_out_instances(tmp_path):
    """MOR picks the job with most operations left, a feature the network sees: after cloning
    it on 6x6 instances, the greedy policy should agree with MOR on most held-out decisions and
    build schedules about as short as MOR's, far shorter than the untrained policy's."""
    cfg = TrainConfig(
        env="jobshop",
        out=str(tmp_path),
        steps=1,
        n_envs=1,
        n_steps=8,
        batch_size=64,
        env_kwargs={"case": "random:6x6"},
        tensorboard=None,
        imitate="heuristic:mor",
        imitate_episodes=30,
        imitate_epochs=15,
        learning_rate=1e-3,
    )
    train(cfg, progress=False)
    stats = json.loads((tmp_path / "training.json").read_text())["imitation"]
    assert stats["held_out_agreement"] > 0.7

    def mean_makespan(policy) -> float:
        return float(
            np.mean(
                [
                    run_episode("jobshop", policy, case=f"random:6x6:{s}", seed=0).metrics[
                        "makespan"
                    ]
                    for s in range(40, 50)
                ]
            )
        )

    cloned = mean_makespan(PPOPolicy(tmp_path / "imitation.zip"))
    mor = mean_makespan("heuristic:mor")
    untrained_cfg = replace(cfg, out=str(tmp_path / "untrained"), imitate=None)
    train(untrained_cfg, progress=False)
    untrained = mean_makespan(PPOPolicy(tmp_path / "untrained"))
    assert cloned < 1.05 * mor
    assert cloned < untrained


def test_demonstrations_honour_the_mask_and_end_with_the_episode_return():
    """Every recorded action is legal under its recorded mask, and a job-shop episode's return
    is -makespan / scale (the env's documented reward), so the return-to-go at the first
    decision times the scale of the instance gives back MOR's makespan."""
    demos = collect("jobshop", "heuristic:mor", 3, {"case": "random:5x4"}, progress=False)
    assert demos.masks[np.arange(len(demos)), demos.actions].all()
    assert np.bincount(demos.episode).tolist() == [20, 20, 20]
    env = gym.make("schedgym/JobShop-v0", disable_env_checker=True, case="random:5x4")
    for i in range(3):
        env.reset(seed=DEMO_SEED_OFFSET + i)
        times = env.unwrapped.instance.durations
        machines = env.unwrapped.instance.machines
        trivial = max(times.sum(axis=1).max(), np.bincount(machines.ravel(), times.ravel()).max())
        makespan = run_episode(
            "jobshop", "heuristic:mor", seed=DEMO_SEED_OFFSET + i, env_kwargs={"case": "random:5x4"}
        ).metrics["makespan"]
        first = demos.returns[demos.episode == i][0]
        assert first == pytest.approx(-makespan / trivial, rel=1e-5)


def test_a_list_of_generators_is_spread_over_the_vectorised_envs():
    cfg = TrainConfig(
        env="jobshop", out="unused", n_envs=3, env_kwargs={"case": ["random:3x3", "random:5x4"]}
    )
    venv = make_vec_env(cfg)
    shapes = [e.unwrapped.instance.durations.shape for e in venv.envs]
    assert shapes == [(3, 3), (5, 4), (3, 3)]
    demos = collect("jobshop", "heuristic:mor", 2, cfg.env_kwargs, progress=False)
    assert np.bincount(demos.episode).tolist() == [9, 20]


def test_normalised_rewards_survive_a_resume(tmp_path):
    """With reward scaling the running return statistics are saved beside the checkpoint and a
    resumed run picks them up (seeded from the demonstrations when cloning)."""
    cfg = TrainConfig(
        env="jobshop",
        out=str(tmp_path),
        steps=128,
        n_envs=1,
        n_steps=64,
        batch_size=32,
        env_kwargs={"case": "random:4x3"},
        tensorboard=None,
        imitate="heuristic:mor",
        imitate_episodes=3,
        imitate_epochs=1,
        normalize_reward=True,
    )
    train(cfg, progress=False)
    first = VecNormalize.load(str(tmp_path / "reward_norm.pkl"), make_vec_env(cfg))
    scale = json.loads((tmp_path / "training.json").read_text())["imitation"]["return_scale"]
    # 3 demonstrations of 4 x 3 = 12 decisions, then 128 PPO steps
    assert scale > 0 and first.ret_rms.count == pytest.approx(3 * 12 + 128, abs=1)
    model = train(cfg, resume=True, progress=False)
    assert model.num_timesteps >= 256
    resumed = VecNormalize.load(str(tmp_path / "reward_norm.pkl"), make_vec_env(cfg))
    assert resumed.ret_rms.count == pytest.approx(first.ret_rms.count + 128, abs=1)


def test_cloning_a_solver_is_refused_with_a_clear_error():
    with pytest.raises(SchedgymError, match="solver:cpsat: it made no step decisions"):
        collect("jobshop", "solver:cpsat", 1, {"case": "random:3x3"}, progress=False)


def test_a_policy_refuses_an_env_whose_observations_it_was_not_trained_on(tmp_path):
    # the memory env's map task has 6 features per candidate, its msa task 6 + 5 window features
    # and its pack task no slow-memory action (docs/memory-map.md)
    cfg = TrainConfig(
        env="memmap",
        out=str(tmp_path),
        steps=1,
        n_envs=1,
        n_steps=8,
        batch_size=8,
        env_kwargs={"case": "random:8", "task": "map"},
        tensorboard=None,
    )
    train(cfg, progress=False)
    policy = PPOPolicy(tmp_path)
    run_episode("memmap", policy, case="random:8:1", env_kwargs={"task": "map"})
    with pytest.raises(
        SchedgymError, match=r"entities of shape \(32, 6\), this env gives \(32, 11\)"
    ):
        run_episode("memmap", policy, case="random:8:1", env_kwargs={"task": "msa"})
    with pytest.raises(SchedgymError, match=r"actions of shape \(33,\), this env gives \(32,\)"):
        run_episode("memmap", policy, case="random:8:1", env_kwargs={"task": "pack"})


def test_a_heuristic_that_plans_in_its_own_order_is_cloned_in_the_envs_order():
    """heuristic:msa plans a memory episode in its own buffer order (solve); cloning plays its
    rule decision by decision in the env's order, one decision per buffer, each legal, and the
    return is the env's documented 1 - 1/speedup of that episode."""
    kwargs = {"task": "msa", "case": "random:24", "fast_capacity": 0.2}
    demos = collect("memmap", "heuristic:msa", 2, kwargs, progress=False)
    assert np.bincount(demos.episode).tolist() == [24, 24]
    assert demos.masks[np.arange(len(demos)), demos.actions].all()
    env = gym.make("schedgym/MemoryMap-v0", disable_env_checker=True, **kwargs)
    env.reset(seed=DEMO_SEED_OFFSET)
    done = False
    while not done:
        _, _, done, _, info = env.step(env.unwrapped.core.xla_choice())
    speedup = info["metrics"]["speedup"]
    assert demos.returns[0] == pytest.approx(1 - 1 / speedup, rel=1e-5, abs=1e-9)


def test_a_broken_policy_config_is_named_in_one_line(tmp_path):
    from schedgym.evaluate import checkpoint_files, learned_layout_kwargs

    (tmp_path / "config.json").write_text('{"env": "jobshop",')
    for read in (checkpoint_files, lambda p: learned_layout_kwargs(p, "jobshop")):
        with pytest.raises(SchedgymError, match=f"{tmp_path / 'config.json'}: not valid JSON"):
            read(f"ppo:{tmp_path}")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(SchedgymError, match="expected a JSON object, got list"):
        checkpoint_files(f"ppo:{tmp_path}")
    config = tmp_path / "config.json"
    # read letter by letter, "model.pt" would list eight one-letter files
    config.write_text('{"algo": "muzero", "checkpoint_files": "model.pt"}')
    with pytest.raises(SchedgymError, match="checkpoint_files must be a non-empty list"):
        checkpoint_files(f"muzero:{tmp_path}")
    # a listed file that is missing would silently drop out of the results' input digest
    config.write_text('{"algo": "muzero", "checkpoint_files": ["model.pt"]}')
    with pytest.raises(SchedgymError, match=f"{config}: checkpoint_files lists model.pt, not in"):
        checkpoint_files(f"muzero:{tmp_path}")
    (tmp_path / "model.pt").write_bytes(b"weights")
    assert checkpoint_files(f"muzero:{tmp_path}") == [tmp_path / "model.pt", config]
    # a MuZero folder that lists nothing depends on its model.pt, not on a model.zip
    config.write_text('{"algo": "muzero"}')
    assert checkpoint_files(f"muzero:{tmp_path}") == [tmp_path / "model.pt", config]
    config.write_text("{}")
    assert checkpoint_files(f"muzero:{tmp_path}") == [tmp_path / "model.pt", config]
    # a list without the weights the loader reads would leave them out of the digest
    (tmp_path / "training.json").write_text("{}")
    config.write_text('{"checkpoint_files": ["training.json"]}')
    with pytest.raises(SchedgymError, match="checkpoint_files must list model.pt, the weights"):
        checkpoint_files(f"muzero:{tmp_path}")
    # files outside the folder would make another folder's results depend on them
    for outside in ("../model.pt", str(tmp_path / "model.pt")):
        config.write_text(json.dumps({"algo": "muzero", "checkpoint_files": [outside]}))
        with pytest.raises(SchedgymError, match="list of file names inside the policy folder"):
            checkpoint_files(f"muzero:{tmp_path}")
    config.write_text('{"env": "jobshop", "env_kwargs": ["max_jobs", 3]}')
    with pytest.raises(SchedgymError, match="env_kwargs must be a JSON object, got list"):
        learned_layout_kwargs(f"ppo:{tmp_path}", "jobshop")


def test_ppo_names_a_file_that_is_not_its_checkpoint(tmp_path):
    """``ppo:`` on a MuZero ``.pt`` or a ``config.json`` says what the file is not, in one line
    (stable-baselines3 itself fails with an assertion or a zip error deep in its loader)."""
    from schedgym.policy import resolve_policy

    torch.save({"weights": torch.zeros(2)}, tmp_path / "model.pt")  # a zip archive too
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SchedgymError, match=r"model.pt is not a PPO checkpoint.*muzero:PATH"):
        resolve_policy("jobshop", f"ppo:{tmp_path / 'model.pt'}")
    with pytest.raises(SchedgymError, match=r"config.json is not a PPO checkpoint, the zip"):
        resolve_policy("jobshop", f"ppo:{tmp_path / 'config.json'}")


def test_each_training_run_logs_to_its_own_folder_numbered_as_sb3_numbers_them(tmp_path):
    """`run_folder` against SB3's own logger (`configure_logger`, what `model.learn` uses): a
    new run takes the next number beside SB3's runs, a resumed run the latest, so two MuZero or
    nextuse runs (two recipes) no longer write into one folder."""
    from stable_baselines3.common.utils import configure_logger

    from schedgym.agents.runs import run_folder

    root = tmp_path / "runs"
    logs = root / "moe"
    assert run_folder(root, "moe", "ppo", resume=True) == logs / "ppo_1"  # nothing to resume
    for expected in ("ppo_1", "ppo_2"):
        assert run_folder(root, "moe", "ppo") == logs / expected
        sb3 = configure_logger(0, str(logs), "ppo").get_dir()
        assert sb3 == str(logs / expected) and (logs / expected).is_dir()
    resumed = configure_logger(0, str(logs), "ppo", reset_num_timesteps=False).get_dir()
    assert run_folder(root, "moe", "ppo", resume=True) == logs / "ppo_2" == type(logs)(resumed)
    assert run_folder(root, "moe", "nextuse") == logs / "nextuse_1"  # numbered per algorithm
