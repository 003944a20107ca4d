"""``schedgym sweep`` on Ray Tune: a sweep finishes, its best checkpoint is the one that scored
best and runs as a policy; a sweep whose driver is killed resumes its trials from their
checkpoints rather than from scratch.

Tiny trials (6x6 job shops, rounds of 64 steps) keep this to about a minute on 2 cores; what is
checked is the bookkeeping against Tune's own per-trial result logs and a fresh replay of the
best checkpoint, not the quality of the configurations. Skipped where Ray is not installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.tune", reason="Ray Tune is an optional extra: pip install 'schedgym[ray]'")

from schedgym.agents.ppo import TrainConfig  # noqa: E402
from schedgym.agents.sweep import SweepConfig, load_space, sweep, validation_score  # noqa: E402
from schedgym.errors import SchedgymError  # noqa: E402
from schedgym.evaluate import evaluate  # noqa: E402
from schedgym.suites import Case, Suite  # noqa: E402

SIX = {"case": "random:6x6", "max_jobs": 6, "max_machines": 6}
VAL = ["random:6x6", "random:6x6"]
SPACE = {"learning_rate": {"loguniform": [1e-4, 3e-3]}, "ent_coef": {"choice": [0.0, 0.01]}}


def base(steps: int = 128) -> TrainConfig:
    return TrainConfig(
        env="jobshop",
        out="",
        steps=steps,
        eval_every=64,
        n_envs=1,
        n_steps=64,
        batch_size=64,
        n_epochs=1,
        d_model=32,
        layers=1,
        env_kwargs=SIX,
        val_cases=VAL,
    )


def reported(out: Path) -> dict[str, list[dict]]:
    """Every trial's reports, read from Tune's own result.json files."""
    return {
        trial.parent.name: [json.loads(line) for line in trial.read_text().splitlines()]
        for trial in sorted((out / "tune").glob("*/result.json"))
    }


def reported_rounds(out: Path) -> int:
    """How many complete report lines the (single) trial's result.json holds so far."""
    logs = list((out / "tune").glob("*/result.json"))
    if not logs:
        return 0
    lines = logs[0].read_text().split("\n")[:-1]  # the last piece may be mid-write
    return len(lines)


def fresh_state(out: Path, since: float) -> bool:
    """Whether Tune's newest experiment state file was written after ``since`` and reads."""
    states = sorted((out / "tune").glob("experiment_state-*.json"))
    if not states or states[-1].stat().st_mtime <= since:
        return False
    try:
        json.loads(states[-1].read_text())
    except ValueError:
        return False
    return True


def test_space_files_are_checked(tmp_path):
    bad = tmp_path / "space.json"
    bad.write_text(json.dumps({"learning_rat": {"uniform": [0, 1]}}))
    with pytest.raises(SchedgymError, match=r"space\.json: 'learning_rat' is not a field"):
        load_space(bad)
    bad.write_text(json.dumps({"ent_coef": {"normal": [0, 1]}}))
    with pytest.raises(SchedgymError, match=r"'ent_coef' must be a fixed value or one of"):
        load_space(bad)


def test_a_two_trial_sweep_writes_its_best_checkpoint(ray_local, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    out = tmp_path / "sweep"
    cfg = SweepConfig(
        base(), load_space(space), samples=2, out=str(out), runs=str(tmp_path / "runs")
    )
    best = sweep(cfg, verbose=0)
    assert (best["trials"], best["errored"]) == (2, 0)
    reports = reported(out)
    assert len(reports) == 2
    scores = [r["score"] for rows in reports.values() for r in rows]
    # makespan: lower is better; the best is the best any trial reported at any round
    assert best["score"] == min(scores)
    # the checkpoint written is the one that scored it: replayed from scratch, it scores the same
    assert validation_score(base(), out / "best" / "model.zip") == best["score"]
    suite = Suite(
        "jobshop/six",
        1,
        (Case("random:6x6:7", 7),),
        "makespan",
        "makespan",
        env_kwargs=(("max_jobs", 6), ("max_machines", 6)),
    )
    results = evaluate("jobshop", best["policy"], suite)
    assert results["cases"][0]["metrics"]["makespan"] > 0
    # each trial logged to TensorBoard under runs/sweep-NAME/TRIAL/ENV
    logs = (tmp_path / "runs" / "sweep-sweep").glob("*/jobshop/ppo_*/events.out.tfevents.*")
    assert len({p.parents[2] for p in logs}) == 2


def test_a_killed_sweep_resumes_from_its_checkpoints(ray_local, tmp_path):
    import ray

    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    out = tmp_path / "sweep"
    args = [
        "--env",
        "jobshop",
        "--space",
        str(space),
        "--samples",
        "1",
        "--generator",
        "random:6x6",
        "--val-cases",
        ",".join(VAL),
        "--steps",
        "256",
        "--eval-every",
        "64",
        "--out",
        str(out),
        "--env-kwargs",
        json.dumps({k: v for k, v in SIX.items() if k != "case"}),
        "--quiet",
    ]
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "schedgym",
            "sweep",
            *args,
            "--ray",
            ray.get_runtime_context().gcs_address,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        # Tune snapshots its experiment state every second rather than every ten or more
        env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"},
    )
    deadline = time.monotonic() + 600
    # the trial's second checkpoint and its report: Tune writes the checkpoint folder before it
    # appends the round to result.json, so a kill between the two loses the report
    while not any((out / "tune").glob("*/checkpoint_000001")) or reported_rounds(out) < 2:
        assert driver.poll() is None, "the sweep ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # kill it just after a snapshot that knows of a checkpoint (a kill in the midst of Tune's
    # write leaves a state file that cannot be resumed; see the test below)
    second = max(
        path.stat().st_mtime
        for pattern in ("*/checkpoint_000001", "*/result.json")
        for path in (out / "tune").glob(pattern)
    )
    while not fresh_state(out, second):
        assert driver.poll() is None, "the sweep ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    ((name, rows),) = reported(out).items()
    done = [r["timesteps"] for r in rows]
    assert done[:2] == [64, 128] and not (out / "best.json").exists()
    # the recipe comes from the sweep's own sweep.json, not from these arguments
    best = sweep(
        SweepConfig(base(64), {}, out=str(out), runs=str(tmp_path / "runs")),
        resume=True,
        verbose=0,
    )
    assert best["trials"] == 1 and best["errored"] == 0
    steps = [r["timesteps"] for r in reported(out)[name]]
    assert steps[: len(done)] == done
    again = steps[len(done) :]
    # it went on round by round to the end, from a checkpoint it had reported: Tune restores
    # the last one its experiment state recorded, so a round reported after that is trained
    # again, but never the trial from scratch
    assert again and again[-1] == 256, steps
    assert again == list(range(again[0], 257, 64)), steps
    assert again[0] - 64 in done, steps
    assert (out / "best" / "model.zip").is_file()


def test_a_sweep_whose_state_file_was_cut_short_is_not_restarted_silently(tmp_path):
    experiment = tmp_path / "sweep" / "tune"
    experiment.mkdir(parents=True)
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text("")
    (experiment / "tuner.pkl").write_bytes(b"")
    with pytest.raises(SchedgymError, match=r"experiment_state-.*\.json is unreadable"):
        sweep(SweepConfig(base(), {}, out=str(tmp_path / "sweep")), resume=True, verbose=0)
