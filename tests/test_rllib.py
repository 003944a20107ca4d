"""``schedgym train --algo rllib-ppo``: RLlib's PPO on the new API stack with the masking
entity RLModule, and its checkpoint as an ``rllib:PATH`` policy.

The yardstick is from outside the module: the uniform-random legal policy on 20 fixed 6x6
Taillard-style instances, and the same network before training (its greedy choices from
near-uniform logits are worse than random). A few iterations must beat both. The checkpoint
then runs through the evaluator on smaller instances than it trained on, every record
validated. Skipped where RLlib (``schedgym[ray]``) is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray.rllib", reason="RLlib is an optional extra: pip install 'schedgym[ray]'")

from schedgym.agents.rllib import RLlibConfig, RLlibPolicy, train_rllib  # noqa: E402
from schedgym.cli import main  # noqa: E402
from schedgym.episode import run_episode  # noqa: E402
from schedgym.evaluate import checkpoint_files, evaluate  # noqa: E402
from schedgym.suites import Case, Suite  # noqa: E402

PAD = {"max_jobs": 6, "max_machines": 6}
SEEDS = range(900, 920)


def mean_makespan(policy) -> float:
    return float(
        np.mean(
            [
                run_episode(
                    "jobshop", policy, case=f"random:6x6:{s}", seed=s, env_kwargs=PAD
                ).metrics["makespan"]
                for s in SEEDS
            ]
        )
    )


def config(out, steps: int, runners: int) -> RLlibConfig:
    return RLlibConfig(
        env="jobshop",
        out=str(out),
        steps=steps,
        env_runners=runners,
        train_batch_size=500,
        minibatch_size=125,
        num_epochs=4,
        learning_rate=1e-3,
        d_model=32,
        layers=1,
        tensorboard=None,
        env_kwargs={"case": "random:6x6", **PAD},
    )


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("rllib") / "jobshop-rllib-ppo"
    rows = train_rllib(config(out, 2000, 1), progress=False)
    return out, rows


def test_a_few_iterations_beat_random_and_the_untrained_network(trained, tmp_path):
    out, rows = trained
    assert len(rows) == 4 and rows[-1]["env_steps"] >= 2000
    untrained = tmp_path / "untrained"
    assert train_rllib(config(untrained, 0, 0), progress=False) == []
    learned = mean_makespan(RLlibPolicy(out))
    assert learned < mean_makespan("random")
    assert learned < mean_makespan(RLlibPolicy(untrained))


def test_the_checkpoint_runs_as_a_policy_on_smaller_instances(trained):
    out, _ = trained
    suite = Suite(
        "jobshop/small",
        1,
        (Case("random:4x4:3", 3), Case("random:6x3:4", 4), Case("random:6x6:5", 5)),
        "makespan",
        "makespan",
    )
    results = evaluate("jobshop", f"rllib:{out}", suite)  # each record validated
    direct = [
        run_episode("jobshop", RLlibPolicy(out), case=c.case, seed=c.seed, env_kwargs=PAD).metrics[
            "makespan"
        ]
        for c in suite.cases
    ]
    assert [c["metrics"]["makespan"] for c in results["cases"]] == direct
    assert results["kind"] == "learned"
    # what the results depend on includes the module's weights, as its config.json lists them
    files = checkpoint_files(f"rllib:{out}")
    assert out / "config.json" in files and all(f.is_file() for f in files)
    assert out / "module" / "module_state.pkl" in files


def test_options_the_rllib_recipe_does_not_take_are_refused(capsys):
    assert (
        main(["train", "--env", "jobshop", "--algo", "rllib-ppo", "--imitate", "heuristic:mor"])
        == 2
    )
    assert "--algo rllib-ppo does not take --imitate" in capsys.readouterr().err
    assert main(["train", "--env", "jobshop", "--env-runners", "2"]) == 2
    assert "--env-runners and --ray are options of --algo rllib-ppo" in capsys.readouterr().err
