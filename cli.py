"""The ``schedgym`` command: parses arguments, calls the package, prints aligned tables.

Every verb has ``--help``. Errors are one line (``schedgym: error: ...``) with exit status 2;
``SCHEDGYM_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from schedgym import __version__
from schedgym.errors import SchedgymError
from schedgym.report import format_table

PLANNED = {
    "evaluate": "issue #8 (evaluation runner and leaderboard)",
    "leaderboard": "issue #8 (evaluation runner and leaderboard)",
    "export": "issue #7/#9 (policy export to ONNX and serving plugins)",
}


# -- list ------------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> None:
    from schedgym.envs.hardware import MODELS, builtin_tables, load_cost_table
    from schedgym.registry import ENVIRONMENTS

    what = args.what
    if what in ("all", "envs"):
        rows = [
            (e.name, e.gym_id, "yes" if e.available else "not yet", e.summary) for e in ENVIRONMENTS
        ]
        print(format_table(["env", "gymnasium id", "available", "what it schedules"], rows))
        print()
    if what in ("all", "policies"):
        rows = []
        for e in ENVIRONMENTS:
            names = sorted(e.policies()) if e.available else []
            rows.append((e.name, ", ".join(["random", *names]) if e.available else "-"))
        print(format_table(["env", "policies (also: ppo:PATH, module:function)"], rows))
        print()
    if what in ("all", "suites"):
        print("suites: none yet; the evaluation suites arrive with " + PLANNED["evaluate"])
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

    if args.check:
        table = load_cost_table(args.check)
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
        if args.against:
            from schedgym.envs.hardware.vidur import held_out_errors

            gpu = args.gpu or table.name
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
    from schedgym.evaluate import run_episode
    from schedgym.registry import env_entry

    entry = env_entry(args.env)
    env_kwargs = json.loads(args.env_kwargs) if args.env_kwargs else None
    case = args.case or args.workload
    result = run_episode(entry.name, args.policy, case=case, seed=args.seed, env_kwargs=env_kwargs)
    print(
        f"{entry.gym_id}  case={case or 'default'}  policy={result.policy} ({result.kind})  "
        f"seed={args.seed}"
    )
    rows = [(k, v) for k, v in result.metrics.items() if isinstance(v, int | float | str)]
    rows += [("decisions", result.decisions), ("wall s", result.wall_s)]
    print(format_table(["metric", "value"], rows))
    plot = args.plot or args.gantt
    if plot:
        plot_record = entry.env_module().plot_record
        extra = (
            {"policy": args.policy} if "policy" in inspect.signature(plot_record).parameters else {}
        )
        plot_record(result.record, plot, **extra)
        print(f"wrote {plot}")
    if args.json:
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


# -- bench -----------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> None:
    from schedgym.envs.hardware.bench import bench as hardware_bench
    from schedgym.registry import ENVIRONMENTS, env_entry

    groups = [("cost model", hardware_bench)] if args.env in (None, "hardware") else []
    entries = (
        ENVIRONMENTS
        if args.env in (None,)
        else ([] if args.env == "hardware" else [env_entry(args.env)])
    )
    for e in entries:
        if e.available and hasattr(e.env_module(), "bench"):
            groups.append((e.name, e.env_module().bench))
        else:
            print(f"{e.name}: not available yet, skipped")
    for name, fn in groups:
        rows = [(r["name"], r["value"], r["unit"], r.get("note", "")) for r in fn()]
        print(f"\n{name}")
        print(format_table(["benchmark", "value", "unit", "note"], rows))


# -- quickstart ------------------------------------------------------------------------------------


def cmd_quickstart(args: argparse.Namespace) -> None:
    from schedgym.quickstart import quickstart

    quickstart(seed=args.seed, train_steps=args.train_steps)


def cmd_train(args: argparse.Namespace) -> None:
    from schedgym.agents.ppo import TrainConfig, train

    if args.algo != "ppo":
        raise SchedgymError(f"--algo {args.algo}: only ppo is built so far")
    env_kwargs = json.loads(args.env_kwargs) if args.env_kwargs else {}
    if args.generator:
        env_kwargs["case"] = args.generator
    cfg = TrainConfig(
        env=args.env,
        out=args.out or f"policies/{args.env}-ppo",
        steps=args.steps,
        n_envs=args.n_envs,
        seed=args.seed,
        env_kwargs=env_kwargs,
        val_cases=[c for c in (args.val_cases or "").split(",") if c],
        eval_every=args.eval_every,
    )
    train(cfg, heuristic=args.baseline, resume=args.resume, progress=not args.no_progress)
    print(
        f"wrote {cfg.out}/model.zip, config.json, training.json"
        f"{', curve.png' if cfg.val_cases else ''}; TensorBoard: tensorboard --logdir runs"
    )


def cmd_planned(args: argparse.Namespace) -> None:
    raise SchedgymError(
        f"`schedgym {args.verb}` is not built yet; it arrives with {PLANNED[args.verb]}"
    )


# -- parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
        "  schedgym profile --check t.json\n"
        "  schedgym profile --check h100 --against ../shared/data/kernel-profiles/vidur",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--quick", action="store_true", help="a coarse grid (under a minute on a CPU)")
    s.add_argument("--out", help="where to write the measured table (JSON)")
    s.add_argument(
        "--check",
        metavar="TABLE",
        help="a shipped profile name (cpu, a100, h100, a40) or a table file to assess",
    )
    s.add_argument(
        "--against",
        metavar="VIDUR_DIR",
        help="with --check: also compare with every vidur measurement the table left out",
    )
    s.add_argument("--gpu", help="with --against: which vidur GPU folder (default: table name)")
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
        help="heuristic:NAME, bound:NAME, random, ppo:PATH or module:function",
    )
    s.add_argument("--case", help="instance, trace or buffer-set name, or file:PATH")
    s.add_argument("--workload", help="same as --case")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--plot", metavar="PNG", help="write the episode's picture here")
    s.add_argument("--gantt", metavar="PNG", help="same as --plot")
    s.add_argument("--json", metavar="OUT", help="write metrics and the episode record here")
    s.add_argument("--env-kwargs", metavar="JSON", help="extra env arguments, e.g. '{\"x\": 1}'")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser(
        "bench",
        help="measure simulator speed (steps/s) and cost-model speed",
        description="Print each environment's documented speed figures, measured "
        "now on this machine.",
    )
    s.add_argument("--env", help="one env (or 'hardware' for the cost model only)")
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser(
        "quickstart",
        help="the README's main job: the strongest pipeline so far",
        description="Price a model step on every shipped profile, run every available "
        "environment's heuristics on its default case, then train PPO briefly on random 6x6 "
        "job shops and compare it, greedy, with the dispatching rules on held-out instances.",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--train-steps",
        type=int,
        default=20_000,
        help="PPO steps for the job-shop demo (0: skip training)",
    )
    s.set_defaults(fn=cmd_quickstart)

    s = sub.add_parser(
        "train",
        help="train a MaskablePPO agent on an environment",
        description="Train MaskablePPO with the permutation-equivariant entity network on one "
        "environment. Each reset draws a fresh instance from --generator (the env's case "
        "argument); validation runs greedily on --val-cases; TensorBoard logs go to runs/ with "
        "the problem's metrics under sched/.",
        epilog="example:\n  schedgym train --env jobshop --generator random:15x15 "
        "--val-cases random:15x15:90001,random:15x15:90002 --baseline heuristic:mor "
        "--steps 200000 --out policies/jobshop-ppo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--env", required=True)
    s.add_argument("--algo", default="ppo", choices=["ppo"])
    s.add_argument(
        "--generator",
        "--workload",
        dest="generator",
        help="training case generator, e.g. random:15x15 (default: the env's)",
    )
    s.add_argument("--val-cases", help="comma-separated validation cases")
    s.add_argument("--baseline", help="heuristic to log beside the agent on the validation cases")
    s.add_argument("--steps", type=int, default=100_000)
    s.add_argument("--n-envs", type=int, default=2)
    s.add_argument("--eval-every", type=int, default=10_000, help="env steps between validations")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="output folder (default policies/ENV-ppo)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/last.zip")
    s.add_argument("--env-kwargs", metavar="JSON", help="extra env constructor arguments")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_train)

    for verb, where in PLANNED.items():
        s = sub.add_parser(
            verb,
            help=f"(not built yet: {where})",
            description=f"Not built yet: arrives with {where}.",
        )
        s.set_defaults(fn=cmd_planned)
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
