"""JobShop: instances, simulator, baselines and records, checked against numbers from outside
(hand-worked schedules, the literature's gaps of non-delay rules, proven optima, an independent
validator)."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from schedgym.baselines.jobshop import POLICIES, CpSatSolver, NonDelayRule
from schedgym.envs.jobshop.bench import bench
from schedgym.envs.jobshop.core import DISPATCH_RULES, JobShopCore, non_delay_plan
from schedgym.envs.jobshop.env import JobShopEnv
from schedgym.envs.jobshop.record import plot_record, validate
from schedgym.episode import run_episode
from schedgym.errors import IllegalActionError, RecordError, SchedgymError, WorkloadError
from schedgym.policy import RandomPolicy
from schedgym.workloads.jobshop import (
    JobShopInstance,
    benchmark_instance,
    benchmark_names,
    format_orlibrary,
    load_instance,
    random_instance,
    read_instance_file,
)

# A 3x3 instance worked by hand (see test_hand_worked_active_schedule).
HAND = JobShopInstance(
    name="hand3x3",
    machines=[[0, 1, 2], [0, 2, 1], [1, 2, 0]],
    durations=[[3, 2, 2], [2, 1, 4], [2, 3, 1]],
)


def hand_env(**kwargs) -> JobShopEnv:
    env = JobShopEnv(**kwargs)
    env.set_state(JobShopCore(HAND).get_state())  # an empty episode of HAND
    return env


# --- the simulator ---------------------------------------------------------------------------


def test_hand_worked_active_schedule():
    """Actions 0,0,2,1,1,0,2,1,2 on HAND, worked out on paper:

    (0,0) M0 d3 ready 0           -> [0,3)
    (0,1) M1 d2 ready 3           -> [3,5)   leaves M1 idle in [0,3)
    (2,0) M1 d2 ready 0           -> [0,2)   inserted into M1's gap [0,3)
    (1,0) M0 d2 ready 0           -> [3,5)
    (1,1) M2 d1 ready 5           -> [5,6)   leaves M2 idle in [0,5)
    (0,2) M2 d2 ready 5           -> [6,8)   gap [0,5) ends before 5+2
    (2,1) M2 d3 ready 2           -> [2,5)   inserted into [0,5), ending where (1,1) starts
    (1,2) M1 d4 ready 6           -> [6,10)  gap [2,3) too short
    (2,2) M0 d1 ready 5           -> [5,6)
    makespan 10; trivial bound max(jobs 7,7,6; machines 6,8,6) = 8, so the return is -10/8.
    """
    env = hand_env()
    starts, total = [], 0.0
    for step, job in enumerate([0, 0, 2, 1, 1, 0, 2, 1, 2]):
        if step == 6:
            assert env.core.earliest_start(2) == 2
        obs, reward, terminated, truncated, info = env.step(job)
        starts.append(int(env.core.starts[job, env.core.next_op[job] - 1]))
        total += reward
        assert terminated == (step == 8) and not truncated
    assert starts == [0, 3, 0, 3, 5, 6, 2, 6, 5]
    assert env.core.starts.tolist() == [[0, 3, 6], [3, 5, 6], [0, 2, 5]]
    assert info["metrics"]["makespan"] == 10
    assert total == pytest.approx(-10 / 8)
    assert validate(info["record"])["makespan"] == 10
    assert not env.action_masks().any()


def test_hand_worked_non_delay_spt():
    """SPT on HAND by hand (Giffler-Thompson non-delay, ties to the lower job):
    t*=0 {j0:3, j1:2, j2:2} -> j1 M0[0,2); t*=0 {j2} -> j2 M1[0,2); t*=2 {j0:3, j1:1, j2:3} -> j1
    M2[2,3); t*=2 {j0} -> j0 M0[2,5); t*=3 {j1:4, j2:3} -> j2 M2[3,6); t*=3 {j1} -> j1 M1[3,7);
    t*=6 {j2} -> j2 M0[6,7); then j0 M1[7,9), j0 M2[9,11): makespan 11."""
    env = hand_env()
    policy = NonDelayRule("spt")
    policy.reset(env)
    actions = []
    while not env.core.done:
        actions.append(policy.act(env, None))
        _, _, _, _, info = env.step(actions[-1])
    assert actions == [1, 2, 1, 0, 2, 1, 2, 0, 0]
    assert env.core.starts.tolist() == [[2, 7, 9], [0, 2, 3], [0, 3, 6]]
    assert info["metrics"]["makespan"] == 11


def test_every_start_is_the_earliest_feasible_one():
    """Random episodes, each start checked against a brute-force search over the machine's
    already scheduled operations: the earliest t >= ready with [t, t + d) free."""
    for seed in range(4):
        inst = random_instance(8, 5, seed)
        core = JobShopCore(inst)
        rng = np.random.default_rng(seed)
        while not core.done:
            job = int(rng.choice(np.flatnonzero(core.legal_mask())))
            k = int(core.next_op[job])
            machine, duration = inst.machines[job, k], inst.durations[job, k]
            placed = (core.starts >= 0) & (inst.machines == machine)
            busy = list(
                zip(core.starts[placed], (core.starts + inst.durations)[placed], strict=True)
            )
            ready = int(core.ready[job])
            candidates = sorted({ready, *(e for _, e in busy if e > ready)})
            expected = next(
                t for t in candidates if all(t + duration <= s or e <= t for s, e in busy)
            )
            assert core.step(job) == expected


def test_zero_duration_operation_never_sits_inside_another():
    inst = JobShopInstance("zero", machines=[[0, 1], [1, 0]], durations=[[4, 1], [2, 0]])
    core = JobShopCore(inst)
    core.step(0)  # (0,0) M0 [0,4)
    core.step(1)  # (1,0) M1 [0,2)
    assert core.earliest_start(1) == 4  # ready at 2 but M0 is busy until 4: not inside [0,4)
    core.step(1)
    core.step(0)
    assert core.starts.tolist() == [[0, 4], [0, 4]]


def test_illegal_actions_raise_with_the_reason():
    env = JobShopEnv("ta01")
    with pytest.raises(SchedgymError, match="reset"):
        env.action_masks()
    env.reset(seed=0)
    with pytest.raises(IllegalActionError, match=r"action 50: no job 50 .*15 jobs"):
        env.step(50)
    with pytest.raises(ValueError):  # IllegalActionError is a ValueError
        env.step(-1)
    env = hand_env()
    for job in (0, 0, 0):
        env.step(job)
    with pytest.raises(IllegalActionError, match="action 0: job 0 has no operations left"):
        env.step(0)
    assert env.action_masks()[:3].tolist() == [False, True, True]


def test_same_seed_same_episode():
    def episode(seed: int):
        env = JobShopEnv()
        obs, info = env.reset(seed=seed)
        policy = RandomPolicy(seed)
        policy.reset(env)
        observations, done = [obs], False
        while not done:
            obs, _, done, _, info = env.step(policy.act(env, obs))
            observations.append(obs)
        return info["record"], observations

    (rec_a, obs_a), (rec_b, obs_b) = episode(3), episode(3)
    assert rec_a == rec_b
    assert all(
        all(np.array_equal(a[k], b[k]) for k in a) for a, b in zip(obs_a, obs_b, strict=True)
    )
    assert rec_a["instance"]["name"].startswith("random:6x6:")
    assert episode(4)[0]["instance"] != rec_a["instance"]


def test_check_env_passes():
    # check_env steps with action_space.sample(), blind to the mask, so the action space must
    # hold only real jobs: size the env to the instance.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unbounded Box warnings of the shared layout
        check_env(JobShopEnv(max_jobs=6, max_machines=6), skip_render_check=True)
        check_env(JobShopEnv("ft06", max_jobs=6, max_machines=6), skip_render_check=True)


@pytest.mark.parametrize("case", ["ta01", "ta71", "random:100x20:5"])
def test_observations_fit_the_space(case):
    env = JobShopEnv()
    obs, _ = env.reset(seed=1, options={"case": case})
    rng = np.random.default_rng(0)
    steps = 0
    while True:
        assert env.observation_space.contains(obs), f"step {steps}"
        mask = env.action_masks()
        assert mask.any() and mask[env.instance.n_jobs :].sum() == 0
        obs, _, done, _, info = env.step(int(rng.choice(np.flatnonzero(mask))))
        steps += 1
        if done or steps == 300:
            break
    assert np.all(np.isfinite(obs["entities"]))
    assert obs["entity_mask"].sum() == env.instance.n_jobs


def test_instance_too_large_for_the_env_is_refused():
    with pytest.raises(WorkloadError, match="at most 10 x 20"):
        JobShopEnv(max_jobs=10).reset(options={"case": "ta01"})


def test_snapshots_restore_the_episode():
    env = JobShopEnv("ta01")
    env.reset(seed=0)
    for job in range(10):
        env.step(job)
    state = env.get_state()
    later = [env.step(job)[0] for job in (3, 4, 5)]
    restored = env.set_state(state)
    assert env.core.n_done == 10
    again = [env.step(job)[0] for job in (3, 4, 5)]
    for a, b in zip(later, again, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert restored["globals"][0] == pytest.approx(10 / 225)
    other = JobShopEnv("ft06")
    other.reset()
    other.set_state(state)  # a snapshot of another instance switches the env to it
    assert other.instance.name == "ta01" and other.core.n_done == 10


# --- the rules --------------------------------------------------------------------------------


def brute_force_non_delay(core: JobShopCore, rule: str) -> list[int]:
    """Giffler-Thompson non-delay generation done the slow, obvious way."""
    op_rank, by_ready = DISPATCH_RULES[rule](core.instance)
    actions = []
    while not core.done:
        jobs = np.flatnonzero(core.legal_mask())
        est = {int(j): core.earliest_start(int(j)) for j in jobs}
        t_star = min(est.values())

        def key(j: int) -> tuple[int, int]:
            return op_rank[j, core.next_op[j]] + (core.ready[j] if by_ready else 0), j

        job = min((j for j in est if est[j] == t_star), key=key)
        actions.append(job)
        core.step(job)
    return actions


@pytest.mark.parametrize("rule", sorted(DISPATCH_RULES))
def test_rule_fast_path_matches_brute_force_even_mid_episode(rule):
    for seed in range(3):
        core = JobShopCore(random_instance(8, 5, seed))
        rng = np.random.default_rng(seed)
        for _ in range(12):  # random actions first, leaving idle gaps that insertion can use
            core.step(int(rng.choice(np.flatnonzero(core.legal_mask()))))
        fast = non_delay_plan(core.clone(), DISPATCH_RULES[rule](core.instance))
        assert fast.tolist() == brute_force_non_delay(core.clone(), rule)


def test_policy_replans_when_the_env_leaves_its_plan():
    env = JobShopEnv("ft06")
    env.reset()
    policy = NonDelayRule("mor")
    policy.reset(env)
    first = policy.act(env, None)
    env.step((first + 1) % 6)  # not what the policy asked for
    core = env.core.clone()
    expected = non_delay_plan(core, DISPATCH_RULES["mor"](env.instance))
    actions = []
    while not env.core.done:
        actions.append(policy.act(env, None))
        env.step(actions[-1])
    assert actions == expected.tolist()


PARK_2021 = {"spt": 25.9, "fifo": 23.9, "mor": 20.5}  # mean gap %, ta01-ta10, non-delay rules


def test_rules_reproduce_the_literature_gaps_on_taillard_15x15():
    gaps = {}
    for rule in ("spt", "fifo", "mor", "mwkr", "lpt"):
        per_case = []
        for i in range(1, 11):
            inst = benchmark_instance(f"ta{i:02d}")
            core = JobShopCore(inst)
            non_delay_plan(core, DISPATCH_RULES[rule](inst))
            per_case.append(core.makespan / inst.upper_bound - 1)
        gaps[rule] = 100 * float(np.mean(per_case))
    for rule, published in PARK_2021.items():
        assert abs(gaps[rule] - published) <= 3.0, gaps
    assert gaps["mwkr"] < gaps["lpt"]  # MWKR is the strongest simple rule here, LPT the weakest


def test_run_episode_validates_the_mor_record():
    result = run_episode("jobshop", "heuristic:mor", case="ta01")
    # 1438 is the MOR makespan on ta01 quoted in DESIGN.md (gap 16.8 %)
    assert result.metrics["makespan"] == 1438
    assert result.metrics["gap"] == pytest.approx(1438 / 1231 - 1)
    assert result.decisions == 225
    json.dumps(result.record)


def test_every_benchmark_instance_loads_and_schedules_within_its_bounds():
    names = benchmark_names()
    assert {"ta01", "ta80", "ft06", "la40", "abz9", "orb10", "swv20", "yn4"} <= set(names)
    for name in names:
        inst = benchmark_instance(name)
        core = JobShopCore(inst)
        non_delay_plan(core, DISPATCH_RULES["mor"](inst))
        record_metrics = validate(_record(core))
        assert record_metrics["makespan"] == core.makespan
        assert core.makespan >= inst.best_lower_bound, name
        if inst.optimum is not None:
            assert inst.lower_bound == inst.optimum == inst.upper_bound


def _record(core: JobShopCore) -> dict:
    from schedgym.envs.jobshop.env import make_record

    return make_record(core.instance, core.starts, actions=core.history)


# --- CP-SAT -----------------------------------------------------------------------------------


def test_cpsat_proves_small_optima_quickly():
    """HAND's optimum is 10, by hand: on M1, (0,1) and (1,2) cannot start before 3 (they wait
    for (0,0) d3, resp. (1,0) d2 + (1,1) d1, on the shared M0). If (0,1) goes first, (0,0) holds
    M0 in [0,3), so (1,2) starts >= 3+2+1 = 6 and ends >= 10. If (1,2) goes first at >= 3, (0,0)
    runs after (1,0), (0,1) ends >= 9 and (0,2) ends >= 11. The hand-worked schedule makes 10."""
    bound = CpSatSolver(time_limit_s=30)
    starts, report = bound.solve_instance(HAND)
    assert report["optimal"] and report["objective"] == report["objective_bound"] == 10
    assert int((starts + HAND.durations).max()) == 10
    _, ft06 = bound.solve_instance(benchmark_instance("ft06"))
    assert ft06["optimal"] and ft06["objective"] == 55  # Fisher & Thompson (1963)


@pytest.mark.slow
def test_cpsat_proves_ta01_optimal():
    """Optimum 1231 (Taillard 1993's best known, proven since). About 25 s with 2 workers on 2
    idle cores, over 2 minutes when other work shares them: hence the generous limit."""
    result = run_episode("jobshop", CpSatSolver(time_limit_s=600, num_workers=2), case="ta01")
    assert result.metrics["optimal"] is True
    assert result.metrics["makespan"] == 1231 == result.metrics["objective_bound"]
    assert result.record["solver"]["num_workers"] == 2


def test_policies_table():
    assert set(POLICIES) == {
        "heuristic:spt", "heuristic:lpt", "heuristic:mwkr", "heuristic:mor", "heuristic:fifo",
        "solver:cpsat",
    }  # fmt: skip
    for name, factory in POLICIES.items():
        policy = factory()
        assert policy.name == name and policy.kind == name.split(":")[0]


# --- records ---------------------------------------------------------------------------------


def _hand_record() -> dict:
    env = hand_env()
    for job in [0, 0, 2, 1, 1, 0, 2, 1, 2]:
        _, _, _, _, info = env.step(job)
    return info["record"]


def _slot(record: dict, job: int, op: int) -> dict:
    return next(r for r in record["schedule"] if r["job"] == job and r["op"] == op)


def test_validate_recomputes_metrics():
    metrics = validate(_hand_record())
    assert metrics["makespan"] == 10
    assert metrics["lower_bound"] == 8 and metrics["lb_gap"] == pytest.approx(0.25)
    assert metrics["utilisation"] == pytest.approx(20 / 30)
    assert "gap" not in metrics  # no upper bound known for the hand instance


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        # (1,0) moved to [1,3) on M0, under (0,0)'s [0,3); its job order still holds
        (lambda r: _slot(r, 1, 0).update(start=1, end=3), "overlap on machine 0"),
        # (0,1) moved to [2,4): before (0,0) ends at 3
        (
            lambda r: _slot(r, 0, 1).update(start=2, end=4),
            "precedence: operation \\(job 0, op 1\\)",
        ),
        (lambda r: _slot(r, 2, 2).update(end=9), "lasts 4, not 1"),
        (lambda r: _slot(r, 2, 2).update(machine=1), "runs on machine 1, not 0"),
        (lambda r: r["schedule"].pop(), "scheduled 0 times"),
        (lambda r: r["schedule"].append(dict(r["schedule"][0])), "scheduled 2 times"),
        (lambda r: r["schedule"][0].update(job=7), "no operation \\(job 7"),
        (lambda r: r.pop("schedule"), "lacks 'schedule'"),
    ],
)
def test_validate_catches_corrupted_records(corrupt, message):
    record = copy.deepcopy(_hand_record())
    corrupt(record)
    with pytest.raises(RecordError, match=message):
        validate(record)


def test_plot_record_writes_a_png(tmp_path):
    path = plot_record(_hand_record(), tmp_path / "hand.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_bench_rows_shape():
    rows = bench(seconds=0.05, rounds=1)
    names = [row["name"] for row in rows]
    assert "jobshop ta01 random steps/s" in names and "jobshop ta01 MOR schedules/s" in names
    assert all(set(row) == {"name", "value", "unit", "note"} for row in rows)


# --- instances and files ---------------------------------------------------------------------


def test_benchmarks_carry_their_bounds():
    ta01 = load_instance("TA01")
    assert ta01.shape == "15x15" and ta01.optimum == 1231
    assert ta01.durations[0, :3].tolist() == [94, 66, 10]  # Taillard (1993), ta01 job 1
    assert benchmark_instance("ta71").shape == "100x20"
    abz8 = benchmark_instance("abz8")
    assert abz8.optimum is None and abz8.lower_bound < abz8.upper_bound


def test_random_instances_are_taillard_style_and_reproducible():
    inst = load_instance("random:20x7:11")
    assert inst.shape == "20x7" and inst.name == "random:20x7:11"
    assert inst.durations.min() >= 1 and inst.durations.max() <= 99
    assert all(sorted(row) == list(range(7)) for row in inst.machines.tolist())
    again = load_instance("random:20x7:11")
    assert np.array_equal(inst.durations, again.durations)
    assert np.array_equal(inst.machines, again.machines)
    drawn = load_instance("random:4x3", rng=np.random.default_rng(0))
    assert np.array_equal(load_instance(drawn.name).durations, drawn.durations)


@pytest.mark.parametrize(
    ("case", "message"),
    [("ta99", "unknown job-shop case"), ("random:3by3", "bad random case")],
)
def test_unknown_cases_are_refused(case, message):
    with pytest.raises(WorkloadError, match=message):
        load_instance(case)


def test_instance_validation():
    with pytest.raises(WorkloadError, match="differ in shape"):
        JobShopInstance("x", machines=[[0, 1]], durations=[[1, 2, 3]])
    with pytest.raises(WorkloadError, match="durations must be >= 0"):
        JobShopInstance("x", machines=[[0, 1]], durations=[[1, -2]])
    with pytest.raises(WorkloadError, match="lower bound 9 > upper bound 8"):
        JobShopInstance("x", machines=[[0]], durations=[[1]], lower_bound=9, upper_bound=8)
    with pytest.raises(WorkloadError, match="rectangular"):
        JobShopInstance("x", machines=[[0, 1], [0]], durations=[[1, 1], [1]])


def _taillard_text(inst: JobShopInstance) -> str:
    lines = [
        "Nb of jobs, Nb of Machines, Time seed, Machine seed, Upper bound, Lower bound",
        f"{inst.n_jobs} {inst.n_machines} 840612802 398197754 1231 1231",
        "Times",
        *(" ".join(map(str, row)) for row in inst.durations.tolist()),
        "Machines",
        *(" ".join(str(m + 1) for m in row) for row in inst.machines.tolist()),
    ]
    return "\n".join(lines) + "\n"


def test_files_in_both_formats_read_back(tmp_path):
    ta01 = benchmark_instance("ta01")
    taillard = tmp_path / "ta01.txt"
    taillard.write_text(_taillard_text(ta01))
    orlib = tmp_path / "ta01.jss"
    orlib.write_text("instance ta01\n+++\nTaillard 15x15\n" + format_orlibrary(ta01) + "+++\n")
    for path, case in ((taillard, f"file:{taillard}"), (orlib, str(orlib))):
        inst = load_instance(case)
        assert np.array_equal(inst.machines, ta01.machines)
        assert np.array_equal(inst.durations, ta01.durations)
        assert inst.name == path.stem
    assert read_instance_file(taillard).upper_bound == 1231
    env = JobShopEnv()
    env.reset(options={"case": f"file:{orlib}"})
    assert env.instance.shape == "15x15"


TAILLARD_OK = _taillard_text(random_instance(3, 2, 0))


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (TAILLARD_OK.replace("3 2 840612802", "3 x 840612802"), 2, "expected integers"),
        (TAILLARD_OK.replace("Times", "Durations"), 3, "expected the line 'Times'"),
        ("\n".join(TAILLARD_OK.splitlines()[:5]) + "\n", 5, "file ends after 2 of 3"),
        (
            "\n".join([*TAILLARD_OK.splitlines()[:7], "1 3", *TAILLARD_OK.splitlines()[8:]]),
            8,
            "numbered 1..2",
        ),  # fmt: skip
        (TAILLARD_OK + "7 7\n", 11, "unexpected line"),
    ],
)
def test_malformed_taillard_files_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(WorkloadError, match=message) as err:
        load_instance(f"file:{path}")
    assert err.value.path == str(path) and err.value.line == line
    assert f"{path}:{line}:" in str(err.value)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("instance x\n2 2\n0 5 1 3\n1 4\n", 4, "expected 2 'machine duration' pairs"),
        ("2 2\n0 5 1 3\n1 4 2 2\n", 3, "numbered 0..1"),
        ("2 2\n0 5 1 3\n1 4 0 -2\n", 3, "durations must be >= 0"),
        ("2 2\n0 5 1 3\n", 2, "file ends after 1 of 2"),
        ("2 2 2\n0 5 1 3\n", 1, "two positive integers"),
        ("2 2\n0 5 1 3\n1 4 0 2\n1 1 0 1\n", 4, "unexpected line"),
        ("2 2\n0 5 1 3\n1 4 0 two\n", 3, "expected integers"),
    ],
)
def test_malformed_orlibrary_files_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.jss"
    path.write_text(text)
    with pytest.raises(WorkloadError, match=message) as err:
        load_instance(str(path))
    assert err.value.path == str(path) and err.value.line == line


def test_missing_file_is_named(tmp_path):
    with pytest.raises(WorkloadError, match="no such file"):
        load_instance(f"file:{tmp_path / 'nope.txt'}")
