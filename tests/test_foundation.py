"""The installed command, the shared conventions (errors, seeds, policies) and the profiler."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest

import schedgym
from schedgym.envs.hardware import load_table
from schedgym.envs.hardware.kernels import KERNELS
from schedgym.errors import SchedgymError, WorkloadError
from schedgym.policy import RandomPolicy, resolve_policy
from schedgym.randomness import as_generator
from schedgym.workloads.base import csv_rows, parse_number

SCHEDGYM = shutil.which("schedgym") or str(Path(sys.executable).parent / "schedgym")
POLICIES = Path(schedgym.__file__).resolve().parent / "policies"


def run_cli(
    *args: str, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SCHEDGYM, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def one_line_error(out: subprocess.CompletedProcess) -> str:
    """The error line of a refused command (exit 2, one line, no traceback)."""
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("schedgym: error:"), out.stderr[-2000:]
    return lines[0]


def test_installed_command_runs_and_lists_what_ships():
    out = run_cli("list", "hardware")
    assert out.returncode == 0, out.stderr
    for name in ("a100", "h100", "a40"):
        assert name in out.stdout
    assert run_cli("--version").stdout.strip() == f"schedgym {schedgym.__version__}"


@pytest.mark.parametrize(
    "verb",
    ["list", "profile", "run", "bench", "quickstart", "evaluate", "train", "leaderboard"],
)
def test_every_verb_has_help(verb):
    out = run_cli(verb, "--help")
    assert out.returncode == 0 and "usage: schedgym" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--env", "nope", "--policy", "random"], "unknown env 'nope'"),
        (["profile", "--check", "no-such-table"], "unknown hardware profile"),
        (["profile"], "give --out FILE"),
        (["profile", "--check", "cpu", "--measure", "0"], "--measure must be >= 1, got 0"),
        (["profile", "--measure", "3"], "--measure N needs --check TABLE"),
        (["profile", "--check", "h200", "--measure", "2"], "measured on 'NVIDIA H200' (gpu)"),
        (["nope"], "invalid choice: 'nope'"),
        (["export", "--policy", "ppo:no/such", "--out", "x"], "is not a policy folder"),
        (["run", "--env", "dag", "--policy", "random", "--env-kwargs", "[1]"], "JSON object"),
        (
            ["run", "--env", "moe", "--policy", "random", "--env-kwargs", '{"bogus": 1}'],
            "MoEOffload-v0 takes no argument 'bogus' (it takes case, model",
        ),
        (
            ["run", "--env", "batching", "--policy", "random", "--env-kwargs", '{"bogus": 1}'],
            "unknown BatchingEnv argument(s): bogus",
        ),
        (
            ["run", "--env", "moe", "--policy", "random", "--env-kwargs", '{"tokens": 0}'],
            "tokens must be an integer >= 1, got 0",
        ),
        (["train", "--env", "jobshop", "--steps", "0"], "--steps: must be at least 1, got 0"),
        (
            ["run", "--env", "dag", "--policy", "random", "--case", "topcuoglu"]
            + ["--env-kwargs", '{"case": "daggen:10"}'],
            "--case 'topcuoglu' and the case in --env-kwargs, 'daggen:10', disagree",
        ),
        # found by a break-it pass: each was a traceback, or was accepted as the default
        (["run", "--env", "jobshop", "--policy", "random", "--seed", "-1"], "must be at least 0"),
        (
            ["run", "--env", "jobshop", "--policy", "random", "--env-kwargs", '{"max_jobs": -1}'],
            "--env-kwargs: max_jobs and max_machines must be >= 1",
        ),
        (
            ["run", "--env", "batching", "--policy", "random", "--env-kwargs"]
            + ['{"max_num_seqs": 0}'],
            "max_num_seqs must be >= 1, got 0",
        ),
        (
            ["run", "--env", "batching", "--policy", "random", "--case", "azure-conv-synth:5"]
            + ["--env-kwargs", '{"slo_mix": "x"}'],
            "mix 'x' must be 2 probabilities",
        ),
        (
            ["run", "--env", "memmap", "--policy", "random", "--env-kwargs"]
            + ['{"fast_bandwidth": 0}'],
            "fast_bandwidth must be a positive number of bytes/s, got 0",
        ),
        (
            ["run", "--env", "memmap", "--policy", "random", "--env-kwargs"]
            + ['{"copy_bandwidth": NaN}'],
            "copy_bandwidth must be a positive number of bytes/s, got nan",
        ),
        (
            ["run", "--env", "moe", "--policy", "random", "--env-kwargs"]
            + ['{"model": "llama-2-7b"}'],
            "model 'llama-2-7b' routes no experts",
        ),
        (
            ["run", "--env", "jobshop", "--policy", "random", "--case", "ft06"]
            + ["--workload", "ta01"],
            "--case 'ft06' and --workload 'ta01' disagree",
        ),
        (
            ["run", "--env", "jobshop", "--policy", "random", "--case", "ft06", "--plot", "."],
            "--plot: . is a folder",
        ),
        # a second break-it pass: tracebacks, outputs written to the wrong place, values ignored
        (
            ["run", "--env", "jobshop", "--policy", "random", "--case", "ft06"]
            + ["--plot", "FILE.txt"],
            "--plot FILE.txt: matplotlib does not write .txt files",
        ),
        (
            ["run", "--env", "jobshop", "--case", "ft06", "--policy"]
            + [f"muzero:{POLICIES / 'jobshop-muzero'}@99999999999999999999"],
            "on jobshop case 'ft06' (seed 0): Maximum allowed dimension exceeded",
        ),
        (
            ["run", "--env", "jobshop", "--policy", "random", "--env-kwargs"]
            + ['{"max_jobs": "abc"}'],
            "--env-kwargs: max_jobs=\"abc\": '<' not supported",
        ),
        (
            ["evaluate", "--suite", "dag/topcuoglu", "--policy", "solver:cpsat"]
            + ["--solver-threads", "-4"],
            "--solver-threads: must be at least 1, got -4",
        ),
        (
            ["evaluate", "--suite", "dag/topcuoglu", "--policy", "solver:cpsat"]
            + ["--case-budget", "-1"],
            "--case-budget: must be a positive number, got -1",
        ),
        (
            ["export", "--policy", f"ppo:{POLICIES / 'jobshop-ppo'}", "--out", ""],
            "--out: must not be empty",
        ),
    ],
)
def test_errors_are_one_line_not_a_traceback(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("schedgym: error:") and message in lines[0]


TRAIN = ["train", "--env", "jobshop", "--generator", "random:6x6", "--steps", "8"]
TRAIN += ["--no-progress", "--out", "out"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n-envs", "0"], "--n-envs: must be at least 1, got 0"),
        (["--learning-rate", "-1"], "--learning-rate: must be a positive number, got -1"),
        (["--eval-every", "-5"], "--eval-every: must be at least 1, got -5"),
        (["--imitate-episodes", "0"], "--imitate-episodes: must be at least 1, got 0"),
        (["--out", ""], "--out: must not be empty"),
        (["--generator", "random:6x6,"], "--generator 'random:6x6,': an empty entry"),
        (
            ["--env-kwargs", '{"case": "ft06"}'],
            "--generator 'random:6x6' and the case in --env-kwargs, 'ft06', both give",
        ),
        (["--val-cases", ",,;random:6x6:1"], "--val-cases ',,;random:6x6:1': an empty entry"),
        # each of these left an empty out/ (or out/config.json) behind
        (["--generator", "nosuch:6x6"], "unknown job-shop case 'nosuch:6x6'"),
        (["--resume"], "--resume: no checkpoint out/last.zip"),
        (["--env-kwargs", '{"max_jobs": 3}'], "is 6 jobs x 6 machines"),
        (["--imitate", "heuristic:nosuch"], "has no policy 'heuristic:nosuch'"),
        (["--val-cases", ";random:6x6:1"], "unknown job-shop case ';random:6x6:1'"),
        (["--val-cases", "random:6x6:1", "--baseline", "heuristic:nosuch"], "no policy"),
        (
            ["--algo", "muzero", "--val-cases", "random:6x6:1", "--baseline", "x:y"],
            "cannot import policy callable 'x:y'",
        ),
        # another env's PPO checkpoint was a torch size-mismatch traceback, a MuZero one no PPO
        (
            ["--init-from", str(POLICIES / "dag-ppo")],
            f"--init-from {POLICIES / 'dag-ppo'}: trained on dag",
        ),
        (
            ["--init-from", str(POLICIES / "jobshop-muzero")],
            "a MuZero checkpoint (model.pt); --init-from takes a PPO checkpoint",
        ),
    ],
)
def test_train_refuses_in_one_line_and_leaves_nothing_behind(tmp_path, args, message):
    out = run_cli(*TRAIN, *args, cwd=tmp_path)
    assert message in one_line_error(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_train_refuses_a_folder_holding_a_checkpoint_unless_told(tmp_path):
    """The default --out (policies/ENV-ALGO) is where the committed checkpoints live: training
    into it replaced model.zip and left the old results.json and curve.png beside it."""
    for algo, checkpoint in (("ppo", "model.zip"), ("muzero", "model.pt")):
        folder = tmp_path / "policies" / f"jobshop-{algo}"
        folder.mkdir(parents=True)
        (folder / checkpoint).write_text("weights")
        args = ["train", "--env", "jobshop", "--algo", algo, "--steps", "8", "--no-progress"]
        refused = one_line_error(run_cli(*args, cwd=tmp_path))
        assert f"policies/jobshop-{algo} already holds a trained checkpoint ({checkpoint})" in (
            refused
        )
        assert [p.name for p in folder.iterdir()] == [checkpoint]
    # a real run, then what a second one may do over it
    assert run_cli(*TRAIN, cwd=tmp_path).returncode == 0
    out = tmp_path / "out"
    (out / "results.json").write_text("{}")  # an evaluation of this model
    (out / "notes.txt").write_text("mine")
    model, names = (out / "model.zip").read_bytes(), sorted(p.name for p in out.iterdir())
    refused = one_line_error(run_cli(*TRAIN, cwd=tmp_path))
    assert "--out out already holds a trained checkpoint (model.zip): give --resume" in refused
    both = one_line_error(run_cli(*TRAIN, "--overwrite", "--resume", cwd=tmp_path))
    assert "--overwrite replaces it: not both" in both
    # an --overwrite run that fails puts the old run's files back
    bad = run_cli(*TRAIN, "--overwrite", "--generator", "nosuch:6x6", cwd=tmp_path)
    assert "unknown job-shop case" in one_line_error(bad)
    assert sorted(p.name for p in out.iterdir()) == names
    assert (out / "model.zip").read_bytes() == model
    done = run_cli(*TRAIN, "--overwrite", "--seed", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "model.zip").read_bytes() != model
    assert not (out / "results.json").exists()  # it described the old model
    assert (out / "notes.txt").read_text() == "mine"  # not a training output: kept
    assert sorted(p.name for p in out.iterdir()) == sorted(set(names) - {"results.json"})


def test_run_checks_every_output_before_the_episode(tmp_path):
    run = ["run", "--env", "jobshop", "--policy", "heuristic:mor", "--case", "ft06"]
    (tmp_path / "afile").write_text("")
    png = tmp_path / "a.png"
    refused = run_cli(*run, "--plot", str(png), "--json", str(tmp_path / "afile" / "x.json"))
    assert "afile is a file, not a folder" in one_line_error(refused)
    assert not png.exists()  # it was written, then the JSON failed
    # missing folders are created, as evaluate --json does
    done = run_cli(*run, "--plot", str(png), "--json", str(tmp_path / "new" / "x.json"))
    assert done.returncode == 0, done.stderr
    assert png.is_file() and json.loads((tmp_path / "new" / "x.json").read_text())["case"] == "ft06"
    # matplotlib adds .png to a name without an extension: the path reported is the one written
    bare = run_cli(*run, "--plot", str(tmp_path / "r6"))
    assert bare.returncode == 0, bare.stderr
    assert f"wrote {tmp_path / 'r6.png'}" in bare.stdout and (tmp_path / "r6.png").is_file()


def test_leaderboard_refuses_to_render_an_empty_board(tmp_path):
    absent = tmp_path / "absent"
    refused = run_cli("leaderboard", "--no-run", "--root", str(absent))
    assert f"--root {absent}: no such folder" in one_line_error(refused)
    refused = run_cli("leaderboard", "--no-run", "--root", str(tmp_path))
    assert "no results files in" in one_line_error(refused)
    assert list(tmp_path.iterdir()) == []  # no empty LEADERBOARD.md, no absent/ made


def test_evaluate_help_points_at_a_doc_that_is_here():
    text = " ".join(run_cli("evaluate", "--help").stdout.split())
    assert "DESIGN.md" not in text
    assert "docs/leaderboard.md, section Results JSON" in text
    doc = Path(schedgym.__file__).resolve().parent / "docs" / "leaderboard.md"
    assert "\n### Results JSON\n" in doc.read_text()


def test_environments_are_registered_with_gymnasium():
    ids = {e for e in gymnasium.registry if e.startswith("schedgym/")}
    assert {
        "schedgym/JobShop-v0",
        "schedgym/DagSched-v0",
        "schedgym/Batching-v0",
        "schedgym/MoEOffload-v0",
        "schedgym/MemoryMap-v0",
    } <= ids


def test_quick_profile_measures_every_required_kernel(tmp_path):
    """`schedgym profile --quick` writes a table that loads back and passes --check."""
    path = tmp_path / "t.json"
    out = run_cli("profile", "--quick", "--device", "cpu", "--no-progress", "--out", str(path))
    assert out.returncode == 0, out.stderr
    table = load_table(path)
    for kernel in (
        "linear",
        "attention_prefill",
        "attention_decode",
        "elementwise",
        "copy_h2d",
        "copy_d2h",
    ):
        assert table.kernels[kernel].series, kernel
    assert table.provenance["libraries"]["torch"].startswith("2.")
    # physics the measurement must show: 16x the tokens of a 2048x2048 GEMM is slower, and so is
    # a 64 MiB copy against a 4 KiB one
    lin = dict(d_in=2048, d_out=2048)
    assert table.predict("linear", tokens=1024, **lin) > table.predict("linear", tokens=64, **lin)
    assert table.predict("copy_h2d", bytes=2**26) > table.predict("copy_h2d", bytes=2**12)
    check = run_cli("profile", "--check", str(path))
    assert check.returncode == 0 and "median APE %" in check.stdout


def test_shipped_cpu_table_was_measured_here():
    from schedgym.envs.hardware import builtin_tables, load_cost_table

    if "cpu" not in builtin_tables():
        pytest.fail("the measured CPU table envs/hardware/tables/cpu.json is missing")
    table = load_cost_table("cpu")
    assert table.device["kind"] == "cpu"
    assert "schedgym profile" in next(iter(table.kernels.values())).source
    assert all(table.kernels[k].series for k in KERNELS if k not in ("all_reduce", "send_recv"))


def test_workload_rows_name_file_and_line(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("a,b\n1,2\n\n3\n")
    rows = csv_rows(path, ["a", "b"])
    assert next(rows) == (2, {"a": "1", "b": "2"})
    with pytest.raises(WorkloadError, match=r"trace\.csv:4: expected 2 fields, found 1"):
        next(rows)
    with pytest.raises(WorkloadError, match=r"missing column\(s\) c"):
        next(csv_rows(path, ["a", "c"]))
    with pytest.raises(WorkloadError, match="no such file"):
        next(csv_rows(tmp_path / "absent.csv", ["a"]))
    assert parse_number("12.0", int, field="n", path=path, line=3) == 12
    with pytest.raises(WorkloadError, match=r"trace\.csv:7: tokens must be >= 0, got -4"):
        parse_number("-4", int, field="tokens", path=path, line=7, minimum=0)
    with pytest.raises(WorkloadError, match="tokens is not a number: 'x'"):
        parse_number("x", int, field="tokens", path=path, line=7)


def test_seeds_give_generators_and_nothing_else():
    a, b = as_generator(7), as_generator(7)
    assert a.integers(1 << 30) == b.integers(1 << 30)
    g = np.random.default_rng(1)
    assert as_generator(g) is g
    with pytest.raises(ValueError, match="non-negative"):
        as_generator(-1)


class _MaskedToy:
    """Three actions, only 0 and 2 legal."""

    def action_masks(self):
        return np.array([True, False, True])


def test_random_policy_is_legal_and_seeded():
    env = _MaskedToy()
    p = RandomPolicy(seed=3)
    first = [p.act(env, None) for _ in range(50)]
    p.reset(env)
    assert [p.act(env, None) for _ in range(50)] == first
    assert set(first) == {0, 2}


def test_policy_names_resolve_or_fail_clearly():
    assert resolve_policy("jobshop", "random").name == "random"
    fn = resolve_policy("jobshop", "json:dumps")
    assert fn.name == "json:dumps"
    with pytest.raises(SchedgymError, match="unknown policy"):
        resolve_policy("jobshop", "mor")
    with pytest.raises(SchedgymError, match="cannot import"):
        resolve_policy("jobshop", "no_such_module_xyz:f")
    json.dumps({})  # the callable above is a real import, not a stub
