"""One runner for every environment and policy: an episode in, validated metrics out; a suite in,
a results JSON out.

Each env module (``schedgym.envs.<room>``) provides, beside its Gymnasium class:

* ``validate(record) -> dict``: re-checks an episode record from scratch (precedence, capacity,
  overlap, conservation) and returns the metrics it recomputed; raises ``RecordError``;
* ``plot_record(record, path, **kw) -> None``: the picture a person wants (Gantt, CDF, placement);
* ``bench() -> list[dict]``: its rows for ``schedgym bench``.

A ``solver``, ``oracle`` or ``bound`` policy may instead provide ``solve(env, case, seed) ->
(metrics, record)``.

``evaluate(env, policy, suite, workers)`` runs a policy on every case of a suite
(``schedgym.suites``) in parallel local processes and returns the results JSON of DESIGN.md §3;
every episode record is validated before its case counts. ``save_results`` writes it (the records
go to a compressed file beside it) and ``load_results`` reads one back, refusing, with the
reason, a file from another schedgym version, of another suite version, or whose records do not
validate or do not give its metrics. With ``ray=ADDRESS`` (``""``: a local Ray instance) the
cases run as Ray tasks instead (DESIGN.md §6, ``RayExecutor``); Ray retries a case whose worker
died, and the results are those of a local run.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import datetime as dt
import functools
import hashlib
import importlib.util
import json
import lzma
import math
import multiprocessing
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schedgym import __version__
from schedgym.episode import check_record, run_episode
from schedgym.errors import SchedgymError
from schedgym.policy import BASELINE_KINDS, Policy, learned_kinds, resolve_policy
from schedgym.registry import env_entry
from schedgym.suites import Suite, file_digest

RESULTS_FORMAT = "schedgym-results/1"
PACKAGE_ROOT = Path(__file__).resolve().parent
# Attributes through which solver bounds take a time limit and a thread count (CP-SAT's
# ``max_time_in_seconds`` and ``num_workers`` in every baselines module).
_BUDGET_ATTRS = ("time_limit_s",)
_THREAD_ATTRS = ("num_workers", "workers")


class ResultsError(SchedgymError):
    """A results file that cannot be listed; the message names the file and the reason."""


# --- a suite's cases, in parallel processes ------------------------------------------------------


@dataclass(frozen=True)
class CaseJob:
    """One case of one policy on one suite, as a worker process receives it."""

    env: str
    policy: str
    case: str
    seed: int
    env_kwargs: dict[str, Any]
    case_budget_s: float | None = None  # solvers' time limit per case
    solver_threads: int | None = None  # solvers' threads (None: the policy's default)
    capacity_slo: float | None = None  # batching: also find the capacity at this attainment


def is_learned(policy: str) -> bool:
    """Whether ``policy`` names a checkpoint of a registered learned kind (``ppo:PATH``)."""
    return policy.partition(":")[0] in learned_kinds()


def learned_path(policy: str) -> Path:
    """The checkpoint path a learned policy name names, less a search budget ``@N``
    (``muzero:policies/jobshop-muzero@16``)."""
    rest = policy.partition(":")[2]
    base, at, budget = rest.rpartition("@")
    return Path(base if at and budget.isdigit() else rest)


def checkpoint_files(policy: str) -> list[Path]:
    """The files a learned policy's results depend on, the one that must exist first: a policy
    folder's ``model.zip`` (``model.pt`` for ``muzero:`` or ``"algo": "muzero"``) and
    ``config.json``, or, where its ``config.json`` lists them under ``checkpoint_files`` (an
    RLlib module's many files, MuZero's ``model.pt``), those and ``config.json``; a file named
    directly is itself. Raises ``SchedgymError`` naming the ``config.json`` when
    ``checkpoint_files`` is not a list of names inside the folder, leaves out the weights the
    loader reads, or lists a missing file (a file must not just drop out of the results' input
    digest)."""
    where = learned_path(policy)
    if not where.is_dir():
        return [where]
    config = where / "config.json"
    settings = _config(config) if config.is_file() else {}
    listed = settings.get("checkpoint_files")
    # the one file the loader reads (an RLlib module reads many): the results depend on it
    if policy.startswith("muzero:") or settings.get("algo") == "muzero":
        weights: str | None = "model.pt"
    else:
        weights = None if policy.startswith("rllib:") else "model.zip"
    if listed is None:
        return [where / (weights or "model.zip"), config]
    if not (
        isinstance(listed, list)
        and listed
        and all(isinstance(f, str) and f and _inside(f) for f in listed)
    ):
        raise SchedgymError(
            f"{config}: checkpoint_files must be a non-empty list of file names inside the "
            f"policy folder, got {listed!r}"
        )
    if weights and weights not in {Path(f).as_posix() for f in listed}:
        raise SchedgymError(f"{config}: checkpoint_files must list {weights}, the weights it loads")
    missing = [f for f in listed if not (where / f).is_file()]
    if missing:
        raise SchedgymError(
            f"{config}: checkpoint_files lists {', '.join(missing)}, not in {where}"
        )
    return [*(where / f for f in listed), config]


def _inside(name: str) -> bool:
    """A relative path that stays in its folder: no root, no ``..``."""
    path = Path(name)
    return not path.is_absolute() and ".." not in path.parts


def learned_layout_kwargs(policy: str, env: str) -> dict[str, Any]:
    """The padding sizes (``max_*`` env arguments) a learned policy was trained with: its
    network's input shapes. Only these are taken from its ``config.json``; everything that
    changes the problem comes from the suite. Raises ``SchedgymError`` naming the config when
    it says the policy was trained on another env than ``env`` (its sizes would not even be
    that env's arguments)."""
    path = learned_path(policy)
    config = (path if path.is_dir() else path.parent) / "config.json"
    if not config.is_file():
        return {}
    settings = _config(config)
    trained = settings.get("env")
    if isinstance(trained, str) and env_entry(trained).name != env_entry(env).name:
        raise SchedgymError(f"{policy}: trained on {trained} ({config}), not on {env}")
    kwargs = settings.get("env_kwargs", {})
    if not isinstance(kwargs, dict):
        raise SchedgymError(
            f"{config}: env_kwargs must be a JSON object, got {type(kwargs).__name__}"
        )
    return {k: v for k, v in kwargs.items() if k.startswith("max_")}


def _config(file: Path) -> dict[str, Any]:
    """A policy's ``config.json``; raises ``SchedgymError`` naming the file when it is not a
    JSON object."""
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SchedgymError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise SchedgymError(f"{file}: expected a JSON object, got {type(config).__name__}")
    return config


@functools.lru_cache(maxsize=8)
def _learned(env: str, policy: str) -> Policy:
    # A checkpoint takes a second to load and a learned policy keeps no state between episodes.
    return resolve_policy(env, policy)


def _policy_for(job: CaseJob) -> Policy:
    if is_learned(job.policy):
        return _learned(job.env, job.policy)
    policy = resolve_policy(job.env, job.policy, seed=job.seed)
    if job.case_budget_s is not None:
        for attr in _BUDGET_ATTRS:
            if hasattr(policy, attr):
                setattr(policy, attr, float(job.case_budget_s))
    if job.solver_threads is not None:
        for attr in _THREAD_ATTRS:
            if hasattr(policy, attr):
                setattr(policy, attr, int(job.solver_threads))
    return policy


def run_case(job: CaseJob) -> dict[str, Any]:
    """Run and validate one case; what a worker process returns (plain data, picklable)."""
    policy = _policy_for(job)
    result = run_episode(job.env, policy, case=job.case, seed=job.seed, env_kwargs=job.env_kwargs)
    if job.capacity_slo is not None:
        result.metrics["capacity_rps"] = case_capacity(job, policy, result.record)
    return {
        "case": job.case,
        "seed": job.seed,
        "metrics": result.metrics,
        "record": result.record,
        "kind": result.kind,
        "decisions": result.decisions,
        "wall_s": result.wall_s,
        "decision_s": np.asarray(result.decision_s, np.float64),
    }


def case_capacity(job: CaseJob, policy: Policy, record: dict[str, Any]) -> float:
    """The case's capacity at SLO (`schedgym.envs.batching.record.capacity_at_slo`): its arrival
    pattern replayed at other rates (``rate`` overrides the case's; each episode validated),
    starting from the rate of the episode ``record`` (requests over the arrival span)."""
    from schedgym.envs.batching.record import capacity_at_slo

    if job.env != "batching":
        raise SchedgymError(f"capacity at SLO is a serving measure; env {job.env!r} has none")
    arrivals = record["requests"]["arrival_s"]
    span = max(arrivals) - min(arrivals)
    if len(arrivals) < 2 or span <= 0:
        raise SchedgymError(f"case {job.case!r}: capacity needs at least two arrival times")

    def attainment(rate: float) -> float:
        kwargs = {**job.env_kwargs, "rate": rate, "load": None}
        run = run_episode(job.env, policy, case=job.case, seed=job.seed, env_kwargs=kwargs)
        return float(run.metrics["slo_attainment"])

    return capacity_at_slo(attainment, (len(arrivals) - 1) / span, target=job.capacity_slo)


def make_process_pool(workers: int) -> cf.ProcessPoolExecutor:
    """Forked worker processes: they start at once with the parent's imports, and a user's
    script needs no ``if __name__ == "__main__"`` guard. The parent never loads a learned
    checkpoint itself (``evaluate`` leaves that to the workers), so no torch thread pool is
    forked mid-state."""
    return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))


class RayExecutor(cf.Executor):
    """A ``concurrent.futures`` face on Ray tasks: each ``submit`` is one Ray task, and the
    future it returns is Ray's (``ObjectRef.future()``). Ray places the tasks on the cluster's
    CPUs and reruns a task whose worker process or node died, up to ``max_retries`` times
    (Ray's task fault tolerance); a task that raises is not rerun, and its future raises the
    task's own exception. Connects to the cluster at ``address`` (``""``: start or join a local
    Ray instance as ``ray.init()`` does; ``"auto"``: the cluster ``ray start`` made here; or
    ``ray://HOST:10001``) unless Ray is already initialised in this process, and disconnects
    on shutdown only if it connected. Raises ``SchedgymError`` when Ray is not installed.

    Every node needs the same schedgym installed (one container image, or a Ray
    ``runtime_env``): a task imports ``schedgym.evaluate`` there and reads checkpoints and
    suite files by the paths given here."""

    def __init__(self, address: str = "", num_cpus: float = 1, max_retries: int = 3):
        try:
            import ray
        except ImportError as exc:
            raise SchedgymError(
                f"--ray needs Ray, which is not installed ({exc}): pip install 'schedgym[ray]'"
            ) from None
        self._ray = ray
        self._own = not ray.is_initialized()
        if self._own:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
        self._options = {"num_cpus": num_cpus, "max_retries": max_retries}
        self._remote: dict[Callable[..., Any], Any] = {}
        self._refs: list[Any] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(**self._options)(fn)
        ref = self._remote[fn].remote(*args, **kwargs)
        self._refs.append(ref)
        inner = ref.future()
        outer: cf.Future = cf.Future()

        def relay(done: cf.Future) -> None:
            exc = done.exception()
            if exc is None:
                outer.set_result(done.result())
            else:  # the task's own exception, not Ray's wrapper with its remote traceback
                cause = getattr(exc, "cause", None)
                outer.set_exception(cause if isinstance(cause, BaseException) else exc)

        inner.add_done_callback(relay)
        return outer

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            for ref in self._refs:
                self._ray.cancel(ref, force=True)
        self._refs = []
        if self._own and self._ray.is_initialized():
            self._ray.shutdown()
            self._own = False


def make_executor(workers: int, ray: str | None = None, num_cpus: float = 1) -> cf.Executor:
    """Local forked processes (``make_process_pool``), or with ``ray`` (an address, ``""`` for
    a local instance) Ray tasks of ``num_cpus`` CPUs each (``RayExecutor``)."""
    if ray is not None:
        return RayExecutor(ray, num_cpus=num_cpus)
    return make_process_pool(workers)


def run_jobs(
    jobs: Sequence[CaseJob],
    workers: int = 1,
    *,
    executor: cf.Executor | None = None,
    progress: bool = False,
    on_error: Callable[[int, BaseException], None] | None = None,
    on_result: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any] | None]:
    """Run ``jobs`` (in order of the returned list): in this process when ``workers`` is 1 and
    no executor is given, else in worker processes. A failing case raises, naming the case;
    with ``on_error`` it is reported there (with its job's index) and its slot is None. With
    ``on_result`` each output goes there as it arrives (with its job's index) instead of into
    the list, so a long run need not hold every record at once."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), disable=not progress, unit="case", leave=False)
    out: list[dict[str, Any] | None] = [None] * len(jobs)

    def done(i: int, output: dict[str, Any]) -> None:
        if on_result is None:
            out[i] = output
        else:
            on_result(i, output)

    def failed(i: int, exc: BaseException) -> None:
        if on_error is None:
            job = jobs[i]
            raise SchedgymError(
                f"{job.policy} on {job.env} case {job.case!r} (seed {job.seed}): {exc}"
            ) from exc
        on_error(i, exc)

    try:
        if executor is None and workers <= 1:
            for i, job in enumerate(jobs):
                try:
                    output = run_case(job)
                except Exception as exc:  # any fault of a policy or env: named, per case
                    failed(i, exc)
                else:
                    done(i, output)
                bar.update()
            return out
        own = executor is None
        pool = executor or make_executor(workers)
        try:
            futures = {pool.submit(run_case, job): i for i, job in enumerate(jobs)}
            for future in cf.as_completed(futures):
                i = futures[future]
                try:
                    output = future.result()
                except Exception as exc:
                    failed(i, exc)
                else:
                    done(i, output)
                bar.update()
        finally:
            if own:
                pool.shutdown(cancel_futures=True)
        return out
    finally:
        bar.close()


def plan_jobs(
    suite: Suite,
    policy: str,
    *,
    case_budget_s: float | None = None,
    solver_threads: int | None = None,
) -> list[CaseJob]:
    """The suite's cases as jobs for ``policy``. The solver budget and threads go to ``solver:``
    and ``bound:`` policies only, so a heuristic's results do not depend on them."""
    env_kwargs = {
        **(learned_layout_kwargs(policy, suite.env) if is_learned(policy) else {}),
        **dict(suite.env_kwargs),
    }
    if not policy.startswith(("solver:", "bound:")):
        case_budget_s = solver_threads = None
    return [
        CaseJob(
            suite.env,
            policy,
            c.case,
            c.seed,
            env_kwargs,
            case_budget_s,
            solver_threads,
            suite.capacity_slo,
        )
        for c in suite.cases
    ]


def summarise(suite: Suite, cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The suite's score (its metric's mean over the cases) and the key metrics' means."""

    def mean(metric: str, required: bool) -> float | None:
        values = []
        for c in cases:
            v = c["metrics"].get(metric)
            if not isinstance(v, int | float):
                if required:
                    raise SchedgymError(
                        f"suite {suite.name}: case {c['case']!r} has no numeric metric "
                        f"{metric!r} (it has: {', '.join(sorted(c['metrics']))})"
                    )
                return None
            values.append(float(v))
        return float(np.mean(values)) if values else None

    return {
        "score": mean(suite.score_metric, True),
        "score_name": suite.score_name,
        "score_metric": suite.score_metric,
        "lower_is_better": suite.lower_is_better,
        "means": {k: v for k in suite.key_metrics if (v := mean(k, False)) is not None},
    }


def assemble(
    suite: Suite,
    policy: str,
    outputs: Sequence[dict[str, Any]],
    *,
    settings: dict[str, Any],
    spec: str | None = None,
) -> dict[str, Any]:
    """The results dict (DESIGN.md §3) of a policy's validated case outputs on a suite.
    ``policy`` is the name results carry; ``spec`` the name it was resolved by, where that
    differs (a learned policy's absolute path)."""
    cases = []
    for o in outputs:
        d = o["decision_s"]
        cases.append(
            {
                "case": o["case"],
                "seed": o["seed"],
                "metrics": o["metrics"],
                "wall_s": o["wall_s"],
                "decisions": o["decisions"],
                "decision_median_s": float(np.median(d)) if d.size else None,
                "record_sha256": record_digest(o["record"]),
            }
        )
    pooled = np.concatenate([o["decision_s"] for o in outputs]) if outputs else np.empty(0)
    summary = summarise(suite, cases)
    summary.update(
        decision_median_s=float(np.median(pooled)) if pooled.size else None,
        decision_p99_s=float(np.quantile(pooled, 0.99)) if pooled.size else None,
        wall_s=float(sum(c["wall_s"] for c in cases)),
    )
    inputs = inputs_of(suite, policy, settings, spec=spec)
    commit, dirty = git_commit(tuple(inputs["code_files"]))
    return {
        "format": RESULTS_FORMAT,
        "env": suite.env,
        "suite": suite.name,
        "suite_version": suite.version,
        "policy": policy,
        "kind": outputs[0]["kind"] if outputs else "",
        "version": __version__,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "commit": commit,
        "dirty": dirty,
        "settings": settings,
        "inputs": inputs,
        "cases": cases,
        "summary": summary,
        "records": [o["record"] for o in outputs],
    }


def evaluate(
    env: str,
    policy: str,
    suite: Suite | str,
    workers: int = 1,
    *,
    case_budget_s: float | None = None,
    solver_threads: int | None = None,
    progress: bool = False,
    ray: str | None = None,
) -> dict[str, Any]:
    """Run ``policy`` on every case of ``suite`` (validating each record) and return the results
    dict: DESIGN.md §3's JSON plus, under ``"records"``, the episode records. With ``ray`` (a
    cluster address, ``""`` for a local instance) the cases are Ray tasks and ``workers`` is
    left to Ray; the results are the same."""
    from schedgym.suites import get_suite

    entry = env_entry(env)
    suite = get_suite(suite, entry.name) if isinstance(suite, str) else suite
    if suite.env != entry.name:
        raise SchedgymError(f"suite {suite.name!r} belongs to env {suite.env!r}, not {env!r}")
    why = suite.unavailable()
    if why:
        raise SchedgymError(f"suite {suite.name}: {why}")
    if policy in suite.skip:
        raise SchedgymError(f"{policy} is not run on {suite.name}: {suite.skip[policy]}")
    check_policy(entry.name, policy)
    jobs = plan_jobs(suite, policy, case_budget_s=case_budget_s, solver_threads=solver_threads)
    if ray is None:
        outputs = run_jobs(jobs, workers, progress=progress)
    else:
        with make_executor(workers, ray, num_cpus=jobs[0].solver_threads or 1) as pool:
            outputs = run_jobs(jobs, workers, executor=pool, progress=progress)
    settings = run_settings(jobs)
    return assemble(suite, policy, [o for o in outputs if o is not None], settings=settings)


def check_policy(env: str, policy: str) -> None:
    """Fail at once, in this process, on an unknown policy name or a missing checkpoint,
    without loading a checkpoint here (the workers do)."""
    if is_learned(policy):
        first = checkpoint_files(policy)[0]
        if not first.is_file():
            raise SchedgymError(f"no checkpoint for {policy!r} ({first})")
    else:
        resolve_policy(env, policy)


def run_settings(jobs: Sequence[CaseJob]) -> dict[str, Any]:
    """What a policy's results were run under, beside the suite: part of their inputs."""
    first = jobs[0]
    return {
        "case_budget_s": first.case_budget_s,
        "solver_threads": first.solver_threads,
        "env_kwargs": dict(first.env_kwargs),
    }


# --- what a result depends on --------------------------------------------------------------------


def record_digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _module_file(name: str) -> Path | None:
    """The source file of ``schedgym.x.y`` found on disk, without importing anything."""
    parts = name.split(".")[1:]
    base = PACKAGE_ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def code_files(modules: tuple[str, ...]) -> list[Path]:
    """The schedgym source files ``modules`` import, transitively (imports inside functions
    too), read from their syntax trees."""
    # The suite catalogue is not an input: a result depends on its own suite's definition
    # (hashed separately), not on the other suites'.
    seen: dict[str, Path | None] = {"schedgym.suites": None}
    stack = list(modules)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        path = seen[name] = _module_file(name)
        if path is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            stack.extend(n for n in found if n.startswith("schedgym.") and n not in seen)
    return sorted({p for p in seen.values() if p is not None})


@functools.cache
def _digest(paths: tuple[Path, ...]) -> str:
    # files do not change during one run; the leaderboard asks for the same ones many times
    return file_digest(paths)


@functools.cache
def _package_data_digest() -> str:
    """Cost tables and shipped workload data: every env prices or reads some of them."""
    files = sorted(
        p
        for folder in (
            PACKAGE_ROOT / "envs" / "hardware" / "tables",
            PACKAGE_ROOT / "workloads" / "data",
        )
        for p in folder.rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    )
    return _digest(tuple(files))


def inputs_of(
    suite: Suite, policy: str, settings: dict[str, Any], *, spec: str | None = None
) -> dict[str, Any]:
    """Everything a result depends on, and its digest: schedgym's version, the suite's
    definition, the policy, the run settings, the source of every schedgym module the env, its
    baselines and the runner import, the shipped tables and data, the suite's reference data
    and files, and a learned policy's checkpoint or a user callable's source."""
    entry = env_entry(suite.env)
    modules = [
        entry.entry_point.partition(":")[0],
        f"schedgym.envs.{entry.package}.record",
        entry.baselines,
        "schedgym.evaluate",
        "schedgym.episode",
        "schedgym.policy",
    ]
    extra: list[Path] = [*suite.data_paths(), *map(Path, suite.files)]
    prefix, _, rest = (spec or policy).partition(":")
    if is_learned(policy):
        modules.append(learned_kinds()[prefix].module)
        extra += checkpoint_files(spec or policy)
    elif rest and prefix not in BASELINE_KINDS:
        spec = importlib.util.find_spec(prefix)
        if spec is not None and spec.origin:
            extra.append(Path(spec.origin))
    code = code_files(tuple(modules))
    extra = [p for p in extra if p.is_file()]
    parts = {
        "version": __version__,
        "suite": suite.spec(),
        "policy": policy,
        "settings": settings,
        "code": _digest(tuple(code)),
        "data": _package_data_digest(),
        "files": _digest(tuple(extra)) if extra else "",
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return {
        **parts,
        "code_files": [str(p.relative_to(PACKAGE_ROOT)) for p in code],
        "digest": digest,
    }


@functools.cache
def git_commit(files: tuple[str, ...] = (".",)) -> tuple[str, bool]:
    """The checkout's commit (short) and whether any of ``files`` (paths relative to the
    package) differs from it or is not committed; ``("-", False)`` outside a git checkout.
    Read-only git calls."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PACKAGE_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", *files],
            cwd=PACKAGE_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "-", False
    return head or "-", bool(status.strip())


# --- results files -------------------------------------------------------------------------------


def records_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".json") + ".records.json.xz")


def save_results(results: dict[str, Any], path: str | Path) -> Path:
    """Write the results JSON to ``path`` and its episode records, xz-compressed, beside it
    (``NAME.records.json.xz``); return the records file's path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in results.items() if k != "records"}
    rec = records_path(path)
    body["records_file"] = rec.name
    data = json.dumps(results["records"], separators=(",", ":")).encode()
    rec.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    path.write_text(json.dumps(body, indent=1) + "\n")
    return rec


def load_results(
    path: str | Path,
    *,
    suite: Suite | None = None,
    spec: str | None = None,
    check_records: bool = True,
    keep_records: bool = False,
) -> dict[str, Any]:
    """Read a results file and check that it can be listed; raise ``ResultsError`` naming the
    file and the reason otherwise: not a schedgym results file, another schedgym version, an
    unknown suite or another version of it, cases that are not the suite's, or a score its
    cases do not give. Its records (``NAME.records.json.xz`` beside it) must match the digests
    the file holds, pass the env's own ``validate`` and give the metrics the file claims. A file
    whose records are absent (they are not committed) is listed only if its inputs are exactly
    those a run here would have now (``inputs_of``: same version, suite, policy, settings, code
    and data): the run that wrote it validated them. ``spec`` is the name the policy resolves
    by, where it differs from the one the file carries (a learned policy's path)."""
    from schedgym.suites import SUITES

    path = Path(path)

    def refuse(why: str) -> ResultsError:
        return ResultsError(f"{path}: refused: {why}")

    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise refuse(f"not readable as JSON ({exc})") from None
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise refuse(f"not a schedgym results file (format {RESULTS_FORMAT!r} expected)")
    missing = {
        "env",
        "suite",
        "suite_version",
        "policy",
        "kind",
        "version",
        "cases",
        "summary",
        "inputs",
        "settings",
    } - set(results)
    if missing:
        raise refuse(f"missing {', '.join(sorted(missing))}")
    if results["version"] != __version__:
        raise refuse(
            f"made by schedgym {results['version']}, this is schedgym {__version__}; "
            "rerun it (schedgym evaluate, or schedgym leaderboard)"
        )
    suite = suite or SUITES.get(results["suite"])
    if suite is None:
        raise refuse(f"unknown suite {results['suite']!r}")
    if suite.name != results["suite"] or suite.env != results["env"]:
        raise refuse(f"it is for {results['suite']!r} on {results['env']!r}, not {suite.name!r}")
    if results["suite_version"] != suite.version:
        raise refuse(
            f"suite {suite.name} version {results['suite_version']}, current version is "
            f"{suite.version}"
        )
    cases = results["cases"]
    want = [[c.case, c.seed] for c in suite.cases]
    got = [[c.get("case"), c.get("seed")] for c in cases]
    if got != want:
        raise refuse(f"its cases are not those of {suite.name} v{suite.version}")
    summary = summarise(suite, cases)
    claimed = results["summary"].get("score")
    if not (
        isinstance(claimed, int | float)
        and math.isclose(claimed, summary["score"], rel_tol=1e-9, abs_tol=1e-12)
    ):
        raise refuse(
            f"its score {claimed} is not the mean of its cases' "
            f"{suite.score_metric} ({summary['score']})"
        )
    rec = path.with_name(str(results.get("records_file") or records_path(path).name))
    if rec.parent != path.parent:
        raise refuse("its records file must sit beside it")
    results["records_checked"] = False
    if not rec.exists():
        if keep_records:
            raise refuse(f"its records file {rec.name} is not here")
        now = inputs_of(suite, results["policy"], results["settings"], spec=spec)
        if results["inputs"].get("digest") != now["digest"]:
            raise refuse(
                f"its records file {rec.name} is not here to check, and its inputs changed "
                f"since it was run ({changed_inputs(results['inputs'], now)}); rerun it"
            )
        return results
    records = read_records(rec, len(cases), refuse)
    entry = env_entry(suite.env)
    for case, record in zip(cases, records, strict=True):
        if record_digest(record) != case.get("record_sha256"):
            raise refuse(f"the record of case {case['case']!r} is not the one it was run with")
        if check_records:
            try:
                check_record(entry, record, case["metrics"])
            except (SchedgymError, ValueError, KeyError, TypeError, IndexError) as exc:
                raise refuse(
                    f"case {case['case']!r} (seed {case['seed']}): invalid record: {exc}"
                ) from None
    results["records_checked"] = check_records
    if keep_records:
        results["records"] = records
    return results


def changed_inputs(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Which parts of two ``inputs_of`` dicts differ, in words."""
    parts = [
        k
        for k in ("version", "suite", "policy", "settings", "code", "data", "files")
        if old.get(k) != new.get(k)
    ]
    return ", ".join(parts) or "inputs"


def read_records(rec: Path, n: int, refuse: Callable[[str], Exception]) -> list[dict[str, Any]]:
    try:
        records = json.loads(lzma.decompress(rec.read_bytes()))
    except (OSError, lzma.LZMAError, json.JSONDecodeError) as exc:
        raise refuse(f"records file {rec.name} unreadable ({exc})") from None
    if not isinstance(records, list) or len(records) != n:
        raise refuse(f"records file {rec.name} does not hold one record per case")
    return records
