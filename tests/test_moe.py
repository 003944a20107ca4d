"""MoE expert offloading: routing workloads, the time model, the env contract and the baselines.

Reference points from outside the code: expert sizes from the models' Hugging Face configs,
Mixtral's Table 5 and the OLMoE skew figures given with the issue, hand-worked episodes, an
exhaustive search for the best hit rate on small instances, and the independent `validate`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from test_foundation import one_line_error, run_cli

from schedgym.baselines.moe import POLICIES, Belady, Fiddler, min_copies
from schedgym.envs.hardware import MODELS, load_cost_table
from schedgym.envs.hardware.models import price
from schedgym.envs.moe.core import (
    EVICT,
    PREFETCH,
    MoECore,
    MoECosts,
    build_episode,
    mlp_calls,
    moe_layers,
    run_policy,
)
from schedgym.envs.moe.env import CASES as MOE_CASES
from schedgym.envs.moe.env import MoEOffloadEnv, plot_hit_rate_curve, simulate
from schedgym.envs.moe.record import plot_record, validate
from schedgym.episode import run_episode
from schedgym.errors import IllegalActionError, RecordError, SchedgymError, WorkloadError
from schedgym.suites import suites_for
from schedgym.workloads.moe import (
    MIXTRAL_TABLE5,
    OLMOE_SKEW,
    RoutingTrace,
    generate_routing,
    layer_predictability,
    load_jsonl,
    load_numpy,
    load_trace,
    repetition_rates,
    save_jsonl,
    save_npz,
    skew_stats,
    tinymoe_trace,
)

HEURISTICS = [p for p in POLICIES if p.startswith("heuristic:")]

# -- model sizes -----------------------------------------------------------------------------


def test_expert_bytes_match_the_published_sizes():
    assert MODELS["mixtral-8x7b"].expert_bytes() == 336 * 2**20  # 336 MiB in fp16
    assert round(MODELS["olmoe-1b-7b"].expert_bytes() / 1e6, 1) == 12.6
    assert round(MODELS["qwen1.5-moe-a2.7b"].expert_bytes() / 1e6, 1) == 17.3
    assert round(MODELS["deepseek-v2-lite"].expert_bytes() / 1e6, 1) == 17.3
    assert MODELS["mixtral-8x7b"].expert_bytes(4) == 84 * 2**20  # 4-bit: a quarter
    assert MODELS["mixtral-8x7b"].expert_bytes(2) == 42 * 2**20


def test_deepseek_v2_lite_routes_in_26_of_its_27_layers():
    # config.json: num_hidden_layers 27, first_k_dense_replace 1
    assert MODELS["deepseek-v2-lite"].layers == 27
    assert moe_layers(MODELS["deepseek-v2-lite"]) == 26
    assert moe_layers(MODELS["mixtral-8x7b"]) == 32


def test_copy_time_is_the_host_link_of_the_profile():
    # H100 SXM5: PCIe Gen5 x16, about 50 GB/s achieved per direction (of the datasheet's 64),
    # 10 us launch
    env = MoEOffloadEnv("mixtral", tokens=4)
    core = env.make_core("mixtral", 0)
    assert core.costs.copy_s == pytest.approx(336 * 2**20 / 50e9 + 1e-5, rel=1e-6)
    quarter = MoEOffloadEnv("mixtral", tokens=4, bits=4).make_core("mixtral", 0)
    assert quarter.costs.copy_s == pytest.approx(84 * 2**20 / 50e9 + 1e-5, rel=1e-6)
    # one expert's 3 GEMMs for one token on an H100: memory-bound, its 336 MiB at ~3.35 TB/s
    assert 0.08e-3 < core.costs.gpu_s[1] < 0.3e-3


# -- routing workloads -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_mixtral_repetition_is_in_table5_ranges(seed):
    trace = generate_routing("mixtral-8x7b", 3000, seed=seed, model_seed=seed)
    first, either = repetition_rates(trace)
    for i, layer in enumerate((0, 15, 31)):
        lo, hi = MIXTRAL_TABLE5["first"][i]
        assert lo <= first[layer] <= hi, (layer, first[layer])
        lo, hi = MIXTRAL_TABLE5["either"][i]
        assert lo <= either[layer] <= hi, (layer, either[layer])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_olmoe_skew_is_in_the_published_ranges(seed):
    trace = generate_routing("olmoe-1b-7b", 2000, seed=seed, model_seed=seed)
    hottest, top8 = skew_stats(trace, top=8)
    lo, hi = OLMOE_SKEW["hottest_ratio"]
    assert np.all((lo <= hottest) & (hottest <= hi)), hottest
    lo, hi = OLMOE_SKEW["top8_share"]
    assert np.all((lo <= top8) & (top8 <= hi)), top8


def test_routing_correlates_across_layers():
    rng = np.random.default_rng(0)
    for trace in (generate_routing("mixtral-8x7b", 2000, seed=3), tinymoe_trace("code")):
        shuffled = trace.experts.copy()
        for layer in range(trace.n_layers):  # independent token order per layer: no correlation
            shuffled[:, layer] = shuffled[rng.permutation(trace.n_tokens), layer]
        base = layer_predictability(RoutingTrace(shuffled, trace.n_experts))
        assert layer_predictability(trace).mean() > 1.15 * base.mean()


def test_generator_is_seeded():
    a = generate_routing("olmoe-1b-7b", 100, seed=5)
    b = generate_routing("olmoe-1b-7b", 100, seed=5)
    c = generate_routing("olmoe-1b-7b", 100, seed=6)
    assert np.array_equal(a.experts, b.experts) and not np.array_equal(a.experts, c.experts)


def test_tinymoe_traces_are_shipped_small_and_well_formed():
    folder = Path(__file__).resolve().parents[1] / "workloads" / "data" / "tinymoe"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 300_000
    for domain in ("code", "docs"):
        trace = tinymoe_trace(domain)
        assert (trace.n_layers, trace.n_experts, trace.top_k) == (4, 8, 2)
        assert trace.n_tokens >= 2048 and trace.calibration is not None
        first, either = repetition_rates(trace)
        assert np.all(first > 1 / 8)  # learned routing repeats more often than chance


def test_jsonl_and_numpy_round_trip(tmp_path):
    trace = generate_routing("mixtral-8x7b", 70, seed=1, calibration_tokens=10)
    save_jsonl(trace, tmp_path / "t.jsonl")
    back = load_trace(tmp_path / "t.jsonl", n_experts=8, top_k=2, layers=32)
    assert np.array_equal(back.experts, trace.experts)
    assert np.array_equal(back.seq_starts, trace.seq_starts)
    save_npz(trace, tmp_path / "t.npz")
    back = load_trace(tmp_path / "t.npz", n_experts=8)
    assert np.array_equal(back.experts, trace.experts)
    assert np.array_equal(back.calibration, trace.calibration)
    np.save(tmp_path / "t.npy", trace.experts)
    assert np.array_equal(load_numpy(tmp_path / "t.npy", n_experts=8).experts, trace.experts)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(tokens=2, layers=2, bad=None):
    rows = [
        {"layer": la, "token_idx": t, "experts": [0, 1]}
        for t in range(tokens)
        for la in range(layers)
    ]
    if bad:
        rows[-1].update(bad)
    return rows


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"experts": [0, 9]}, "out of range 0..7"),
        ({"experts": [0, 1, 2]}, "expected k = 2"),
        ({"experts": [3, 3]}, "chosen twice"),
        ({"layer": -1}, "layer must be an int"),
    ],
)
def test_jsonl_faults_name_file_and_line(tmp_path, bad, message):
    path = _write_jsonl(tmp_path / "r.jsonl", _rows(bad=bad))
    with pytest.raises(WorkloadError, match=message) as err:
        load_jsonl(path, n_experts=8)
    assert str(err.value).startswith(f"{path}:4:")


def test_jsonl_missing_layer_and_bad_json_are_refused(tmp_path):
    rows = _rows(tokens=3)
    del rows[3]  # token 1, layer 1
    with pytest.raises(WorkloadError, match="token 1 has no routing for layer 1"):
        load_jsonl(_write_jsonl(tmp_path / "a.jsonl", rows), n_experts=8)
    path = tmp_path / "b.jsonl"
    path.write_text('{"layer": 0, "token_idx": 0, "experts": [0, 1]}\n{"layer": 1,\n')
    with pytest.raises(WorkloadError, match=r"b.jsonl:2: not valid JSON"):
        load_jsonl(path)
    with pytest.raises(WorkloadError, match="layer 1 out of range 0..0"):
        load_jsonl(_write_jsonl(tmp_path / "c.jsonl", _rows()), n_experts=8, layers=1)


def test_numpy_faults_are_refused(tmp_path):
    experts = np.zeros((3, 2, 2), np.int64)
    experts[..., 1] = 1
    experts[2, 1, 0] = 8
    np.save(tmp_path / "x.npy", experts)
    with pytest.raises(WorkloadError, match=r"x.npy: token 2, layer 1: expert id 8 out of range"):
        load_numpy(tmp_path / "x.npy", n_experts=8)
    with pytest.raises(WorkloadError, match="expected k = 4"):
        load_numpy(tmp_path / "x.npy", top_k=4)
    with pytest.raises(WorkloadError, match="expected 3 layers, found 2"):
        load_numpy(tmp_path / "x.npy", layers=3)


def test_env_refuses_traces_that_do_not_fit_the_model(tmp_path):
    np.save(tmp_path / "k3.npy", np.tile(np.arange(3), (4, 2, 1)))
    with pytest.raises(WorkloadError, match="k = 2"):
        MoEOffloadEnv(str(tmp_path / "k3.npy"), model="mixtral-8x7b").reset(seed=0)
    with pytest.raises(WorkloadError, match="number of experts is not declared"):
        MoEOffloadEnv(str(tmp_path / "k3.npy")).reset(seed=0)
    with pytest.raises(WorkloadError, match="unknown case"):
        MoEOffloadEnv("no-such-case").reset(seed=0)
    with pytest.raises(WorkloadError, match="below the 2 experts"):
        MoEOffloadEnv(capacity=1).reset(seed=0)


def _six_tokens() -> RoutingTrace:
    """6 tokens in sequences of 3, 2 and 1; 4 layers, top-2 of 8 experts (the tiny MoE's shape,
    priced as Mixtral's); token t routes to experts t and t + 1."""
    experts = np.stack([np.tile([t, t + 1], (4, 1)) for t in range(6)])
    return RoutingTrace(experts, 8, [0, 3, 5], name="six")


def test_a_window_wraps_to_its_place_but_never_replays_the_trace():
    trace = _six_tokens()
    late = trace.window(2, 4)  # starts at the last sequence, continues from the first
    assert late.experts[:, 0, 0].tolist() == [5, 0, 1, 2]
    assert late.seq_starts.tolist() == [0, 1]
    whole = trace.window(1, 6)
    assert whole.experts[:, 0, 0].tolist() == [3, 4, 5, 0, 1, 2]
    assert whole.seq_starts.tolist() == [0, 2, 3]
    with pytest.raises(WorkloadError, match="six: tokens must be at most the 6 tokens the trace"):
        trace.window(0, 7)


@pytest.mark.parametrize("suffix", [".npz", ".jsonl"])
def test_a_routing_file_is_not_replayed_to_reach_tokens(tmp_path, suffix):
    path = tmp_path / f"six{suffix}"
    (save_npz if suffix == ".npz" else save_jsonl)(_six_tokens(), path)
    assert MoEOffloadEnv(str(path), tokens=6).make_core(None, 0).episode.trace.n_tokens == 6
    for case in (str(path), f"file:{path}"):
        with pytest.raises(
            WorkloadError,
            match=rf"six{suffix}: tokens must be at most the 6 tokens the trace records, got 7$",
        ):
            MoEOffloadEnv(case, tokens=7).reset(seed=0)


def test_a_recorded_case_is_not_replayed_to_reach_tokens():
    held = tinymoe_trace("docs").n_tokens
    assert (
        MoEOffloadEnv("tinymoe-docs", tokens=held).make_core(None, 31).episode.trace.n_tokens
        == held
    )
    with pytest.raises(
        WorkloadError,
        match=rf"docs\.npz: case tinymoe-docs: tokens must be at most the {held} tokens the "
        rf"trace records, got {held + 1}$",
    ):
        MoEOffloadEnv("tinymoe-docs", tokens=held + 1).reset(seed=0)


def test_too_many_tokens_is_one_line_from_the_cli():
    out = run_cli(
        *("run", "--env", "moe", "--policy", "heuristic:lru", "--case", "tinymoe-docs"),
        *("--env-kwargs", '{"tokens": 100000000}'),
    )
    line = one_line_error(out)
    assert "docs.npz" in line and "4096 tokens" in line and "got 100000000" in line


def test_no_suite_plays_more_recorded_routing_than_its_file_holds():
    for suite in suites_for("moe"):
        for case in suite.cases:
            preset = MOE_CASES.get(case.case)
            if preset is None or preset.source.startswith("synth:"):
                continue  # a generator draws as many tokens as asked
            env = MoEOffloadEnv(**suite.env_kwargs)
            tokens = env.settings["tokens"] or preset.tokens
            assert tokens <= tinymoe_trace(preset.source.partition(":")[2]).n_tokens
            assert env.make_core(case.case, case.seed).episode.trace.n_tokens == tokens


# -- hand-worked episodes --------------------------------------------------------------------


def _core(sequence, capacity, prefetch=0, cpu_offload=False, E=3):
    """One layer, top-1: tokens route to ``sequence``; copy 1 s, GPU expert 0.1 s, CPU expert
    0.4 s, attention and the rest 0.5 s per layer."""
    trace = RoutingTrace(np.array(sequence).reshape(-1, 1, 1), E)
    episode = build_episode(trace)
    costs = MoECosts(
        1000, 1.0, np.array([0.0, 0.1]), np.array([0.0, 0.4]), np.full(episode.n_steps, 0.5)
    )
    return MoECore(episode, costs, capacity, prefetch=prefetch, cpu_offload=cpu_offload)


def _checked(core):
    record = MoEOffloadEnv().make_record(core)
    replayed = validate(json.loads(json.dumps(record)))
    for key, value in core.metrics().items():
        assert replayed[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    return core.metrics()


def test_hand_worked_demand_misses():
    # cache {0}; step 0 hits (ends 0.6); steps 1 and 2 miss: routed at 1.1 and 2.7, copies land
    # at 2.1 and 3.7, each layer ends 0.1 later: 1 s of stall each.
    core = _core([0, 1, 0], capacity=1)
    while not core.done:
        assert core.phase == EVICT and core.action_masks()[: core.n_global].sum() == 1
        core.apply(int(np.flatnonzero(core.action_masks())[0]))
    m = _checked(core)
    assert (m["hits"], m["accesses"], m["demand_loads"]) == (1, 3, 2)
    assert m["stall_s"] == pytest.approx(2.0) and m["time_s"] == pytest.approx(3.8)
    assert m["bytes_copied"] == 2000 and m["tokens_per_s"] == pytest.approx(3 / 3.8)


def test_hand_worked_prefetch_overlaps_with_compute():
    # as above, but before step 2 expert 0 is prefetched at 2.2 (evicting 1): it lands at 3.2,
    # the layer is routed at 2.7 and ends at 3.3: 0.5 s of stall instead of 1. Expert 0 is
    # resident but not landed when the router needs it: in flight, not a hit; had it landed by
    # 2.7 the layer would have ended at 2.8, so it costs 0.5 s.
    core = _core([0, 1, 0], capacity=1, prefetch=1)
    # no prefetch before steps 0 and 1; step 1's miss evicts 0; before step 2 prefetch 0,
    # evicting 1
    for action in (core.skip, core.skip, 0, 0, 1):
        core.apply(action)
    assert core.done
    m = _checked(core)
    assert (m["hits"], m["in_flight"], m["demand_loads"], m["prefetches"]) == (1, 1, 1, 1)
    assert m["prefetch_hits"] == 0 and m["residency_rate"] == pytest.approx(2 / 3)
    assert m["in_flight_stall_s"] == pytest.approx(0.5)
    assert m["stall_s"] == pytest.approx(1.5) and m["time_s"] == pytest.approx(3.3)


def test_hand_worked_demand_copy_goes_ahead_of_queued_prefetches():
    """Cache {0, 1} of 4 experts, routing 0, 0, 3, two prefetches per step. Step 0 hits (ends
    0.6). Before step 1, expert 2 is prefetched (evicting 1: copy 0.6-1.6) and expert 3 (evicting
    0: queued behind it, 1.6-2.6). Step 1's router needs 0 at 1.1: the demand copy waits for the
    copy under way but goes ahead of the queued prefetch: 1.6-2.6 (first come, first served would
    give 2.6-3.6); the layer ends at 2.7, 1.5 s of stall. Expert 3's copy now runs 2.6-3.6, so at
    step 2 (routed at 3.2) it is in flight: the layer ends at 3.7, 0.4 s of stall, all of it the
    in-flight copy's."""
    core = _core([0, 0, 3], capacity=2, prefetch=2, E=4)
    for action in (core.skip, 2, 1, 3, 0, 2, core.skip):
        core.apply(action)
    assert core.done
    m = _checked(core)
    assert (m["hits"], m["in_flight"], m["demand_loads"], m["prefetches"]) == (1, 1, 1, 2)
    assert m["stall_s"] == pytest.approx(1.9) and m["time_s"] == pytest.approx(3.7)
    assert m["in_flight_stall_s"] == pytest.approx(0.4)


def test_hand_worked_cpu_offload():
    # the miss at step 1 runs on the CPU: 1.1 + 0.4 = 1.5, 0.3 s beyond the GPU's 1.2
    core = _core([0, 1], capacity=1, cpu_offload=True)
    core.apply(core.skip)
    m = _checked(core)
    assert (m["hits"], m["cpu_experts"], m["demand_loads"]) == (1, 1, 0)
    assert m["stall_s"] == pytest.approx(0.3) and m["time_s"] == pytest.approx(1.5)


def test_stall_is_never_negative_with_a_fast_cpu():
    """A CPU that computes the missed expert in 0.05 s, faster than the GPU's 0.1 s: step 1 is
    routed at 1.1 and ends at 1.15, before the all-resident 1.2. The reference is the shorter of
    the all-resident time and the layer's own GPU/CPU split with every copy landed (1.15): no
    stall, where the all-resident reference alone gave -0.05 s (a positive reward)."""
    trace = RoutingTrace(np.array([0, 1]).reshape(-1, 1, 1), 3)
    episode = build_episode(trace)
    costs = MoECosts(
        1000, 1.0, np.array([0.0, 0.1]), np.array([0.0, 0.05]), np.full(episode.n_steps, 0.5)
    )
    core = MoECore(episode, costs, 1, prefetch=0, cpu_offload=True)
    core.apply(core.skip)
    m = _checked(core)
    assert m["cpu_experts"] == 1 and m["time_s"] == pytest.approx(1.15)
    assert m["stall_s"] == 0.0


@pytest.mark.parametrize(("cpu_s", "on_cpu"), [(0.4, True), (1.5, False)])
def test_fiddler_runs_a_miss_where_it_finishes_sooner(cpu_s, on_cpu):
    """Fiddler's rule on the miss at step 1: the CPU takes ``cpu_s``, the GPU a 1 s copy plus
    0.1 s. At 0.4 s the CPU is sooner (the hand-worked 1.5 s of the CPU offload case above);
    at 1.5 s the copy is, and the miss is loaded, evicting expert 0 (the layer's LRU)."""
    trace = RoutingTrace(np.array([0, 1]).reshape(-1, 1, 1), 3)
    episode = build_episode(trace)
    costs = MoECosts(
        1000, 1.0, np.array([0.0, 0.1]), np.array([0.0, cpu_s]), np.full(episode.n_steps, 0.5)
    )
    core = MoECore(episode, costs, 1, prefetch=0, cpu_offload=True)
    run_policy(core, Fiddler())
    m = _checked(core)
    assert (m["cpu_experts"], m["demand_loads"]) == ((1, 0) if on_cpu else (0, 1))
    assert m["time_s"] == pytest.approx(1.5 if on_cpu else 1.1 + 1.1)


def test_lru_and_belady_on_the_textbook_sequence():
    # cache {0, 1}, requests 0 1 2 0 1: LRU evicts 0 then 1 then 2 (2 hits); MIN evicts 1 for 2
    # (needed last), then hits 0 (3 hits).
    for name, hits in (("heuristic:lru", 2), ("oracle:belady", 3)):
        core = _core([0, 1, 2, 0, 1], capacity=2)
        run_policy(core, POLICIES[name]())
        assert _checked(core)["hits"] == hits


def _best_hits(core, memo):
    """Exhaustive search over every legal decision sequence (memoised on the state) for the most
    accesses that find their expert resident, landed or in flight."""
    if core.done:
        return 0
    key = (
        core.visit,
        core.phase,
        core.pending,
        core.prefetch_left,
        core.misses_left,
        core.resident.tobytes(),
        len(core.events()),
    )
    if key not in memo:
        snap, best = core.get_state(), -1
        for action in np.flatnonzero(core.action_masks()):
            before = core.hits + core.in_flight
            core.apply(int(action))
            best = max(best, core.hits + core.in_flight - before + _best_hits(core, memo))
            core.set_state(snap)
        memo[key] = best
    return memo[key]


def test_belady_reaches_the_exhaustive_optimum_on_small_instances():
    rng = np.random.default_rng(7)
    for _ in range(60):
        L, E = int(rng.integers(1, 3)), int(rng.integers(2, 5))
        k = int(rng.integers(1, 3)) if E > 2 else 1
        T = int(rng.integers(3, 6))
        experts = np.array([[rng.choice(E, k, replace=False) for _ in range(L)] for _ in range(T)])
        episode = build_episode(RoutingTrace(experts, E))
        cpu = bool(rng.integers(2))
        capacity = int(rng.integers(1 if cpu else k, L * E + 1))
        costs = MoECosts(1, 1.0, np.ones(2), np.ones(2), np.ones(episode.n_steps))
        core = MoECore(episode, costs, capacity, prefetch=int(rng.integers(3)), cpu_offload=cpu)
        optimum = core.hits + core.in_flight + _best_hits(core, {})
        core.reset()
        run_policy(core, Belady())
        assert core.hits + core.in_flight == optimum


def test_what_belady_bounds():
    """Belady's MIN (Belady 1966; Mattson et al. 1970) with our prefetching and bypass bounds,
    for every policy on the same cache:
    * the residency rate (accesses finding their expert resident, landed or in flight), hence
      every policy's hit rate, which counts landed experts only;
    * with prefetch 0 and no CPU offload (demand paging, where nothing is ever in flight), the
      hit rate itself;
    * without CPU offload, run as demand paging (prefetch 0), the experts copied: no policy,
      prefetching or not, copies fewer (MIN minimises the loads of any schedule).
    A prefetching policy can beat its hit rate when copies take time, and so can a CPU-offloading
    one its copies: those are not bounds."""
    others = HEURISTICS + ["random"]
    for case in ("tinymoe-code", "tinymoe-docs", "mixtral", "olmoe"):
        for fraction in (0.15, 0.4, 0.7):
            for seed in (0, 1):
                base = {"tokens": 48, "cache_fraction": fraction}
                if fraction == 0.4:
                    base["cpu_offload"] = True
                demand = simulate("oracle:belady", case, seed, **base, prefetch=0)[0]
                copies = demand["demand_loads"] + demand["prefetches"]
                for prefetch in (0, 1):
                    kwargs = {**base, "prefetch": prefetch}
                    bound = simulate("oracle:belady", case, seed, **kwargs)[0]["residency_rate"]
                    for name in others:
                        m = simulate(name, case, seed, **kwargs)[0]
                        where = (case, kwargs, seed, name)
                        assert m["residency_rate"] <= bound + 1e-12, where
                        assert m["hit_rate"] <= bound + 1e-12, where
                        if prefetch == 0 and "cpu_offload" not in kwargs:
                            assert m["in_flight"] == 0 and demand["in_flight"] == 0
                            assert m["hit_rate"] <= demand["hit_rate"] + 1e-12, where
                        if "cpu_offload" not in kwargs:
                            assert m["demand_loads"] + m["prefetches"] >= copies, where


def test_demand_belady_is_min_without_prefetches():
    """``oracle:belady-demand`` on an env that offers prefetches plays exactly ``oracle:belady``
    on one that offers none (a skipped prefetch changes nothing; `test_what_belady_bounds`
    shows no policy copies fewer than that), and without CPU offload it copies no fewer than
    MIN over the visits' requests one by one (`min_copies`, computed apart: a visit's experts
    served together may not evict each other, so it can copy more)."""
    for case in ("tinymoe-docs", "mixtral", "olmoe"):
        for fraction in (0.15, 0.5):
            for offload in (False, True):
                base = {"tokens": 32, "cache_fraction": fraction}
                if offload:
                    base["cpu_offload"] = True
                demand, record = simulate("oracle:belady-demand", case, 3, **base, prefetch=2)
                pure = simulate("oracle:belady", case, 3, **base, prefetch=0)[0]
                where = (case, fraction, offload)
                assert demand["prefetches"] == 0, where
                for key in ("stall_s", "hits", "demand_loads", "cpu_experts", "bytes_copied"):
                    assert demand[key] == pure[key], (where, key)
                if not offload:
                    core = MoEOffloadEnv(case, **base).make_core(case, 3)
                    assert min_copies(core)[-1] <= demand["demand_loads"], where


def _least_stall(core, memo):
    """Exhaustive search over every legal decision sequence (memoised on what the rest of the
    episode depends on) for the least stall still to come."""
    if core.done:
        return 0.0
    key = (
        core.visit,
        core.phase,
        core.pending,
        core.prefetch_left,
        core._miss_at,
        core.resident.tobytes(),
        core.ready.tobytes(),
        core.clock,
        core.engine_free,
        tuple(map(tuple, core._copies)),
    )
    if key not in memo:
        snap, best = core.get_state(), float("inf")
        for action in np.flatnonzero(core.action_masks()):
            before = core.stall_s
            core.apply(int(action))
            best = min(best, core.stall_s - before + _least_stall(core, memo))
            core.set_state(snap)
        memo[key] = best
    return memo[key]


def _bound_of(core):
    """``bound:min-copies`` of ``core``'s episode, checked by the record's own re-derivation."""
    env = MoEOffloadEnv()
    env.make_core = lambda case, seed: core  # the bound reads the core it is given
    metrics, record = POLICIES["bound:min-copies"]().solve(env, None, 0)
    replayed = validate(json.loads(json.dumps(record)))
    for key, value in metrics.items():
        assert replayed[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    return metrics


def test_min_copies_bound_by_hand():
    # cache {0, 1}, requests 0 1 2 0 1, copy 1 s, GPU expert 0.1 s, 0.1 s before each layer:
    # 0.2 s all-resident per visit. MIN copies 2 at visit 2 (evicting 1, needed last) and 1 at
    # visit 4: 2 copies cannot land before 2 s, nor visit 4 end before 2.1 s, 1.0 s of reference
    # time in: 1.1 s of stall at least.
    # Demand paging does best with MIN's copies, issued when routed (0.5 s, 1.9 s): 1 s each.
    # The best prefetching: expert 2 at 0.4 s evicting 1 (lands 1.4 s, visit 2 ends 1.5 s: 0.9 s
    # of stall), expert 1 at 1.5 s evicting 2 (lands 2.5 s; visit 4, routed at 1.8 s, ends 2.6 s:
    # 0.7 s): 1.6 s in all. Exhaustive search finds both optima.
    trace = RoutingTrace(np.array([0, 1, 2, 0, 1]).reshape(-1, 1, 1), 3)
    episode = build_episode(trace)
    costs = MoECosts(1000, 1.0, np.array([0.0, 0.1]), None, np.full(episode.n_steps, 0.1))
    for prefetch, least in ((0, 2.0), (1, 1.6)):
        core = MoECore(episode, costs, 2, prefetch=prefetch)
        bound = _bound_of(core)
        assert (bound["stall_s"], bound["min_copies"]) == (pytest.approx(1.1), 2)
        assert bound["stall_per_token_s"] == pytest.approx(1.1 / 5)
        assert bound["time_s"] == pytest.approx(2.1)
        assert _least_stall(core, {}) == pytest.approx(least)


def test_min_copies_bound_is_below_the_exhaustive_least_stall():
    """On random small episodes no decision sequence stalls less than the bound, and on some
    the bound, positive, is met exactly (the copy engine busy from time 0 with MIN's copies)."""
    rng = np.random.default_rng(11)
    met = 0
    for _ in range(40):
        L = int(rng.integers(1, 3))
        E = 2 if L == 2 else int(rng.integers(3, 5))
        k = int(rng.integers(1, 3)) if E > 2 else 1
        T = 3 if L == 2 else int(rng.integers(4, 7))
        experts = np.array([[rng.choice(E, k, replace=False) for _ in range(L)] for _ in range(T)])
        episode = build_episode(RoutingTrace(experts, E))
        costs = MoECosts(
            1,
            float(rng.choice([0.3, 1.0, 2.5])),
            np.array([0.0, 0.1]),
            None,
            rng.uniform(0.05, 0.5, episode.n_steps),
        )
        core = MoECore(episode, costs, int(rng.integers(k, L * E)), prefetch=int(rng.integers(2)))
        bound = _bound_of(core)["stall_s"]
        least = _least_stall(core, {})
        assert bound <= least + 1e-9
        met += bound > 0 and least - bound < 1e-9
    assert met >= 1


def test_min_copies_bound_lies_below_every_policy_and_refuses_cpu_offload():
    for case in ("tinymoe-docs", "mixtral"):
        for prefetch in (0, 1):
            kwargs = {"tokens": 48, "cache_fraction": 0.4, "prefetch": prefetch}
            bound, record = simulate("bound:min-copies", case, 3, **kwargs)
            validate(record)
            assert bound["stall_s"] > 0
            for name in HEURISTICS + ["oracle:belady", "random"]:
                m = simulate(name, case, 3, **kwargs)[0]
                assert m["stall_s"] >= bound["stall_s"] - 1e-12, (case, prefetch, name)
                assert m["bytes_copied"] >= bound["bytes_copied"], (case, prefetch, name)
    with pytest.raises(SchedgymError, match="without CPU offload"):
        simulate("bound:min-copies", "tinymoe-docs", 3, tokens=48, cpu_offload=True)
    with pytest.raises(RecordError, match="unknown bound"):
        validate({**record, "bound": "made-up"})
    with pytest.raises(SchedgymError, match="no episode to draw"):
        plot_record(record, "unused.png")


def test_min_copies_bound_follows_the_cache_size_and_its_record_is_checked_like_any():
    # through simulate's capacity (as hit_rate_curve sets it): fewer slots, more copies
    small, record = simulate("bound:min-copies", "tinymoe-code", 0, capacity=4, tokens=48)
    large = simulate("bound:min-copies", "tinymoe-code", 0, capacity=28, tokens=48)[0]
    assert small["min_copies"] > large["min_copies"] and small["stall_s"] > large["stall_s"]
    lru = simulate("heuristic:lru", "tinymoe-code", 0, capacity=28, tokens=48)[0]
    assert lru["stall_s"] >= large["stall_s"]
    with pytest.raises(SchedgymError, match="no hit rate"):
        plot_hit_rate_curve(["bound:min-copies"], "unused.png", "tinymoe-code", tokens=8)
    faults = {
        "capacity 1": ({"capacity": 1}, "initial cache holds 4 experts, capacity 1"),
        "repeated": ({"initial": [0, 0, 1]}, "repeated or out-of-range"),
        "out of range": ({"initial": [99_999]}, "repeated or out-of-range"),
        "no routing": ({"steps": [[10**6]] + record["steps"][1:]}, "have no routing"),
    }
    for change, message in faults.values():
        with pytest.raises(RecordError, match=message):
            validate({**record, **change})


def test_bad_env_arguments_are_refused_in_one_line():
    for kwargs, message in (
        ({"tokens": 0}, "tokens must be an integer >= 1"),
        ({"tokens": "abc"}, "tokens must be an integer"),
        ({"cpu_offload": "no"}, "cpu_offload must be true or false"),
        ({"prefetch": -1}, "prefetch must be an integer >= 0"),
        ({"cache_fraction": "half"}, "cache_fraction must be in"),
    ):
        with pytest.raises(WorkloadError, match=message):
            MoEOffloadEnv("tinymoe-code", **kwargs)


def test_moe_infinity_priority_weighs_global_frequency():
    """MoE-Infinity's ``priority_score`` multiplies the predicted activation by the experts'
    global activation frequency. One layer of 3 experts, cache {0, 1}: sequence A routes its 4
    tokens to expert 0; sequence B routes its first to 1, its second to 2, a miss. B's prediction
    averages its own EAM (expert 1) with the most similar stored one, A's (expert 0): a tie at
    0.5 each. The frequency term breaks it: expert 0 served 4 tokens, expert 1 one, so expert 1
    goes (without it the lower id, 0, would)."""
    trace = RoutingTrace(
        np.array([0, 0, 0, 0, 1, 2]).reshape(-1, 1, 1), 3, seq_starts=np.array([0, 4])
    )
    episode = build_episode(trace)
    costs = MoECosts(1000, 1.0, np.array([0.0, 0.1]), None, np.full(episode.n_steps, 0.5))
    core = MoECore(episode, costs, 2, prefetch=0)
    run_policy(core, POLICIES["heuristic:moe-infinity"]())
    assert [e[1:] for e in core.events()] == [(1, 2, 1)]  # load expert 2, evicting expert 1


def test_moe_infinity_prefetches_up_to_the_budget():
    """With two prefetch decisions a visit, MoE-Infinity spends both when two experts are likely
    enough, even while the first copy is under way (demand copies go ahead of it anyway)."""
    env = MoEOffloadEnv("mixtral", tokens=64, prefetch=2)
    core = env.make_core("mixtral", 10_000)
    run_policy(core, POLICIES["heuristic:moe-infinity"]())
    per_visit = Counter(v for v, kind, _, _ in core.events() if kind == 0)
    assert per_visit and max(per_visit.values()) == 2


def test_lru_per_layer_keeps_fixed_per_layer_caches():
    env = MoEOffloadEnv("mixtral", tokens=40, prefetch=0, capacity=96)
    core = env.make_core("mixtral", 3)
    run_policy(core, POLICIES["heuristic:lru-layer"]())
    per_layer = core.resident.reshape(core.n_layers, core.n_experts).sum(axis=1)
    assert np.all(per_layer == 3)  # Mixtral-offloading: 3 of 8 experts per layer


# -- the env contract ------------------------------------------------------------------------


def test_check_env():
    env = MoEOffloadEnv(cpu_offload=True, max_entities=32)
    # check_env steps with action_space.sample(), which knows nothing of the mask; with CPU
    # offload the skip action is legal in every phase, so the checker steps with it.
    env.action_space.sample = lambda *a, **k: np.int64(env.layout.max_entities)
    check_env(env, skip_render_check=True)


@pytest.mark.parametrize("policy", sorted(POLICIES) + ["random"])
def test_every_policy_runs_end_to_end_and_validates(policy):
    result = run_episode(
        "moe", policy, case="tinymoe-docs", seed=2, env_kwargs={"tokens": 96, "max_entities": 32}
    )
    m = result.metrics
    assert m["tokens"] == 96 and m["stall_s"] >= 0
    if policy != "bound:min-copies":  # it bounds stall and copies, not the hit rate
        assert 0 <= m["hit_rate"] <= 1


def test_batch_needs_the_union_of_the_sequences_experts():
    # 4 OLMoE sequences of 64 tokens decoded together: 64 steps of 16 layers, each layer needing
    # the union of 4 tokens' 8 experts
    result = run_episode(
        "moe",
        "heuristic:lru",
        case="olmoe",
        seed=1,
        env_kwargs={"batch": 4, "tokens": 256, "prefetch": 0, "max_entities": 1024},
    )
    m = result.metrics
    assert m["tokens"] == 256 and m["stall_per_token_s"] == pytest.approx(m["stall_s"] / 64)
    assert 64 * 16 * 8 < m["accesses"] < 64 * 16 * 32


def test_reset_is_deterministic_and_snapshots_restore():
    env = MoEOffloadEnv("mixtral", tokens=8, max_entities=256)
    obs_a, _ = env.reset(seed=4)
    obs_b, _ = env.reset(seed=4)
    assert all(np.array_equal(obs_a[k], obs_b[k]) for k in obs_a)
    rng = np.random.default_rng(0)
    for _ in range(5):
        env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
    snap = env.get_state()
    tails = []
    for _ in range(2):
        env.set_state(snap)
        rng = np.random.default_rng(1)
        done, info = False, {}
        while not done:
            assert env.action_masks().any()
            _, _, done, _, info = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        tails.append(info["record"])
    assert tails[0] == tails[1]
    validate(tails[0])


def test_illegal_actions_are_refused_with_a_reason():
    env = MoEOffloadEnv("tinymoe-code", tokens=32, max_entities=40)
    env.reset(seed=0)
    core = env.core
    assert core.phase == PREFETCH
    resident = int(np.flatnonzero(core.resident)[0])
    with pytest.raises(IllegalActionError, match="already in GPU memory"):
        env.step(resident)
    with pytest.raises(IllegalActionError, match="padding row"):
        env.step(35)
    # run on until a miss while another expert the layer needs is cached
    while not (core.phase == EVICT and (core.needed & core.resident).any()):
        env.step(int(np.flatnonzero(env.action_masks())[0]))
    with pytest.raises(IllegalActionError, match="needed by this layer"):
        env.step(int(np.flatnonzero(core.needed & core.resident)[0]))
    with pytest.raises(IllegalActionError, match="CPU offload is off"):
        env.step(core.skip)


def test_validate_catches_tampered_records():
    record = run_episode(
        "moe",
        "heuristic:lru",
        case="tinymoe-code",
        seed=0,
        env_kwargs={"tokens": 32, "max_entities": 32},
    ).record
    loads = [i for i, e in enumerate(record["events"]) if e[1] == 1 and e[3] >= 0]
    over = json.loads(json.dumps(record))
    over["events"][loads[0]][3] = -1  # load into a full cache without evicting
    with pytest.raises(RecordError, match="full cache"):
        validate(over)
    missing = json.loads(json.dumps(record))
    del missing["events"][loads[0]]
    with pytest.raises(RecordError, match="no load or CPU decision"):
        validate(missing)
    wrong = json.loads(json.dumps(record))
    event = wrong["events"][loads[0]]
    visit, layer = event[0], event[0] % record["n_layers"]
    step = visit // record["n_layers"]
    token = wrong["steps"][step][0]
    (other,) = [layer * 8 + e for e in wrong["routing"][token][layer] if layer * 8 + e != event[2]]
    event[3] = other  # evict the layer's other expert: needed now (or not even cached)
    with pytest.raises(RecordError, match="which this layer needs|not in GPU memory"):
        validate(wrong)
    small = json.loads(json.dumps(record))
    small["capacity"] -= 1
    with pytest.raises(RecordError, match="capacity"):
        validate(small)


def test_plots_are_written(tmp_path):
    record = run_episode(
        "moe",
        "heuristic:lfu",
        case="tinymoe-code",
        seed=0,
        env_kwargs={"tokens": 32, "max_entities": 32},
    ).record
    plot_record(record, tmp_path / "ep.png", policy="heuristic:lfu")
    assert (tmp_path / "ep.png").stat().st_size > 10_000
    assert (tmp_path / "ep-curve.png").stat().st_size > 10_000
    curves = plot_hit_rate_curve(
        ["heuristic:lru", "oracle:belady"],
        tmp_path / "c.png",
        "tinymoe-docs",
        tokens=32,
        capacities=[4, 8, 16, 24],
    )
    lru, belady = (np.array(curves[p])[:, 1] for p in ("heuristic:lru", "oracle:belady"))
    assert np.all(np.diff(belady) >= 0) and np.all(belady >= lru)


def test_cpu_table_prices_cpu_offload():
    env = MoEOffloadEnv("olmoe", tokens=4, cpu_offload=True)
    core = env.make_core("olmoe", 0)
    cpu = load_cost_table("cpu")
    assert core.costs.cpu_s[1] > core.costs.gpu_s[1]  # the CPU is the slower engine
    assert core.costs.cpu_s[1] == pytest.approx(
        2 * cpu.predict("linear", tokens=1, d_in=2048, d_out=1024)
        + cpu.predict("activation", elements=1024)
        + cpu.predict("linear", tokens=1, d_in=1024, d_out=2048)
    )


def test_server_cpu_profile_prices_a_mixtral_expert_from_the_published_figures():
    """``xeon-spr``: one socket of the Xeon Platinum 8452Y of KTransformers' SOSP'25 testbed.
    One decoded token through a Mixtral expert reads its 352,321,536 BF16 bytes at the
    datasheet's 8 x DDR5-4800 = 307.2 GB/s: 1.147 ms by hand. 512 tokens through it are
    compute-bound and run at the 21.3 TFLOP/s KTransformers measured for its AMX BF16 kernel
    on one socket (2.5 % tolerance: the gated activation's memory traffic adds 0.14 ms).
    Fiddler's and KTransformers' premise then holds on it and not on this 2-vCPU machine: a
    missed expert computed on the CPU finishes before its copy over PCIe 5.0 would."""
    model = MODELS["mixtral-8x7b"]
    env = MoEOffloadEnv("mixtral", tokens=4, cpu_offload=True, cpu="xeon-spr")
    costs = env.make_core("mixtral", 0).costs
    assert costs.cpu_s[1] == pytest.approx(352_321_536 / 307.2e9, rel=0.01)
    server = load_cost_table("xeon-spr")
    flops = 2 * 512 * 3 * model.hidden * model.intermediate
    t512 = price(server, mlp_calls(model, 512, model.intermediate))
    assert flops / t512 == pytest.approx(21.3e12, rel=0.025)
    assert costs.cpu_s[1] < costs.copy_s
    here = MoEOffloadEnv("mixtral", tokens=4, cpu_offload=True).make_core("mixtral", 0).costs
    assert here.cpu_s[1] > here.copy_s


def test_a_deep_copy_mid_episode_plays_on_as_the_original_and_apart_from_it():
    """``copy.deepcopy`` of a running env (what search code does) copies the expert buffers
    and the numpy views read from them apart; the copy must rebind its views, else its masks
    and observations read stale state and a mask-legal action is refused by ``step``."""
    import copy

    env = MoEOffloadEnv("tinymoe-docs", tokens=32, prefetch=1)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(40):
        env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
    twin = copy.deepcopy(env)
    before = env.action_masks().copy()
    done = False
    while not done:  # the copy plays to the end, every mask-legal action accepted
        obs, reward, done, _, _ = twin.step(int(rng.choice(np.flatnonzero(twin.action_masks()))))
        assert twin.observation_space.contains(obs)
    assert (env.action_masks() == before).all()  # the original was not touched
    # and the original, played on with the same actions as a second copy, stays in step with it
    other = copy.deepcopy(env)
    while not env.core.done:
        action = int(rng.choice(np.flatnonzero(env.action_masks())))
        a, b = env.step(action), other.step(action)
        assert a[1] == b[1] and all((a[0][k] == b[0][k]).all() for k in a[0])
        if not env.core.done:
            assert (env.action_masks() == other.action_masks()).all()
