"""Hyperparameter sweeps of the PPO recipe on Ray Tune, cut short by ASHA.

A sweep samples ``samples`` configurations from a search space (a JSON file, ``load_space``)
over the fields of ``agents.ppo.TrainConfig``, and trains each as one Tune trial. A trial trains
in rounds of ``eval_every`` environment steps; after each it plays the validation cases greedily
and reports their mean primary metric (the registry's, e.g. makespan) as ``score`` with the
round's checkpoint. Tune's ``ASHAScheduler`` (Li et al., "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020) stops the trials that trail at a rung; Ray places the trials
on the cluster's CPUs, persists their checkpoints under ``OUT/tune`` and, with ``resume``,
continues an interrupted sweep there (``Tuner.restore``), each unfinished trial from the last
checkpoint Tune's experiment state recorded. Nothing here schedules, queues or retries: Tune does.

Written to ``OUT``: ``tune/`` (Tune's experiment: trials, checkpoints, their results),
``sweep.json`` (the recipe every trial trains, which ``resume`` reuses),
``best/model.zip`` and ``best/config.json`` (the best reported checkpoint of any trial, a
``ppo:OUT/best`` policy for ``schedgym evaluate``) and ``best.json`` (its configuration, score,
steps and trial). Each trial's TensorBoard logs go to ``RUNS/sweep-NAME/TRIAL/ENV``.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from schedgym.agents.imitation import generator_kwargs
from schedgym.agents.ppo import PPOPolicy, TrainConfig, train, validation_episodes
from schedgym.episode import run_episode
from schedgym.errors import SchedgymError
from schedgym.registry import env_entry

# Search-space distributions a space file may name, as Ray Tune's sampling functions.
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
# What a trial is, not how it learns: never sampled.
FIXED_FIELDS = {"env", "out", "steps", "eval_every", "val_cases", "tensorboard", "env_kwargs"}


@dataclass
class SweepConfig:
    """One sweep: ``base`` is the recipe every trial starts from (its ``steps`` per trial,
    ``eval_every`` steps per reported round, ``val_cases`` the validation cases, which must not
    be empty), ``space`` the sampled fields (``load_space``), ``samples`` the trials."""

    base: TrainConfig
    space: dict[str, Any]
    samples: int = 4
    out: str = "sweeps/sweep"
    runs: str = "runs"
    seed: int = 0
    grace_rounds: int = 1  # ASHA's grace period: rounds every trial gets before it can stop
    reduction_factor: float = 2.0  # ASHA: the best 1/eta of a rung go on
    cpus_per_trial: float = 1.0


def load_space(path: str | Path) -> dict[str, Any]:
    """Read a search space: a JSON object mapping ``TrainConfig`` fields to one distribution,
    ``{"learning_rate": {"loguniform": [1e-5, 1e-3]}, "n_epochs": {"choice": [2, 4]},
    "ent_coef": {"uniform": [0, 0.02]}, "batch_size": {"randint": [32, 257]}}`` (``randint``'s
    upper end excluded), or a fixed value. Returns Ray Tune's ``param_space``. Raises
    ``SchedgymError`` naming the file and the key on anything else."""
    from ray import tune

    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SchedgymError(f"{path}: not a readable JSON search space ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise SchedgymError(f"{path}: a search space is a non-empty JSON object of fields")
    known = {f.name for f in fields(TrainConfig)} - FIXED_FIELDS
    space: dict[str, Any] = {}
    for key, spec in raw.items():
        if key not in known:
            raise SchedgymError(
                f"{path}: {key!r} is not a field a sweep can sample; known: "
                f"{', '.join(sorted(known))}"
            )
        if not isinstance(spec, dict):
            space[key] = spec
            continue
        if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise SchedgymError(
                f"{path}: {key!r} must be a fixed value or one of "
                f'{", ".join(DISTRIBUTIONS)}, e.g. {{"uniform": [0, 1]}}; got {spec!r}'
            )
        kind, args = next(iter(spec.items()))
        if not isinstance(args, list) or not args or (kind != "choice" and len(args) != 2):
            raise SchedgymError(
                f"{path}: {key!r}: {kind} takes a list "
                f"{'of values' if kind == 'choice' else '[low, high]'}"
            )
        space[key] = tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
    return space


def validation_score(cfg: TrainConfig, checkpoint: Path) -> float:
    """Mean primary metric of the checkpoint, greedy, on the validation episodes of ``cfg``
    (the same instances ``schedgym train`` validates on)."""
    metric = env_entry(cfg.env).primary_metric
    policy = PPOPolicy(checkpoint)
    values = [
        run_episode(
            cfg.env, policy, case=case, seed=seed, env_kwargs=generator_kwargs(cfg.env_kwargs, 0)
        ).metrics[metric]
        for case, seed in validation_episodes(cfg.val_cases)
    ]
    return float(np.mean(values))


def _trial(params: dict[str, Any], base: dict[str, Any], runs: str) -> None:
    """One Tune trial: train ``base`` with the sampled ``params`` in rounds, reporting the
    validation score and a checkpoint after each; continue from Tune's checkpoint if any."""
    from ray import tune

    context = tune.get_context()
    work = Path(tempfile.mkdtemp(prefix="schedgym-trial-"))
    cfg = TrainConfig(
        **{
            **base,
            **params,
            "out": str(work),
            "tensorboard": str(Path(runs) / context.get_trial_id()),
        }
    )
    done = 0
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            shutil.copyfile(Path(folder) / "model.zip", work / "last.zip")
            done = json.loads((Path(folder) / "progress.json").read_text())["steps"]
    try:
        while done < cfg.steps:
            chunk = min(cfg.eval_every, cfg.steps - done)
            train(replace(cfg, steps=chunk, val_cases=[]), resume=done > 0, progress=False)
            done += chunk
            score = validation_score(cfg, work / "last.zip")
            with tempfile.TemporaryDirectory() as folder:
                shutil.copyfile(work / "last.zip", Path(folder) / "model.zip")
                shutil.copyfile(work / "config.json", Path(folder) / "config.json")
                (Path(folder) / "progress.json").write_text(json.dumps({"steps": done}))
                tune.report(
                    {"score": score, "timesteps": done},
                    checkpoint=tune.Checkpoint.from_directory(folder),
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sweep(
    cfg: SweepConfig, *, address: str | None = None, resume: bool = False, verbose: int = 1
) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) the sweep on Ray Tune; return what ``best.json``
    holds. ``address``: a Ray cluster (``"auto"``, ``ray://HOST:10001``); None or ``""``: a
    local instance (or the one this process already joined). Raises ``SchedgymError`` without
    validation cases, on a bad space, or when ``resume`` finds no sweep to continue."""
    try:
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
    except ImportError as exc:
        raise SchedgymError(
            f"sweeps need Ray Tune, which is not installed ({exc}): pip install 'schedgym[ray]'"
        ) from None
    out = Path(cfg.out).resolve()
    saved = out / "sweep.json"
    # a resumed sweep trains what it started with, whatever the resuming command says
    base = TrainConfig(**json.loads(saved.read_text())) if resume and saved.is_file() else cfg.base
    if not base.val_cases:
        raise SchedgymError("a sweep needs validation cases (--val-cases) to score its trials")
    if cfg.samples < 1 or base.eval_every < 1 or base.steps < 1:
        raise SchedgymError("--samples, --steps and --eval-every must be at least 1")
    entry = env_entry(base.env)
    mode = "min" if entry.lower_is_better else "max"
    runs = Path(cfg.runs).resolve() / f"sweep-{out.name}"
    experiment = out / "tune"
    if resume:
        _check_restorable(experiment)
    elif experiment.exists():
        raise SchedgymError(
            f"{experiment} holds a sweep already: --resume continues it, or choose --out"
        )
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=verbose > 1)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=asdict(base), runs=str(runs)),
        {"cpu": cfg.cpus_per_trial},
    )
    if resume:
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(asdict(base), indent=1) + "\n")
        rounds = math.ceil(base.steps / base.eval_every)
        tuner = tune.Tuner(
            trainable,
            param_space={**cfg.space, "seed": tune.randint(0, 2**31 - 1)}
            if "seed" not in cfg.space
            else cfg.space,
            tune_config=tune.TuneConfig(
                metric="score",
                mode=mode,
                num_samples=cfg.samples,
                scheduler=ASHAScheduler(
                    max_t=rounds,
                    grace_period=min(cfg.grace_rounds, rounds),
                    reduction_factor=cfg.reduction_factor,
                ),
                search_alg=_seeded_search(cfg.seed),
            ),
            run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=verbose),
        )
    results = tuner.fit()
    return _write_best(results, out, mode, entry.primary_metric)


def _check_restorable(experiment: Path) -> None:
    """Raise ``SchedgymError`` unless Tune can continue the sweep in ``experiment``. Tune
    restores from its newest state file; on one it cannot read it starts the whole sweep
    afresh with only a logged error, which a resumed sweep must not do quietly."""
    from ray import tune

    states = sorted(experiment.glob("experiment_state-*.json"))
    if not tune.Tuner.can_restore(str(experiment)) or not states:
        raise SchedgymError(f"--resume: no sweep to continue in {experiment}")
    try:
        json.loads(states[-1].read_text())
    except (OSError, ValueError) as exc:
        raise SchedgymError(
            f"--resume: {states[-1]} is unreadable ({exc}; the sweep was stopped while Tune "
            "wrote it), so the sweep cannot be continued; start it again with a new --out"
        ) from None


def _seeded_search(seed: int) -> Any:
    """Tune's random search with a fixed seed: the same sweep samples the same trials."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=np.random.default_rng(seed).integers(2**31))


def _write_best(results: Any, out: Path, mode: str, metric: str) -> dict[str, Any]:
    errors = [r for r in results if r.error is not None]
    scored = [
        r for r in results if r.metrics_dataframe is not None and "score" in r.metrics_dataframe
    ]
    if not scored:
        why = f": {errors[0].error}" if errors else ""
        raise SchedgymError(f"no trial of the sweep in {out / 'tune'} reported a score{why}")
    pick = min if mode == "min" else max
    best_score, best = None, None
    for result in scored:
        for checkpoint, metrics in result.best_checkpoints:
            key = metrics["score"] if mode == "min" else -metrics["score"]
            if best_score is None or key < best_score:
                best_score, best = key, (result, checkpoint, metrics)
    result, checkpoint, metrics = best
    target = out / "best"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with checkpoint.as_directory() as folder:
        for name in ("model.zip", "config.json"):
            shutil.copyfile(Path(folder) / name, target / name)
    config = json.loads((target / "config.json").read_text())
    config["out"] = str(target)
    (target / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    summary = {
        "score": float(metrics["score"]),
        "score_name": f"mean {metric} on the validation cases ({mode}imised)",
        "timesteps": int(metrics["timesteps"]),
        "trial": result.path,
        "config": {k: v for k, v in result.config.items()},
        "trials": len(results),
        "errored": len(errors),
        "best_of_each": sorted(
            (float(pick(r.metrics_dataframe["score"])) for r in scored), reverse=mode == "max"
        ),
        "policy": f"ppo:{target}",
    }
    (out / "best.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
