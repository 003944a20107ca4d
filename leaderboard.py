"""The policy leaderboard: results files in, ``LEADERBOARD.md`` and ``leaderboard/index.html`` out.

``build`` runs every baseline, bound and committed learned policy (``policies/*/config.json``) on
every suite whose env is available, reusing a committed results file when its inputs (schedgym
version, suite definition, policy, run settings, the source and data it depends on: see
``evaluate.inputs_of``) have not changed, and writes ``leaderboard/results/<suite>__<policy>.json``
(with the records beside it). The pages are then built from the results files alone; each is
loaded with ``evaluate.load_results``, which re-validates every record, and a file it refuses is
reported with the reason and never listed.

Per suite the page shows one table (ranked policies, then solvers, oracles and bounds apart: each
word means what DESIGN.md §3 says; a solver whose cases carry a proven lower bound, as
``bound_<metric>``, adds the bound row ``bound:<name>-lb`` built from the same file), the command
that reproduces it, the share of the gap between the best heuristic and the best bound that each
learned policy closes, score bars, and the env's picture: a Gantt chart (job shop, DAG), latency
CDFs (batching), hit rate against cache size (MoE) or the time x address placement (memory map).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import html
import inspect
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from schedgym import __version__
from schedgym.errors import SchedgymError
from schedgym.evaluate import (
    PACKAGE_ROOT,
    CaseJob,
    ResultsError,
    assemble,
    changed_inputs,
    inputs_of,
    load_results,
    make_executor,
    plan_jobs,
    records_path,
    run_jobs,
    run_settings,
    save_results,
)
from schedgym.policy import learned_kinds
from schedgym.registry import env_entry
from schedgym.report import fmt, format_table
from schedgym.suites import SUITES, Suite

DEFAULT_CASE_BUDGET_S = 10.0  # CP-SAT's time limit per case on the leaderboard
DEFAULT_SOLVER_THREADS = 1  # one solver thread per worker process: 2 workers fill 2 cores
PICTURES = {
    "jobshop": "Gantt chart",
    "dag": "Gantt chart",
    "batching": "latency CDFs",
    "moe": "hit rate against cache size",
    "memmap": "time x address placement",
}
_PROVENANCE = (
    "Every episode record behind a row was validated by its environment's independent "
    "`validate()` when it was run; where the records are present (`*.records.json.xz` beside "
    "a results file; they are not committed) they are validated again before the row is "
    "listed, and a row without them is listed only while its inputs (code, data, suite, "
    "settings) are exactly those it was run with."
)


# --- what runs --------------------------------------------------------------------------------


@dataclass
class Pair:
    """One policy on one suite: the results file it owns and what became of it."""

    suite: Suite
    policy: str  # the name results carry: "heuristic:mor", "ppo:policies/jobshop-ppo"
    spec: str  # the name it is resolved by (a learned policy's absolute path)
    path: Path
    status: str = "planned"  # planned | reused | ran | failed
    reason: str = ""


@dataclass
class BuildReport:
    pairs: list[Pair] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # results files not listed, with why
    notes: dict[str, list[str]] = field(default_factory=dict)  # suite -> policies not listed
    skipped_suites: dict[str, str] = field(default_factory=dict)  # suite -> why not run here
    wall_s: float = 0.0


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "." for c in text).strip(".")


def results_file(root: Path, suite: Suite, policy: str) -> Path:
    return root / "leaderboard" / "results" / f"{slug(suite.name)}__{slug(policy)}.json"


def learned_policies(env: str, root: Path) -> list[tuple[str, str]]:
    """``(name, spec)`` of the committed checkpoints ``policies/*/config.json`` trained on
    ``env`` (their ``config.json`` names it): ``("ppo:policies/jobshop-ppo", "ppo:/abs/...")``,
    of RLlib ones (``"algo": "rllib-ppo"`` in their ``config.json``) as ``rllib:``, of
    Gumbel MuZero ones (``"algo": "muzero"``, ``model.pt``) as ``muzero:...@N`` with ``N`` the
    simulations per decision they were saved to plan with, and of learned next-use eviction
    (``"algo": "nextuse"``, `schedgym.agents.nextuse`) as ``nextuse:``."""
    found = []
    for config in sorted((root / "policies").glob("*/config.json")):
        try:
            settings = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        algo = settings.get("algo")
        kind = {"rllib-ppo": "rllib", "muzero": "muzero", "nextuse": "nextuse"}.get(algo, "ppo")
        weights = {"ppo": "model.zip", "muzero": "model.pt", "nextuse": "model.zip"}.get(kind)
        if weights and not (config.parent / weights).is_file():
            continue
        budget = ""
        if kind == "muzero":
            budget = f"@{settings.get('eval_simulations') or settings['simulations']}"
        trained_on = settings.get("env")
        if trained_on and env_entry(trained_on).name == env:
            found.append(
                (
                    f"{kind}:policies/{config.parent.name}{budget}",
                    f"{kind}:{config.parent}{budget}",
                )
            )
    return found


def policies_for(env: str, root: Path) -> list[tuple[str, str]]:
    """Every policy the leaderboard runs on ``env``'s suites, as ``(name, spec)``."""
    names = ["random", *sorted(env_entry(env).policies())]
    return [(n, n) for n in names] + learned_policies(env, root)


def suite_policies(suite: Suite, root: Path) -> list[tuple[str, str]]:
    """``(name, spec)`` of every policy the leaderboard runs on ``suite``: its env's
    (`policies_for`) and the suite's ``extra`` policies, too costly to run on every suite:
    budgets of committed planners (``muzero:policies/X@N``, planning with another number of
    simulations than saved) and rollouts over committed PPO checkpoints
    (``rollout:policies/X``, ``rollout:policies/X@K``; `schedgym.agents.rollout`).

    Raises ``SchedgymError`` for an extra that is neither, or is listed twice."""
    found = policies_for(suite.env, root)
    listed = dict(found)
    saved = {n.rpartition("@")[0]: s.rpartition("@")[0] for n, s in found if "@" in n}
    for name in suite.extra:
        base, at, budget = name.rpartition("@")
        if not at:
            base, budget = name, ""
        elif not (budget.isascii() and budget.isdigit() and int(budget) >= 1):
            base = ""  # refused below
        kind, _, checkpoint = base.partition(":")
        if kind == "rollout" and f"ppo:{checkpoint}" in listed:
            spec = "rollout:" + listed[f"ppo:{checkpoint}"].partition(":")[2]
        elif budget and base in saved:
            spec = saved[base]
        else:
            raise SchedgymError(
                f"suite {suite.name}: extra policy {name!r} is neither NAME@N (N >= 1) of a "
                "planner nor rollout:PATH[@K] of a PPO checkpoint committed under policies/"
            )
        if name in listed:
            raise SchedgymError(f"suite {suite.name}: extra policy {name!r} is already listed")
        listed[name] = spec + (f"@{budget}" if budget else "")
        found.append((name, listed[name]))
    return found


def as_run(suite: Suite, policy: str) -> Suite:
    """``suite`` as ``policy``'s row runs it: a planner's (``muzero:``) row on a serving suite
    skips the capacity search (``capacity_rps``), which replays each case about 8 times at up
    to twice its load, hours of search per case on this 2-core machine; its score, goodput at
    the suite's own load, is unaffected. Any other row runs the suite as it is."""
    if suite.capacity_slo is not None and policy.startswith("muzero:"):
        return replace(suite, capacity_slo=None)
    return suite


def plan(root: Path, suites: Iterable[Suite], report: BuildReport) -> list[Pair]:
    pairs = []
    for suite in suites:
        why = suite.unavailable()
        if why:
            report.skipped_suites[suite.name] = why
            continue
        for name, spec in suite_policies(suite, root):
            if name in suite.skip:
                continue
            pairs.append(Pair(as_run(suite, name), name, spec, results_file(root, suite, name)))
    return pairs


def build(
    root: Path = PACKAGE_ROOT,
    *,
    envs: Sequence[str] | None = None,
    suites: Sequence[str] | None = None,
    catalogue: Mapping[str, Suite] = SUITES,
    workers: int = 2,
    case_budget_s: float = DEFAULT_CASE_BUDGET_S,
    solver_threads: int = DEFAULT_SOLVER_THREADS,
    rerun: bool = False,
    run: bool = True,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    ray: str | None = None,
) -> BuildReport:
    """Bring the results of the selected suites (all by default, or those of ``envs``, or the
    named ``suites``) up to date, then write LEADERBOARD.md and leaderboard/index.html from every
    results file under ``root/leaderboard/results``. ``run=False`` only renders, and raises
    ``SchedgymError`` when that folder holds no results files (an empty board). With ``ray``
    (a cluster address, ``""`` for a local instance) every case is a Ray task of
    ``solver_threads`` CPUs instead of a job for ``workers`` local processes."""
    start = time.perf_counter()
    report = BuildReport()
    selected = [
        s
        for s in catalogue.values()
        if (not envs or s.env in {env_entry(e).name for e in envs})
        and (not suites or s.name in suites)
    ]
    unknown = set(suites or ()) - set(catalogue)
    if unknown:
        raise SchedgymError(f"unknown suite(s) {', '.join(sorted(unknown))}")
    folder = root / "leaderboard" / "results"
    if not run and not any(folder.glob("*.json")):
        # rendering nothing would overwrite the pages with an empty board
        raise SchedgymError(
            f"no results files in {folder} to build the pages from (is {root} a checkout "
            "with a leaderboard? run without --no-run to make them)"
        )
    loaded: dict[Path, dict[str, Any]] = {}
    if run:
        pairs = plan(root, selected, report)
        report.pairs = pairs
        todo = _reuse(pairs, loaded, rerun, case_budget_s, solver_threads, log)
        with make_executor(workers, ray, num_cpus=solver_threads) as pool:
            where = "as Ray tasks" if ray is not None else f"{workers} workers"
            _run(todo, pool, where, case_budget_s, solver_threads, progress, loaded, log)
        _prune(root, selected, pairs, log)
    listed = _load_all(root, catalogue, loaded, report, log)
    for name, why in report.skipped_suites.items():
        log(f"{name}: not run here: {why}")
    render(root, catalogue, listed, report, log=log)
    report.wall_s = time.perf_counter() - start
    return report


def _reuse(
    pairs: list[Pair],
    loaded: dict[Path, dict[str, Any]],
    rerun: bool,
    case_budget_s: float,
    solver_threads: int,
    log: Callable[[str], None],
) -> list[Pair]:
    """Keep the pairs whose results file exists, loads, and has the inputs a run would have
    now; return the others."""
    todo = []
    for pair in pairs:
        if rerun or not pair.path.exists():
            todo.append(pair)
            continue
        jobs = plan_jobs(
            pair.suite, pair.spec, case_budget_s=case_budget_s, solver_threads=solver_threads
        )
        want = inputs_of(pair.suite, pair.policy, run_settings(jobs), spec=pair.spec)
        try:
            had = json.loads(pair.path.read_text()).get("inputs", {})
            if had.get("digest") != want["digest"]:
                log(
                    f"{pair.suite.name} {pair.policy}: {changed_inputs(had, want)} changed; "
                    "running it again"
                )
                todo.append(pair)
                continue
            results = load_results(pair.path, suite=pair.suite, spec=pair.spec)
        except (ResultsError, OSError, json.JSONDecodeError, AttributeError) as exc:
            log(f"{exc}; running it again")
            todo.append(pair)
            continue
        pair.status = "reused"
        loaded[pair.path] = results
    return todo


def _run(
    todo: list[Pair],
    pool: cf.Executor,
    where: str,
    case_budget_s: float,
    solver_threads: int,
    progress: bool,
    loaded: dict[Path, dict[str, Any]],
    log: Callable[[str], None],
) -> None:
    """Run the pairs' cases in one pool; each pair's results are written as soon as its last
    case is in, so the records of finished pairs are not held."""
    if not todo:
        return
    # solvers and bounds spend their whole budget: start them first so they do not finish last
    todo = sorted(todo, key=lambda p: not p.policy.startswith(("solver:", "bound:")))
    jobs: list[CaseJob] = []
    owner: list[int] = []  # job index -> index into todo
    for k, pair in enumerate(todo):
        mine = plan_jobs(
            pair.suite, pair.spec, case_budget_s=case_budget_s, solver_threads=solver_threads
        )
        jobs += mine
        owner += [k] * len(mine)
    slots: list[list[dict[str, Any] | None]] = [[None] * len(p.suite.cases) for p in todo]
    first = {k: owner.index(k) for k in range(len(todo))}
    left = [len(p.suite.cases) for p in todo]

    def finish(k: int) -> None:
        pair = todo[k]
        if pair.status == "failed":
            return
        settings = run_settings(jobs[first[k] : first[k] + len(pair.suite.cases)])
        results = assemble(pair.suite, pair.policy, slots[k], settings=settings, spec=pair.spec)
        slots[k] = []
        save_results(results, pair.path)
        results.pop("records")
        results["records_file"] = records_path(pair.path).name
        loaded[pair.path] = results
        pair.status = "ran"

    def on_result(i: int, output: dict[str, Any]) -> None:
        k = owner[i]
        if todo[k].status == "failed":
            return
        slots[k][i - first[k]] = output
        left[k] -= 1
        if not left[k]:
            finish(k)

    def on_error(i: int, exc: BaseException) -> None:
        k, job = owner[i], jobs[i]
        pair = todo[k]
        if pair.status != "failed":
            pair.status, pair.reason = "failed", f"case {job.case!r} (seed {job.seed}): {exc}"
            log(f"{pair.suite.name} {pair.policy}: failed, not listed: {pair.reason}")
            for stale in (pair.path, records_path(pair.path)):
                stale.unlink(missing_ok=True)
        slots[k] = []

    log(f"running {len(todo)} policy x suite results, {len(jobs)} episodes, {where}")
    run_jobs(jobs, executor=pool, progress=progress, on_error=on_error, on_result=on_result)


def _prune(
    root: Path, selected: list[Suite], pairs: list[Pair], log: Callable[[str], None]
) -> None:
    """Remove results of the selected suites that no planned policy owns any more (a policy
    renamed or deleted, a checkpoint removed)."""
    owned = {p.path for p in pairs}
    folder = root / "leaderboard" / "results"
    for suite in selected:
        if suite.unavailable():
            continue
        for path in folder.glob(f"{slug(suite.name)}__*.json"):
            if path not in owned:
                log(f"removing {path.name}: no such policy on {suite.name} any more")
                path.unlink()
                records_path(path).unlink(missing_ok=True)


def _load_all(
    root: Path,
    catalogue: Mapping[str, Suite],
    loaded: dict[Path, dict[str, Any]],
    report: BuildReport,
    log: Callable[[str], None],
) -> dict[str, list[dict[str, Any]]]:
    """Every listable results file, by suite; refusals go to ``report.refused``. Results of a
    suite that cannot run here (env or reference data absent) cannot be checked either: they
    are left alone, and the suite is shown as not run here."""
    by_suite: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((root / "leaderboard" / "results").glob("*.json")):
        results = loaded.get(path)
        if results is None:
            try:
                suite_name = json.loads(path.read_text()).get("suite")
            except (OSError, json.JSONDecodeError, AttributeError):
                suite_name = None
            suite = catalogue.get(suite_name) if isinstance(suite_name, str) else None
            why = suite.unavailable() if suite else None
            if suite and why:
                report.skipped_suites.setdefault(suite.name, why)
                continue
            try:
                if suite is None:
                    raise ResultsError(
                        f"{path}: refused: not a suite of this leaderboard ({suite_name!r})"
                    )
                spec = dict(suite_policies(suite, root)).get(
                    json.loads(path.read_text()).get("policy", "")
                )
                results = load_results(path, suite=suite, spec=spec)
            except ResultsError as exc:
                report.refused.append(str(exc))
                log(str(exc))
                continue
        results["_path"] = path
        rows = by_suite.setdefault(results["suite"], [])
        rows.append(results)
        proven = proven_bound_row(results)
        if proven is not None:
            rows.append(proven)
    return by_suite


def proven_bound_row(results: dict[str, Any]) -> dict[str, Any] | None:
    """The bound row a solver's results imply: when every case's metrics carry the lower bound
    the solver proved as ``bound_<score metric>`` (CP-SAT's ``objective_bound``, re-checked by
    the env's ``validate``), a row ``bound:<name>-lb`` of kind ``bound`` scoring their mean; the
    key metrics likewise where every case has them. None for any other results."""
    if results["kind"] != "solver" or not results["cases"]:
        return None
    summary = results["summary"]

    def mean(metric: str) -> float | None:
        values = [c["metrics"].get(f"bound_{metric}") for c in results["cases"]]
        if not all(isinstance(v, int | float) for v in values):
            return None
        return sum(values) / len(values)

    score = mean(summary["score_metric"])
    if score is None:
        return None
    means = {k: v for k in summary.get("means", {}) if (v := mean(k)) is not None}
    name = results["policy"].partition(":")[2]
    return {
        **results,
        "policy": f"bound:{name}-lb",
        "kind": "bound",
        "derived_from": results["policy"],
        "summary": {
            **summary,
            "score": score,
            "means": means,
            "decision_median_s": None,
            "decision_p99_s": None,
        },
    }


# --- scores, ranks, gap closed ----------------------------------------------------------------


# Kinds listed apart from the ranked policies, in this order (DESIGN.md §3).
APART = ("solver", "oracle", "bound")


def ranked(rows: list[dict[str, Any]], lower_is_better: bool) -> list[dict[str, Any]]:
    """Policies best first, then solvers, oracles and bounds, each best first (DESIGN.md §3:
    they are shown apart)."""

    def key(r: dict[str, Any]) -> tuple[int, float, str]:
        s = r["summary"]["score"]
        group = APART.index(r["kind"]) + 1 if r["kind"] in APART else 0
        return (group, s if lower_is_better else -s, r["policy"])

    return sorted(rows, key=key)


GAP_TOLERANCE = 1e-3


def gap_closed(
    learned: float, heuristic: float, bound: float, lower_is_better: bool
) -> float | None:
    """Share of the gap between the best heuristic and the best bound that ``learned``
    closes: 1 reaches the bound, 0 the heuristic, negative is worse than the heuristic. None
    when the bound is not better than the heuristic by more than 0.1 % of the larger (no gap to
    close: on a gap of float noise the share would be any number)."""
    sign = 1.0 if lower_is_better else -1.0
    gap = sign * (heuristic - bound)
    if not gap > GAP_TOLERANCE * max(abs(heuristic), abs(bound)):
        return None
    return sign * (heuristic - learned) / gap


def best(rows: list[dict[str, Any]], kind: str, lower_is_better: bool) -> dict[str, Any] | None:
    """The best-scoring row of ``kind`` (``random`` aside); for bounds the tightest, the one
    nearest the policies (the largest lower bound where lower is better): every bound is a
    proven limit, and the tightest leaves the truest gap."""
    mine = [r for r in rows if r["kind"] == kind and r["policy"] != "random"]
    if not mine:
        return None
    order = ranked(mine, lower_is_better)
    return order[-1] if kind == "bound" else order[0]


# --- rendering --------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """Seconds in the unit that reads best: '2.96 µs', '1.05 ms', '-' for none."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _commit(results: dict[str, Any]) -> str:
    return f"{results.get('commit', '-')}{'+' if results.get('dirty') else ''}"


def suite_table(
    suite: Suite, rows: list[dict[str, Any]], stale: set[Path]
) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows of a suite's table (policies ranked, then bounds)."""
    lib = suite.lower_is_better
    order = ranked(rows, lib)
    h = best(rows, "heuristic", lib)
    b = best(rows, "bound", lib)
    learned = any(r["kind"] == "learned" for r in rows)
    headers = ["#", "policy", "kind", "score", *suite.key_metrics]
    if learned:
        headers.append("gap closed")
    headers += ["decision (median)", "commit", "date"]
    table, rank = [], 0
    for r in order:
        if r["kind"] not in APART:
            rank += 1
        means = r["summary"].get("means", {})
        row: list[Any] = [
            r["kind"] if r["kind"] in APART else rank,
            r["policy"] + (" †" if r["_path"] in stale else ""),
            r["kind"],
            r["summary"]["score"],
            *[means.get(k) for k in suite.key_metrics],
        ]
        if learned:
            share = (
                gap_closed(r["summary"]["score"], h["summary"]["score"], b["summary"]["score"], lib)
                if r["kind"] == "learned" and h and b
                else None
            )
            row.append("-" if share is None else f"{share:.1%}")
        row += [
            format_duration(r["summary"].get("decision_median_s")),
            _commit(r),
            r.get("date", "-"),
        ]
        table.append(row)
    return headers, table


def _commands(suite: Suite, results: list[dict[str, Any]]) -> list[str]:
    solvers = [r for r in results if r["policy"].startswith(("solver:", "bound:"))]
    s = solvers[0].get("settings", {}) if solvers else {}
    budget = s.get("case_budget_s")
    threads = s.get("solver_threads")
    opts = (f" --case-budget {fmt(budget)}" if budget is not None else "") + (
        f" --solver-threads {threads}" if threads is not None else ""
    )
    return [
        f"schedgym leaderboard --suite {suite.name} --rerun{opts}",
        f"schedgym evaluate --suite {suite.name} --policy POLICY{opts} --workers 2",
    ]


def _gap_lines(suite: Suite, rows: list[dict[str, Any]]) -> list[str]:
    lib = suite.lower_is_better
    h, b = best(rows, "heuristic", lib), best(rows, "bound", lib)
    if h is None or b is None:
        return []
    line = (
        f"Best heuristic {h['policy']} {fmt(h['summary']['score'])}, best bound "
        f"{b['policy']} {fmt(b['summary']['score'])}"
    )
    if gap_closed(h["summary"]["score"], h["summary"]["score"], b["summary"]["score"], lib) is None:
        line += " (the bound is not better here: no gap to close)"
    if not any(r["kind"] == "learned" for r in rows):
        if any(name.partition(":")[0] in learned_kinds() for name in suite.skip):
            line += ". The committed learned policies do not run on this suite (why: Not listed)"
        else:
            line += (
                ". No learned policy for this env is committed yet (policies/*/config.json); "
                "when one is, its row shows the share of this gap it closes"
            )
    return [line + "."]


def render(
    root: Path,
    catalogue: Mapping[str, Suite],
    listed: dict[str, list[dict[str, Any]]],
    report: BuildReport,
    *,
    log: Callable[[str], None] = print,
) -> None:
    """Write LEADERBOARD.md, leaderboard/index.html and the images from the listed results."""
    stale = _stale(root, catalogue, listed)
    # a suite's skips belong to the catalogue, not to this run: rendering after a run of one env
    # (or none, --no-run) still names every suite's unlisted policies
    for suite in catalogue.values():
        report.notes[suite.name] = [
            f"{name}: {suite.skip[name]}"
            for name, _ in policies_for(suite.env, root)
            if name in suite.skip
        ]
    img = root / "leaderboard" / "img"
    img.mkdir(parents=True, exist_ok=True)
    images = _pictures(root, catalogue, listed, img, log)
    md = _markdown(catalogue, listed, report, stale)
    (root / "LEADERBOARD.md").write_text(md)
    (root / "leaderboard" / "index.html").write_text(
        _html(catalogue, listed, report, stale, images)
    )


def _stale(
    root: Path, catalogue: Mapping[str, Suite], listed: dict[str, list[dict[str, Any]]]
) -> set[Path]:
    """Listed results whose inputs differ from what a run now would have (marked †)."""
    out = set()
    for name, rows in listed.items():
        suite = catalogue[name]
        for r in rows:
            policy = r.get("derived_from", r["policy"])
            spec = dict(suite_policies(suite, root)).get(policy, policy)
            s = r.get("settings", {})
            want = inputs_of(as_run(suite, policy), policy, s, spec=spec)
            if r["inputs"].get("digest") != want["digest"]:
                out.add(r["_path"])
    return out


def headline(
    catalogue: Mapping[str, Suite], listed: dict[str, list[dict[str, Any]]]
) -> tuple[list[str], list[list[Any]]]:
    """One row per listed suite: its best heuristic, best bound and best learned policy."""
    rows = []
    for name, suite in catalogue.items():
        got = listed.get(name)
        if not got:
            continue
        lib = suite.lower_is_better
        h, b, learned = (best(got, k, lib) for k in ("heuristic", "bound", "learned"))

        def cell(r: dict[str, Any] | None) -> str:
            return "-" if r is None else f"{r['policy']} ({fmt(r['summary']['score'])})"

        share = (
            gap_closed(
                learned["summary"]["score"], h["summary"]["score"], b["summary"]["score"], lib
            )
            if learned and h and b
            else None
        )
        rows.append(
            [
                name,
                suite.score_metric + (" ↓" if lib else " ↑"),
                cell(h),
                cell(b),
                cell(learned),
                "-" if share is None else f"{share:.1%}",
            ]
        )
    return ["suite", "score", "best heuristic", "best bound", "best learned", "gap closed"], rows


def _markdown(
    catalogue: Mapping[str, Suite],
    listed: dict[str, list[dict[str, Any]]],
    report: BuildReport,
    stale: set[Path],
) -> str:
    out = [
        "# schedgym leaderboard",
        "",
        f"Generated by `schedgym leaderboard` (schedgym {__version__}) from the results files in "
        f"[leaderboard/results](leaderboard/results). {_PROVENANCE} Rules, suites and seeds: "
        "[docs/leaderboard.md](docs/leaderboard.md). Plots: "
        "[leaderboard/index.html](leaderboard/index.html). Rebuild everything from a fresh clone "
        "with `scripts/rebuild_leaderboard.sh`.",
        "",
        "Scores are means over a suite's cases (↓: lower is better, ↑: higher). Listed apart, "
        "below the ranked policies: solvers (large compute for a feasible answer; a time-limited "
        "solver's score is an upper bound on the optimum, not a bound), oracles (they see the "
        "future without being optimal) and bounds (proven limits no policy can pass). "
        "*gap closed*: the share of the gap between the best heuristic and the best bound that a "
        "learned policy closes. Decision: median wall time of one `act` call (solvers and bounds "
        "that solve whole cases make none). Commit: the checkout a row was run from (+: with "
        "uncommitted changes).",
        "",
        "## Headline",
        "",
        format_table(*headline(catalogue, listed), markdown=True),
        "",
    ]
    for name, suite in catalogue.items():
        rows = listed.get(name)
        if name in report.skipped_suites and not rows:
            out += [f"## {name}", "", f"*Not run here: {report.skipped_suites[name]}.*", ""]
            continue
        if not rows:
            continue
        headers, table = suite_table(suite, rows, stale)
        out += [
            f"## {name} (v{suite.version})",
            "",
            f"{suite.about}. {len(suite.cases)} case(s); score: {suite.score_name}.",
            "",
            format_table(headers, table, markdown=True),
            "",
        ]
        out += [f"{line}" for line in _gap_lines(suite, rows)]
        notes = report.notes.get(name, []) + [
            f"{p.policy}: failed ({p.reason})"
            for p in report.pairs
            if p.suite.name == name and p.status == "failed"
        ]
        if notes:
            out += ["", "Not listed: " + "; ".join(notes) + "."]
        if any(r["_path"] in stale for r in rows):
            out += [
                "",
                "†: its inputs changed since it was run; `schedgym leaderboard --suite "
                f"{name}` runs it again.",
            ]
        out += ["", "Reproduce:", "", "```", *_commands(suite, rows), "```", ""]
    return "\n".join(out).rstrip() + "\n"


# --- pictures ---------------------------------------------------------------------------------


def _pictures(
    root: Path,
    catalogue: Mapping[str, Suite],
    listed: dict[str, list[dict[str, Any]]],
    img: Path,
    log: Callable[[str], None],
) -> dict[str, list[tuple[str, str]]]:
    """``{suite: [(relative path, caption), ...]}``; an image is redrawn only when the results
    it shows changed (``img/manifest.json`` keeps their digests)."""
    manifest_path = img / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        manifest = {}
    out: dict[str, list[tuple[str, str]]] = {}
    keep = {"manifest.json"}
    for name, rows in listed.items():
        suite = catalogue[name]
        digest = hashlib.sha256(
            "|".join(sorted(r["inputs"]["digest"] for r in rows)).encode()
        ).hexdigest()[:16]
        base = slug(name)
        images = [
            (f"{base}-scores.png", f"{name}: scores"),
            (f"{base}-picture.png", f"{name}: {PICTURES.get(suite.env, 'picture')}"),
        ]
        if manifest.get(base) != digest or not all((img / f).is_file() for f, _ in images):
            _score_bars(suite, rows, img / images[0][0])
            drawn = _picture(suite, rows, img / images[1][0], log)
            if not drawn:
                (img / images[1][0]).unlink(missing_ok=True)
            manifest[base] = digest if drawn else ""
        images = [(f, c) for f, c in images if (img / f).is_file()]
        keep.update(f for f, _ in images)
        out[name] = [(f"img/{f}", c) for f, c in images]
    for f in img.iterdir():
        if f.name not in keep:
            f.unlink()
    manifest = {k: v for k, v in manifest.items() if any(f.startswith(k) for f in keep)}
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return out


def shrink_png(path: Path, max_width: int = 1000, colours: int = 64) -> None:
    """Downscale and palette-quantise a PNG so committed images stay small."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.width > max_width:
            im = im.resize(
                (max_width, round(im.height * max_width / im.width)), Image.Resampling.LANCZOS
            )
        im = im.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        im.save(path, optimize=True)


def _score_bars(suite: Suite, rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = ranked(rows, suite.lower_is_better)
    colour = {
        "heuristic": "tab:blue",
        "learned": "tab:green",
        "solver": "tab:orange",
        "oracle": "tab:red",
        "bound": "0.6",
    }
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(order) + 1.1))
    y = range(len(order))[::-1]
    scores = [r["summary"]["score"] for r in order]
    ax.barh(list(y), scores, color=[colour.get(r["kind"], "tab:purple") for r in order])
    ax.set_yticks(list(y), [r["policy"] for r in order], fontsize=8)
    for yi, s in zip(y, scores, strict=True):
        ax.text(s, yi, f" {fmt(s)}", va="center", fontsize=7)
    positive = [v for v in scores if v > 0]
    if positive and len(positive) == len(scores) and max(positive) > 50 * min(positive):
        ax.set_xscale("log")  # random and FCFS can be 100x off: keep the good ones visible
    ax.set_xlabel(suite.score_name, fontsize=8)
    ax.set_title(f"{suite.name} (orange: solvers, red: oracles, grey: bounds)", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.margins(x=0.18)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    shrink_png(path)


def _call_plot(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    accepted = inspect.signature(fn).parameters
    fn(*args, **{k: v for k, v in kwargs.items() if k in accepted})


def _picture(
    suite: Suite, rows: list[dict[str, Any]], path: Path, log: Callable[[str], None]
) -> bool:
    """Draw the env's picture of the suite's first case; False (and why, to ``log``) when none
    could be drawn, e.g. when the records it needs are not here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entry = env_entry(suite.env)
    module = entry.module("record")
    first = suite.cases[0]
    order = ranked(rows, suite.lower_is_better)
    try:
        if suite.env == "moe":
            _hit_rate_picture(entry.module("env"), suite, order, path)
        elif suite.env == "batching":
            chosen = [r for r in order if r["policy"] != "random"]
            _call_plot(
                module.plot_record,
                [_first_record(suite, r) for r in chosen],
                str(path),
                labels=[r["policy"] for r in chosen],
            )
        else:  # the best policy's schedule or placement (bound records may hold none)
            top, record = _best_record(suite, [r for r in order if r["kind"] != "bound"], log)
            _call_plot(
                module.plot_record,
                record,
                str(path),
                title=f"{suite.name}: {top['policy']} on {first.case}",
            )
    except (SchedgymError, ValueError, KeyError, StopIteration) as exc:
        log(f"{suite.name}: no {PICTURES.get(suite.env, 'picture')} drawn ({exc})")
        return False
    finally:
        plt.close("all")
    shrink_png(path)
    return True


def _hit_rate_picture(module: Any, suite: Suite, order: list[dict[str, Any]], path: Path) -> None:
    # The curve reruns policies on the simulator's fast path, which learned policies (they read
    # observations) do not take; the three best heuristics and Belady's MIN are drawn.
    heuristics = [
        r["policy"] for r in order if r["kind"] == "heuristic" and r["policy"] != "random"
    ][:3]
    bounds = [r["policy"] for r in order if r["policy"] == "oracle:belady"]
    first = suite.cases[0]
    module.plot_hit_rate_curve(
        heuristics + bounds, path, first.case, first.seed, **dict(suite.env_kwargs)
    )


def _best_record(
    suite: Suite, order: list[dict[str, Any]], log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first of the ranked rows ``order`` whose records file is here, and its first case's
    record. Records files are not committed (leaderboard/.gitignore), so a checkout that reran
    only some rows holds no records for the others; each one passed over is logged, and the
    picture's title names the policy drawn. Raises ``ResultsError`` when none is here."""
    for row in order:
        try:
            return row, _first_record(suite, row)
        except ResultsError as exc:
            log(f"{suite.name}: the picture passes over {row['policy']} ({exc})")
    raise ResultsError("no listed row's records file is here")


def _first_record(suite: Suite, results: dict[str, Any]) -> dict[str, Any]:
    # the records were validated when the file was listed; only their digests are checked here
    full = load_results(results["_path"], check_records=False, keep_records=True, suite=suite)
    return full["records"][0]


# --- HTML -------------------------------------------------------------------------------------


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bound td{color:#666;background:#fafafa}tr.learned td{background:#f1faf1}
figure{display:inline-block;margin:.4em .6em .4em 0;vertical-align:top}
figcaption{font-size:.8em;color:#555}img{max-width:100%;border:1px solid #eee}
code,pre{background:#f6f6f6}pre{padding:.5em;overflow-x:auto}
#broken-images{color:#b00}
"""

# Marks the page when an image fails to load, so a broken picture is visible to a reader (and
# to the test that renders the page in headless Chromium).
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-images-broken', String(bad.length));
  if (bad.length) {
    var p = document.getElementById('broken-images');
    p.hidden = false;
    p.textContent = bad.length + ' image(s) failed to load: ' +
      bad.map(function (i) { return i.getAttribute('src'); }).join(', ');
  }
});
"""


def _code_spans(text: str) -> str:
    """Markdown's `code` as HTML (on already escaped text)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _html_table(headers: list[str], rows: list[list[Any]], kinds: list[str] | None = None) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{kinds[i]}"' if kinds else ""
        cells = "".join(
            f'<td class="num">{esc(fmt(v))}</td>'
            if isinstance(v, int | float) and not isinstance(v, bool)
            else f"<td>{esc(fmt(v))}</td>"
            for v in row
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html(
    catalogue: Mapping[str, Suite],
    listed: dict[str, list[dict[str, Any]]],
    report: BuildReport,
    stale: set[Path],
    images: dict[str, list[tuple[str, str]]],
) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>schedgym leaderboard</title><style>{_CSS}</style>",
        f"<script>{_SCRIPT}</script></head><body>",
        "<h1>schedgym leaderboard</h1>",
        "<p id=broken-images hidden></p>",
        f"<p>schedgym {esc(__version__)}. Built from the results files in <code>leaderboard/"
        f"results</code>. {_code_spans(esc(_PROVENANCE))} Scores are means over a suite's cases; "
        "bounds are "
        "listed apart below the ranked policies. Rules and suites: "
        "<code>docs/leaderboard.md</code>.</p>",
        "<h2 id=headline>Headline</h2>",
        _html_table(*headline(catalogue, listed)),
    ]
    for name, suite in catalogue.items():
        rows = listed.get(name)
        anchor = slug(name)
        if name in report.skipped_suites and not rows:
            parts.append(
                f"<section id='{anchor}'><h2>{esc(name)}</h2><p><em>Not run here: "
                f"{esc(report.skipped_suites[name])}.</em></p></section>"
            )
            continue
        if not rows:
            continue
        headers, table = suite_table(suite, rows, stale)
        kinds = [r[2] for r in table]
        parts += [
            f"<section id='{anchor}' class=suite><h2>{esc(name)} (v{suite.version})</h2>",
            f"<p>{esc(suite.about)}. {len(suite.cases)} case(s); score: "
            f"{esc(suite.score_name)}.</p>",
            _html_table(headers, table, kinds),
            *(f"<p>{esc(line)}</p>" for line in _gap_lines(suite, rows)),
            "<pre>" + esc("\n".join(_commands(suite, rows))) + "</pre>",
            *(
                f"<figure><img src='{esc(src)}' alt='{esc(cap)}' loading=eager>"
                f"<figcaption>{esc(cap)}</figcaption></figure>"
                for src, cap in images.get(name, [])
            ),
            "</section>",
        ]
    parts.append("</body></html>\n")
    return "\n".join(parts)
