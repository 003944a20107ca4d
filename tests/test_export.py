"""Export of the committed policies to ONNX: the graph against sb3-contrib's own masked policy,
the spec, the CLI's errors, and the numpy-only feature encoder the serving plugin shares."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from schedgym.agents.export import (
    MASKED_LOGIT,
    ActorGraph,
    committed_policies,
    export,
    load_checkpoint,
    make_env,
    onnx_session,
    record_observations,
)
from schedgym.cli import main

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {
    "jobshop": "policies/jobshop-ppo",
    "dag": "policies/dag-ppo",
    "batching": "policies/batching-ppo",
    "moe": "policies/moe-ppo",
    "moe-synth": "policies/moe-synth-ppo",  # the attention-free network (layers=0)
    "memmap": "policies/memmap-ppo",
}
# every committed PPO checkpoint, whatever its env arguments (the msa task, online DAGs)
COMMITTED = sorted(p.name for p in (ROOT / "policies").glob("*-ppo"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exported")
    for env, folder in POLICIES.items():
        export(f"ppo:{ROOT / folder}", out / env)
    return {env: out / env for env in POLICIES}


@pytest.mark.parametrize("env", list(POLICIES))
def test_onnx_matches_sb3_masked_policy_on_1000_validation_decisions(exported, env):
    folder = exported[env]
    onnx.checker.check_model(onnx.load(str(folder / "policy.onnx")), full_check=True)
    session = onnx_session(folder / "policy.onnx")
    policy = f"ppo:{ROOT / POLICIES[env]}"
    obs, masks = record_observations(policy, session, n=1000)
    assert masks.shape[0] >= 1000
    names = [i.name for i in session.get_inputs()]
    feed = {k: obs[k] for k in names[:-1]} | {"action_mask": masks}
    logits, action = session.run(["masked_logits", "action"], feed)

    model, _ = load_checkpoint(ROOT / POLICIES[env])
    with torch.no_grad():
        tensors, _ = model.policy.obs_to_tensor(obs)
        dist = model.policy.get_distribution(tensors, action_masks=masks)
        # sb3-contrib's MaskableCategorical: masked logits, normalised to log-probabilities
        log_probs = dist.distribution.logits.numpy()
    expected_action, _ = model.predict(obs, action_masks=masks, deterministic=True)

    np.testing.assert_array_equal(action, expected_action)
    assert masks[np.arange(masks.shape[0]), action].all()
    assert (logits[~masks] == np.float32(MASKED_LOGIT)).all()
    top = logits.max(1, keepdims=True)
    onnx_log_probs = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
    np.testing.assert_allclose(onnx_log_probs[masks], log_probs[masks], atol=1e-5, rtol=0)
    # and the raw masked logits against the torch actor on the same inputs
    graph = ActorGraph(model.policy, names[:-1]).eval()
    with torch.no_grad():
        torch_logits, _ = graph(*(torch.as_tensor(feed[k]) for k in names))
    np.testing.assert_allclose(logits, torch_logits.numpy(), atol=1e-5, rtol=0)


def test_spec_names_env_encoder_features_actions_and_checkpoint(exported):
    import hashlib

    from schedgym.envs.batching.features import (
        ENCODER_VERSION,
        ENTITY_FEATURES,
        GLOBAL_FEATURES,
    )

    spec = json.loads((exported["batching"] / "spec.json").read_text())
    assert (spec["env"], spec["env_id"], spec["env_version"]) == (
        "batching",
        "schedgym/Batching-v0",
        "v0",
    )
    assert spec["encoder_version"] == ENCODER_VERSION
    inputs = {i["name"]: i for i in spec["inputs"]}
    assert inputs["entities"]["features"] == list(ENTITY_FEATURES)
    assert inputs["globals"]["features"] == list(GLOBAL_FEATURES)
    assert inputs["entities"]["shape"] == ["batch", 128, 12]
    assert spec["actions"]["n_actions"] == 128 + 6 + 2
    assert spec["actions"]["special"]["135"] == "run the step"
    digest = hashlib.sha256((ROOT / POLICIES["batching"] / "model.zip").read_bytes()).hexdigest()
    assert spec["checkpoint_sha256"] == digest
    # every env's spec names each column of every observation input
    for env in POLICIES:
        spec = json.loads((exported[env] / "spec.json").read_text())
        for i in spec["inputs"]:
            if i["name"] not in ("action_mask",) and not i["name"].endswith("_mask"):
                assert len(i["features"]) == i["shape"][-1], (env, i["name"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--policy", "ppo:policies/no-such-policy"], "is not a policy folder"),
        (["--policy", "heuristic:fcfs"], "only trained checkpoints"),
        (["--policy", "muzero:policies/jobshop-muzero@16"], "plans with a model"),
        (["--policy", "rollout:policies/jobshop-ppo@4"], "export its base, ppo:PATH"),
        (["--policy", "ppo:policies/batching-ppo", "--env", "tetris"], "unknown env 'tetris'"),
        (["--policy", "ppo:policies/batching-ppo", "--env", "jobshop"], "not 'jobshop'"),
    ],
)
def test_export_refuses_unknown_policy_or_env_in_one_line(
    argv, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(ROOT)
    assert main(["export", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "name",
    COMMITTED
    or [pytest.param(None, marks=pytest.mark.skip(reason="no policies/*-ppo in this checkout"))],
)
def test_every_committed_ppo_policy_exports_under_its_training_env(exported, name, tmp_path):
    folder = ROOT / "policies" / name
    if not (folder / "model.zip").is_file() or not (folder / "config.json").is_file():
        pytest.skip(f"{folder} lacks model.zip or config.json (weights not checked out?)")
    assert folder in committed_policies()  # `schedgym bench --env export` measures it too
    # the folders the parity fixture exported are reused, the others exported here
    done = {Path(f).name: exported[env] for env, f in POLICIES.items()}
    out = done.get(name) or tmp_path / name
    if name not in done:
        export(f"ppo:{folder}", out)
    spec = json.loads((out / "spec.json").read_text())
    model, config = load_checkpoint(folder)
    assert spec["env"] == config["env"] and spec["env_kwargs"] == config.get("env_kwargs", {})
    for i in spec["inputs"]:
        if not i["name"].endswith("_mask"):
            assert len(i["features"]) == i["shape"][-1], i["name"]
    # the graph reads the observation of the env the checkpoint was trained on, and acts as
    # the checkpoint does on it
    env = make_env(config)
    obs, _ = env.reset(seed=0)
    mask = env.unwrapped.action_masks()
    session = onnx_session(out / "policy.onnx")
    names = [i.name for i in session.get_inputs()]
    feed = {k: np.asarray(obs[k])[None] for k in names[:-1]} | {"action_mask": mask[None]}
    expected, _ = model.predict(obs, action_masks=mask, deterministic=True)
    assert int(session.run(["action"], feed)[0][0]) == int(expected)
    env.close()


def test_bench_exports_the_ppo_checkpoints_only():
    # a next-use eviction model is a model.zip too, but not one MaskablePPO loads
    names = [p.name for p in committed_policies()]
    assert names == [n for n in COMMITTED if (ROOT / "policies" / n / "model.zip").is_file()]
    nextuse = sorted((ROOT / "policies").glob("*-nextuse"))
    if not nextuse:
        pytest.skip("no committed next-use policy in this checkout")
    assert not {p.name for p in nextuse} & set(names)


@pytest.mark.parametrize(
    ("model", "config", "message"),
    [
        ("nextuse", None, "model.zip is not a PPO checkpoint"),
        (b"junk", "{}", "model.zip is not a PPO checkpoint"),
        ("ppo", "[1, 2]", "config.json: expected a JSON object, got list"),
        ("ppo", "not json", "config.json: not valid JSON"),
        ("ppo", '{"env_kwargs": {}}', 'config.json: no "env"'),
        ("ppo", '{"env": "tetris"}', "config.json: unknown env 'tetris'"),
        ("ppo", '{"env": "moe", "env_kwargs": [1]}', "config.json: env_kwargs must be"),
    ],
    ids=["nextuse", "junk-zip", "list-config", "not-json", "no-env", "unknown-env", "kwargs"],
)
def test_export_refuses_a_broken_checkpoint_in_one_line_naming_the_file(
    model, config, message, tmp_path, capsys
):
    # the checks `schedgym run` makes on ppo:PATH (PPOPolicy's model file, the config's)
    source = {"nextuse": "moe-nextuse", "ppo": "moe-ppo"}.get(model)
    if source and not (ROOT / "policies" / source / "model.zip").is_file():
        pytest.skip(f"policies/{source} is not in this checkout")
    folder = tmp_path / "policy"
    if model == "nextuse":
        shutil.copytree(ROOT / "policies" / source, folder)
    else:
        folder.mkdir()
        if source:
            shutil.copy(ROOT / "policies" / source / "model.zip", folder / "model.zip")
        else:
            (folder / "model.zip").write_bytes(model)
        (folder / "config.json").write_text(config)
    assert main(["export", "--policy", f"ppo:{folder}", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{folder}/{message}" in err, err


def test_feature_encoder_imports_numpy_only():
    # loaded by file path so that the package's own __init__ (which registers the envs with
    # Gymnasium) is not what is being tested; torch, gymnasium and SB3 are made unimportable
    code = f"""
import importlib.util, sys
for name in ("torch", "gymnasium", "stable_baselines3", "sb3_contrib"):
    sys.modules[name] = None
spec = importlib.util.spec_from_file_location("f", {str(ROOT / "envs/batching/features.py")!r})
module = sys.modules["f"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
obs = module.encode
loaded = [m for m, v in sys.modules.items() if v is not None]
print(sorted(m for m in loaded if m.split(".")[0] in ("schedgym", "gymnasium", "torch")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
