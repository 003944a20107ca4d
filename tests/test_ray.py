"""Evaluation and the leaderboard on Ray tasks: the same results as local processes, and a
worker killed mid-case costs a retry, never a lost or doubled case.

A local Ray instance of 2 CPUs (the ``ray_local`` fixture) stands in for a cluster. What a
result must equal is the local run of the same deterministic policy: the same cases in the
suite's order, the same metrics and the same episode records (their SHA-256 digests), and the
same inputs digest; the Ray runs must not change what a result depends on. Skipped where Ray
(``schedgym[ray]``) is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schedgym.evaluate import evaluate, load_results
from schedgym.leaderboard import build
from schedgym.suites import SUITES

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'schedgym[ray]'")


def same_results(a: dict, b: dict) -> None:
    keys = ("case", "seed", "metrics", "decisions", "record_sha256")
    assert [{k: c[k] for k in keys} for c in a["cases"]] == [
        {k: c[k] for k in keys} for c in b["cases"]
    ]
    assert a["summary"]["score"] == b["summary"]["score"]
    assert a["inputs"]["digest"] == b["inputs"]["digest"]
    assert a["records"] == b["records"]


@pytest.mark.parametrize(
    "suite, policy",
    [("jobshop/random-test", "heuristic:mor"), ("dag/topcuoglu", "ppo:policies/dag-ppo")],
)
def test_evaluation_on_ray_equals_the_local_run(ray_local, suite, policy):
    if policy.startswith("ppo:") and not (ROOT / policy[4:] / "model.zip").is_file():
        pytest.skip(f"no committed checkpoint {policy}")
    env = SUITES[suite].env
    policy = policy.replace("ppo:", f"ppo:{ROOT}/")
    local = evaluate(env, policy, suite, workers=1)
    on_ray = evaluate(env, policy, suite, ray="")
    assert len(on_ray["cases"]) == len(SUITES[suite].cases)
    same_results(on_ray, local)


def test_a_worker_killed_mid_case_is_retried_and_every_case_counts_once(ray_local):
    suite = SUITES["jobshop/random-test"]
    marker, starts = ray_local["SCHEDGYM_TEST_KILL_MARKER"], ray_local["SCHEDGYM_TEST_STARTS_LOG"]
    starts.unlink(missing_ok=True)
    marker.touch()
    on_ray = evaluate("jobshop", "ray_helpers:first_legal_dies_once", suite, ray="")
    # a worker did die mid-episode: it took the marker with it
    assert not marker.exists()
    started = starts.read_text().split()
    names = [c.case for c in suite.cases]
    # every case started, one of them twice (the killed attempt and Ray's retry) ...
    assert sorted(set(started)) == sorted(names)
    assert len(started) == len(names) + 1
    # ... and each counts exactly once, with the results of an undisturbed local run
    local = evaluate("jobshop", "ray_helpers:first_legal_dies_once", suite, workers=1)
    same_results(on_ray, local)


def test_leaderboard_on_ray_writes_the_files_a_local_build_writes(ray_local, tmp_path):
    catalogue = {"dag/topcuoglu": SUITES["dag/topcuoglu"]}
    roots = {}
    for name, ray in (("local", None), ("ray", "")):
        roots[name] = tmp_path / name
        report = build(
            roots[name],
            catalogue=catalogue,
            workers=2,
            case_budget_s=2,
            ray=ray,
            log=lambda _: None,
        )
        assert {p.status for p in report.pairs} == {"ran"}
    files = sorted(p.name for p in (roots["local"] / "leaderboard" / "results").glob("*.json"))
    assert files == sorted(
        p.name for p in (roots["ray"] / "leaderboard" / "results").glob("*.json")
    )
    assert any("heuristic.heft" in f for f in files)
    for name in files:
        a, b = (
            load_results(roots[r] / "leaderboard" / "results" / name, keep_records=True)
            for r in ("ray", "local")
        )
        if a["kind"] == "solver":  # a time-limited solver: only its proven bound is fixed
            assert json.dumps(a["summary"]["score"]) == json.dumps(b["summary"]["score"])
            continue
        same_results(a, b)
