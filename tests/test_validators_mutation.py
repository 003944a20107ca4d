"""Mutation tests of every env's independent ``validate``.

A valid record (a heuristic's episode under hypothesis-drawn sizes and seeds) is corrupted in
one of the ways its validator's docstring promises to catch: overlap on a machine, device or
address range; precedence; capacity (fast memory, GPU expert cache, KV blocks); conservation of
operations, tasks, requests and tokens; wrong durations, devices and lifetimes. The validator
must raise `RecordError`, and for the right reason (its message is matched). A mutation that
the drawn record offers no place for (e.g. no machine waits) is skipped with ``assume``.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from playing import examples, play

from schedgym.errors import RecordError
from schedgym.registry import env_entry

TRIED: Counter[str] = Counter()
PICK = st.integers(0, 10**6)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nmutations tried: {dict(sorted(TRIED.items()))}")


def _refused(env_name: str, record: dict[str, Any], reason: str, mutation: str) -> None:
    with pytest.raises(RecordError, match=reason):
        env_entry(env_name).module("record").validate(record)
    TRIED[f"{env_name}:{mutation}"] += 1


def _valid(env_name: str, policy: str, kwargs: dict, seed: int, case: str) -> dict[str, Any]:
    played = play(env_name, policy, kwargs, seed, case)
    assert played is not None
    return copy.deepcopy(played.record)


# -- job shop: every operation once, its machine, its duration, precedence, no overlap ---------

JOBSHOP_MUTATIONS = ["overlap", "precedence", "duration", "machine", "missing", "duplicate"]


@pytest.mark.parametrize("mutation", JOBSHOP_MUTATIONS)
@settings(max_examples=examples(25))
@given(
    jobs=st.integers(2, 6),
    machines=st.integers(2, 5),
    seed=st.integers(0, 999),
    pick=PICK,
)
def test_jobshop_validator_catches(mutation, jobs, machines, seed, pick):
    record = _valid("jobshop", "heuristic:spt", {}, seed, f"random:{jobs}x{machines}:{seed}")
    rows = record["schedule"]
    end_of = {(r["job"], r["op"]): r["end"] for r in rows}
    row = rows[pick % len(rows)]
    if mutation == "overlap":
        # an operation that waited for its machine, moved to when its job let it start: it now
        # overlaps the operation that held the machine, and precedence still holds
        waited = [r for r in rows if r["start"] > end_of.get((r["job"], r["op"] - 1), 0)]
        assume(waited)
        row = waited[pick % len(waited)]
        length = row["end"] - row["start"]
        row["start"] = end_of.get((row["job"], row["op"] - 1), 0)
        row["end"] = row["start"] + length
        reason = "overlap on machine"
    elif mutation == "precedence":
        later = [r for r in rows if r["op"] > 0]
        row = later[pick % len(later)]
        before = next(r for r in rows if (r["job"], r["op"]) == (row["job"], row["op"] - 1))
        length = row["end"] - row["start"]
        row["start"] = before["start"]
        row["end"] = row["start"] + length
        reason = "precedence"
    elif mutation == "duration":
        row["end"] += 1
        reason = "lasts"
    elif mutation == "machine":
        row["machine"] = (row["machine"] + 1) % machines
        reason = "runs on machine"
    elif mutation == "missing":
        rows.remove(row)
        reason = "scheduled 0 times"
    else:
        rows.append(dict(row))
        reason = "scheduled 2 times"
    _refused("jobshop", record, reason, mutation)


# -- DAG: every task once, a device that runs it, its cost, precedence + transfers, no overlap --

DAG_MUTATIONS = [
    "overlap",
    "precedence",
    "planned-cost",
    "executed-cost",
    "device",
    "missing",
    "duplicate",
]


@pytest.mark.parametrize("mutation", DAG_MUTATIONS)
@settings(max_examples=examples(17))
@given(
    n=st.integers(3, 16),
    seed=st.integers(0, 999),
    pick=PICK,
)
def test_dag_validator_catches(mutation, n, seed, pick):
    record = _valid("dag", "heuristic:heft", {"dag": {"n": n}}, seed, "random")
    rows = record["schedule"]
    by_task = {r["task"]: r for r in rows}
    row = rows[pick % len(rows)]

    def shift(r: dict, to: float) -> None:
        delta = to - r["planned_start"]
        for key in ("planned_start", "planned_end", "start", "end"):
            r[key] += delta

    if mutation == "overlap":
        # the later of two tasks on one device, moved onto the earlier one's start, where none
        # of its inputs arrive late: the two now run at once
        pairs = []
        for a in rows:
            for b in rows:
                if (
                    a is not b
                    and a["device"] == b["device"]
                    and (a["planned_start"] < b["planned_start"])
                ):
                    preds = [by_task[s] for s, d, _ in record["edges"] if d == b["task"]]
                    if all(
                        p["planned_end"] <= a["planned_start"] and p["device"] == b["device"]
                        for p in preds
                    ):
                        pairs.append((a, b))
        assume(pairs)
        a, b = pairs[pick % len(pairs)]
        shift(b, a["planned_start"])
        # the replay of each device's order may meet the clash first: b cannot start there
        reason = "overlap|inputs and device allowed"
    elif mutation == "precedence":
        edges = record["edges"]
        assume(edges)
        src, dst, _ = edges[pick % len(edges)]
        shift(by_task[dst], by_task[src]["planned_start"])
        reason = "before its input"
    elif mutation == "planned-cost":
        row["planned_end"] += (row["planned_end"] - row["planned_start"]) * 0.5 + 1e-6
        reason = "planned for"
    elif mutation == "executed-cost":
        row["end"] += (row["end"] - row["start"]) * 0.5 + 1e-6
        reason = "ran for"
    elif mutation == "device":
        row["device"] = len(record["devices"])
        reason = "not one of the"
    elif mutation == "missing":
        rows.remove(row)
        reason = "schedule rows for"
    else:
        rows.append(dict(row))
        reason = "schedule rows for"
    _refused("dag", record, reason, mutation)


# -- batching: steps in order, arrivals, KV capacity, tokens conserved, times as replayed -------

BATCHING_MUTATIONS = [
    "kv-capacity",
    "step-overlap",
    "early",
    "output-tokens",
    "lost-request",
    "first-token",
]


@pytest.mark.parametrize("mutation", BATCHING_MUTATIONS)
@settings(max_examples=examples(10))
@given(
    n=st.integers(2, 30),
    seed=st.integers(0, 999),
    pick=PICK,
)
def test_batching_validator_catches(mutation, n, seed, pick):
    record = _valid("batching", "heuristic:vllm-v1", {"n_requests": n}, seed, "azure-conv-synth")
    req, steps = record["requests"], record["steps"]
    r = pick % len(req["arrival_s"])
    if mutation == "kv-capacity":
        record["config"]["kv_capacity_blocks"] = max(steps["kv_blocks"]) - 1
        reason = "KV blocks held, capacity"
    elif mutation == "step-overlap":
        assume(len(steps["start_s"]) > 1)
        s = 1 + pick % (len(steps["start_s"]) - 1)
        steps["start_s"][s] = steps["end_s"][s - 1] - 1e-4
        reason = "after the previous end"
    elif mutation == "early":
        # the request arrives after the first step that runs it
        first_step = next(
            i
            for i in range(len(steps["start_s"]))
            if r in steps["rid"][steps["offsets"][i] : steps["offsets"][i + 1]]
        )
        req["arrival_s"][r] = steps["start_s"][first_step] + 1e-3
        reason = "before it arrives"
    elif mutation == "output-tokens":
        req["output_tokens"][r] += 1
        reason = f"request {r} produced|the replay holds"  # never finishes, or keeps its KV
    elif mutation == "lost-request":
        for key in req:
            req[key].pop(r)
        reason = "entries|does not exist"
    else:
        req["first_token_s"][r] += 1e-3
        reason = "the record says first"
    _refused("batching", record, reason, mutation)


# -- MoE: cache within capacity, no eviction of absent or needed experts, every miss served -----

MOE_MUTATIONS = ["capacity", "dropped-load", "absent-victim", "needed-victim", "cpu-off"]


@pytest.mark.parametrize("mutation", MOE_MUTATIONS)
@settings(max_examples=examples(20))
@given(
    tokens=st.integers(4, 12),
    capacity=st.integers(8, 20),
    seed=st.integers(0, 999),
    pick=PICK,
)
def test_moe_validator_catches(mutation, tokens, capacity, seed, pick):
    if mutation == "cpu-off":  # one cached expert, two needed: misses go to the CPU
        kwargs = {"tokens": tokens, "capacity": 1, "cpu_offload": True}
    else:
        kwargs = {"tokens": tokens, "capacity": capacity}
    record = _valid("moe", "heuristic:lru", kwargs, seed, "tinymoe-code")
    events = record["events"]
    loads = [e for e in events if e[1] == 1]
    assume(loads)
    load = loads[pick % len(loads)]
    if mutation == "capacity":
        record["capacity"] -= 1
        reason = "capacity"
    elif mutation == "dropped-load":
        events.remove(load)
        reason = "is needed, not cached"
    elif mutation == "absent-victim":
        load[3] = load[2]  # evicts the expert it is loading, not yet in GPU memory
        reason = "not in GPU memory"
    elif mutation == "needed-victim":
        # a layer with two misses: the second load evicts the first, which the layer needs
        pairs = [(a, b) for a, b in zip(loads, loads[1:], strict=False) if a[0] == b[0]]
        assume(pairs)
        first, second = pairs[pick % len(pairs)]
        second[3] = first[2]
        reason = "which this layer needs"
    else:
        on_cpu = [e for e in events if e[1] == 2]
        assume(on_cpu)
        record["cpu_offload"] = False
        reason = "CPU offload is off"
    _refused("moe", record, reason, mutation)


# -- memory map: no overlap in time x address, fast capacity, everything placed, sane buffers ---

MEMORY_MUTATIONS = ["overlap", "capacity", "unplaced", "duplicate-id", "zero-size", "lifetime"]


@pytest.mark.parametrize("mutation", MEMORY_MUTATIONS)
@settings(max_examples=examples(20))
@given(
    task=st.sampled_from(["map", "pack"]),
    n=st.integers(2, 20),
    seed=st.integers(0, 999),
    pick=PICK,
)
def test_memory_validator_catches(mutation, task, n, seed, pick):
    record = _valid("memmap", "heuristic:best-fit-size", {"task": task}, seed, f"random:{n}:{seed}")
    buf, offset = record["buffers"], record["offset"]
    start, end, size = (np.asarray(buf[k]) for k in ("start", "end", "size"))
    placed = [i for i, o in enumerate(offset) if o >= 0]
    i = pick % len(offset)
    if mutation == "overlap":
        # b moved onto a's offset while both live (and, in map, still inside fast memory)
        pairs = [
            (a, b)
            for a in placed
            for b in placed
            if a != b
            and start[a] < end[b]
            and start[b] < end[a]
            and (task == "pack" or offset[a] + size[b] <= record["capacity"])
        ]
        assume(pairs)
        a, b = pairs[pick % len(pairs)]
        offset[b] = offset[a]
        reason = "overlap"
    elif mutation == "capacity":
        assume(task == "map" and placed)
        i = placed[pick % len(placed)]
        offset[i] = record["capacity"] - int(size[i]) + 1
        reason = "exceeds the fast capacity"
    elif mutation == "unplaced":
        assume(task == "pack")
        offset[i] = -1
        reason = "left unplaced"
    elif mutation == "duplicate-id":
        buf["id"][(i + 1) % len(offset)] = buf["id"][i]
        reason = "duplicate ids"
    elif mutation == "zero-size":
        buf["size"][i] = 0
        reason = "size"
    else:
        buf["end"][i] = buf["start"][i]
        reason = "lifetime|end"
    _refused("memmap", record, reason, mutation)
