"""Score a MuZero checkpoint's planner with other search settings on validation cases.

How the committed planners' settings were chosen (docs/results.md): the checkpoint's network,
its planner with ``--rollout``/``--simulations``/``--max-considered`` replaced (or its prior
made uniform, ``--uniform-prior``), one
deterministic episode per case, the mean of the env's metric. Use validation cases only, never
the test suites' (suites.py); each case is ``CASE`` or ``CASE@SEED`` (the reset seed).

    .venv/bin/python scripts/validate_planner.py policies/jobshop-muzero --env jobshop \\
        --metric lb_gap --cases random:15x15:20000,random:15x15:20001 \\
        --rollout heuristic:mwkr,heuristic:mor --simulations 16
    .venv/bin/python scripts/validate_planner.py policies/dag-muzero --env dag --metric slr \\
        --cases daggen:30@20000,daggen:30@20001 --rollout heuristic:peft,heuristic:heft
    .venv/bin/python scripts/validate_planner.py policies/dag-online-muzero --env dag \\
        --metric mean_slowdown --cases random:40@500000,random:40@500001 \\
        --env-kwargs '{"mode": "online", "jobs": 10, "load": 0.8, "platform": "hetero"}'
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from schedgym.agents.muzero.policy import MuZeroPolicy, load_checkpoint
from schedgym.agents.muzero.search import SearchConfig
from schedgym.agents.muzero.train import uniform_prior
from schedgym.episode import make_env, run_episode
from schedgym.errors import SchedgymError


def json_object(text: str) -> dict:
    """argparse type: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, help="a MuZero training folder or .pt file")
    parser.add_argument("--env", required=True)
    parser.add_argument("--metric", required=True, help="the episode metric to average")
    parser.add_argument("--cases", required=True, help="comma-separated CASE or CASE@SEED")
    parser.add_argument("--rollout", help="rollout policies, comma-separated (default: saved)")
    parser.add_argument("--simulations", type=int, help="per decision (default: saved)")
    parser.add_argument("--max-considered", type=int, help="root actions (default: saved)")
    parser.add_argument(
        "--fortify",
        choices=("on", "off"),
        help="follow the best sequence found so far (fortified rollout; default: saved)",
    )
    parser.add_argument(
        "--uniform-prior",
        action="store_true",
        help="zero the policy head (every legal action equally likely): what the learned "
        "prior adds to the search",
    )
    parser.add_argument(
        "--env-kwargs", type=json_object, default={}, help="env arguments, a JSON object"
    )
    args = parser.parse_args()
    try:
        make_env(args.env, **args.env_kwargs).close()
    except (SchedgymError, TypeError) as err:  # TypeError: an argument the env does not take
        parser.error(f"--env-kwargs: {err}")
    try:
        score(args, parser)
    except SchedgymError as err:
        parser.error(str(err))


def score(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Play every case with the planner's settings and print the mean metric."""
    net, data = load_checkpoint(args.checkpoint)
    if args.uniform_prior:
        uniform_prior(net)
    planner = dict(data["planner"])
    if args.rollout:
        planner["rollout"] = args.rollout
    if args.fortify:
        planner["fortify"] = args.fortify == "on"
    search = SearchConfig(**data["search"])
    for field in ("simulations", "max_considered"):
        if getattr(args, field) is not None:
            search = replace(search, **{field: getattr(args, field)})
    try:
        policy = MuZeroPolicy(
            name=f"muzero:{args.checkpoint}",
            net=net,
            planner=planner,
            search=search,
            order=data.get("order"),
        )
    except ValueError as err:  # settings the planner refuses (--fortify on a learned model)
        parser.error(str(err))
    scores, start = [], time.perf_counter()
    for spec in tqdm(args.cases.split(","), desc="cases"):
        case, _, seed = spec.partition("@")
        result = run_episode(
            args.env, policy, case=case, seed=int(seed or 0), env_kwargs=args.env_kwargs
        )
        if args.metric not in result.metrics:
            parser.error(f"--metric {args.metric}: {case} reports {', '.join(result.metrics)}")
        scores.append(float(result.metrics[args.metric]))
    print(
        f"{args.checkpoint} rollout={planner.get('rollout')} @{search.simulations} "
        f"fortify={bool(planner.get('fortify'))} "
        f"considered={search.max_considered}{' uniform-prior' if args.uniform_prior else ''}: "
        f"mean {args.metric} {np.mean(scores):.4f} "
        f"over {len(scores)} cases in {time.perf_counter() - start:.0f} s; "
        + " ".join(f"{x:.4g}" for x in scores)
    )


if __name__ == "__main__":
    main()
