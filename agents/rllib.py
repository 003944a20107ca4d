"""PPO on RLlib's new API stack, over the same entity network, and its checkpoint as a policy.

``train_rllib`` trains RLlib's ``PPO`` on a registered schedgym environment with
``EntityRLModule`` (``agents/rllib_module.py``: masking inside the module, the
permutation-equivariant encoder of ``agents/networks.py``). Sampling runs on ``env_runners``
RLlib env-runner actors that Ray places on the cluster's CPUs (``ray start --head`` and
``--address``, docs/scale.md); the learner updates in the driver. Rewards, generators and seeds
are those of ``schedgym train``: env runner ``i`` draws from the ``i``-th generator of a mix,
and ``gamma`` is 1 (episodic scheduling, as the SB3 recipe). Writes to ``out``:
``algorithm/`` (RLlib's full checkpoint, ``Algorithm.from_checkpoint``), ``module/`` (the
RLModule alone, ``RLModule.from_checkpoint``), ``config.json`` (the run's settings and the
module's files) and ``training.json`` (per iteration: env steps, steps/s, mean episode return
and the problem's metrics); TensorBoard scalars go to ``RUNS/ENV/rllib-ppo``.

``RLlibPolicy`` (``rllib:PATH``, registered in the ``schedgym.policies`` entry-point group)
loads ``PATH/module`` and acts greedily (the arg-max of the masked logits).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from schedgym.agents.runs import summary_writer
from schedgym.errors import SchedgymError
from schedgym.policy import PolicyKind, unwrap_env
from schedgym.registry import env_entry

ENV_NAME = "schedgym-rllib"  # the name the env creator is registered under with Ray Tune


@dataclass
class RLlibConfig:
    """One RLlib PPO run. Batch sizes count env steps; ``train_batch_size`` per iteration."""

    env: str
    out: str
    steps: int = 100_000  # env steps at least: iterations run until this many are sampled
    env_runners: int = 1  # RLlib env-runner actors (0: sample in the driver)
    envs_per_runner: int = 1
    seed: int = 0
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    learning_rate: float = 3e-4
    train_batch_size: int = 1024
    minibatch_size: int = 256
    num_epochs: int = 4
    gamma: float = 1.0
    lambda_: float = 0.95
    entropy_coeff: float = 0.01
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    torch_threads: int = 1
    tensorboard: str | None = "runs"


def _require_ray() -> None:
    try:
        import ray.rllib  # noqa: F401
    except ImportError as exc:
        raise SchedgymError(
            f"RLlib is not installed ({exc}): pip install 'schedgym[ray]'"
        ) from None


def make_env(config: dict[str, Any]) -> Any:
    """RLlib's env creator: the registered env with ``config["env_kwargs"]`` (the
    ``worker_index``-th generator of a mix), its mask added to the observation."""
    import gymnasium as gym

    from schedgym.agents.imitation import generator_kwargs
    from schedgym.agents.rllib_module import MaskedObservation

    entry = env_entry(config["env"])
    index = max(int(getattr(config, "worker_index", 1)) - 1, 0)
    kwargs = generator_kwargs(dict(config.get("env_kwargs", {})), index)
    return MaskedObservation(gym.make(entry.gym_id, disable_env_checker=True, **kwargs))


def algorithm_config(cfg: RLlibConfig) -> Any:
    """The ``PPOConfig`` of a run (new API stack: RLModule, env runners, learner)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from schedgym.agents.rllib_module import EntityRLModule

    layout = make_env({"env": cfg.env, "env_kwargs": cfg.env_kwargs}).unwrapped.layout
    return (
        PPOConfig()
        .environment(ENV_NAME, env_config={"env": cfg.env, "env_kwargs": cfg.env_kwargs})
        .env_runners(
            num_env_runners=cfg.env_runners,
            num_envs_per_env_runner=cfg.envs_per_runner,
            num_cpus_per_env_runner=1,
        )
        .learners(num_learners=0)
        .training(
            lr=cfg.learning_rate,
            train_batch_size_per_learner=cfg.train_batch_size,
            minibatch_size=cfg.minibatch_size,
            num_epochs=cfg.num_epochs,
            gamma=cfg.gamma,
            lambda_=cfg.lambda_,
            entropy_coeff=cfg.entropy_coeff,
        )
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=EntityRLModule,
                model_config={
                    "options_per_entity": layout.options_per_entity,
                    "n_special": layout.n_special,
                    "d_model": cfg.d_model,
                    "layers": cfg.layers,
                    "heads": cfg.heads,
                },
            )
        )
        .debugging(seed=cfg.seed)
    )


def _iteration_row(result: dict[str, Any], steps_s: float) -> dict[str, float]:
    runners = result.get("env_runners", {})
    row = {
        "env_steps": float(result.get("num_env_steps_sampled_lifetime", 0)),
        "env_steps_per_s": steps_s,
        "episode_return_mean": float(runners.get("episode_return_mean", float("nan"))),
    }
    for key, value in runners.items():
        if key.startswith("sched/") and isinstance(value, int | float):
            row[key] = float(value)
    return row


def train_rllib(
    cfg: RLlibConfig, *, address: str | None = None, progress: bool = True
) -> list[dict[str, float]]:
    """Train, write ``out`` (see the module docstring) and return the per-iteration rows.
    ``address``: a Ray cluster; None or ``""``: a local instance (or the one already joined).
    Raises ``SchedgymError`` when RLlib is not installed."""
    _require_ray()
    import ray
    import torch
    from ray.tune.registry import register_env
    from tqdm import tqdm

    torch.set_num_threads(cfg.torch_threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    register_env(ENV_NAME, make_env)
    algo = algorithm_config(cfg).build_algo()
    writer = None
    if cfg.tensorboard:
        writer = summary_writer(cfg.tensorboard, cfg.env, "rllib-ppo")
    rows: list[dict[str, float]] = []
    bar = tqdm(total=cfg.steps, disable=not progress, unit="step")
    try:
        sampled = 0.0
        while sampled < cfg.steps:
            start = time.perf_counter()
            result = algo.train()
            row = _iteration_row(result, 0.0)
            row["env_steps_per_s"] = (row["env_steps"] - sampled) / (time.perf_counter() - start)
            bar.update(int(row["env_steps"] - sampled))
            sampled = row["env_steps"]
            rows.append(row)
            if writer is not None:
                for key, value in row.items():
                    if key != "env_steps" and np.isfinite(value):
                        writer.add_scalar(f"rllib/{key}", value, int(sampled))
        algo.save_to_path(str((out / "algorithm").resolve()))
        module = algo.get_module()
        module.save_to_path(str((out / "module").resolve()))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        algo.stop()
    files = sorted(str(p.relative_to(out)) for p in (out / "module").rglob("*") if p.is_file())
    config = {**asdict(cfg), "algo": "rllib-ppo", "checkpoint_files": files}
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    (out / "training.json").write_text(json.dumps({"iterations": rows}, indent=1) + "\n")
    return rows


class RLlibPolicy:
    """An RLlib checkpoint (``PATH/module`` as ``train_rllib`` writes it, or an RLModule
    checkpoint folder itself) as a ``Policy``: greedy over the masked logits, so only legal
    actions. Raises ``SchedgymError`` when RLlib is missing or the folder holds no module."""

    kind: PolicyKind = "learned"

    def __init__(self, path: str | Path, name: str | None = None):
        _require_ray()
        import torch
        from ray.rllib.core.rl_module.rl_module import RLModule

        path = Path(path)
        folder = path / "module" if (path / "module").is_dir() else path
        if not (folder / "class_and_ctor_args.pkl").is_file():
            raise SchedgymError(f"no RLlib RLModule checkpoint at {folder}")
        torch.set_num_threads(1)
        self.module = RLModule.from_checkpoint(str(folder.resolve()))
        self.module.eval()
        self.name = name or f"rllib:{path}"

    def reset(self, env: Any) -> None:
        """Stateless: the network sees only the current observation."""

    def act(self, env: Any, obs: Any) -> int:
        import torch
        from ray.rllib.core.columns import Columns

        from schedgym.agents.rllib_module import MASK_KEY

        mask = np.asarray(unwrap_env(env).action_masks(), dtype=np.float32)
        batch = {k: torch.as_tensor(np.asarray(v))[None] for k, v in obs.items()}
        batch[MASK_KEY] = torch.as_tensor(mask)[None]
        with torch.no_grad():
            out = self.module.forward_inference({Columns.OBS: batch})
        return int(torch.argmax(out[Columns.ACTION_DIST_INPUTS][0]))
