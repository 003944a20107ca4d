"""Named, versioned, seeded evaluation suites: the fixed cases every policy is compared on.

A suite is a list of ``(case, seed)`` pairs of one environment, the env arguments they run under,
and the metric that scores them (the mean over the cases). Its ``version`` goes up whenever its
cases, seeds, arguments or score change, so results of an older version are never mixed with
newer ones (``schedgym.evaluate.load_results`` refuses them).

Seeds are kept apart from training: every suite seed lies in ``TEST_SEEDS`` (10,000-19,999), and
so does the seed written into a case name (``random:15x15:10003``). Training resets use seeds
below 10,000 (``agents.ppo``: ``seed + 1000 * rank``, each env's later instances drawn from the
stream that seed starts) and validation cases seeds from 20,000 (``scripts/train_policies.py``,
``schedgym train --help``), so no suite instance is drawn from a seed a learned policy was
trained or selected on (docs/leaderboard.md).

``file:PATH`` builds a suite from a user's own instance, trace or buffer-set file, or from every
file of a folder, in the formats the env's loaders read (``file_suite``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedgym.errors import SchedgymError
from schedgym.registry import env_entry

TEST_SEEDS = range(10_000, 20_000)
TRAINING_SEEDS = range(0, 10_000)
VALIDATION_SEEDS_FROM = 20_000


@dataclass(frozen=True)
class Case:
    """One episode of a suite: the env's case string and the seed ``reset`` gets."""

    case: str
    seed: int


@dataclass(frozen=True)
class Suite:
    """A named, versioned list of cases of one environment and how to score them."""

    name: str  # "<env>/<what>", e.g. "jobshop/taillard-15x15"
    version: int
    cases: tuple[Case, ...]
    score_metric: str  # the score is this metric's mean over the cases
    score_name: str  # what the score means, for tables
    lower_is_better: bool = True
    key_metrics: tuple[str, ...] = ()  # further metric means the leaderboard shows
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    about: str = ""
    skip: Mapping[str, str] = field(default_factory=dict)  # policy -> why it is not run here
    # further budgets of committed planners run on this suite only ("muzero:policies/X@64")
    extra: tuple[str, ...] = ()
    data: tuple[str, ...] = ()  # reference files it reads, relative to the shared data folder
    files: tuple[str, ...] = ()  # a file suite's own files (hashed into its results' inputs)
    # batching: also find each case's capacity at this SLO attainment (``capacity_rps``)
    capacity_slo: float | None = None

    _env: str = ""  # a file suite's env (named suites carry it in their name)

    @property
    def env(self) -> str:
        return self._env or self.name.partition("/")[0]

    def unavailable(self) -> str | None:
        """Why the suite cannot run here (reference data absent), or None."""
        missing = [p for p in self.data_paths() if not p.is_file()]
        if missing:
            return (
                f"reference data not found: {missing[0]} (it lives in ../shared/data or "
                "$SCHEDGYM_DATA)"
            )
        return None

    def data_paths(self) -> list[Path]:
        if not self.data:
            return []
        # The loaders' own rule for where reference data lives (workloads.memory and
        # workloads.serving agree); imported here because only data-reading suites need it.
        from schedgym.workloads.base import shared_data_dir

        root = shared_data_dir()
        return [root / p for p in self.data]

    def spec(self) -> dict[str, Any]:
        """Everything that defines the suite's results, as JSON (hashed into their inputs)."""
        return {
            "name": self.name,
            "version": self.version,
            "env": self.env,
            "cases": [[c.case, c.seed] for c in self.cases],
            "score_metric": self.score_metric,
            "lower_is_better": self.lower_is_better,
            "env_kwargs": dict(self.env_kwargs),
            **({"capacity_slo": self.capacity_slo} if self.capacity_slo is not None else {}),
        }


def _seeds(n: int) -> range:
    return range(TEST_SEEDS.start, TEST_SEEDS.start + n)


def _jobshop() -> list[Suite]:
    sizes = ["15x15", "20x15", "20x20", "30x15", "30x20", "50x15", "50x20", "100x20"]
    suites = [
        Suite(
            f"jobshop/taillard-{size}",
            1,
            tuple(Case(f"ta{10 * g + i:02d}", TEST_SEEDS.start) for i in range(1, 11)),
            "gap",
            "mean gap to the best known makespan (lower is better)",
            key_metrics=("makespan", "lb_gap", "utilisation"),
            about=f"Taillard (1993) {size} instances ta{10 * g + 1:02d}-ta{10 * g + 10:02d}, "
            "gap to the best known upper bounds",
            # the planner at 4x its saved budget and the rollout over PPO where a decision
            # stays near 0.1 s and 1 s (the rollout: 0.3 s a decision, about 75 s a case on
            # 15x15; a case costs about (operations)^2 x jobs)
            extra=(
                ("muzero:policies/jobshop-muzero@64", "rollout:policies/jobshop-ppo")
                if g < 3
                else ()
            ),
        )
        for g, size in enumerate(sizes)
    ]
    suites.append(
        Suite(
            "jobshop/random-test",
            1,
            tuple(Case(f"random:15x15:{s}", s) for s in _seeds(10)),
            "lb_gap",
            "mean gap to the best lower bound (lower is better)",
            key_metrics=("makespan", "utilisation"),
            about="ten Taillard-style random 15x15 instances, seeds 10000-10009 (the training "
            "generator's family, never its seeds)",
            extra=("rollout:policies/jobshop-ppo",),
        )
    )
    return suites


_NO_CPSAT_DAG = {"solver:cpsat": "CP-SAT's DAG model is built for DAGs of up to 40 tasks"}


def _dag() -> list[Suite]:
    models = ("gpt2-tiny", "gpt2-small", "resnet-tiny", "resnet18", "mlp")
    return [
        Suite(
            "dag/topcuoglu",
            1,
            (Case("topcuoglu", TEST_SEEDS.start),),
            "makespan",
            "makespan on the 10-task example of Topcuoglu et al. 2002 (lower is better)",
            key_metrics=("slr", "speedup"),
            about="the HEFT paper's example on its 3 processors (HEFT: 80)",
        ),
        Suite(
            "dag/transformer-hetero",
            1,
            tuple(Case(m, s) for m in models for s in _seeds(2)),
            "mean_slowdown",
            "mean job slowdown, online (lower is better)",
            key_metrics=("max_slowdown", "makespan"),
            env_kwargs={"mode": "online", "jobs": 10, "load": 0.8, "platform": "hetero"},
            about="torch.fx operator graphs of 5 zoo models, 10 copies arriving as a Poisson "
            "process at load 0.8 on H100 + A100 + A40 + CPU, 2 seeds each",
            skip=_NO_CPSAT_DAG
            | {
                # measured on validation episode gpt2-small seed 500,002 (docs/results.md)
                "muzero:policies/dag-muzero@32": "its PEFT rollouts plan this suite badly and "
                "slowly (mean slowdown 5.06 against MinMin's 1.83, 482 s for one gpt2-small "
                "episode); policies/dag-online-muzero, with MinMin rollouts, is its planner"
            },
        ),
        Suite(
            "dag/random-noisy",
            1,
            tuple(Case("random:50", s) for s in _seeds(10)),
            "slr",
            "mean schedule length ratio, realised (lower is better)",
            key_metrics=("speedup", "planned_makespan"),
            env_kwargs={"sigma": 0.5, "platform": "hetero"},
            about="random 50-task transformer-op DAGs on H100 + A100 + A40 + CPU, task times "
            "log-normal around the estimates (sigma 0.5)",
            skip=_NO_CPSAT_DAG,
        ),
        Suite(
            "dag/daggen-30",
            1,
            tuple(Case("daggen:30", s) for s in _seeds(10)),
            "slr",
            "mean schedule length ratio (lower is better)",
            key_metrics=("speedup", "makespan"),
            about="daggen-style 30-task DAGs with Topcuoglu et al.'s cost model (ccr 1, beta 1, "
            "3 processors): small enough for the CP-SAT bound",
        ),
    ]


def _batching() -> list[Suite]:
    score = (
        "goodput_rps",
        "mean goodput: requests/s meeting their TTFT and mean-TPOT SLOs, DistServe's definition "
        "(higher is better)",
    )
    keys = (
        "slo_attainment",
        "strict_goodput_rps",
        "capacity_rps",
        "ttft_p99_s",
        "tpot_p99_s",
        "tbt_p99_s",
    )
    return [
        Suite(
            "batching/azure-conv-synth",
            2,
            tuple(Case("azure-conv-synth", s) for s in _seeds(3)),
            *score,
            lower_is_better=False,
            key_metrics=keys,
            about="Batching-v0's azure-conv-synth case: Poisson arrivals with Azure-2023 "
            "conversation lengths, sized to the replica's measured capacity, half interactive "
            "and half relaxed SLOs; 3 seeds. capacity_rps: the highest arrival rate (the same "
            "arrivals rescaled) at which the policy keeps 90 % SLO attainment (not searched for "
            "planners, muzero:, whose search would replay each case about 8 times)",
            capacity_slo=0.9,
        ),
        Suite(
            "batching/azure-conv",
            3,
            tuple(Case("azure-conv:1000", s) for s in _seeds(2)),
            *score,
            lower_is_better=False,
            key_metrics=keys,
            about="the first 1,000 requests of the real Azure 2023 conversation trace at their "
            "recorded arrival times (4.6 requests/s, well under an H100's capacity, so every "
            "policy meets nearly every SLO); the seed assigns SLO classes. capacity_rps: the "
            "highest rate of those 1,000 arrivals, their recorded pattern rescaled, at which the "
            "policy keeps 90 % SLO attainment (not searched for planners, muzero:)",
            data=("traces/azure-llm-2023/AzureLLMInferenceTrace_conv.csv",),
            capacity_slo=0.9,
        ),
    ]


def _moe_32_rows(experts: str) -> dict[str, str]:
    """The tinymoe policies' skip on a model of ``experts`` routed experts: their networks'
    observations hold 32 expert rows (``max_entities`` 32, the tiny MoE's 4 x 8)."""
    why = f"its network was trained with 32 expert rows; this model has {experts} experts"
    return {"ppo:policies/moe-ppo": why, "muzero:policies/moe-muzero@8": why}


def _moe() -> list[Suite]:
    score = ("stall_per_token_s", "mean stall per decoded token, seconds (lower is better)")
    keys = ("hit_rate", "tokens_per_s", "bytes_copied")
    return [
        Suite(
            "moe/tinymoe-test",
            1,
            tuple(Case("tinymoe-docs", s) for s in _seeds(8)),
            *score,
            key_metrics=keys,
            about="routing recorded from the tiny MoE on held-out pydoc topics (the seed picks "
            "the window), priced as Mixtral-8x7B experts on an H100, half the experts cached, "
            "512 tokens. Recorded routing is finite, so seeds cannot keep it from training: "
            "learned policies train on the other domain (tinymoe-code), as the recipes do",
        ),
        Suite(
            "moe/mixtral-synth",
            1,
            tuple(Case("mixtral", s) for s in _seeds(5)),
            *score,
            key_metrics=keys,
            about="routing drawn from the generator calibrated to Mixtral's Table 5, 32 layers, "
            "4 of 8 experts per layer cached, 256 tokens",
            skip=_moe_32_rows("256"),
        ),
        Suite(
            "moe/olmoe-synth",
            1,
            tuple(Case("olmoe", s) for s in _seeds(5)),
            *score,
            key_metrics=keys,
            about="routing drawn from the generator calibrated to OLMoE's expert skew, a quarter "
            "of the 16 x 64 experts cached, 128 tokens",
            skip=_moe_32_rows("1,024"),
        ),
    ]


# what the msa suites do not run, and why
_MSA_SKIP = {
    "bound:peak-live": "it bounds the pack task only",
    "solver:cpsat": "it solves the map and pack tasks, not msa",
    "solver:minimalloc": "it solves the pack task only",
    "ppo:policies/memmap-ppo": "it was trained on the map task's observations",
    "muzero:policies/memmap-muzero@16": "its network was trained on the map task's observations",
    "muzero:policies/memmap-pack-muzero@8": "its network was trained on the pack task, which has "
    "no slow memory action",
}


def _memmap() -> list[Suite]:
    msa_score = (
        "speedup",
        "speedup of the modelled time, stalls included, over all-slow memory (higher is better)",
    )
    return [
        Suite(
            "memmap/torch-models",
            1,
            tuple(
                Case(m, TEST_SEEDS.start)
                for m in ("gpt2-tiny", "gpt2-small", "resnet-tiny", "resnet18", "mlp")
            ),
            "speedup",
            "mean speedup of the modelled time over all-slow memory (higher is better)",
            lower_is_better=False,
            key_metrics=("modelled_time_s", "fast_byte_share"),
            env_kwargs={"task": "map", "fast_capacity": 0.25},
            about="activation buffers of 5 zoo models traced with torch.fx, H100 costs, a fast "
            "tier of a quarter of each model's peak live bytes beside HBM (at the H100's 50 MiB "
            "L2 every buffer of these models fits and all policies tie)",
            skip={
                "bound:peak-live": "it bounds the pack task only",
                "solver:minimalloc": "it solves the pack task only",
                "ppo:policies/memmap-msa-ppo": "it was trained on the msa task's observations",
                "muzero:policies/memmap-msa-muzero@16": "its network was trained on the msa "
                "task's observations",
                "muzero:policies/memmap-pack-muzero@8": "its network was trained on the pack "
                "task, which has no slow memory action",
            },
        ),
        Suite(
            "memmap/msa-resnet18",
            1,
            (Case("resnet18", TEST_SEEDS.start),),
            *msa_score,
            lower_is_better=False,
            key_metrics=("modelled_time_s", "stall_s", "prefetches", "evictions"),
            env_kwargs={"task": "msa", "fast_capacity": 0.1},
            about="XLA's memory-space assignment task on ResNet-18's activation buffers (batch 8, "
            "H100 costs), a fast tier of 10 % of the peak live bytes beside HBM: the size where "
            "the LP bound lies furthest below the greedies among the zoo models tried",
            skip=_MSA_SKIP,
        ),
        Suite(
            "memmap/msa-trn1-resnet18",
            1,
            (Case("resnet18", TEST_SEEDS.start),),
            *msa_score,
            lower_is_better=False,
            key_metrics=("modelled_time_s", "stall_s", "prefetches", "evictions"),
            env_kwargs={"task": "msa", "fast_tier": "trn1-sbuf", "fast_capacity": 0.1},
            about="the msa task on a software-managed scratchpad: ResNet-18's activation "
            "buffers (batch 8, bf16) on one AWS Trainium NeuronCore-v2 as its datasheet gives it "
            "(SBUF, HBM share, DMA and 92 TFLOPS from AWS's NKI architecture guide), fast tier "
            "10 % of the peak live bytes as in memmap/msa-resnet18 (at the full 24 MiB SBUF the "
            "LP bound lies only 4.0 % above the greedy)",
            skip=_MSA_SKIP,
        ),
        Suite(
            "memmap/minimalloc",
            1,
            tuple(Case(f"minimalloc:{x}", TEST_SEEDS.start) for x in "ABCDEF"),
            "height_over_capacity",
            "mean packing height over capacity (lower is better; <= 1 fits)",
            key_metrics=("solved", "height_over_peak"),
            env_kwargs={"task": "pack"},
            about="MiniMalloc's hard production instances A-F, capacity 1,048,576",
            skip={
                "bound:knapsack": "it bounds the map task only",
                "heuristic:all-slow": "it is a map-task baseline (pack has no slow memory)",
                "ppo:policies/memmap-ppo": "it was trained on the map task (pack has no slow "
                "memory action)",
                "ppo:policies/memmap-msa-ppo": "it was trained on the msa task (pack has no slow "
                "memory action)",
                "muzero:policies/memmap-muzero@16": "its network was trained on the map task "
                "(pack has no slow memory action)",
                "muzero:policies/memmap-msa-muzero@16": "its network was trained on the msa task "
                "(pack has no slow memory action)",
            },
            data=tuple(f"memory/minimalloc/{x}.1048576.csv" for x in "ABCDEF"),
        ),
    ]


SUITES: dict[str, Suite] = {
    s.name: s for s in (*_jobshop(), *_dag(), *_batching(), *_moe(), *_memmap())
}


def suites_for(env: str) -> list[Suite]:
    name = env_entry(env).name
    return [s for s in SUITES.values() if s.env == name]


def file_suite(
    env: str,
    path: str | Path,
    *,
    score: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    seed: int = TEST_SEEDS.start,
) -> Suite:
    """A suite of a user's own file, or of every file in a folder (sorted), scored by ``score``
    (default: the env's primary metric); the files' contents are hashed into the results'
    inputs, so an edited file is never mistaken for the one a result was run on."""
    entry = env_entry(env)
    p = Path(path)
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise SchedgymError(f"file suite {path}: the folder holds no files")
    elif p.is_file():
        files = [str(p)]
    else:
        raise SchedgymError(f"file suite {path}: no such file or folder")
    metric = score or entry.primary_metric
    direction = "lower" if entry.lower_is_better else "higher"
    return Suite(
        f"file:{path}",
        1,
        tuple(Case(f, seed) for f in files),
        metric,
        f"mean {metric} ({direction} is better)",
        lower_is_better=entry.lower_is_better,
        env_kwargs=dict(env_kwargs or {}),
        about=f"{len(files)} file(s) from {path}",
        files=tuple(files),
        _env=entry.name,
    )


def get_suite(
    name: str,
    env: str | None = None,
    *,
    score: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> Suite:
    """A named suite (``jobshop/taillard-15x15``), or ``file:PATH`` for ``env``."""
    if name.startswith("file:"):
        if env is None:
            raise SchedgymError(f"suite {name!r}: a file suite needs --env")
        return file_suite(env, name.removeprefix("file:"), score=score, env_kwargs=env_kwargs)
    if name not in SUITES:
        known = ", ".join(SUITES)
        raise SchedgymError(f"unknown suite {name!r}; known: {known}, or file:PATH")
    suite = SUITES[name]
    if env is not None and env_entry(env).name != suite.env:
        raise SchedgymError(f"suite {name!r} belongs to env {suite.env!r}, not {env!r}")
    if score is not None or env_kwargs:
        raise SchedgymError(
            f"suite {name!r} fixes its score and env arguments; --score and --env-kwargs are "
            "for file:PATH suites"
        )
    return suite


def file_digest(paths: list[str] | tuple[str, ...] | list[Path]) -> str:
    """sha256 over the named files' contents, in order."""
    h = hashlib.sha256()
    for p in paths:
        h.update(str(Path(p).name).encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
