"""Every heuristic and bound of every env chooses only legal actions in every state it reaches.

Property-based (hypothesis): random accepted configurations of each env (sizes, capacities,
offload on and off, tasks, hardware profiles, top-k, batch sizes, queue and KV limits) x every
policy of the env x seeds. Each decision is checked against the mask before it is taken, and
each finished record passes the env's independent ``validate``. Configurations the env refuses
with a one-line error are not failures (they are not accepted); anything else is. CP-SAT bounds
are left out of the random loops (seconds to tens of seconds a case) and run on fixed small
cases instead.

Faults these tests found became the fixed cases at the end of the file.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from playing import REFUSALS, TALLY, examples, play

from schedgym.registry import env_entry

SEEDS = st.integers(0, 2**16)


def _policies(env_name: str) -> list[str]:
    return sorted(p for p in env_entry(env_name).policies() if p != "solver:cpsat")


def _play_all(env_name: str, kwargs: dict, seed: int, case: str | None) -> None:
    for name in _policies(env_name):
        play(env_name, name, kwargs, seed, case)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nlegality: {dict(sorted(TALLY.items()))}")
    for reason, count in sorted(REFUSALS.items()):
        print(f"  refused x{count}: {reason}")


# -- job shop ------------------------------------------------------------------------------------


@settings(max_examples=examples(60))
@given(jobs=st.integers(1, 15), machines=st.integers(1, 10), seed=SEEDS)
def test_jobshop_policies_are_legal(jobs, machines, seed):
    kwargs = {"max_jobs": 15, "max_machines": 10}
    _play_all("jobshop", kwargs, seed, f"random:{jobs}x{machines}:{seed}")


# -- DAG -----------------------------------------------------------------------------------------

DAG_CONFIGS = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(["single", "online"]),
        "platform": st.sampled_from(["hetero", "h100x2"]),
        "sigma": st.sampled_from([0.0, 0.3, 1.0]),
        "jobs": st.integers(1, 4),
        "load": st.sampled_from([0.3, 0.8, 2.0]),
        "max_ready": st.integers(1, 64),
        "max_devices": st.integers(1, 8),
        "ccr": st.sampled_from([0.1, 1.0, 10.0]),
        "beta": st.sampled_from([0.1, 1.0, 2.0]),
        "procs": st.integers(1, 6),
        "dag": st.fixed_dictionaries(
            {
                "n": st.integers(1, 30),
                "fat": st.floats(0.0, 1.0),
                "density": st.floats(0.0, 1.0),
                "regularity": st.floats(0.0, 1.0),
                "jump": st.integers(1, 4),
            }
        ),
    }
)


@settings(max_examples=examples(60))
@given(
    kwargs=DAG_CONFIGS,
    family=st.sampled_from(["random", "daggen", "topcuoglu", "mlp"]),
    seed=SEEDS,
)
def test_dag_policies_are_legal(kwargs, family, seed):
    _play_all("dag", kwargs, seed, family)


# -- batching ------------------------------------------------------------------------------------

BATCHING_CONFIGS = st.fixed_dictionaries(
    {
        "n_requests": st.integers(1, 40),
        "load": st.sampled_from([0.3, 1.0, 3.0]),
        "process": st.sampled_from(["poisson", "gamma"]),
        "cv": st.sampled_from([1.0, 4.0]),
        "max_entities": st.integers(1, 16),
        "max_num_seqs": st.integers(1, 8),
        "length_noise": st.sampled_from([0.0, 0.5, 2.0]),
        "slo_mix": st.sampled_from([(0.5, 0.5), (1.0, 0.0), (0.0, 1.0)]),
    },
    optional={"kv_blocks": st.integers(1, 4000), "watermark": st.sampled_from([0.0, 0.2])},
)


@settings(max_examples=examples(20))
@given(
    kwargs=BATCHING_CONFIGS,
    case=st.sampled_from(
        [
            "azure-conv-synth",
            "azure-code-synth",
            "azure-conv-tiny-cpu",
            "azure-conv-70b-tp4",
            "azure-conv-a100",
        ]
    ),
    seed=SEEDS,
)
def test_batching_policies_are_legal(kwargs, case, seed):
    _play_all("batching", kwargs, seed, case)


# -- MoE offloading ------------------------------------------------------------------------------

# routed experts of each preset (MoE layers x experts), to draw capacities from
MOE_CASES = {
    "tinymoe-code": 32,
    "tinymoe-docs": 32,
    "olmoe": 1024,
    "mixtral": 256,
    "qwen": 1440,
    "deepseek": 1664,
}


@settings(max_examples=examples(60))
@given(
    case=st.sampled_from(sorted(MOE_CASES)),
    share=st.floats(0.0, 1.0),
    cpu_offload=st.booleans(),
    tokens=st.integers(1, 8),
    batch=st.integers(1, 3),
    prefetch=st.integers(0, 2),
    bits=st.sampled_from([None, 2, 4, 8]),
    gpu=st.sampled_from(["h100", "a100"]),
    seed=SEEDS,
)
def test_moe_policies_are_legal(case, share, cpu_offload, tokens, batch, prefetch, bits, gpu, seed):
    kwargs = {
        "capacity": max(1, round(share * MOE_CASES[case])),
        "cpu_offload": cpu_offload,
        "tokens": tokens,
        "batch": batch,
        "prefetch": prefetch,
        "bits": bits,
        "gpu": gpu,
    }
    _play_all("moe", kwargs, seed, case)


# -- memory mapping ------------------------------------------------------------------------------


@settings(max_examples=examples(60))
@given(
    task=st.sampled_from(["map", "pack"]),
    case=st.one_of(st.integers(1, 24).map(str), st.sampled_from(["mlp", "resnet-tiny"])),
    fast=st.one_of(st.none(), st.floats(0.01, 1.0), st.integers(1, 10**9)),
    order=st.sampled_from(["start", "size", "area", "benefit"]),
    max_candidates=st.integers(1, 32),
    hardware=st.sampled_from(["h100", "a100", "cpu"]),
    seed=SEEDS,
)
def test_memory_policies_are_legal(task, case, fast, order, max_candidates, hardware, seed):
    kwargs = {
        "task": task,
        "fast_capacity": fast,
        "order": order,
        "max_candidates": max_candidates,
        "hardware": hardware,
    }
    _play_all("memmap", kwargs, seed, f"random:{case}:{seed}" if case.isdigit() else case)


# -- faults found, kept as fixed cases -----------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        "heuristic:lru",
        "heuristic:lfu",
        "heuristic:fiddler",
        "heuristic:lru-layer",
        "heuristic:moe-infinity",
        "heuristic:next-use",
        "heuristic:static",
        "oracle:belady",
    ],
)
def test_moe_cache_smaller_than_one_layer_runs_misses_on_the_cpu(policy):
    # OLMoE routes 8 experts a token; with 7 cached, once all 7 are needed the one legal action
    # is the CPU (the setting the env's own capacity error recommends).
    kwargs = {"capacity": 7, "cpu_offload": True, "tokens": 8}
    played = play("moe", policy, kwargs, seed=0, case="olmoe")
    assert played is not None and played.metrics["cpu_experts"] > 0


@pytest.mark.parametrize(
    "env_name, kwargs, case",
    [
        ("jobshop", {}, "random:3x3:7"),
        ("dag", {}, "topcuoglu"),
        ("dag", {"mode": "online", "jobs": 2, "dag": {"n": 5}}, "random"),
        ("memmap", {"task": "pack"}, "random:6:3"),
        ("memmap", {"task": "map", "fast_capacity": 0.3}, "random:6:3"),
    ],
)
def test_cpsat_records_on_small_cases_validate(env_name, kwargs, case):
    # CP-SAT is too slow for the property loops above; on small cases its records must pass the
    # same independent validation
    assert play(env_name, "solver:cpsat", kwargs, 0, case) is not None
