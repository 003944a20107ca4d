"""MemoryMap's msa task: prefetch, eviction and the copy engine, worked out by hand.

Every expected time below is computed in the comments from the op table of the case: slow
memory 10 B/s, fast memory 100 B/s, copies 10 B/s, so a 10-byte buffer costs 1 s from slow
memory, 0.1 s from fast memory and 1 s to copy.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from schedgym.baselines.memory import POLICIES, msa_time_bound
from schedgym.envs.memory.core import MsaCore, timeline
from schedgym.envs.memory.env import MemoryMapEnv
from schedgym.envs.memory.record import validate
from schedgym.episode import run_episode
from schedgym.errors import IllegalActionError, RecordError, SchedgymError
from schedgym.workloads.memory import BufferSet, OpTable

BW = {"fast_bandwidth": 100.0, "slow_bandwidth": 10.0, "copy_bandwidth": 10.0}


def _set(compute, accesses, lifetimes, size=10):
    """A buffer set from per-op compute seconds, (op, buffer) accesses of ``size`` bytes and
    per-buffer op-step lifetimes."""
    m, n = len(compute), len(lifetimes)
    op, buf = zip(*sorted(accesses), strict=True)
    table = OpTable(
        time=np.arange(m),
        compute_s=compute,
        fixed_bytes=np.zeros(m),
        access_op=op,
        access_buf=buf,
        access_bytes=[size] * len(op),
    )
    return BufferSet(
        "hand",
        ids=np.arange(n),
        start=[s for s, _ in lifetimes],
        end=[e for _, e in lifetimes],
        size=[size] * n,
        ops=table,
    )


def _play(core: MsaCore, plan: dict[int, tuple[int, int, int] | None]) -> None:
    """Decide each buffer as ``plan`` says: ``(lo, hi, prefetch op or -1)`` or slow."""
    while not core.done:
        want = plan[core.current]
        if want is None:
            core.step(core.slow_action)
            continue
        lo, hi, p = want
        hits = [
            c
            for c in range(core.cand_offset.size)
            if (core.cand[0, c], core.cand[1, c], core.cand[4, c]) == (lo, hi, p)
        ]
        assert hits, (core.current, core.cand.T.tolist())
        core.step(hits[0])


def _two(c2: float) -> BufferSet:
    # op 0 writes A (0) and B (1); op 1 (10 s of compute) reads B; op 2 computes c2 s; op 3
    # reads A. All slow: op 0 moves 20 B = 2 s, op 1 10 s, op 2 c2, op 3 1 s.
    return _set([0.1, 10.0, c2, 0.1], [(0, 0), (0, 1), (1, 1), (3, 0)], [(0, 4), (0, 2)])


def test_prefetch_hidden_behind_compute_gives_the_exact_time():
    core = MsaCore(_two(10.0), 10, order="start", **BW)
    assert core.all_slow == pytest.approx(23.0)
    # B written in fast memory over ops [0, 2); A written slow, prefetched at op 2: the copy
    # is ready when op 1 ends (0.1 + 1 + 10 = 11.1 s), ends at 12.1 s, hidden behind op 2's
    # 10 s. Ops: 1.1 + 10 + 10 + 0.1 (A from fast) = 21.2 s, no stall.
    _play(core, {1: (0, 2, -1), 0: (2, 4, 2)})
    m = core.metrics()
    assert m["modelled_time_s"] == pytest.approx(21.2)
    assert m["stall_s"] == pytest.approx(0.0, abs=1e-12)
    assert (m["prefetches"], m["evictions"]) == (1, 0)
    rec = core.record()
    assert rec["copies"]["start_s"] == pytest.approx([11.1])
    assert rec["copies"]["end_s"] == pytest.approx([12.1])
    assert validate(json.loads(json.dumps(rec)))["modelled_time_s"] == pytest.approx(21.2)


def test_xla_heuristic_finds_the_hand_optimum():
    # A lower bound by hand: op 0 cannot hold both 10-byte buffers in 10 bytes of fast memory,
    # so it moves at least 10 B from slow memory (>= 1.1 s); ops 1, 2 need their 10 s of
    # compute, op 3 its 0.1 s: 21.2 s, which heuristic:msa reaches.
    core = MsaCore(_two(10.0), 10, order="benefit", **BW)
    policy = POLICIES["heuristic:msa"]()
    env = type("Face", (), {"core": core})()
    env.unwrapped = env
    while not core.done:
        core.step(policy.act(env, None))
    assert core.metrics()["modelled_time_s"] == pytest.approx(21.2)
    assert validate(core.record())["modelled_time_s"] == pytest.approx(21.2)


@pytest.mark.parametrize(("issue", "stall", "total"), [(2, 0.5, 12.2), (3, 1.0, 12.7)])
def test_a_copy_that_cannot_finish_stalls_by_the_hand_worked_amount(issue, stall, total):
    core = MsaCore(_two(0.5), 10, order="start", **BW)
    # Issued at op 2: ready when op 1 ends (1.1 + 10 = 11.1 s), ends at 12.1 s; op 3 would
    # start at 11.6 s, so it waits 0.5 s: 1.1 + 10 + 0.5 + 0.5 + 0.1 = 12.2 s. Issued at op 3,
    # the use itself: ready at 11.6 s, op 3 waits the whole copy, 1 s: 12.7 s. (A left slow:
    # 1.1 + 10 + 0.5 + 1 = 12.6 s.)
    _play(core, {1: (0, 2, -1), 0: (issue, 4, issue)})
    m = core.metrics()
    assert m["stall_s"] == pytest.approx(stall)
    assert m["modelled_time_s"] == pytest.approx(total)
    assert validate(core.record())["modelled_time_s"] == pytest.approx(total)


def _evict_case() -> BufferSet:
    # op 0 writes A (0); op 1 reads A; op 2 computes 2 s; op 3 writes C (1); op 4 reads C;
    # op 5 reads A again.
    return _set(
        [0.1, 0.1, 2.0, 0.1, 0.1, 0.1], [(0, 0), (1, 0), (5, 0), (3, 1), (4, 1)], [(0, 6), (3, 5)]
    )


def test_an_eviction_frees_space_a_later_buffer_uses():
    core = MsaCore(_evict_case(), 10, order="start", **BW)
    # A written in fast memory, read there at op 1, evicted once op 1 ends (0.2 s) to 1.2 s,
    # while op 2 computes (0.2 .. 2.2 s); its space is free from op min(1 + 2, 5) = 3, where C
    # takes the same 10 bytes over ops [3, 5). Ops: 0.1 + 0.1 + 2 + 0.1 + 0.1 + 1 (A from
    # slow at op 5) = 3.4 s. Keeping A fast to op 5 instead leaves C slow: 4.3 s.
    _play(core, {0: (0, 3, -1), 1: (3, 5, -1)})
    m = core.metrics()
    assert m["modelled_time_s"] == pytest.approx(3.4)
    assert (m["evictions"], m["fast_buffers"], m["height"]) == (1, 2, 10)
    rec = core.record()
    assert rec["offset"] == [0, 0]
    assert rec["copies"]["kind"] == ["eviction"]
    assert rec["copies"]["start_s"] == pytest.approx([0.2])
    assert rec["copies"]["end_s"] == pytest.approx([1.2])
    assert validate(rec)["modelled_time_s"] == pytest.approx(3.4)
    kept = MsaCore(_evict_case(), 10, order="start", **BW)
    _play(kept, {0: (0, 6, -1), 1: None})
    assert kept.metrics()["modelled_time_s"] == pytest.approx(4.3)


def _pair() -> BufferSet:
    # op 0 writes A (0) and D (1): 20 B from slow memory, 2 s; op 1 computes 1.5 s; op 2 reads
    # both.
    return _set([0.1, 1.5, 0.1], [(0, 0), (0, 1), (2, 0), (2, 1)], [(0, 3), (0, 3)])


def _pair_record() -> dict:
    core = MsaCore(_pair(), 20, order="start", **BW)
    # Both prefetched at op 1, ready when op 0 ends (2 s): one engine, so A copies 2 .. 3 s and
    # D 3 .. 4 s; op 1 ends at 3.5 s and op 2 waits for D to 4 s (0.5 s), then reads 20 B from
    # fast memory in 0.2 s: 4.2 s in all.
    _play(core, {0: (1, 3, 1), 1: (1, 3, 1)})
    assert core.metrics()["stall_s"] == pytest.approx(0.5)
    assert core.metrics()["modelled_time_s"] == pytest.approx(4.2)
    return core.record()


def test_the_copy_engine_runs_one_copy_at_a_time():
    rec = _pair_record()
    assert rec["copies"]["start_s"] == pytest.approx([2.0, 3.0])
    assert rec["copies"]["end_s"] == pytest.approx([3.0, 4.0])
    assert rec["op_start_s"] == pytest.approx([0.0, 2.0, 4.0])
    assert validate(rec)["modelled_time_s"] == pytest.approx(4.2)
    # The timeline by itself: two 1 s copies ready at op 1 and awaited by op 2.
    start, c0, c1, total = timeline(
        np.array([2.0, 1.5, 0.2]), np.array([1, 1]), np.array([2, 2]), np.array([1.0, 1.0])
    )
    assert (start.tolist(), c0.tolist(), c1.tolist(), total) == ([0, 2, 4], [2, 3], [3, 4], 4.2)


def _reference_timeline(d, ready_op, wait_op, dur):
    """The schedule event by event: at each op, first issue the copies ready there (once the
    previous op ends, first come first served), then wait for the copies the op needs."""
    m, n = d.size, ready_op.size
    start, c_start, c_end = np.zeros(m), np.zeros(n), np.zeros(n)
    clock = free = 0.0
    for j in range(m + 1):
        for c in sorted(range(n), key=lambda c: (ready_op[c], c)):
            if ready_op[c] == j:
                c_start[c] = max(clock, free)
                c_end[c] = free = c_start[c] + dur[c]
        clock = max([clock] + [c_end[c] for c in range(n) if wait_op[c] == j])
        if j < m:
            start[j] = clock
            clock += d[j]
    return start, c_start, c_end, clock


def test_timeline_matches_an_event_by_event_schedule():
    rng = np.random.default_rng(7)
    for _ in range(200):
        m, n = int(rng.integers(1, 12)), int(rng.integers(0, 8))
        d = rng.uniform(0.0, 2.0, m)
        ready = rng.integers(0, m, n)
        wait = np.minimum(ready + rng.integers(0, 3, n), m - 1)
        dur = rng.uniform(0.0, 3.0, n)
        got, want = timeline(d, ready, wait, dur), _reference_timeline(d, ready, wait, dur)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def _tampered(rec: dict, **changes) -> dict:
    out = json.loads(json.dumps(rec))
    for path, value in changes.items():
        *keys, last = path.split("__")
        node = out
        for k in keys:
            node = node[k]
        node[last] = value
    return out


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        (
            {
                "copies__start_s": [2.0, 2.0],
                "copies__end_s": [3.0, 3.0],
                "op_start_s": [0.0, 2.0, 3.5],
            },
            "overlap on the one copy engine",
        ),
        ({"copies__end_s": [3.0, 3.5]}, "lasts 0.5 s, not size / copy bandwidth"),
        ({"op_start_s": [0.0, 2.0, 3.5]}, "ends at 4 s, after op 2 starts at 3.5 s"),
        ({"copies__start_s": [1.0, 3.0], "copies__end_s": [2.0, 4.0]}, "starts before op 0 ends"),
        ({"op_start_s": [0.0, 1.0, 4.0]}, "op 1 starts at 1 s, before op 0 ends at 2 s"),
        (
            {
                "copies__buffer": [0],
                "copies__kind": ["prefetch"],
                "copies__ready_op": [1],
                "copies__wait_op": [2],
                "copies__start_s": [2.0],
                "copies__end_s": [3.0],
            },
            "1 needed prefetch/eviction copies are missing",
        ),
        ({"windows__last_op": [1, 2]}, "does not start and end at accesses"),
        ({"windows__lo": [0, 1]}, "prefetch issued at op 0, before the op 0 that writes it ends"),
        ({"offset": [0, 5]}, "buffers 0 and 1 overlap"),
        ({"offset": [0, 15]}, "exceeds the fast capacity 20"),
    ],
)
def test_validate_rejects_each_kind_of_corrupted_record(changes, words):
    with pytest.raises(RecordError, match=words.replace("(", r"\(").replace(".", r"\.")):
        validate(_tampered(_pair_record(), **changes))


def test_validate_rejects_a_bad_eviction():
    core = MsaCore(_evict_case(), 10, order="start", **BW)
    _play(core, {0: (0, 3, -1), 1: (3, 5, -1)})
    rec = core.record()
    with pytest.raises(RecordError, match="an evicted window spans"):
        validate(_tampered(rec, windows__hi=[2, 5]))
    with pytest.raises(RecordError, match="unneeded or repeated eviction"):
        validate(_tampered(rec, copies__buffer=[1]))


@pytest.mark.parametrize(("c2", "lower"), [(10.0, 21.2), (0.5, 11.7)])
def test_the_msa_lp_bound_by_hand(c2, lower):
    # Op 0 holds at most 10 of its 20 written bytes in fast memory: >= 1 + 0.1 s; op 1 >= 10 s;
    # op 2 >= c2; op 3 reads A from fast memory after a prefetch (1 s on the engine, well within
    # the total): 0.1 s. The relaxation cannot see the stall of the c2 = 0.5 case (12.2 s by
    # hand above): 11.7 s.
    core = MsaCore(_two(c2), 10, order="start", **BW)
    assert msa_time_bound(core) == pytest.approx(lower)
    rec = core.record()
    rec["bound"] = "knapsack"
    assert validate(rec)["modelled_time_s"] == pytest.approx(lower)


def test_the_msa_lp_bound_counts_held_space_and_the_copy_engine():
    # The eviction case: keeping A from op 1 to op 5 holds its 10 bytes over ops 2..4, where C
    # needs them; a prefetch for op 5 costs 1 s on the engine, within op 2's 2 s. Best by hand:
    # A fast at 0, 1 (held), C fast at 3, 4, A prefetched for 5: 0.1 x 5 + 2 = 2.5 s.
    core = MsaCore(_evict_case(), 10, order="start", **BW)
    assert msa_time_bound(core) == pytest.approx(2.5)
    # With a 100 s copy: holding A over ops 2..4 costs C's fast accesses at ops 3 and 4 twice
    # what it saves at op 5, so the LP prefetches a fraction q of A, saving 0.9 q s at op 5,
    # while the engine's 100 q s must fit in the total 3.4 - 0.9 q: q = 3.4 / 100.9, and the
    # bound is 3.4 - 0.9 q = 3.4 x 100 / 100.9 s.
    tight = MsaCore(_evict_case(), 10, order="start", **dict(BW, copy_bandwidth=0.1))
    assert msa_time_bound(tight) == pytest.approx(3.4 * 100 / 100.9)


def test_the_interval_picker_by_hand():
    # A's prefetch for its read at op 3 copies 10 B in 1 s. The all-slow op times are 2, 10,
    # 10 and 1 s; issued at op p it overlaps ops p..2. XLA's CostAnalysisPrefetchIntervalPicker:
    # latest: overlap + the 0.9 s the read saves >= 0.8 x 1 s holds even at p = 3 (no overlap);
    # earliest: overlap <= 10 x (10 B of fast memory / 10 B/s) = 10 s, so p >= 2 (10 s);
    # preferred: overlap closest to 1.5 x 1 s: 0 s at p = 3 beats 10 s at p = 2.
    core = MsaCore(_two(10.0), 10, order="start", **BW)
    assert core.prefetch_starts(0, 1) == (2, 3, 3)


def test_illegal_actions_raise_and_the_mask_keeps_slow_memory():
    core = MsaCore(_two(10.0), 10, order="start", **BW)
    with pytest.raises(IllegalActionError, match="candidate window"):
        core.step(core.cand_offset.size)
    assert core.action_mask()[core.slow_action]


# --- the env face ----------------------------------------------------------------------------


def test_msa_env_contract_and_determinism():
    env = MemoryMapEnv(task="msa", case="random:40", fast_capacity=1.0, max_candidates=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)

    def roll(seed):
        env = MemoryMapEnv(task="msa", case="random:120", fast_capacity=0.2)
        obs, _ = env.reset(seed=seed)
        rng, out, done = np.random.default_rng(1), [], False
        while not done:
            assert env.action_masks().any() and env.observation_space.contains(obs)
            legal = np.flatnonzero(env.action_masks())
            obs, r, done, _, info = env.step(int(rng.choice(legal)))
            out.append(r)
        validate(info["record"])
        return out, info["metrics"]

    (a, ma), (b, mb) = roll(3), roll(3)
    assert a == b and ma == mb
    # Rewards telescope: their sum is the share of the all-slow time saved.
    assert sum(a) == pytest.approx(1 - ma["modelled_time_s"] / ma["all_slow_time_s"])


def test_every_msa_policy_runs_validated_or_refuses():
    results = {}
    for name in POLICIES:
        if name in ("solver:cpsat", "bound:peak-live", "solver:minimalloc"):
            with pytest.raises(SchedgymError, match="task"):
                run_episode("memmap", name, case="random:16:3", env_kwargs={"task": "msa"})
            continue
        results[name] = run_episode(
            "memmap", name, case="random:16:3", env_kwargs={"task": "msa"}
        ).metrics["modelled_time_s"]
    lower = results.pop("bound:knapsack")
    assert all(t >= lower * (1 - 1e-9) for t in results.values()), results


# AWS's NKI architecture guide for Trainium/Inferentia2 (envs/hardware/scratchpads.py): SBUF
# 24 MiB, 128 elements/cycle at 1.4 GHz per read and per write interface (bf16: 2 bytes);
# HBM 820 GB/s for the device's two NeuronCores; 16 DMA engines of 27 GiB/s per core.
TRN1_SBUF_BYTES = 24 * 2**20
TRN1_SBUF_BW = 2 * (128 * 2 * 1.4e9)  # read and write interfaces together: 716.8 GB/s
TRN1_HBM_BW = 820e9 / 2  # one core's share: 410 GB/s, below its 16 x 27 GiB/s of DMA


def test_the_trainium_scratchpad_prices_ops_and_copies_from_its_datasheet():
    s = 4 * 2**20  # 4 MiB buffers
    # op 0 writes A, op 1 computes 20 us, op 2 reads A
    bs = _set([0.0, 20e-6, 0.0], [(0, 0), (2, 0)], [(0, 3)], size=s)
    env = MemoryMapEnv(task="msa", fast_tier="trn1-sbuf")
    env.reset(seed=0, options={"case": bs})
    assert env.core.capacity == TRN1_SBUF_BYTES
    assert env.core.all_slow == pytest.approx(20e-6 + 2 * s / TRN1_HBM_BW)  # 40.46 us
    # A written slow (10.23 us), prefetched at op 1: the DMA copy (4 MiB at 410 GB/s, 10.23
    # us) hides behind op 1's 20 us, op 2 reads A from the SBUF (4 MiB at 716.8 GB/s, 5.85 us)
    _play(env.core, {0: (1, 3, 1)})
    m = env.core.metrics()
    assert m["modelled_time_s"] == pytest.approx(s / TRN1_HBM_BW + 20e-6 + s / TRN1_SBUF_BW)
    assert m["modelled_time_s"] == pytest.approx(36.0814e-6, rel=1e-5)
    assert m["stall_s"] == pytest.approx(0.0, abs=1e-15)
    rec = env.core.record()
    assert rec["copies"]["end_s"][0] - rec["copies"]["start_s"][0] == pytest.approx(s / TRN1_HBM_BW)
    assert validate(json.loads(json.dumps(rec)))["modelled_time_s"] == pytest.approx(
        m["modelled_time_s"]
    )


def test_an_unknown_fast_tier_is_refused():
    with pytest.raises(ValueError, match="unknown fast_tier 'tpu'; known: l2, trn1-sbuf"):
        MemoryMapEnv(task="msa", fast_tier="tpu")
