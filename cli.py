"""The ``schedgym`` command: parses arguments, calls the package, prints aligned tables.

Every verb has ``--help``. Errors are one line (``schedgym: error: ...``) with exit status 2;
``SCHEDGYM_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from schedgym import __version__
from schedgym.errors import SchedgymError
from schedgym.report import format_table


def _env_kwargs(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--env-kwargs JSON`` as a dict, refused in one line naming the flag."""
    if not args.env_kwargs:
        return None
    try:
        value = json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        raise SchedgymError(f"--env-kwargs is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise SchedgymError("--env-kwargs must be a JSON object, e.g. '{\"sigma\": 0.5}'")
    if getattr(args, "env", None):
        _check_env_arguments(args.env, value)
    return value


def _int_at_least(least: int) -> Callable[[str], int]:
    """argparse type: an integer of at least ``least``, refused in one line otherwise."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return integer


_seed = _int_at_least(0)  # numpy's seeds are non-negative
_positive_int = _int_at_least(1)
_count = _int_at_least(0)


def _number(check: Callable[[float], bool], what: str) -> Callable[[str], float]:
    """argparse type: a finite number for which ``check`` holds (``what`` says which), refused
    in one line otherwise."""

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or not check(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return number


_positive_number = _number(lambda v: v > 0, "a positive number")
_fraction = _number(lambda v: 0 <= v <= 1, "between 0 and 1")


def _nonempty(text: str) -> str:
    """argparse type for a path: an empty one (which would mean the current folder, or nothing
    written at all) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _case_list(flag: str, text: str) -> list[str]:
    """A comma-separated list of cases, an empty entry refused (it would silently drop out, or
    stand for the env's default case)."""
    cases = text.split(",")
    if not all(c.strip() for c in cases):
        raise SchedgymError(
            f"{flag} {text!r}: an empty entry (a comma too many, or nothing at all); give each "
            "case, comma-separated"
        )
    return cases


def _check_output_file(flag: str, path: Path) -> None:
    """Refuse, before any work is done, an output file that cannot be written: a folder, or one
    under a file or an unwritable folder (missing folders are created when it is written)."""
    if path.is_dir():
        raise SchedgymError(f"{flag}: {path} is a folder; name a file in it")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SchedgymError(f"{flag}: cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise SchedgymError(f"{flag}: cannot write {path}: permission denied")


def _check_env_arguments(env: str, kwargs: dict[str, Any]) -> None:
    """Refuse, in one line, an ``--env-kwargs`` key ``env``'s class does not take, or a value
    its constructor refuses (a value only a case can check is refused when the case loads)."""
    import importlib

    from schedgym.registry import env_entry

    entry = env_entry(env)
    module, _, name = entry.entry_point.partition(":")
    cls = getattr(importlib.import_module(module), name)
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise SchedgymError(
                f"--env-kwargs: {entry.gym_id} takes no argument {unknown[0]!r} (it takes "
                f"{', '.join(p for p in params if p != 'self')})"
            )
    try:  # the env checks its own values (and, taking **kwargs, its own names)
        cls(**kwargs)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        key = _culprit(cls, kwargs, message)
        where = f"{key}={json.dumps(kwargs[key])}: " if key is not None else ""
        raise SchedgymError(f"--env-kwargs: {where}{message}") from None


def _culprit(cls: Any, kwargs: dict[str, Any], message: str) -> str | None:
    """The ``--env-kwargs`` key that made ``cls`` refuse them with ``message``, where the message
    does not name it (a comparison of a string with a number names no argument): the only key,
    or the one that alone gives the same message. None when the message names a key already or
    no key alone gives it."""
    if any(re.search(rf"\b{re.escape(k)}\b", message) for k in kwargs):
        return None
    if len(kwargs) == 1:
        return next(iter(kwargs))
    for key, value in kwargs.items():
        try:
            cls(**{key: value})
        except Exception as exc:  # noqa: BLE001 - only its message is compared
            if str(exc) == message:
                return key
    return None


# -- list ------------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> None:
    from schedgym.envs.hardware import MODELS, builtin_tables, load_cost_table
    from schedgym.registry import ENVIRONMENTS

    what = args.what
    if what in ("all", "envs"):
        rows = [(e.name, e.gym_id, e.summary) for e in ENVIRONMENTS]
        print(format_table(["env", "gymnasium id", "what it schedules"], rows))
        print()
    if what in ("all", "policies"):
        rows = []
        for e in ENVIRONMENTS:
            rows.append((e.name, ", ".join(["random", *sorted(e.policies())])))
        print(
            format_table(
                [
                    "env",
                    "policies (also: ppo:PATH, muzero:PATH[@N], rollout:PATH[@K], nextuse:PATH, "
                    "module:function)",
                ],
                rows,
            )
        )
        print()
    if what in ("all", "suites"):
        from schedgym.suites import SUITES

        rows = [
            (
                s.name,
                s.version,
                len(s.cases),
                f"{s.score_metric} ({'min' if s.lower_is_better else 'max'})",
                s.unavailable() or "yes",
            )
            for s in SUITES.values()
        ]
        print(format_table(["suite", "version", "cases", "score", "available"], rows))
        print()
    if what in ("all", "hardware"):
        rows = []
        for name in builtin_tables():
            t = load_cost_table(name)
            measured = sorted(k for k, e in t.kernels.items() if e.series)
            rows.append(
                (
                    name,
                    t.device["name"],
                    t.n_points(),
                    len(measured),
                    t.provenance.get("date", "-"),
                    t.provenance["method"][:60],
                )
            )
        print(
            format_table(
                ["profile", "device", "points", "measured kernels", "date", "method"], rows
            )
        )
        print()
    if what in ("all", "models"):
        rows = [
            (
                m.name,
                m.layers,
                m.hidden,
                m.heads,
                m.kv_heads,
                m.experts or "-",
                round(m.weight_bytes() / 2**30, 2),
            )
            for m in MODELS.values()
        ]
        print(
            format_table(
                ["model", "layers", "hidden", "heads", "kv heads", "experts", "weights GiB"], rows
            )
        )


# -- profile ---------------------------------------------------------------------------------------


def cmd_profile(args: argparse.Namespace) -> None:
    from schedgym.envs.hardware.accuracy import leave_one_out, shape_transfer_error
    from schedgym.envs.hardware.devices import load_cost_table

    if args.measure is not None and not args.check:
        raise SchedgymError("profile: --measure N needs --check TABLE, the table to compare with")
    if args.check and args.out and args.measure is None:
        raise SchedgymError("profile: --out with --check writes --measure's rows; give --measure N")
    if args.check:
        table = load_cost_table(args.check)
        if args.measure is not None:
            from schedgym.envs.hardware.profiler import check_device

            if args.measure < 1:
                raise SchedgymError(f"profile: --measure must be >= 1, got {args.measure}")
            check_device(table, args.device)  # before the reports, not after them
        print(
            f"{args.check}: {table.device['name']}, {table.n_points()} measured points, "
            f"{table.provenance['method']}"
        )
        _print_errors(
            "leave-one-out (each interior grid point from its axis neighbours)",
            leave_one_out(table),
        )
        shape = shape_transfer_error(table)
        if shape:
            _print_errors("shape transfer (each measured shape from the other shapes)", shape)
        if args.measure is not None:
            _print_measured(table, args)
        if args.against:
            from schedgym.envs.hardware.vidur import held_out_errors

            gpu = args.gpu or table.name
            if gpu != table.name:
                print(
                    f"note: table {args.check} ({table.device['name']}) against vidur's {gpu} "
                    "rows: the errors below include the difference between the two GPUs"
                )
            _print_errors(
                f"held out: vidur {gpu} rows not in the table ({args.against})",
                held_out_errors(table, Path(args.against), gpu),
            )
        return
    if not args.out:
        raise SchedgymError("profile: give --out FILE to measure, or --check TABLE to assess")
    start = time.perf_counter()
    from schedgym.envs.hardware.profiler import profile

    table = profile(args.device, quick=args.quick, progress=not args.no_progress)
    table.save(args.out)
    print(
        f"wrote {args.out}: {table.n_points()} points on {table.device['name']} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    _print_errors("leave-one-out error of the new table", leave_one_out(table))


def _print_measured(table: Any, args: argparse.Namespace) -> None:
    """``--check TABLE --measure N``: measure N off-grid points here and price them."""
    import numpy as np

    from schedgym.envs.hardware.accuracy import ErrorSummary
    from schedgym.envs.hardware.profiler import held_out

    rows = held_out(table, args.device, args.measure, progress=not args.no_progress)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    by_kernel: dict[str, list[float]] = {}
    for r in rows:
        by_kernel.setdefault(r["kernel"], []).append(abs(r["predicted_s"] / r["measured_s"] - 1))
    every = [ErrorSummary.of(k, np.array(v)) for k, v in sorted(by_kernel.items())]
    every.append(ErrorSummary.of("all", np.concatenate([np.array(v) for v in by_kernel.values()])))
    _print_errors(
        f"held out: {len(rows)} points measured now on {args.device}, off the grid", every
    )
    cold = [r for r in rows if "cold_s" in r]
    if cold:
        print("\nsingle calls with the L2 cache overwritten first (cold) over without (warm)")
        ratios: dict[str, list[float]] = {}
        for r in cold:
            ratios.setdefault(r["kernel"], []).append(r["cold_s"] / r["warm_s"])
        print(
            format_table(
                ["kernel", "points", "median cold/warm", "p90 cold/warm"],
                [
                    (k, len(v), np.median(v), np.percentile(v, 90))
                    for k, v in sorted(ratios.items())
                ],
            )
        )


def _print_errors(title: str, summaries: list[Any]) -> None:
    print(f"\n{title}")
    rows = [
        (s.kernel, s.n, 100 * s.median_ape, 100 * s.p90_ape, 100 * s.max_ape)
        for s in summaries
        if s.n
    ]
    print(format_table(["kernel", "points", "median APE %", "p90 APE %", "max APE %"], rows))


# -- run -------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> None:
    from schedgym.episode import run_episode
    from schedgym.evaluate import is_learned, learned_layout_kwargs
    from schedgym.registry import env_entry

    entry = env_entry(args.env)
    # a learned policy runs under the padding its network was trained with, as in evaluate;
    # --env-kwargs still wins
    env_kwargs = {
        **(learned_layout_kwargs(args.policy, entry.name) if is_learned(args.policy) else {}),
        **(_env_kwargs(args) or {}),
    }
    if args.case and args.workload and args.case != args.workload:
        raise SchedgymError(f"--case {args.case!r} and --workload {args.workload!r} disagree")
    if args.plot and args.gantt and args.plot != args.gantt:
        raise SchedgymError(f"--plot {args.plot} and --gantt {args.gantt} disagree (one picture)")
    # every output is checked before the episode runs, so none is written and then another fails
    plot = _plot_path(args.plot or args.gantt) if args.plot or args.gantt else None
    if args.json:
        _check_output_file("--json", Path(args.json))
        if plot and Path(args.json).absolute() == plot.absolute():
            raise SchedgymError(f"--json and --plot both name {plot}")
    case = args.case or args.workload
    given = env_kwargs.get("case")  # the env's default case: --case would silently win
    if case and given is not None and given != case:
        raise SchedgymError(f"--case {case!r} and the case in --env-kwargs, {given!r}, disagree")
    case = case or given
    try:
        result = run_episode(
            entry.name, args.policy, case=case, seed=args.seed, env_kwargs=env_kwargs
        )
    except SchedgymError:
        raise
    except Exception as exc:  # any fault of a policy or env: named in one line, as evaluate does
        raise SchedgymError(
            f"{args.policy} on {entry.name} case {case!r} (seed {args.seed}): "
            f"{str(exc) or type(exc).__name__}"
        ) from exc
    print(
        f"{entry.gym_id}  case={case or 'default'}  policy={result.policy} ({result.kind})  "
        f"seed={args.seed}"
    )
    rows = [(k, v) for k, v in result.metrics.items() if isinstance(v, int | float | str)]
    rows += [("decisions", result.decisions), ("wall s", result.wall_s)]
    print(format_table(["metric", "value"], rows))
    if plot:
        plot_record = entry.module("record").plot_record
        extra = (
            {"policy": args.policy} if "policy" in inspect.signature(plot_record).parameters else {}
        )
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_record(result.record, plot, **extra)
        print(f"wrote {plot}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "env": entry.name,
                    "case": case,
                    "policy": result.policy,
                    "kind": result.kind,
                    "metrics": result.metrics,
                    "record": result.record,
                },
                indent=1,
            )
        )
        print(f"wrote {args.json}")


def _plot_path(text: str) -> Path:
    """The file ``run --plot`` writes, checked before the episode: matplotlib must write its
    format, and a name without an extension gets the one matplotlib adds (``.png``), so the path
    reported is the one written."""
    import matplotlib
    from matplotlib.figure import Figure

    if Path(text).is_dir():
        raise SchedgymError(f"--plot: {text} is a folder; name the picture, e.g. {text}/run.png")
    extension = os.path.splitext(text)[1][1:].lower()
    if not extension:  # what savefig does with a name without one
        extension = matplotlib.rcParams["savefig.format"]
        text = f"{text.rstrip('.')}.{extension}"
    formats = Figure().canvas.get_supported_filetypes()
    if extension not in formats:
        raise SchedgymError(
            f"--plot {text}: matplotlib does not write .{extension} files; name a "
            f"{', '.join(f'.{f}' for f in sorted(formats))} file"
        )
    path = Path(text)
    _check_output_file("--plot", path)
    return path


# -- bench -----------------------------------------------------------------------------------------


def _export_bench() -> list[dict[str, Any]]:
    import tempfile

    from schedgym.agents.export import bench as export_bench
    from schedgym.plugins.vllm.bench import bench as plugin_bench

    with tempfile.TemporaryDirectory() as out:
        return export_bench(out) + plugin_bench(Path(out) / "batching-ppo")


def cmd_bench(args: argparse.Namespace) -> None:
    from schedgym.envs.hardware.bench import bench as hardware_bench
    from schedgym.registry import ENVIRONMENTS, env_entry

    groups = [("cost model", hardware_bench)] if args.env in (None, "hardware") else []
    if args.env in (None, "export"):
        groups.append(("exported policies (ONNX) and the vLLM plugin", _export_bench))
    entries = (
        ENVIRONMENTS
        if args.env in (None,)
        else ([] if args.env in ("hardware", "export") else [env_entry(args.env)])
    )
    groups += [(e.name, e.module("bench").bench) for e in entries]
    for name, fn in groups:
        rows = [(r["name"], r["value"], r["unit"], r.get("note", "")) for r in fn()]
        print(f"\n{name}")
        print(format_table(["benchmark", "value", "unit", "note"], rows))


# -- quickstart ------------------------------------------------------------------------------------


def cmd_quickstart(args: argparse.Namespace) -> None:
    from schedgym.quickstart import quickstart

    quickstart(seed=args.seed, train_steps=args.train_steps)


def cmd_train(args: argparse.Namespace) -> None:
    env_kwargs = _training_env_kwargs(args)
    trainer = {"ppo": _train_ppo, "muzero": _train_muzero, "rllib-ppo": _train_rllib}[args.algo]
    trainer(args, env_kwargs)


def _train_ppo(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> None:
    from schedgym.agents.ppo import TrainConfig, train

    muzero_only = ("simulations", "model", "rollout", "rollout_mix", "max_considered", "c_scale")
    if any(getattr(args, k) is not None for k in muzero_only) or (
        args.uniform_prior or args.fortify or args.anchor
    ):
        raise SchedgymError(
            "--simulations, --model, --rollout, --rollout-mix, --max-considered, --c-scale, "
            "--uniform-prior, --fortify and --anchor are options of --algo muzero"
        )
    if args.env_runners is not None or args.ray is not None:
        raise SchedgymError("--env-runners and --ray are options of --algo rllib-ppo")
    cfg = TrainConfig(
        **_training_settings(args, env_kwargs),
        imitate=args.imitate,
        imitate_episodes=args.imitate_episodes,
        learning_rate=args.learning_rate,
        init_from=args.init_from,
        normalize_reward=args.normalize_reward,
    )
    with _training_output(args, cfg.out):
        try:
            train(cfg, heuristic=args.baseline, resume=args.resume, progress=not args.no_progress)
        except RuntimeError as exc:  # torch's, when --init-from's layers are not this network's
            if not (cfg.init_from and str(exc).startswith("Error(s) in loading state_dict")):
                raise
            first = (str(exc).splitlines()[1:2] or [str(exc)])[0].strip()
            raise SchedgymError(
                f"--init-from {cfg.init_from}: not this network's shape: {first}"
            ) from None
    print(
        f"wrote {cfg.out}/model.zip, config.json, training.json"
        f"{', curve.png' if cfg.val_cases else ''}; TensorBoard: tensorboard --logdir runs"
    )


# What each --algo saves as trained weights (ppo: model.zip, last.zip; muzero: model.pt, last.pt;
# rllib-ppo: module/, algorithm/): a folder holding one of them holds a checkpoint.
CHECKPOINTS = ("model.zip", "last.zip", "model.pt", "last.pt", "module", "algorithm")
# Everything a training run leaves in its folder (and scripts/train_policies.py's DAgger rounds
# and results.json): what --overwrite moves away first.
TRAINING_OUTPUTS = (
    *CHECKPOINTS,
    "best_model.zip",
    "imitation.zip",
    "after-ppo.zip",
    "dagger-*.zip",
    "reward_norm.pkl",
    "evaluations.npz",
    "checkpoints",
    "config.json",
    "training.json",
    "curve.png",
    "results.json",
)


@contextmanager
def _training_output(args: argparse.Namespace, out: str) -> Iterator[None]:
    """Check the training folder ``out`` before anything is written, then train in the block.

    Refused: a file, or a folder that already holds a checkpoint unless ``--resume`` continues
    it or ``--overwrite`` trains afresh over it (the earlier run's files, `TRAINING_OUTPUTS`,
    are moved aside first, deleted once the new run succeeds); ``--init-from`` that is not a PPO
    checkpoint of this env. When the block fails before it saved any weights, nothing is left
    behind: a folder the command created is removed, files it added to an existing one are
    removed, and the files moved aside are put back."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise SchedgymError(f"--out {out} is a file, not a folder")
    _check_output_file("--out", folder / "config.json")
    if args.resume and args.overwrite:
        raise SchedgymError("--resume continues the run in OUT, --overwrite replaces it: not both")
    held = [name for name in CHECKPOINTS if (folder / name).exists()]
    if held and not (args.resume or args.overwrite):
        raise SchedgymError(
            f"--out {out} already holds a trained checkpoint ({held[0]}): give --resume to "
            "continue it, --overwrite to train afresh in its place, or another --out"
        )
    if args.init_from:
        _check_init_from(args.init_from, args.env)
    created = folder.absolute()  # the outermost folder this command creates, if any
    if created.exists():
        created = None
    else:
        while not created.parent.exists():
            created = created.parent
    aside = None
    if args.overwrite and folder.is_dir():
        stale = sorted({p for pattern in TRAINING_OUTPUTS for p in folder.glob(pattern)})
        if stale:
            aside = Path(tempfile.mkdtemp(prefix=".overwritten-", dir=folder))
            for path in stale:
                path.rename(aside / path.name)
    before = set(os.listdir(folder)) if folder.is_dir() else set()
    try:
        yield
    except BaseException:
        added = (set(os.listdir(folder)) if folder.is_dir() else set()) - before
        if not any(_holds_weights(folder / name) for name in added):
            _undo(folder, created, added, aside)
            aside = None
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def _holds_weights(path: Path) -> bool:
    """Whether ``path``, written by a failed run, holds trained weights worth keeping (a
    checkpoint, or the periodic checkpoints/ folder once it holds one)."""
    if path.name in CHECKPOINTS:
        return True
    return path.name == "checkpoints" and path.is_dir() and any(path.iterdir())


def _undo(folder: Path, created: Path | None, added: set[str], aside: Path | None) -> None:
    """Take back what a failed training run wrote (see `_training_output`); best effort, so the
    run's own error is the one reported."""
    try:
        if created is not None:
            shutil.rmtree(created)
            return
        for name in added:
            path = folder / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        if aside is not None:
            for path in aside.iterdir():
                path.rename(folder / path.name)
            aside.rmdir()
    except OSError:
        pass


def _check_init_from(init_from: str, env: str) -> None:
    """Refuse, before training, an ``--init-from`` that is not a PPO checkpoint (a folder's
    ``model.zip``, or the file) or whose ``config.json`` (beside it; for a file in
    ``checkpoints/``, the run's) names another env: its layers would not fit this env's
    network (a torch size-mismatch deep inside training)."""
    from schedgym.agents.ppo import _model_file
    from schedgym.evaluate import _config
    from schedgym.registry import env_entry

    path = Path(init_from)
    if path.is_dir() and not (path / "model.zip").exists() and (path / "model.pt").exists():
        raise SchedgymError(
            f"--init-from {init_from}: a MuZero checkpoint (model.pt); --init-from takes a PPO "
            "checkpoint (a policy folder with model.zip, or the file)"
        )
    try:
        model = _model_file(path)
    except SchedgymError as exc:
        raise SchedgymError(f"--init-from: {exc}") from None
    beside = [model.parent / "config.json"]
    if model.parent.name == "checkpoints":
        beside.append(model.parent.parent / "config.json")
    config = next((c for c in beside if c.is_file()), None)
    if config is None:
        raise SchedgymError(
            f"--init-from {init_from}: no config.json beside {model} to say which env it was "
            "trained on"
        )
    settings = _config(config)
    algo = settings.get("algo", "ppo")
    if algo != "ppo":
        raise SchedgymError(
            f"--init-from {init_from}: {config} says it is a {algo} checkpoint, not PPO"
        )
    trained = settings.get("env")
    if not isinstance(trained, str):
        raise SchedgymError(f"--init-from {init_from}: {config} names no env")
    try:
        same = env_entry(trained).name == env_entry(env).name
    except SchedgymError:
        same = False
    if not same:
        raise SchedgymError(
            f"--init-from {init_from}: trained on {trained} ({config}), not on {env}"
        )


def cmd_sweep(args: argparse.Namespace) -> None:
    from schedgym.agents.ppo import TrainConfig
    from schedgym.agents.sweep import SweepConfig, load_space, sweep

    env_kwargs = _training_env_kwargs(args)
    out = args.out or f"sweeps/{args.env}-{args.algo}"
    base = TrainConfig(
        env=args.env,
        out=out,
        steps=args.steps,
        n_envs=args.n_envs,
        env_kwargs=env_kwargs,
        val_cases=_case_list("--val-cases", args.val_cases),
        eval_every=args.eval_every,
    )
    cfg = SweepConfig(
        base,
        load_space(args.space),
        samples=args.samples,
        out=out,
        seed=args.seed,
        cpus_per_trial=args.cpus_per_trial,
    )
    best = sweep(cfg, address=args.ray, resume=args.resume, verbose=0 if args.quiet else 1)
    print(
        format_table(
            ["trials", "errored", "best score", "at steps"],
            [(best["trials"], best["errored"], best["score"], best["timesteps"])],
        )
    )
    print(f"best configuration: {json.dumps(best['config'])}")
    print(
        f"wrote {out}/best.json and {out}/best (schedgym evaluate --policy {best['policy']}); "
        f"TensorBoard: tensorboard --logdir runs"
    )


def _training_env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``--env-kwargs`` with ``--generator``'s case (a comma list is a mix of generators)."""
    env_kwargs = _env_kwargs(args) or {}
    if args.generator is not None:
        mix = _case_list("--generator", args.generator)
        if "case" in env_kwargs:
            raise SchedgymError(
                f"--generator {args.generator!r} and the case in --env-kwargs, "
                f"{env_kwargs['case']!r}, both give the training case: give one"
            )
        env_kwargs["case"] = mix if len(mix) > 1 else mix[0]
    return env_kwargs


def _training_settings(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The settings every training algorithm's config takes from the command line."""
    return {
        "env": args.env,
        "out": args.out or f"policies/{args.env}-{args.algo}",
        "steps": args.steps,
        "n_envs": args.n_envs,
        "seed": args.seed,
        "env_kwargs": env_kwargs,
        "val_cases": [] if args.val_cases is None else _case_list("--val-cases", args.val_cases),
        "eval_every": args.eval_every,
    }


def _train_muzero(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> None:
    from schedgym.agents.muzero.train import MuZeroConfig, train

    unsupported = [
        f"--{k.replace('_', '-')}"
        for k in ("imitate", "normalize_reward", "env_runners", "ray")
        if getattr(args, k)
    ]
    if unsupported:
        raise SchedgymError(f"--algo muzero does not take {', '.join(unsupported)}")
    cfg = MuZeroConfig(
        **_training_settings(args, env_kwargs),
        model=args.model or "simulator",
        rollout=args.rollout,
        rollout_mix=1.0 if args.rollout_mix is None else args.rollout_mix,
        learning_rate=args.learning_rate,
        init_from=args.init_from,
        uniform_prior=args.uniform_prior,
        fortify=args.fortify,
        anchor=args.anchor,
        **({} if args.c_scale is None else {"c_scale": args.c_scale}),
        # unset budgets keep MuZeroConfig's defaults; a 0 given is refused, not replaced
        **{k: v for k in ("simulations", "max_considered") if (v := getattr(args, k)) is not None},
    )
    with _training_output(args, cfg.out):
        train(cfg, heuristic=args.baseline, resume=args.resume, progress=not args.no_progress)
    print(
        f"wrote {cfg.out}/model.pt, config.json, training.json (policy muzero:{cfg.out}@"
        f"{cfg.simulations}); TensorBoard: tensorboard --logdir runs"
    )


def _train_rllib(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> None:
    from schedgym.agents.rllib import RLlibConfig, train_rllib

    unsupported = [
        f"--{k.replace('_', '-')}"
        for k in ("imitate", "init_from", "val_cases", "baseline", "resume", "normalize_reward")
        if getattr(args, k)
    ]
    if unsupported:
        raise SchedgymError(f"--algo rllib-ppo does not take {', '.join(unsupported)}")
    cfg = RLlibConfig(
        env=args.env,
        out=args.out or f"policies/{args.env}-rllib-ppo",
        steps=args.steps,
        env_runners=1 if args.env_runners is None else args.env_runners,
        envs_per_runner=args.n_envs,
        seed=args.seed,
        env_kwargs=env_kwargs,
        learning_rate=args.learning_rate,
    )
    with _training_output(args, cfg.out):
        rows = train_rllib(cfg, address=args.ray, progress=not args.no_progress)
    print(
        format_table(
            ["iteration", "env steps", "steps/s", "mean return"],
            [
                (i + 1, int(r["env_steps"]), r["env_steps_per_s"], r["episode_return_mean"])
                for i, r in enumerate(rows)
            ],
        )
    )
    print(
        f"wrote {cfg.out}/module, algorithm, config.json, training.json (policy "
        f"rllib:{cfg.out}); TensorBoard: tensorboard --logdir runs"
    )


# -- evaluate / leaderboard -----------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> None:
    from schedgym.evaluate import evaluate, records_path, save_results
    from schedgym.leaderboard import format_duration
    from schedgym.suites import get_suite

    env_kwargs = _env_kwargs(args)
    suite = get_suite(args.suite, args.env, score=args.score, env_kwargs=env_kwargs)
    if args.json:  # both files it writes, checked before the cases run
        _check_output_file("--json", Path(args.json))
        _check_output_file("--json", records_path(Path(args.json)))
    if args.capacity is not None:
        if suite.env != "batching":
            raise SchedgymError(
                f"--capacity is a serving measure: suite {suite.name} is {suite.env}"
            )
        if not 0 < args.capacity <= 1:
            raise SchedgymError(
                f"--capacity takes an SLO attainment in (0, 1], got {args.capacity}"
            )
        keys = tuple(k for k in suite.key_metrics if k != "capacity_rps")
        suite = replace(suite, capacity_slo=args.capacity, key_metrics=(*keys, "capacity_rps"))
    results = evaluate(
        suite.env,
        args.policy,
        suite,
        workers=args.workers,
        case_budget_s=args.case_budget,
        solver_threads=args.solver_threads,
        progress=not args.no_progress and sys.stderr.isatty(),
        ray=args.ray,
    )
    keys = [k for k in suite.key_metrics if any(k in c["metrics"] for c in results["cases"])]
    rows = [
        (
            c["case"],
            str(c["seed"]),
            c["metrics"][suite.score_metric],
            *[c["metrics"].get(k) for k in keys],
            c["decisions"],
            c["wall_s"],
        )
        for c in results["cases"]
    ]
    summary = results["summary"]
    print(
        f"{results['policy']} ({results['kind']}) on {suite.name}: {len(rows)} cases, every "
        "record validated"
    )
    print(format_table(["case", "seed", suite.score_metric, *keys, "decisions", "wall s"], rows))
    print(
        f"\nscore {summary['score']:.6g}: {summary['score_name']}; median decision "
        f"{format_duration(summary['decision_median_s'])}"
    )
    if args.json:
        records = save_results(results, args.json)
        print(f"wrote {args.json} and {records}")


def cmd_leaderboard(args: argparse.Namespace) -> None:
    from schedgym.leaderboard import build

    root = Path(args.root) if args.root else None
    if root is not None and not root.is_dir():
        raise SchedgymError(f"--root {root}: no such folder")
    report = build(
        **({"root": root} if root else {}),
        envs=args.env,
        suites=args.suite,
        workers=args.workers,
        case_budget_s=args.case_budget,
        solver_threads=args.solver_threads,
        rerun=args.rerun,
        run=not args.no_run,
        progress=not args.no_progress and sys.stderr.isatty(),
        ray=args.ray,
    )
    if report.pairs:
        rows = [(p.suite.name, p.policy, p.status, p.reason[:70]) for p in report.pairs]
        print(format_table(["suite", "policy", "results", "why not listed"], rows))
    where = root or Path(__file__).resolve().parent
    print(
        f"\nwrote {where / 'LEADERBOARD.md'} and {where / 'leaderboard' / 'index.html'} in "
        f"{report.wall_s:.0f} s"
    )
    if report.refused:
        raise SchedgymError(
            f"{len(report.refused)} results file(s) refused and not listed (reasons above)"
        )


def cmd_export(args: argparse.Namespace) -> None:
    from schedgym.agents.export import export

    spec = export(args.policy, args.out, env=args.env)
    rows = [(i["name"], "x".join(map(str, i["shape"])), i["dtype"]) for i in spec["inputs"]]
    print(format_table(["input", "shape", "dtype"], rows))
    print(
        f"\nwrote {Path(args.out) / 'policy.onnx'} and {Path(args.out) / 'spec.json'} "
        f"({spec['env_id']}, encoder {spec['encoder_version']}, "
        f"{spec['actions']['n_actions']} actions, onnx.checker passed)"
    )


# -- parser ----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors (argparse prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"schedgym: error: {message} (see `{self.prog} --help`)\n")


def _add_ray_flag(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run the cases as Ray tasks: on the cluster at ADDRESS (auto, ray://HOST:10001), or "
        "on a local Ray instance without one; needs schedgym[ray] (docs/scale.md)",
    )


# every verb that takes --policy names its kinds the same way
POLICY_HELP = (
    "heuristic:NAME, solver:NAME, oracle:NAME, bound:NAME, random, ppo:PATH, muzero:PATH[@N] "
    "(N simulations a decision), rollout:PATH[@K] (a fortified rollout: PPO checkpoint PATH "
    "played out from its K likeliest actions a decision, default every legal one; job shop, "
    "DAG, memmap only), nextuse:PATH (learned next-use eviction; moe only) or module:function "
    "(f(env, obs) -> action)"
)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="schedgym",
        description="Gymnasium environments for scheduling accelerator work, priced by measured "
        "kernel timings; baselines, bounds and learned policies over them.",
        epilog="Start with `schedgym quickstart`; `schedgym VERB --help` explains each verb.",
    )
    p.add_argument("--version", action="version", version=f"schedgym {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    s = sub.add_parser(
        "list",
        help="environments, policies, suites, hardware profiles, models",
        description="List what schedgym ships.",
    )
    s.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=["all", "envs", "policies", "suites", "hardware", "models"],
    )
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser(
        "profile",
        help="measure kernel costs with torch, or check a cost table's accuracy",
        description="Measure schedgym's kernels (linear, attention_prefill, attention_decode, "
        "elementwise, activation, layernorm, copy_h2d, copy_d2h) with torch on this machine and "
        "write a cost table; or, with --check, report a table's interpolation error on points it "
        "was not built from.",
        epilog="examples:\n  schedgym profile --quick --out t.json\n"
        "  schedgym profile --device cuda --out h200.json   # the zoo's shapes, GPU time\n"
        "  schedgym profile --check t.json\n"
        "  schedgym profile --check h200 --measure 600 --device cuda\n"
        "  schedgym profile --check h100 --against ../shared/data/kernel-profiles/vidur",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--quick", action="store_true", help="a coarse grid (under a minute on a CPU)")
    s.add_argument("--out", type=_nonempty, help="where to write the measured table (JSON)")
    s.add_argument(
        "--check",
        metavar="TABLE",
        help="a shipped profile name (cpu, h200, a100, h100, a40) or a table file to assess",
    )
    s.add_argument(
        "--against",
        metavar="VIDUR_DIR",
        help="with --check: also compare with every vidur measurement the table left out",
    )
    s.add_argument("--gpu", help="with --against: which vidur GPU folder (default: table name)")
    s.add_argument(
        "--measure",
        type=int,
        metavar="N",
        help="with --check: measure N random off-grid points on --device now and compare "
        "(with --out, the rows are written as JSON)",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_profile)

    s = sub.add_parser(
        "run",
        help="run one policy on one case and print its metrics",
        description="Run one episode, validate its record, print the metrics and "
        "optionally draw it (Gantt chart, latency CDF, placement).",
    )
    s.add_argument("--env", required=True, help="jobshop, dag, batching, moe or memmap")
    s.add_argument(
        "--policy",
        required=True,
        help=POLICY_HELP,
    )
    s.add_argument("--case", help="instance, trace or buffer-set name, or file:PATH")
    s.add_argument("--workload", help="same as --case")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument(
        "--plot",
        type=_nonempty,
        metavar="PNG",
        help="write the episode's picture here (any format matplotlib writes, by the extension; "
        "none: .png is added); missing folders are created",
    )
    s.add_argument("--gantt", type=_nonempty, metavar="PNG", help="same as --plot")
    s.add_argument(
        "--json",
        type=_nonempty,
        metavar="OUT",
        help="write metrics and the episode record here; missing folders are created",
    )
    s.add_argument("--env-kwargs", metavar="JSON", help="extra env arguments, e.g. '{\"x\": 1}'")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser(
        "bench",
        help="measure simulator speed (steps/s) and cost-model speed",
        description="Print each environment's documented speed figures, measured "
        "now on this machine.",
    )
    s.add_argument(
        "--env",
        help="one env (or 'hardware' for the cost model only, 'export' for the exported "
        "policies' decision latency)",
    )
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser(
        "quickstart",
        help="the README's main job: the strongest pipeline so far",
        description="Price a model step on every shipped profile, run every available "
        "environment's heuristics on its default case, then train PPO briefly on random 6x6 "
        "job shops and compare it, greedy, with the dispatching rules on held-out instances.",
    )
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument(
        "--train-steps",
        type=_count,
        default=20_000,
        help="PPO steps for the job-shop demo (0: skip training)",
    )
    s.set_defaults(fn=cmd_quickstart)

    s = sub.add_parser(
        "train",
        help="train a MaskablePPO or Gumbel MuZero agent on an environment",
        description="Train MaskablePPO with the permutation-equivariant entity network on one "
        "environment. Each reset draws a fresh instance from --generator (the env's case "
        "argument); validation runs greedily on --val-cases; TensorBoard logs go to runs/ with "
        "the problem's metrics under sched/. --algo rllib-ppo trains RLlib's PPO with the same "
        "network instead, sampling on Ray env runners. --algo muzero trains Gumbel MuZero by "
        "self-play (docs/agents.md): --steps counts decisions, --simulations is the search "
        "budget per decision, --model picks the true simulator (get_state/set_state) or the "
        "learned dynamics to plan with, --init-from takes a PPO policy folder to warm-start "
        "the representation and prediction nets.",
        epilog="examples:\n  schedgym train --env jobshop --generator random:15x15 "
        "--val-cases random:15x15:90001,random:15x15:90002 --baseline heuristic:mor "
        "--steps 200000 --out policies/jobshop-ppo\n"
        "  schedgym train --algo muzero --env jobshop --generator random:15x15 "
        "--simulations 16 --model simulator --init-from policies/jobshop-ppo --steps 3000 "
        "--val-cases random:15x15:90001 --baseline heuristic:mor",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--env", required=True)
    s.add_argument(
        "--algo",
        default="ppo",
        choices=["ppo", "rllib-ppo", "muzero"],
        help="ppo: sb3-contrib MaskablePPO here; rllib-ppo: RLlib's PPO, sampling on "
        "--env-runners Ray actors (needs schedgym[ray], docs/scale.md); muzero: Gumbel MuZero "
        "by self-play (agents/muzero)",
    )
    s.add_argument(
        "--simulations",
        type=_positive_int,
        metavar="N",
        help="muzero: simulations per decision in self-play and in the saved policy (default 16)",
    )
    s.add_argument(
        "--model",
        choices=["simulator", "learned"],
        help="muzero: plan with the env's own simulator (default) or the learned dynamics",
    )
    s.add_argument(
        "--rollout",
        metavar="POLICY",
        help="muzero with --model simulator: value every new search node by playing this "
        "policy of the env to the episode's end (e.g. heuristic:mwkr), or the best of several "
        "joined by commas (heuristic:peft,heuristic:heft); only honest where the simulator's "
        "state holds no future the scheduler could not know (docs/agents.md)",
    )
    s.add_argument(
        "--rollout-mix",
        type=_fraction,
        metavar="LAMBDA",
        help="muzero: leaf value = (1 - LAMBDA) * value net + LAMBDA * rollout return "
        "(AlphaGo's mixing; default 1)",
    )
    s.add_argument(
        "--max-considered",
        type=int,
        metavar="M",
        help="muzero: root actions sequential halving considers (default 16; the DAG recipe "
        "considers every legal one, 64)",
    )
    s.add_argument(
        "--uniform-prior",
        action="store_true",
        help="muzero: start from a uniform prior (policy head zeroed) instead of --init-from, "
        "for a rollout planner whose heuristic beats any network at hand",
    )
    s.add_argument(
        "--fortify",
        action="store_true",
        help="muzero with --rollout: the saved policy follows the best complete sequence its "
        "searches have found until one finds better (fortified rollout: never worse than the "
        "rollout policy from the first state; self-play is unchanged)",
    )
    s.add_argument(
        "--anchor",
        action="store_true",
        help="muzero with --rollout: the root's prior ranks the rollout policy's own action "
        "first, so the search keeps it unless another scores strictly better (a rollout "
        "algorithm's tie rule)",
    )
    s.add_argument(
        "--c-scale",
        type=_positive_number,
        metavar="C",
        help="muzero: mctx's value_scale, how far the search's values may override the prior "
        "(default 0.1; 1.0 lets any value difference outweigh a PPO prior's logits)",
    )
    s.add_argument(
        "--env-runners",
        type=_count,
        metavar="N",
        help="rllib-ppo: env-runner actors (default 1; 0 samples in the driver)",
    )
    s.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="rllib-ppo: the Ray cluster (auto, ray://HOST:10001); default: local",
    )
    s.add_argument(
        "--generator",
        "--workload",
        dest="generator",
        help="training case generator, e.g. random:15x15 (default: the env's); several, "
        "comma-separated, are spread over the vectorised envs",
    )
    s.add_argument("--val-cases", help="comma-separated validation cases")
    s.add_argument("--baseline", help="heuristic to log beside the agent on the validation cases")
    s.add_argument(
        "--steps",
        type=_positive_int,
        default=100_000,
        help="env steps (muzero: self-play decisions)",
    )
    s.add_argument(
        "--imitate",
        metavar="POLICY",
        help="clone this policy's decisions into the network before PPO (behaviour cloning "
        "warm start; the cloned policy is kept as OUT/imitation.zip): a heuristic, or a planner "
        "such as rollout:PATH with --init-from PATH (one step of approximate policy iteration)",
    )
    s.add_argument(
        "--imitate-episodes",
        type=_positive_int,
        default=20,
        help="demonstration episodes for --imitate",
    )
    s.add_argument(
        "--learning-rate",
        type=_positive_number,
        default=3e-4,
        help="Adam's; 1e-4 suits a cloned start",
    )
    s.add_argument(
        "--normalize-reward",
        action="store_true",
        help="scale rewards by the running std of the return (SB3's VecNormalize)",
    )
    s.add_argument(
        "--n-envs",
        type=_positive_int,
        default=2,
        help="vectorised envs (per env runner with rllib-ppo)",
    )
    s.add_argument(
        "--eval-every",
        type=_positive_int,
        default=10_000,
        help="env steps between validations",
    )
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument(
        "--out",
        type=_nonempty,
        help="output folder (default policies/ENV-ALGO); one that already holds a checkpoint "
        "(model.zip, last.zip, model.pt, last.pt, module/) is refused unless --resume or "
        "--overwrite is given",
    )
    s.add_argument(
        "--resume", action="store_true", help="continue from OUT/last.zip (muzero: OUT/last.pt)"
    )
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="train afresh in an OUT that holds a checkpoint: the files an earlier run left "
        "there (model.zip, last.zip, best_model.zip, imitation.zip, model.pt, last.pt, module/, "
        "algorithm/, checkpoints/, config.json, training.json, curve.png, results.json, ...) "
        "are removed, other files kept; should this run fail before it saves weights, they are "
        "put back",
    )
    s.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        help="start from these weights (fine-tuning; muzero: a PPO policy folder)",
    )
    s.add_argument("--env-kwargs", metavar="JSON", help="extra env constructor arguments")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser(
        "sweep",
        help="sample training configurations on Ray Tune, stopping laggards early (ASHA)",
        description="Sample --samples configurations of the training recipe from the search "
        'space in --space (JSON: field -> {"loguniform"|"uniform"|"randint": [low, '
        'high]} or {"choice": [values]} or a fixed value) and train each as a Ray Tune trial. '
        "Every --eval-every steps a trial plays --val-cases greedily and reports the mean "
        "primary metric; Tune's ASHA scheduler stops trials that trail. Trials log to "
        "TensorBoard under runs/sweep-NAME; OUT/best holds the best checkpoint (a ppo:OUT/best "
        "policy), OUT/best.json its configuration and score. Needs schedgym[ray].",
        epilog="example:\n  schedgym sweep --env jobshop --space space.json --samples 8 "
        "--generator random:6x6 --val-cases random:6x6,random:6x6 --steps 20000 "
        "--eval-every 5000 --out sweeps/js6\n  schedgym sweep ... --out sweeps/js6 --resume   "
        "# continue an interrupted sweep",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--env", required=True)
    s.add_argument("--algo", default="ppo", choices=["ppo"])
    s.add_argument("--space", required=True, metavar="FILE", help="the search space (JSON)")
    s.add_argument("--samples", type=_positive_int, default=4, help="trials to sample (default 4)")
    s.add_argument(
        "--generator",
        "--workload",
        dest="generator",
        help="training case generator(s), as for schedgym train",
    )
    s.add_argument("--val-cases", required=True, help="comma-separated validation cases")
    s.add_argument(
        "--steps", type=_positive_int, default=20_000, help="env steps per trial at most"
    )
    s.add_argument(
        "--eval-every",
        type=_positive_int,
        default=5_000,
        help="env steps between a trial's reports (ASHA's unit of time)",
    )
    s.add_argument("--n-envs", type=_positive_int, default=1, help="vectorised envs per trial")
    s.add_argument("--cpus-per-trial", type=_positive_number, default=1.0)
    s.add_argument("--seed", type=_seed, default=0, help="seeds the sampling of configurations")
    s.add_argument("--out", type=_nonempty, help="output folder (default sweeps/ENV-ALGO)")
    s.add_argument("--resume", action="store_true", help="continue the interrupted sweep in OUT")
    s.add_argument("--env-kwargs", metavar="JSON", help="extra env constructor arguments")
    s.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="a Ray cluster (auto, ray://HOST:10001); default: a local Ray instance",
    )
    s.add_argument("--quiet", action="store_true", help="no Tune progress tables")
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser(
        "evaluate",
        help="run one policy on one suite and write the results JSON",
        description="Run a policy on every case of a suite, in parallel processes, validating "
        "every episode record with the environment's independent validate() before it counts; "
        "print the per-case metrics and the suite's score and, with --json, write the results "
        "JSON (its fields: docs/leaderboard.md, section Results JSON) with the records beside "
        "it (OUT.records.json.xz). Suites: `schedgym list suites` and docs/leaderboard.md; "
        "file:PATH runs your own instance, trace or buffer-set file, or every file in a folder, "
        "in the formats the env's loaders read.",
        epilog="examples:\n"
        "  schedgym evaluate --suite jobshop/taillard-15x15 --policy heuristic:mor\n"
        "  schedgym evaluate --suite dag/topcuoglu --policy solver:cpsat --case-budget 10\n"
        "  schedgym evaluate --suite moe/tinymoe-test --policy ppo:policies/moe-ppo "
        "--json out.json\n"
        "  schedgym evaluate --env jobshop --suite file:my_instances/ --policy mymod:my_rule\n"
        "  schedgym evaluate --env memmap --suite file:buffers.csv --policy heuristic:msa "
        '--env-kwargs \'{"task": "pack"}\' --score height',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--suite", required=True, help="a suite name, or file:PATH (file or folder)")
    s.add_argument(
        "--policy",
        required=True,
        help=POLICY_HELP,
    )
    s.add_argument("--env", help="the env (implied by a suite name; needed for file:PATH)")
    s.add_argument(
        "--json",
        type=_nonempty,
        metavar="OUT",
        help="write the results JSON here; missing folders are created",
    )
    s.add_argument(
        "--workers", type=_positive_int, default=1, help="parallel processes (default 1)"
    )
    s.add_argument(
        "--case-budget",
        type=_positive_number,
        metavar="S",
        help="time limit in seconds per case for solvers (default: the solver's own)",
    )
    s.add_argument(
        "--solver-threads",
        type=_positive_int,
        metavar="N",
        help="threads per solver (default: its own)",
    )
    s.add_argument("--score", metavar="METRIC", help="file:PATH suites: the metric to average")
    s.add_argument("--env-kwargs", metavar="JSON", help="file:PATH suites: env arguments")
    s.add_argument(
        "--capacity",
        nargs="?",
        type=float,
        const=0.9,
        metavar="ATTAINMENT",
        help="batching: also find each case's capacity at SLO, the highest arrival rate (its "
        "arrival pattern rescaled, by bisection) at which the policy keeps this SLO attainment "
        "(default 0.9, as vidur and DistServe)",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_ray_flag(s)
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser(
        "leaderboard",
        help="run every policy on every suite and write LEADERBOARD.md and the HTML page",
        description="Bring leaderboard/results up to date (every baseline, bound and committed "
        "learned policy, policies/*/config.json, on every suite whose env is available), reusing a "
        "results file whose inputs (schedgym version, suite, policy, settings, the source and "
        "data it depends on) have not changed; then write LEADERBOARD.md and "
        "leaderboard/index.html (tables, score bars, Gantt charts, latency CDFs, hit rate "
        "against cache size, placements) from the results files. A results file that is "
        "refused (another schedgym version, invalid records, ...) is reported with the reason, "
        "never listed, and makes the command fail. Rerunning the whole board takes about an "
        "hour on a busy 2-core machine (most of it the MuZero planners' rows), a run that "
        "reuses everything about a minute; see docs/leaderboard.md.",
        epilog="examples:\n"
        "  schedgym leaderboard                        # everything, reusing what is current\n"
        "  schedgym leaderboard --env jobshop          # one env's suites\n"
        "  schedgym leaderboard --suite dag/topcuoglu --rerun\n"
        "  schedgym leaderboard --no-run               # only rebuild the pages",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--env", action="append", help="only this env's suites (repeatable)")
    s.add_argument("--suite", action="append", help="only this suite (repeatable)")
    s.add_argument(
        "--workers", type=_positive_int, default=2, help="parallel processes (default 2)"
    )
    s.add_argument(
        "--case-budget",
        type=_positive_number,
        default=10.0,
        metavar="S",
        help="solvers' time limit per case in seconds (default 10)",
    )
    s.add_argument(
        "--solver-threads",
        type=_positive_int,
        default=1,
        metavar="N",
        help="threads per solver (default 1: each worker keeps to one core)",
    )
    s.add_argument("--rerun", action="store_true", help="rerun even results that are current")
    s.add_argument("--no-run", action="store_true", help="only rebuild the pages from the files")
    s.add_argument(
        "--root",
        type=_nonempty,
        help="the checkout to write into (default: this package's folder)",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_ray_flag(s)
    s.set_defaults(fn=cmd_leaderboard)

    s = sub.add_parser(
        "export",
        help="export a trained policy to ONNX (mask inside the graph) with its spec.json",
        description="Write POLICY's actor as an ONNX graph (observation arrays and the action "
        "mask in; masked logits and the greedy action out) and spec.json (env and version, "
        "feature-encoder version, inputs with feature names, action meanings, checkpoint "
        "SHA-256), checked with onnx.checker. docs/serving.md runs it in vLLM.",
        epilog="example:\n  schedgym export --policy ppo:policies/batching-ppo --out "
        "exported/batching",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--policy", required=True, help="a trained checkpoint: ppo:PATH")
    s.add_argument(
        "--out",
        required=True,
        type=_nonempty,
        help="the folder to write policy.onnx and spec.json",
    )
    s.add_argument("--env", help="refuse unless the policy was trained on this env")
    s.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (SchedgymError, OSError, json.JSONDecodeError) as exc:
        if os.environ.get("SCHEDGYM_DEBUG"):
            raise
        print(f"schedgym: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
