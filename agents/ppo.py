"""Train a ``MaskablePPO`` agent on any schedgym environment, and load it back as a ``Policy``.

Read top to bottom: a ``TrainConfig`` names the environment, its training generator (the env's
``case`` argument, which draws a fresh instance from the env's seeded generator at every reset)
and the validation cases; ``train`` builds vectorised environments, the entity network of
``agents/networks.py``, optionally clones a heuristic into it first (``agents/imitation.py``;
the cloned policy is kept as ``imitation.zip``), the callbacks (validation through
``MaskableEvalCallback`` with the problem's metrics under ``sched/`` in TensorBoard,
checkpoints, a progress bar), learns, and writes ``model.zip``, ``config.json`` and
``curve.png`` into the output folder.
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from schedgym.agents.imitation import clone, collect, generator_kwargs
from schedgym.agents.networks import EntityPolicy
from schedgym.episode import run_episode
from schedgym.errors import SchedgymError
from schedgym.policy import PolicyKind, check_spaces, unwrap_env
from schedgym.registry import env_entry


@dataclass
class TrainConfig:
    env: str
    out: str
    steps: int = 100_000
    n_envs: int = 2
    seed: int = 0
    # e.g. {"case": "random:15x15"}; a list of cases mixes generators across the vectorised envs
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    val_cases: list[str] = field(default_factory=list)
    eval_every: int = 10_000  # environment steps between validations
    learning_rate: float = 3e-4
    n_steps: int = 512  # rollout length per env
    batch_size: int = 256
    n_epochs: int = 4
    gamma: float = 1.0  # episodic scheduling: the return is the objective, undiscounted
    gae_lambda: float = 0.95
    ent_coef: float = 0.01
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    init_from: str | None = None  # start from this checkpoint's weights (fine-tuning)
    # scale rewards by the running std of the return (SB3's VecNormalize): where one bad action
    # costs hundreds of times the usual reward, the unscaled value loss swamps the policy's
    # gradient under PPO's gradient-norm clipping
    normalize_reward: bool = False
    torch_threads: int = 1  # one thread per process beats two fighting over a 2-core box
    tensorboard: str | None = "runs"
    # behaviour cloning before PPO (agents/imitation.py): the heuristic, its episodes, epochs
    imitate: str | None = None
    imitate_episodes: int = 20
    imitate_epochs: int = 10


# Validation envs draw generator cases from seeds far from the training envs' (0, 1000, ...).
VALIDATION_SEED_OFFSET = 500_000


def validation_episodes(cases: list[str]) -> list[tuple[str, int]]:
    """``(case, reset seed)`` of each validation episode: validation case ``i`` is reset with
    seed ``VALIDATION_SEED_OFFSET + i``, so a generator case ("random:30") gives the same
    instance to the agent and to the heuristic it is compared with."""
    return [(c, VALIDATION_SEED_OFFSET + i) for i, c in enumerate(cases)]


class CaseCycle(gym.Wrapper):
    """Resets walk through fixed ``(case, seed)`` pairs, so every validation sees the same
    instances."""

    def __init__(self, env: gym.Env, episodes: list[tuple[str, int]]):
        super().__init__(env)
        self.episodes, self._i = list(episodes), 0

    def reset(self, **kwargs: Any):
        case, seed = self.episodes[self._i % len(self.episodes)]
        self._i += 1
        kwargs["options"] = {**(kwargs.get("options") or {}), "case": case}
        kwargs["seed"] = seed
        return self.env.reset(**kwargs)

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()


class SchedMetrics(BaseCallback):
    """Logs the problem's end-of-episode metrics (``info["metrics"]``) under ``sched/``."""

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            for key, value in (info.get("metrics") or {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self.logger.record_mean(f"sched/{key}", float(value))
        return True


class SchedEvalCallback(MaskableEvalCallback):
    """``MaskableEvalCallback`` that also averages the problem's metrics over the validation
    episodes and logs them next to the baseline heuristic's on the same cases."""

    def __init__(
        self, *args: Any, baseline: dict[str, float], validate_at_start: bool = False, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.baseline = baseline
        self.validate_at_start = validate_at_start
        self._episode_metrics: list[dict[str, float]] = []
        self.history: list[dict[str, float]] = []

    def _log_success_callback(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        super()._log_success_callback(locals_, globals_)
        if locals_["done"] and locals_["info"].get("metrics"):
            self._episode_metrics.append(locals_["info"]["metrics"])

    def _on_training_start(self) -> None:
        super()._on_training_start()
        if self.validate_at_start:
            # a warm-started policy (cloned, or --init-from) is validated before PPO touches
            # it: it is a candidate for the shipped checkpoint, and the curve's first point
            self.n_calls = self.eval_freq
            self._on_step()
            self.n_calls = 0

    def _on_step(self) -> bool:
        self._episode_metrics = []
        keep_going = super()._on_step()
        if self._episode_metrics:
            means = {
                k: float(np.mean([m[k] for m in self._episode_metrics]))
                for k in self._episode_metrics[0]
                if isinstance(self._episode_metrics[0][k], int | float)
            }
            for key, value in means.items():
                self.logger.record(f"sched/val_{key}", value)
            for key, value in self.baseline.items():
                self.logger.record(f"sched/val_baseline_{key}", value)
            self.history.append({"timesteps": float(self.num_timesteps), **means})
        return keep_going


def make_vec_env(cfg: TrainConfig, cases: list[str] | None = None, n: int | None = None):
    """``n`` Monitor-wrapped envs seeded ``cfg.seed + 1000 * rank``, env ``rank`` on the
    ``rank``-th generator of a mix; with ``cases``, every reset takes the next validation
    ``(case, seed)`` instead."""
    entry = env_entry(cfg.env)

    def factory(rank: int):
        def build() -> gym.Env:
            kwargs = generator_kwargs(cfg.env_kwargs, 0 if cases else rank)
            env = gym.make(entry.gym_id, disable_env_checker=True, **kwargs)
            env = Monitor(env)
            if cases:
                env = CaseCycle(env, validation_episodes(cases))
            env.reset(seed=cfg.seed + 1000 * rank)
            return env

        return build

    return DummyVecEnv([factory(i) for i in range(n or cfg.n_envs)])


def baseline_scores(cfg: TrainConfig, heuristic: str) -> dict[str, float]:
    """The heuristic's mean metrics on the validation cases (for the TensorBoard comparison)."""
    rows = [
        run_episode(
            cfg.env, heuristic, case=c, seed=seed, env_kwargs=generator_kwargs(cfg.env_kwargs, 0)
        ).metrics
        for c, seed in validation_episodes(cfg.val_cases)
    ]
    return {
        k: float(np.mean([r[k] for r in rows]))
        for k in rows[0]
        if isinstance(rows[0][k], int | float) and not isinstance(rows[0][k], bool)
    }


def train(
    cfg: TrainConfig, heuristic: str | None = None, resume: bool = False, progress: bool = True
) -> MaskablePPO:
    """Train (or resume) and write ``model.zip``, ``config.json`` and ``curve.png`` to cfg.out."""
    torch.set_num_threads(cfg.torch_threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    venv = make_vec_env(cfg)
    layout = venv.envs[0].unwrapped.layout
    if cfg.normalize_reward:
        norm = out / "reward_norm.pkl"
        if resume and norm.exists():
            venv = VecNormalize.load(str(norm), venv)
        else:
            venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=cfg.gamma)
    tb = None if cfg.tensorboard is None else str(Path(cfg.tensorboard) / cfg.env)
    if resume:
        if not (out / "last.zip").exists():
            raise SchedgymError(f"--resume: no checkpoint {out / 'last.zip'} to resume from")
        model = MaskablePPO.load(out / "last.zip", env=venv, tensorboard_log=tb)
    else:
        model = MaskablePPO(
            EntityPolicy,
            venv,
            learning_rate=cfg.learning_rate,
            n_steps=cfg.n_steps,
            batch_size=cfg.batch_size,
            n_epochs=cfg.n_epochs,
            gamma=cfg.gamma,
            gae_lambda=cfg.gae_lambda,
            ent_coef=cfg.ent_coef,
            seed=cfg.seed,
            verbose=0,
            tensorboard_log=tb,
            policy_kwargs={
                "options_per_entity": layout.options_per_entity,
                "n_special": layout.n_special,
                "d_model": cfg.d_model,
                "layers": cfg.layers,
                "heads": cfg.heads,
            },
        )
        if cfg.init_from:
            start = MaskablePPO.load(_model_file(Path(cfg.init_from)), device="cpu")
            model.policy.load_state_dict(start.policy.state_dict())
    imitation = None
    if cfg.imitate and not resume:
        demos = collect(
            cfg.env,
            cfg.imitate,
            cfg.imitate_episodes,
            cfg.env_kwargs,
            gamma=cfg.gamma,
            progress=progress,
        )
        scale = 1.0
        if isinstance(venv, VecNormalize):
            venv.ret_rms.update(demos.running_returns(cfg.gamma))
            scale = float(np.sqrt(venv.ret_rms.var + venv.epsilon))
        imitation = {
            "policy": cfg.imitate,
            "return_scale": scale,
            **clone(
                model.policy,
                demos,
                epochs=cfg.imitate_epochs,
                batch_size=cfg.batch_size,
                return_scale=scale,
                seed=cfg.seed,
                progress=progress,
            ),
        }
        model.save(out / "imitation.zip")
    # written once the run's arguments have proved good (cloning raises on a bad --imitate)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    callbacks: list[BaseCallback] = [
        SchedMetrics(),
        CheckpointCallback(
            max(cfg.eval_every // cfg.n_envs, 1), str(out / "checkpoints"), name_prefix="ppo"
        ),
    ]
    evaluator = None
    if cfg.val_cases:
        baseline = baseline_scores(cfg, heuristic) if heuristic else {}
        val_env = make_vec_env(cfg, cfg.val_cases, n=1)
        if cfg.normalize_reward:  # same wrapper type as training's, raw validation rewards
            val_env = VecNormalize(val_env, training=False, norm_obs=False, norm_reward=False)
        evaluator = SchedEvalCallback(
            val_env,
            baseline=baseline,
            validate_at_start=imitation is not None or bool(cfg.init_from),
            n_eval_episodes=len(cfg.val_cases),
            eval_freq=max(cfg.eval_every // cfg.n_envs, 1),
            best_model_save_path=str(out),
            log_path=str(out),
            deterministic=True,
            verbose=0,
        )
        callbacks.append(evaluator)
    start = time.perf_counter()
    model.learn(
        cfg.steps,
        callback=CallbackList(callbacks),
        progress_bar=progress,
        reset_num_timesteps=not resume,
        tb_log_name="ppo",
    )
    model.save(out / "last.zip")
    if isinstance(venv, VecNormalize):
        venv.save(str(out / "reward_norm.pkl"))
    # the shipped checkpoint is the best one on validation, else the last
    best = out / "best_model.zip"
    shutil.copyfile(best if best.exists() else out / "last.zip", out / "model.zip")
    summary = {
        "wall_s": time.perf_counter() - start,
        "timesteps": int(model.num_timesteps),
        "validation": evaluator.history if evaluator else [],
        "baseline": {"policy": heuristic, **(evaluator.baseline if evaluator else {})},
        "imitation": imitation,
    }
    (out / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
    if evaluator and evaluator.history:
        plot_curve(summary, out / "curve.png", cfg.env)
    return model


def plot_curve(summary: dict[str, Any], path: Path, env: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = summary["validation"]
    keys = [k for k in hist[0] if k != "timesteps"]
    primary = env_entry(env).primary_metric if env_entry(env).primary_metric in keys else keys[0]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        [h["timesteps"] for h in hist],
        [h[primary] for h in hist],
        marker="o",
        label="PPO (greedy, validation)",
    )
    base = summary["baseline"]
    if primary in base:
        ax.axhline(base[primary], color="grey", linestyle="--", label=base["policy"])
    ax.set_xlabel("environment steps")
    ax.set_ylabel(primary)
    ax.set_title(f"{env}: validation {primary} during training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _model_file(path: Path) -> Path:
    """``path`` itself, or ``path/model.zip`` for a policy folder. Raises ``SchedgymError`` when
    it is absent or is not the zip archive SB3 saves, naming the file."""
    model_file = path / "model.zip" if path.is_dir() else path
    if not model_file.exists():
        raise SchedgymError(f"no PPO checkpoint at {model_file}")
    # stable-baselines3 saves a zip holding "data" (a torch .pt is a zip too, without it)
    if not zipfile.is_zipfile(model_file) or "data" not in zipfile.ZipFile(model_file).namelist():
        hint = (
            " (a .pt file is a MuZero checkpoint: muzero:PATH)"
            if model_file.suffix == ".pt"
            else ""
        )
        raise SchedgymError(
            f"{model_file} is not a PPO checkpoint, the zip archive stable-baselines3 saves{hint}"
        )
    return model_file


class PPOPolicy:
    """A trained checkpoint as a ``Policy``: greedy (deterministic) by default, mask honoured."""

    kind: PolicyKind = "learned"

    def __init__(self, path: str | Path, deterministic: bool = True, name: str | None = None):
        path = Path(path)
        torch.set_num_threads(1)
        self.model = MaskablePPO.load(_model_file(path), device="cpu")
        self.deterministic = deterministic
        self.name = name or f"ppo:{path}"

    def reset(self, env: Any) -> None:
        """Check that ``env`` gives the observations and actions the network was trained on
        (`schedgym.policy.check_spaces`: ``SchedgymError`` naming the first that differs)."""
        check_spaces(self.name, self.model.observation_space, int(self.model.action_space.n), env)

    def act(self, env: Any, obs: Any) -> int:
        mask = unwrap_env(env).action_masks()
        action, _ = self.model.predict(obs, action_masks=mask, deterministic=self.deterministic)
        return int(action)
