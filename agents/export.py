"""Export a trained policy to ONNX, with a ``spec.json`` saying how to feed it.

``export(policy, out)`` writes into the folder ``out``:

* ``policy.onnx``: the actor of a ``MaskablePPO`` checkpoint (``agents/networks.py``) as one
  graph. Inputs: the observation arrays of the env's entity layout (``entities``,
  ``entity_mask``, ``globals``, and context groups such as ``machines`` with their masks), each
  with a leading batch dimension, plus ``action_mask`` ``bool[batch, n_actions]`` (True =
  legal). Outputs: ``masked_logits`` ``float32[batch, n_actions]`` (the actor's logits, with
  illegal actions set to ``MASKED_LOGIT`` inside the graph, as sb3-contrib's
  ``MaskableCategorical`` does) and ``action`` ``int64[batch]``, their argmax (the greedy action
  ``MaskablePPO.predict(..., deterministic=True)`` takes).
* ``spec.json``: env name, Gymnasium id and version, the feature encoder's version, every input
  with its shape, dtype and feature names in order, the meaning of each action, the source
  checkpoint's SHA-256, and the schedgym version.

The graph is checked with ``onnx.checker`` before it is written. Serving code needs only
onnxruntime and numpy to run it (``schedgym.plugins.vllm``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from schedgym._version import __version__
from schedgym.agents.imitation import generator_kwargs
from schedgym.errors import SchedgymError
from schedgym.policy import check_spaces
from schedgym.registry import env_entry
from schedgym.report import latency_percentiles

SPEC_FORMAT = "schedgym-policy-1"
# sb3-contrib's MaskableCategorical sets illegal actions' logits to this value.
MASKED_LOGIT = -1e8
ONNX_OPSET = 17

# Feature-name constants of each env module, per observation group.
_FEATURE_NAMES = {
    "jobshop": {
        "entities": "JOB_FEATURES",
        "machines": "MACHINE_FEATURES",
        "globals": "GLOBAL_FEATURES",
    },
    "dag": {
        "entities": "TASK_FEATURES",
        "devices": "DEVICE_FEATURES",
        "globals": "GLOBAL_FEATURES",
    },
    "batching": {"entities": "ENTITY_FEATURES", "globals": "GLOBAL_FEATURES"},
    "moe": {"entities": "EXPERT_FEATURES", "globals": "GLOBAL_FEATURES"},
    "memmap": {"entities": "CANDIDATE_FEATURES", "globals": "GLOBAL_FEATURES"},
}
# What an entity action does (action i * options + o picks option o of entity i) in each env.
_ENTITY_ACTION = {
    "jobshop": "dispatch the next operation of job i",
    "dag": "place ready task i on device slot o",
    "batching": "admit the i-th waiting request (queue order) in the admission phase",
    "moe": "expert i = layer * n_experts + expert: prefetch it, or evict it, by the phase globals",
    "memmap": "place the current buffer at candidate offset i",
}


def resolve_checkpoint(policy: str) -> Path:
    """The checkpoint folder of ``ppo:PATH`` (or a bare ``PATH``): a folder holding
    ``model.zip`` and the ``config.json`` that names its env. Raises ``SchedgymError``."""
    algo, sep, path = policy.partition(":")
    if not sep:
        algo, path = "ppo", policy
    # Planners step the env's own simulator (or MuZero's learned dynamics) many times per
    # decision; a serving engine's scheduler has neither, and a graph of the network alone is
    # not the policy.
    planner = {
        "muzero": "a MuZero policy plans with a model at every decision, which an ONNX graph "
        "cannot carry; export the PPO policy it was warm-started from",
        "rollout": "a rollout plays its base policy out on copies of the simulator at every "
        "decision, which an ONNX graph cannot carry; export its base, ppo:PATH",
    }
    if algo in planner:
        raise SchedgymError(f"cannot export {policy!r}: {planner[algo]}")
    if algo != "ppo":
        raise SchedgymError(
            f"cannot export {policy!r}: only trained checkpoints (ppo:PATH) are exported"
        )
    folder = Path(path)
    if not (folder / "model.zip").is_file() or not (folder / "config.json").is_file():
        raise SchedgymError(
            f"cannot export {policy!r}: {folder} is not a policy folder (model.zip and config.json)"
        )
    return folder


def _feature_names(env: str, module: Any, unwrapped: Any, group: str, width: int) -> list[str]:
    attr = _FEATURE_NAMES[env].get(group.removesuffix("_mask"))
    names = list(getattr(module, attr, ())) if attr else []
    if group.endswith("_mask"):
        return []
    if env == "memmap" and group == "entities" and getattr(unwrapped, "task", None) == "msa":
        # the msa task's candidates are windows: their columns follow the candidate features
        names += list(module.WINDOW_FEATURES)
    if env == "dag" and group == "entities":
        # four blocks of one column per device slot come before the named task features
        slots = (width - len(names)) // 4
        blocks = ("can_run", "time", "earliest_start", "earliest_finish")
        names = [f"{b}[device {d}]" for b in blocks for d in range(slots)] + names
    if len(names) != width:
        raise SchedgymError(
            f"{env}: {width} {group} features in the checkpoint, {len(names)} named by the env; "
            "the checkpoint was trained on another observation layout"
        )
    return names


def _action_meaning(env: str, unwrapped: Any) -> dict[str, Any]:
    layout = unwrapped.layout
    n_entity = layout.max_entities * layout.options_per_entity
    special = [f"special action {k}" for k in range(layout.n_special)]
    if env == "batching":
        special = [f"set the step's token budget to {b} (decodes first)" for b in unwrapped.budgets]
        special += ["prefill-first step (decodes paused)", "run the step"]
    elif env == "moe":
        special = ["skip (prefetch nothing more / cancel the prefetch / compute the miss on CPU)"]
    elif env == "memmap" and layout.n_special:
        special = ["leave the buffer in slow memory"]
    return {
        "n_actions": layout.n_actions,
        "entity_actions": f"0..{n_entity - 1}: action i * {layout.options_per_entity} + o; "
        + _ENTITY_ACTION[env],
        "max_entities": layout.max_entities,
        "options_per_entity": layout.options_per_entity,
        "special": {str(n_entity + k): text for k, text in enumerate(special)},
    }


class ActorGraph(nn.Module):
    """The actor of an ``EntityPolicy`` with the mask applied inside: ``(observation arrays...,
    action_mask) -> (masked_logits, action)``. ``keys`` orders the observation inputs."""

    def __init__(self, policy: nn.Module, keys: list[str]):
        super().__init__()
        self.policy, self.keys = policy, keys

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = {k: x.float() for k, x in zip(self.keys, inputs[:-1], strict=True)}
        features = self.policy.extract_features(obs, self.policy.pi_features_extractor)
        logits = self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))
        masked = torch.where(inputs[-1], logits, torch.full_like(logits, MASKED_LOGIT))
        return masked, masked.argmax(dim=1)


def read_config(folder: Path) -> dict[str, Any]:
    """The training ``config.json`` of a policy folder: a JSON object naming a known env, whose
    ``env_kwargs`` (if any) is an object, as ``schedgym run`` requires of a learned policy's
    (`schedgym.evaluate` reads it there; this layer may not import that one). Raises
    ``SchedgymError`` (one line naming the file)."""
    file = folder / "config.json"
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SchedgymError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise SchedgymError(f"{file}: expected a JSON object, got {type(config).__name__}")
    trained = config.get("env")
    if not isinstance(trained, str):
        raise SchedgymError(f'{file}: no "env" naming the env the checkpoint was trained on')
    try:
        env_entry(trained)
    except SchedgymError as exc:
        raise SchedgymError(f"{file}: {exc}") from None
    if not isinstance(config.get("env_kwargs", {}), dict):
        raise SchedgymError(f"{file}: env_kwargs must be a JSON object")
    return config


def load_checkpoint(folder: Path) -> tuple[Any, dict[str, Any]]:
    """``(MaskablePPO model on the CPU, training config)`` of a policy folder, loaded as
    ``schedgym run`` loads ``ppo:PATH`` (`PPOPolicy`: a ``model.zip`` that is not the archive
    stable-baselines3 saves is refused naming the file). Raises ``SchedgymError``."""
    from schedgym.agents.ppo import PPOPolicy

    model = PPOPolicy(folder).model
    return model, read_config(folder)


def make_env(config: dict[str, Any]) -> Any:
    """The env a checkpoint was trained on (its first training generator, with the training
    ``env_kwargs``: the memmap task, the padding sizes). Raises ``SchedgymError`` when they do
    not make that env."""
    from schedgym.episode import make_env as make

    kwargs = generator_kwargs(config.get("env_kwargs") or {}, 0)
    try:
        return make(config["env"], **kwargs)
    except (TypeError, ValueError) as exc:
        raise SchedgymError(
            f"{config['env']}: the env_kwargs of the checkpoint's config.json, {kwargs}, do not "
            f"make that env ({type(exc).__name__}: {exc})"
        ) from None


def export(policy: str, out: str | Path, env: str | None = None) -> dict[str, Any]:
    """Write ``policy.onnx`` and ``spec.json`` for checkpoint ``policy`` (``ppo:PATH``) into
    ``out`` and return the spec. ``env``, when given, must be the checkpoint's env. Raises
    ``SchedgymError`` (one line) for an unknown policy or env, or a checkpoint whose layout
    the env does not name."""
    import onnx

    folder = resolve_checkpoint(policy)
    model, config = load_checkpoint(folder)
    entry = env_entry(config.get("env", "?"))
    if env is not None and env_entry(env).name != entry.name:
        raise SchedgymError(f"{policy!r} was trained on env {entry.name!r}, not {env!r}")
    gym_env = make_env(config)
    unwrapped = gym_env.unwrapped
    module = entry.module("env")
    space = model.observation_space
    keys = list(space.spaces)
    n_actions = int(model.action_space.n)
    # as PPOPolicy.reset checks an env before an episode: every observation part and the
    # action count of the env built from the training config must be the network's
    check_spaces(policy, space, n_actions, gym_env)

    inputs = []
    for k in keys:
        sub = space[k]
        inputs.append(
            {
                "name": k,
                "shape": ["batch", *sub.shape],
                "dtype": str(sub.dtype),
                "features": _feature_names(entry.name, module, unwrapped, k, sub.shape[-1]),
            }
        )
    inputs.append({"name": "action_mask", "shape": ["batch", n_actions], "dtype": "bool"})

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graph = ActorGraph(model.policy, keys).eval()
    sample, _ = gym_env.reset(seed=0)
    args = tuple(torch.as_tensor(np.asarray(sample[k])[None]) for k in keys)
    args += (torch.as_tensor(unwrapped.action_masks()[None]),)
    names = [i["name"] for i in inputs]
    onnx_path = out / "policy.onnx"
    # the TorchScript exporter: nn.TransformerEncoder's fused inference kernel is taken only
    # without gradients, so tracing with them keeps the plain, exportable operators
    torch.onnx.export(
        graph,
        args,
        str(onnx_path),
        input_names=names,
        output_names=["masked_logits", "action"],
        dynamic_axes={n: {0: "batch"} for n in [*names, "masked_logits", "action"]},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    onnx.checker.check_model(onnx.load(str(onnx_path)), full_check=True)

    spec = {
        "format": SPEC_FORMAT,
        "env": entry.name,
        "env_id": entry.gym_id,
        "env_version": entry.gym_id.rsplit("-", 1)[-1],
        "encoder_version": getattr(module, "ENCODER_VERSION", None),
        "env_kwargs": config.get("env_kwargs") or {},
        "inputs": inputs,
        "outputs": [
            {"name": "masked_logits", "shape": ["batch", n_actions], "dtype": "float32"},
            {"name": "action", "shape": ["batch"], "dtype": "int64"},
        ],
        "masked_logit": MASKED_LOGIT,
        "actions": _action_meaning(entry.name, unwrapped),
        "checkpoint": str(folder / "model.zip"),
        "checkpoint_sha256": hashlib.sha256((folder / "model.zip").read_bytes()).hexdigest(),
        "schedgym_version": __version__,
        "onnx_opset": ONNX_OPSET,
    }
    if entry.name == "batching":
        spec["engine"] = {
            "budgets": list(unwrapped.budgets),
            "prefill_first_budget": unwrapped.core.config.prefill_first_budget,
            "block_size": 16,
        }
    (out / "spec.json").write_text(json.dumps(spec, indent=1) + "\n")
    gym_env.close()
    return spec


def onnx_session(path: str | Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session on ``path`` with ``threads`` intra-op threads (one by
    default, as a serving engine's scheduler thread would run it)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def record_observations(
    policy: str, session: Any, n: int = 1000
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """At least ``n`` decisions of the checkpoint's validation episodes (its ``val_cases``,
    reset with the seeds training validated on), driven by the exported graph's ``session``:
    ``(observations stacked along a first axis, action masks bool[n, n_actions])``. Raises
    ``SchedgymError`` if the graph picks an illegal action."""
    from schedgym.agents.ppo import validation_episodes

    folder = resolve_checkpoint(policy)
    config = read_config(folder)
    env = make_env(config)
    names = [i.name for i in session.get_inputs()]
    obs_rows: list[dict[str, np.ndarray]] = []
    masks: list[np.ndarray] = []
    episodes = validation_episodes(config.get("val_cases") or [None])
    i = 0
    while len(masks) < n:
        case, seed = episodes[i % len(episodes)]
        obs, _ = env.reset(seed=seed + i // len(episodes), options={"case": case})
        i += 1
        done = False
        while not done and len(masks) < n:
            mask = env.unwrapped.action_masks()
            feed = {k: np.asarray(obs[k])[None] for k in names[:-1]}
            feed[names[-1]] = mask[None]
            action = int(session.run(["action"], feed)[0][0])
            if not mask[action]:
                raise SchedgymError(f"{policy!r}: the exported graph chose illegal action {action}")
            obs_rows.append({k: np.asarray(v).copy() for k, v in obs.items()})
            masks.append(mask)
            obs, _, done, _, _ = env.step(action)
    env.close()
    stacked = {k: np.stack([o[k] for o in obs_rows]) for k in obs_rows[0]}
    return stacked, np.stack(masks)


def bench(out: str | Path) -> list[dict[str, Any]]:
    """Decision latency of every committed policy: the exported graph on onnxruntime (one
    thread) beside the torch policy (``MaskablePPO.predict``, one thread), p50 and p99 over
    200 decisions of its validation episodes at batch size 1. The exported folders are left in
    ``out`` (one per policy), for the serving plugin's own measurement."""
    rows: list[dict[str, Any]] = []
    for folder in committed_policies():
        rows += _latency_rows(folder, Path(out) / folder.name)
    return rows


def committed_policies() -> list[Path]:
    """The committed PPO checkpoints, ``policies/*/`` holding ``model.zip`` whose
    ``config.json`` names no other algorithm (a next-use eviction model is a ``model.zip`` too,
    ``"algo": "nextuse"``; MuZero's and RLlib's are not zips SB3 loads)."""
    root = Path(__file__).resolve().parents[1] / "policies"
    return [
        p
        for p in sorted(root.iterdir())
        if (p / "model.zip").is_file()
        and (p / "config.json").is_file()
        and read_config(p).get("algo", "ppo") == "ppo"
    ]


def _latency_rows(folder: Path, out: Path) -> list[dict[str, Any]]:
    policy = f"ppo:{folder}"
    spec = export(policy, out)
    session = onnx_session(out / "policy.onnx")
    obs, masks = record_observations(policy, session, n=200)
    model, _ = load_checkpoint(folder)
    names = [i.name for i in session.get_inputs()]
    feeds = [
        {**{n: obs[n][k : k + 1] for n in names[:-1]}, "action_mask": masks[k : k + 1]}
        for k in range(masks.shape[0])
    ]
    singles = [({n: obs[n][k] for n in obs}, masks[k]) for k in range(masks.shape[0])]
    o50, o99 = latency_percentiles(lambda feed: session.run(["action"], feed), feeds)
    t50, t99 = latency_percentiles(
        lambda x: model.predict(x[0], action_masks=x[1], deterministic=True), singles
    )
    return [
        {
            "name": f"{spec['env']}: decision, onnxruntime p50 / p99",
            "value": f"{o50 * 1e6:,.0f} / {o99 * 1e6:,.0f}",
            "unit": "us",
            "note": f"torch p50 / p99 {t50 * 1e6:,.0f} / {t99 * 1e6:,.0f} us "
            f"({t50 / o50:.1f}x at p50); one thread, batch 1, {folder.name}",
        }
    ]
