"""DagSched-v0: the HEFT paper's example, independent validation, bad input, the env contract."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from test_foundation import one_line_error, run_cli

from schedgym.baselines.dag import POLICIES
from schedgym.envs.dag.core import (
    Platform,
    compile_instance,
    downward_rank,
    hetero_platform,
    optimistic_cost_table,
    upward_rank,
)
from schedgym.envs.dag.env import DagSchedEnv
from schedgym.envs.dag.record import plot_record, validate
from schedgym.envs.hardware import HardwareProfile, Link, device_from_table, load_cost_table
from schedgym.episode import run_episode
from schedgym.errors import IllegalActionError, RecordError, SchedgymError, WorkloadError
from schedgym.workloads import dag as dag_workloads
from schedgym.workloads.dag import (
    ABSTRACT,
    DagShape,
    TaskGraph,
    graph_from_json,
    layered_dag,
    load_graph,
    random_dag,
    topcuoglu_2002,
    traced_graph,
)


def _topcuoglu_instance():
    g = topcuoglu_2002()
    return compile_instance([g], Platform.abstract(g.devices), np.random.default_rng(0))


def _abstract_graph(costs, edges, devices=("P1", "P2"), name="hand"):
    n = len(costs)
    return TaskGraph(
        name,
        tuple("abcdefgh"[:n]),
        (ABSTRACT,) * n,
        ({},) * n,
        (1,) * n,
        tuple((s, d) for s, d, _ in edges),
        tuple(float(c) for *_, c in edges),
        tuple(tuple(row) for row in costs),
        devices,
    )


# -- Topcuoglu, Hariri & Wu (2002): the paper's own figures ---------------------------------------


def test_upward_ranks_are_the_papers():
    # Topcuoglu et al. 2002, Table 2 (example of Fig. 2): rank_u of n1..n10
    paper = [108.000, 77.000, 80.000, 80.000, 69.000, 63.333, 42.667, 35.667, 44.333, 14.667]
    assert upward_rank(_topcuoglu_instance()) == pytest.approx(paper, abs=5e-4)


def test_heft_schedules_the_example_in_80_as_in_fig_4a():
    result = run_episode("dag", "heuristic:heft", case="topcuoglu")
    assert result.metrics["makespan"] == 80.0
    # Fig. 4(a): processor and time slot of every task
    fig4a = {
        "n1": ("P3", 0, 9),
        "n3": ("P3", 9, 28),
        "n4": ("P2", 18, 26),
        "n2": ("P1", 27, 40),
        "n5": ("P3", 28, 38),
        "n6": ("P2", 26, 42),
        "n9": ("P2", 56, 68),
        "n7": ("P3", 38, 49),
        "n8": ("P1", 57, 62),
        "n10": ("P2", 73, 80),
    }
    rec = result.record
    got = {
        rec["tasks"][r["task"]]["name"]: (rec["devices"][r["device"]]["name"], r["start"], r["end"])
        for r in rec["schedule"]
    }
    assert got == fig4a


def test_cpop_follows_the_critical_path_and_gives_86_as_in_fig_4b():
    inst = _topcuoglu_instance()
    priority = upward_rank(inst) + downward_rank(inst)
    # |CP| = rank_u(n1) = 108 and the critical path is n1 -> n2 -> n9 -> n10 (paper, Sec. 4.2)
    on_cp = np.flatnonzero(np.isclose(priority, 108.0))
    assert [inst.task_names[t] for t in on_cp] == ["n1", "n2", "n9", "n10"]
    assert run_episode("dag", "heuristic:cpop", case="topcuoglu").metrics["makespan"] == 86.0


def test_peft_optimistic_cost_table_by_hand():
    oct_ = optimistic_cost_table(_topcuoglu_instance())
    # exit task n10 costs (21, 7, 16); n9 -> n10 has c = 13, n7 -> n10 has c = 17:
    # OCT(n9, p) = min(w(n10, p), min_w w(n10, w) + 13) = (min(21, 20), 7, min(16, 20))
    assert oct_[8] == pytest.approx([20, 7, 16])
    assert oct_[6] == pytest.approx([21, 7, 16])
    assert oct_[9] == pytest.approx([0, 0, 0])


def test_slr_and_speedup_use_the_papers_definitions():
    m = run_episode("dag", "heuristic:heft", case="topcuoglu").metrics
    # CP_MIN: n1 -> n2 -> n9 -> n10 at fastest times 9 + 13 + 12 + 7 = 41;
    # sequential: the best single processor runs all ten tasks in 127 (P1)
    assert m["slr"] == pytest.approx(80 / 41)
    assert m["speedup"] == pytest.approx(127 / 80)


def test_bounds_bracket_the_heuristics_and_cpsat_proves_optimality():
    results = {name: run_episode("dag", name, case="topcuoglu").metrics for name in POLICIES}
    cp, sat = results["bound:critical-path"], results["solver:cpsat"]
    assert cp["makespan"] == 41.0 and cp["slr"] == 1.0
    assert sat["optimal"] == 1 and sat["lower_bound"] == sat["makespan"]
    assert cp["makespan"] <= sat["makespan"] <= 80.0
    for name, m in results.items():
        if name.startswith("heuristic:"):
            assert m["makespan"] >= sat["makespan"], name


# -- the decision: insertion-based earliest start, transfers --------------------------------------


def test_insertion_fills_an_idle_gap_by_hand():
    # a (P1: 1) -> b (P2: 1) with 5 units of data: b starts on P2 at 1 + 5 = 6, leaving P2 idle
    # on [0, 6); c (independent, P2: 3) must go into that gap at 0, not after b.
    g = _abstract_graph([(1, 10), (100, 1), (50, 3)], [(0, 1, 5)])
    env = DagSchedEnv(case=g)
    env.reset(seed=0)
    env.step(env.action_of(0, 0))
    env.step(env.action_of(1, 1))
    *_, info = env.step(env.action_of(2, 1))
    starts = {r["task"]: (r["device"], r["start"], r["end"]) for r in info["record"]["schedule"]}
    assert starts == {0: (0, 0.0, 1.0), 1: (1, 6.0, 7.0), 2: (1, 0.0, 3.0)}
    assert info["metrics"]["makespan"] == 7.0


def test_transfers_follow_the_links_on_hardware():
    # an H100 and a CPU joined by a link of 1 GB/s and 1 ms: a 1e6-byte edge across costs 2 ms
    gpu, cpu = (device_from_table(load_cost_table(n), n) for n in ("h100", "cpu"))
    platform = Platform.from_profile(
        HardwareProfile("pair", (gpu, cpu), (Link("h100", "cpu", 1e9, 1e-3),))
    )
    g = traced_graph("mlp")
    inst = compile_instance([g], platform, np.random.default_rng(0))
    assert inst.transfer(0, 1, 1e6) == pytest.approx(2e-3)
    assert inst.transfer(1, 1, 1e6) == 0.0
    # every op priced from the tables: the CPU is slower than the H100 on each of them
    assert np.all(inst.cost[:, 1] > inst.cost[:, 0])


# -- independent validation ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def heft_record():
    return run_episode("dag", "heuristic:heft", case="topcuoglu").record


def _row(record, name):
    i = next(k for k, t in enumerate(record["tasks"]) if t["name"] == name)
    return next(r for r in record["schedule"] if r["task"] == i)


@pytest.mark.parametrize(
    "tamper, message",
    [
        # n10 needs n8's output from P1: 62 + 11 = 73 is the earliest start on P2
        (
            lambda r: _row(r, "n10").update(
                start=72.0, end=79.0, planned_start=72.0, planned_end=79.0
            ),
            "before its input",
        ),
        # n5 (28-38 on P3) onto P2, where n6 runs 26-42; its input from n1 still arrives in time
        (lambda r: _row(r, "n5").update(device=1, end=41.0, planned_end=41.0), "overlap"),
        (lambda r: _row(r, "n7").update(end=50.0), "ran for"),
        (lambda r: r["tasks"][0].update(factor=1.5), "noise factor"),
        (lambda r: r["schedule"].pop(), "schedule rows"),
        (lambda r: r["links"][0].update(bandwidth=0.5), "before its input"),
        (lambda r: r["edges"].append([9, 0, 1.0]), "cycle"),
    ],
)
def test_validate_catches_tampering(heft_record, tamper, message):
    bad = copy.deepcopy(heft_record)
    tamper(bad)
    with pytest.raises(RecordError, match=message):
        validate(bad)


def test_validate_recomputes_the_metrics(heft_record):
    assert validate(heft_record) == heft_record["metrics"]
    json.dumps(heft_record)  # plain JSON


def test_validate_checks_the_execution_is_left_justified(heft_record):
    bad = copy.deepcopy(heft_record)
    _row(bad, "n10").update(start=74.0, end=81.0, planned_start=74.0, planned_end=81.0)
    with pytest.raises(RecordError, match="allowed 73"):
        validate(bad)


# -- bad input ----------------------------------------------------------------------------------


def test_a_cycle_is_refused_naming_a_task_on_it():
    with pytest.raises(WorkloadError, match=r"cycle through task 'c' \(c -> b -> c\)"):
        _abstract_graph([(1, 1), (1, 1), (1, 1)], [(0, 1, 1), (1, 2, 1), (2, 1, 1)])


def test_a_device_set_that_cannot_run_an_op_is_refused():
    npu = device_from_table(load_cost_table("a40"), "npu")
    platform = Platform.from_profile(
        HardwareProfile("npu-only", (npu,)), ops={"npu": ["linear", "elementwise"]}
    )
    with pytest.raises(
        WorkloadError,
        match=r"task 'blocks_0_ln1' \(op kind 'layernorm'\) can "
        r"run on no device.*runs only elementwise, linear",
    ):
        compile_instance([traced_graph("gpt2-tiny")], platform, np.random.default_rng(0))


def test_a_restricted_device_is_masked_and_refused():
    h100, npu = (
        device_from_table(load_cost_table(n), name)
        for n, name in (("h100", "h100"), ("a40", "npu"))
    )
    platform = Platform.from_profile(
        HardwareProfile("gpu-npu", (h100, npu), (Link("h100", "npu", 32e9, 1e-5),)),
        ops={"npu": ["linear", "elementwise"]},
    )
    env = DagSchedEnv(case="gpt2-tiny", platform=platform)
    env.reset(seed=0)
    while True:  # walk to the first layernorm
        shown = env.core.ready_tasks()
        kinds = [env.instance.kinds[t] for t in shown]
        if "layernorm" in kinds:
            break
        env.step(env.action_of(int(shown[0]), 0))
    t = int(shown[kinds.index("layernorm")])
    assert env.action_masks()[env.action_of(t, 0)]
    assert not env.action_masks()[env.action_of(t, 1)]
    with pytest.raises(IllegalActionError, match="cannot run on npu.*runs only"):
        env.step(env.action_of(t, 1))


def test_malformed_files_are_refused_with_file_and_place(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"tasks": [\n {"name": "a"},\n oops\n]}')
    with pytest.raises(WorkloadError, match=r"bad\.json:3: not valid JSON"):
        load_graph(bad)
    bad.write_text(
        json.dumps(
            {"devices": ["P1"], "tasks": [{"name": "a", "costs": [1]}], "edges": [["a", "z", 1]]}
        )
    )
    with pytest.raises(WorkloadError, match=r"bad\.json: edges\[0\]: unknown task 'z'"):
        load_graph(bad)
    bad.write_text(
        json.dumps({"tasks": [{"name": "a", "kind": "linear", "params": {"tokens": 4}}]})
    )
    with pytest.raises(WorkloadError, match=r"bad\.json: task 'a': linear takes"):
        load_graph(bad)
    with pytest.raises(WorkloadError, match="no such file"):
        load_graph(tmp_path / "missing.json")
    # each cost finite, their sum not: HEFT's makespan was inf and the record validated
    bad.write_text(
        json.dumps(
            {
                "devices": ["P1", "P2"],
                "tasks": [{"name": n, "costs": [1e308, 1e308]} for n in ("a", "b")],
                "edges": [["a", "b", 1]],
            }
        )
    )
    with pytest.raises(WorkloadError, match=r"bad\.json: the costs .* overflow"):
        load_graph(bad)


def test_unknown_keys_in_a_graph_file_are_refused_not_ignored(tmp_path):
    good = {
        "format": "schedgym-taskgraph/1",
        "name": "g",
        "devices": ["P1", "P2"],
        "tasks": [{"name": "a", "costs": [1, 2]}, {"name": "b", "costs": [3, None]}],
        "edges": [["a", "b", 4]],
        "source": "hand",
    }
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(good))
    assert load_graph(bad).n == 2  # every key the format defines, at every level, still loads
    top = "allowed keys: format, name, devices, tasks, edges, source"
    task = "allowed keys: name, kind, params, count, costs"
    for doc, message in [
        ({**good, "taks": []}, rf"bad\.json: top level: unknown key 'taks'; {top}$"),
        (
            {**good, "tasks": [good["tasks"][0], {"name": "b", "cots": [3, 1], "costs": [3, 1]}]},
            rf"bad\.json: tasks\[1\]: unknown key 'cots'; {task}$",
        ),
        (  # a kernel-op file, and two typos named together
            {
                "tasks": [
                    {
                        "name": "a",
                        "kind": "elementwise",
                        "params": {"elements": 8},
                        "cuont": 2,
                        "x": 0,
                    }
                ]
            },
            rf"bad\.json: tasks\[0\]: unknown keys 'cuont', 'x'; {task}$",
        ),
        (  # an edge is a [src, dst, weight] list: an object (with any keys) is refused
            {**good, "edges": [{"src": "a", "dst": "b", "bytes": 4}]},
            r"bad\.json: edges\[0\]: expected \[src task, dst task, bytes\]$",
        ),
        (  # explicit-cost tasks ignore kernel parameters and counts: refused, not dropped
            {**good, "tasks": [{"name": "a", "costs": [1, 2], "count": 3}, good["tasks"][1]]},
            r"bad\.json: tasks\[0\]: 'params' and 'count' belong to kernel ops",
        ),
    ]:
        bad.write_text(json.dumps(doc))
        with pytest.raises(WorkloadError, match=message) as err:
            load_graph(bad)
        assert "\n" not in str(err.value)
    # the format documented in docs/dag.md, both kinds of graph
    bad.write_text(
        '{"format": "schedgym-taskgraph/1", "name": "thw", "devices": ["P1", "P2", "P3"],'
        '"tasks": [{"name": "n1", "costs": [14, 16, 9]}, {"name": "n2", "costs": [13, 19, null]}],'
        '"edges": [["n1", "n2", 18]]}'
    )
    assert load_graph(bad).costs[1] == (13.0, 19.0, None)
    qkv = {"name": "qkv", "kind": "linear", "count": 1}
    qkv["params"] = {"tokens": 512, "d_in": 256, "d_out": 768}
    bad.write_text(json.dumps({"tasks": [qkv]}))
    assert load_graph(bad).kinds == ("linear",)


def test_graph_json_round_trip(tmp_path):
    for g in (topcuoglu_2002(), traced_graph("gpt2-tiny")):
        g.save(tmp_path / "g.json")
        back = load_graph(tmp_path / "g.json")
        assert back.to_json() == g.to_json()


def test_a_saved_graph_is_a_case(tmp_path):
    topcuoglu_2002().save(tmp_path / "thw.json")
    result = run_episode("dag", "heuristic:heft", case=str(tmp_path / "thw.json"))
    assert result.metrics["makespan"] == 80.0  # HEFT's schedule in Topcuoglu et al.'s Fig. 4
    # the file:PATH form every env's cases take
    result = run_episode("dag", "heuristic:heft", case=f"file:{tmp_path / 'thw.json'}")
    assert result.metrics["makespan"] == 80.0


def test_illegal_actions_say_why():
    env = DagSchedEnv(case="topcuoglu")
    env.reset(seed=0)
    with pytest.raises(IllegalActionError, match="slot 1 holds no ready task"):
        env.step(1 * 8 + 0)
    with pytest.raises(IllegalActionError, match="device slot 5 is empty"):
        env.step(5)
    with pytest.raises(IllegalActionError, match="outside"):
        env.step(10**6)


# -- random DAGs ---------------------------------------------------------------------------------


def test_daggen_structure_knobs():
    rng = np.random.default_rng(0)
    level, edges = layered_dag(DagShape(n=12, fat=0.0, regularity=1.0), rng)
    assert edges == [(i, i + 1) for i in range(11)]  # fat 0, regular: a chain
    level, edges = layered_dag(DagShape(n=200, fat=0.5, density=0.3, jump=3), rng)
    assert all(0 < level[d] - level[s] <= 3 for s, d in edges)
    assert all(any(d == t for _, d in edges) for t in range(200) if level[t] > 0)


def test_daggen_costs_follow_topcuoglus_model():
    g = random_dag(1, DagShape(n=3000), ccr=2.0, procs=4, beta=0.5, mean_cost=10.0)
    costs = np.array(g.costs)
    assert costs.mean() == pytest.approx(10.0, rel=0.05)  # w_i ~ U(0, 20]
    # per task, all costs lie in [w_i (1 - beta/2), w_i (1 + beta/2)]: max / min <= 1.25 / 0.75
    assert np.all(costs.max(axis=1) / costs.min(axis=1) <= 1.25 / 0.75 + 1e-12)
    assert g.weights.mean() / costs.mean() == pytest.approx(2.0, rel=0.08)  # the CCR


class _NoDraws:
    """A random generator that fails the test when anything is drawn from it."""

    def __getattr__(self, name):
        raise AssertionError(f"the generator drew ({name}) before checking the size")


def test_random_dag_sizes_are_bounded_before_anything_is_drawn(monkeypatch):
    monkeypatch.setattr(dag_workloads, "as_generator", lambda seed: _NoDraws())
    limit = dag_workloads.MAX_TASKS
    assert 4000 < limit  # the tests' largest random DAG
    for n in (limit + 1, 100_000, 10**12):
        with pytest.raises(WorkloadError, match=rf"^random DAG: n must be at most {limit} tasks"):
            layered_dag(DagShape(n=n), _NoDraws())
        for make in (random_dag, dag_workloads.random_op_dag):
            with pytest.raises(WorkloadError, match=f"n must be at most {limit} tasks, got {n}"):
                make(0, DagShape(n=n))
    for case in ("daggen:100000", "random:100000"):
        with pytest.raises(WorkloadError, match="n must be at most 10000 tasks, got 100000"):
            DagSchedEnv(case=case).reset(seed=0)
    with pytest.raises(WorkloadError, match=r"procs must be at most 256 processors, got 10000000"):
        random_dag(0, DagShape(n=10), procs=10**7)
    with pytest.raises(WorkloadError, match="procs must be at most"):
        DagSchedEnv(case="daggen:10", procs=10**7).reset(seed=0)
    with pytest.raises(AssertionError, match="drew"):  # the limits themselves are allowed
        random_dag(0, DagShape(n=limit), procs=256)


def test_dense_random_dags_stop_at_the_edge_limit(monkeypatch):
    # fat 0.7 and density 1 draw 3 million edges at 10,000 tasks: the generator stops at the
    # limit, checked before each task's edges are made (a small limit keeps the test fast)
    monkeypatch.setattr(dag_workloads, "MAX_EDGES", 500)
    shape = DagShape(n=200, fat=0.7, density=1.0)
    with pytest.raises(WorkloadError, match=r"random DAG: n=200,.* more than 500 edges; lower n"):
        layered_dag(shape, np.random.default_rng(0))
    assert len(layered_dag(DagShape(n=200, density=0.1), np.random.default_rng(0))[1]) <= 500


def test_cli_refuses_oversized_and_misspelt_dags_in_one_line(tmp_path):
    # typos the loader used to drop silently (HEFT then scheduled the graph, exit status 0)
    top, task = tmp_path / "top.json", tmp_path / "task.json"
    doc = topcuoglu_2002().to_json()
    top.write_text(json.dumps({**doc, "naem": doc["name"]}))
    doc["tasks"][3]["cots"] = [1, 2, 3]
    task.write_text(json.dumps(doc))
    for case, message in [
        ("daggen:100000", "random DAG: n must be at most 10000 tasks, got 100000"),
        (str(top), f"{top}: top level: unknown key 'naem'; allowed keys: format, name"),
        (f"file:{task}", f"{task}: tasks[3]: unknown key 'cots'; allowed keys: name, kind"),
    ]:
        out = run_cli(
            "run", "--env", "dag", "--policy", "heuristic:heft", "--case", case, timeout=60
        )
        assert message in one_line_error(out), case


def test_noise_is_lognormal_with_mean_one():
    g = random_dag(0, DagShape(n=4000, fat=1.0))
    inst = compile_instance([g], Platform.abstract(g.devices), np.random.default_rng(0), sigma=0.5)
    assert inst.factor.mean() == pytest.approx(1.0, abs=0.03)
    assert np.log(inst.factor).std() == pytest.approx(0.5, abs=0.02)


# -- the env contract ------------------------------------------------------------------------------


def test_check_env_passes():
    # check_env steps with action_space.sample(), blind to the mask: size the env so that every
    # action is legal at the start (topcuoglu: one entry task, three processors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unbounded Box warnings of the shared layout
        check_env(DagSchedEnv(case="topcuoglu", max_ready=1, max_devices=3), skip_render_check=True)
        check_env(
            DagSchedEnv(
                case="topcuoglu", mode="online", jobs=3, sigma=0.2, max_ready=1, max_devices=3
            ),
            skip_render_check=True,
        )


def _random_episode(env, seed, case):
    obs, _ = env.reset(seed=seed, options={"case": case})
    rng = np.random.default_rng(seed)
    done, total = False, 0.0
    while not done:
        assert env.observation_space.contains(obs)
        mask = env.action_masks()
        assert mask.any()
        obs, reward, done, _, info = env.step(int(rng.choice(np.flatnonzero(mask))))
        total += reward
    return total, info


@pytest.mark.parametrize(
    "kwargs, case",
    [
        ({}, "random:25"),
        ({"sigma": 0.4}, "daggen:20"),
        ({"mode": "online", "jobs": 4}, "daggen:12"),
        ({"mode": "online", "jobs": 3, "sigma": 0.3}, "gpt2-tiny"),
    ],
)
def test_random_episodes_are_valid_and_returns_are_the_metric(kwargs, case):
    env = DagSchedEnv(**kwargs)
    total, info = _random_episode(env, 3, case)
    assert validate(info["record"]) == pytest.approx(info["metrics"])
    key = "slr" if env.mode == "single" else "mean_slowdown"
    assert total == pytest.approx(-info["metrics"][key])
    again, info2 = _random_episode(DagSchedEnv(**kwargs), 3, case)
    assert again == total and info2["record"] == info["record"]


def test_online_jobs_are_revealed_only_when_they_arrive():
    env = DagSchedEnv(case="daggen:10", mode="online", jobs=6)
    env.reset(seed=2)
    arrival = env.instance.arrival
    assert len(set(arrival)) == 6  # arrivals spread over time
    policy = POLICIES["heuristic:heft"]()
    done = False
    while not done:
        shown = env.core.ready_tasks()
        assert np.all(arrival[env.instance.job[shown]] <= env.core.clock)
        _, _, done, _, info = env.step(policy.act(env, None))
    m = validate(info["record"])
    assert m["mean_slowdown"] >= 1.0  # a job's critical path bounds its time in the system


def test_every_policy_runs_end_to_end_and_validates():
    for case, kwargs in (
        ("daggen:12", {}),
        ("daggen:8", {"mode": "online", "jobs": 3}),
        ("random:15", {"sigma": 0.3}),
    ):
        lower = run_episode(
            "dag", "bound:critical-path", case=case, seed=1, env_kwargs=kwargs
        ).metrics
        key = "makespan" if "mode" not in kwargs else "mean_slowdown"
        for name in [*POLICIES, "random"]:
            result = run_episode("dag", name, case=case, seed=1, env_kwargs=kwargs)
            assert result.metrics[key] >= lower[key] - 1e-12, (name, case)


def test_cpsat_refuses_large_dags():
    with pytest.raises(SchedgymError, match="up to 40 tasks"):
        run_episode("dag", "solver:cpsat", case="daggen:60")


def test_snapshots_replay_identically():
    env = DagSchedEnv(sigma=0.2)
    env.reset(seed=5, options={"case": "random:30"})
    rng = np.random.default_rng(0)
    for _ in range(10):
        env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
    state = env.get_state()
    actions, ends = [], []
    for _ in range(2):
        obs = env.set_state(state)
        done, taken = False, []
        while not done:
            a = (
                actions[len(taken)]
                if actions
                else int(rng.choice(np.flatnonzero(env.action_masks())))
            )
            taken.append(a)
            obs, _, done, _, info = env.step(a)
        actions = taken
        ends.append(info["record"])
    assert ends[0] == ends[1]


def test_traced_models_schedule_on_the_default_platform():
    assert hetero_platform().devices == ("h100", "a100", "a40", "cpu")
    for model in ("gpt2-tiny", "resnet-tiny"):
        result = run_episode("dag", "heuristic:heft", case=model)
        assert result.decisions == traced_graph(model).n
        # the CPU is orders of magnitude slower: HEFT keeps the critical path off it
        assert result.metrics["slr"] < 5


def test_plot_record_writes_a_png(tmp_path, heft_record):
    out = plot_record(heft_record, tmp_path / "gantt.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    online = run_episode(
        "dag",
        "heuristic:heft",
        case="daggen:8",
        env_kwargs={"mode": "online", "jobs": 3, "sigma": 0.3},
    ).record
    assert plot_record(online, tmp_path / "online.png").stat().st_size > 0


def test_graph_from_json_refuses_costs_without_devices():
    with pytest.raises(WorkloadError, match="need a top-level 'devices'"):
        graph_from_json({"tasks": [{"name": "a", "costs": [1]}]})
