"""Learned next-use eviction (agents/nextuse.py): its routing model against hand-worked counts,
its labels against Belady's next uses found by brute force, features that never read routing
the env has not revealed, and a short training that plays legally, beats LRU and reloads."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from recipes import load_script

from schedgym.agents.nextuse import (
    FEATURES,
    NextUseConfig,
    NextUseNet,
    NextUsePolicy,
    _Teacher,
    profiling_holdout,
    train,
)
from schedgym.baselines.moe import PredictedNextUse, RoutingModel
from schedgym.envs.moe.core import EVICT, run_policy
from schedgym.envs.moe.env import MoEOffloadEnv, simulate
from schedgym.episode import run_episode
from schedgym.errors import SchedgymError
from schedgym.leaderboard import learned_policies
from schedgym.suites import SUITES
from schedgym.workloads.moe import RoutingTrace, save_npz, tinymoe_trace


def test_routing_model_counts_a_hand_worked_trace():
    # 4 tokens of one sequence, 2 layers of 2 experts, top-1
    routing = np.array([[0, 1], [0, 1], [1, 0], [0, 1]])[:, :, None]
    model = RoutingModel.fit(routing, 2, np.array([0]), alpha=0.0)
    np.testing.assert_allclose(model.prior, [[0.75, 0.25], [0.25, 0.75]])
    # layer 0 pairs (t-1 -> t): 0->0, 0->1, 1->0
    np.testing.assert_allclose(model.repeat[0], [[0.5, 0.5], [1.0, 0.0]])
    # layer 0 -> layer 1 within a token: 0->1 three times, 1->0 once
    np.testing.assert_allclose(model.cross[1], [[0.0, 1.0], [1.0, 0.0]])
    # a sequence start cuts the pairs across it: only 0->0 and 1->0 remain at layer 0
    split = RoutingModel.fit(routing, 2, np.array([0, 2]), alpha=0.0)
    np.testing.assert_allclose(split.repeat[0][0], [1.0, 0.0])
    # smoothing pulls towards the prior: one pseudo-token on 2 observed pairs
    smooth = RoutingModel.fit(routing, 2, np.array([0]), alpha=1.0)
    np.testing.assert_allclose(smooth.repeat[0][0], (np.array([1, 1]) + model.prior[0]) / 3)


def test_next_use_probability_works_a_hand_worked_case():
    # the model of the routing above, without smoothing: a token that chose expert 0 at layer 0
    # always chooses 1 at layer 1 (cross), and repeats layer 0's choice half the time (repeat)
    routing = np.array([[0, 1], [0, 1], [1, 0], [0, 1]])[:, :, None]
    model = RoutingModel.fit(routing, 2, np.array([0]), alpha=0.0)
    current = np.array([[1.0, 0.0], [0.0, 0.0]])  # layer 0 has run and chose expert 0
    p = model.next_use_probability(current, 0, None)
    # layer 0 next runs in the following step: the prior's log-odds plus repeat's shift from
    # expert 0 is repeat's row itself; layer 1 runs next in this step: cross's row for 0,
    # probabilities clipped to [1e-4, 1 - 1e-4] before the log-odds
    np.testing.assert_allclose(p, [[0.5, 0.5], [1e-4, 1 - 1e-4]], rtol=1e-6)
    # with the step before known too (it chose 1 at layer 1), layer 1 adds repeat's evidence:
    # after 1 came 0 once and 1 once at layer 1 (pairs 1->1, 1->0, 0->1), so repeat[1][1] is
    # [0.5, 0.5], log-odds 0 against the prior 0.25/0.75: a shift of +log 3 to expert 0
    previous = np.array([[0.0, 1.0], [0.0, 1.0]])
    q = model.next_use_probability(current, 0, previous)
    z = np.log(1e-4 / (1 - 1e-4)) + np.log(3)
    np.testing.assert_allclose(q[1, 0], 1 / (1 + np.exp(-z)), rtol=1e-6)


class _Watching(_Teacher):
    """The teacher, noting each eviction's visit and candidates."""

    def __init__(self) -> None:
        super().__init__(NextUseNet())
        self.seen: list[tuple[int, np.ndarray]] = []

    def evict(self, core, candidates):
        self.seen.append((core.visit, np.flatnonzero(candidates)))
        return super().evict(core, candidates)


def test_labels_are_beladys_next_uses_found_by_brute_force():
    core = MoEOffloadEnv("tinymoe-docs", tokens=128).make_core("tinymoe-docs", 3)
    teacher = _Watching()
    run_policy(core, teacher)
    n_visits = core.episode.n_visits
    never = n_visits + core.n_layers
    assert len(teacher.seen) == len(teacher.rows) > 50
    for (visit, idx), (x, y) in zip(teacher.seen, teacher.rows, strict=True):
        assert x.shape == (idx.size, len(FEATURES))
        for g, label in zip(idx.tolist(), y.tolist(), strict=True):
            nxt = next((u for u in range(visit + 1, n_visits) if g in core.needs(u)), never)
            assert label == pytest.approx(np.log(nxt - visit))


def _altered_trace(tmp_path, cut: int) -> tuple[str, str]:
    """Two 256-token files: the docs routing, and the same with every token from ``cut`` on
    routed elsewhere (same sequence starts and profiling routing)."""
    docs = tinymoe_trace("docs")
    experts = np.array(docs.experts[:256])
    other = experts.copy()
    other[cut:] = (other[cut:] + 3) % docs.n_experts
    paths = []
    for name, routing in (("same", experts), ("other", other)):
        trace = RoutingTrace(
            routing, docs.n_experts, docs.seq_starts[:2], name=name, calibration=docs.calibration
        )
        save_npz(trace, tmp_path / f"{name}.npz")
        paths.append(f"file:{tmp_path / name}.npz")
    return paths[0], paths[1]


def test_features_read_no_routing_the_env_has_not_revealed(tmp_path):
    cut = 150
    a_case, b_case = _altered_trace(tmp_path, cut)
    net = NextUseNet()
    cores = [MoEOffloadEnv(c, model="mixtral-8x7b").make_core(c, 0) for c in (a_case, b_case)]
    players = [NextUsePolicy(net), NextUsePolicy(net)]
    rules = [PredictedNextUse(), PredictedNextUse()]  # heuristic:next-use, the same predictor
    for core, player, rule in zip(cores, players, rules, strict=True):
        player.reset(core)
        rule.reset(core)
    a, b = cores
    compared = 0
    while a.step < cut:
        assert a.phase == b.phase and a.visit == b.visit
        if a.phase == EVICT:
            np.testing.assert_array_equal(players[0].features(a), players[1].features(b))
            candidates = a.resident & ~a.needed
            assert rules[0].evict(a, candidates) == rules[1].evict(b, candidates)
            compared += 1
        action = players[0].act(a, None)
        assert players[1].act(b, None) == action
        a.apply(action)
        b.apply(action)
    assert compared > 100
    # the first step routed differently is seen once its first layer's router has run
    while a.phase != EVICT:
        action = players[0].act(a, None)
        a.apply(action)
        b.apply(players[1].act(b, None))
    assert not np.array_equal(a.needs(a.visit), b.needs(b.visit))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("policies") / "policies" / "moe-nextuse"
    cfg = NextUseConfig(out=str(out), rounds=1, episodes=3, epochs=4, tensorboard=None)
    return cfg, train(cfg, progress=False)


def test_validation_routing_is_the_profiling_text_not_the_test_routing():
    docs = MoEOffloadEnv("tinymoe-docs").make_core("tinymoe-docs", 0).episode.trace
    half = docs.calibration.shape[0] // 2
    first, second = docs.calibration[:half], docs.calibration[half:]
    for fold, played, fitted in ((0, second, first), (1, first, second)):
        holdout = profiling_holdout(docs, fold)
        np.testing.assert_array_equal(holdout.experts, played)
        np.testing.assert_array_equal(holdout.calibration, fitted)
        np.testing.assert_array_equal(holdout.seq_starts, np.arange(0, half, 128))
    with pytest.raises(SchedgymError, match="no calibration"):
        profiling_holdout(replace(docs, calibration=None))


def test_a_short_training_beats_lru_on_its_validation_routing(trained, tmp_path):
    cfg, log = trained
    files = {p.name for p in Path(cfg.out).iterdir()}
    assert files >= {"model.zip", "config.json", "training.json"}
    assert len(log["rounds"]) == 2 and log["rounds"][1]["rows"] > log["rounds"][0]["rows"]
    assert json.loads((Path(cfg.out) / "config.json").read_text())["algo"] == "nextuse"
    docs = MoEOffloadEnv("tinymoe-docs").make_core("tinymoe-docs", 0).episode.trace
    cases = []
    for fold in (0, 1):
        save_npz(profiling_holdout(docs, fold), tmp_path / f"val{fold}.npz")
        cases.append(f"file:{tmp_path / f'val{fold}.npz'}")

    def stall(policy):
        runs = [simulate(policy, c, 0, model="mixtral-8x7b")[0] for c in cases]
        return np.mean([m["stall_per_token_s"] for m in runs])

    assert log["moe_infinity_validation"] == pytest.approx(stall("heuristic:moe-infinity"))
    assert log["next_use_validation"] == pytest.approx(stall("heuristic:next-use"))
    best = min(e["validation"] for e in log["rounds"])
    # LRU stalls about 1.25x MoE-Infinity on this routing; Belady's next uses are learnable
    assert best < 0.95 * stall("heuristic:lru")
    assert stall(NextUsePolicy(cfg.out)) == pytest.approx(best)


def test_the_leaderboard_lists_it_and_it_plays_legally_and_reloads_identically(trained):
    cfg, _ = trained
    root = Path(cfg.out).parents[1]
    (name, spec), *_ = [p for p in learned_policies("moe", root) if p[0].startswith("nextuse:")]
    assert name == "nextuse:policies/moe-nextuse"
    # the Gymnasium path: the env refuses an illegal action, and validates the record
    runs = [
        run_episode("moe", spec, case="tinymoe-docs", seed=5, env_kwargs={"tokens": 96})
        for _ in range(2)
    ]
    assert runs[0].record == runs[1].record
    # the leaderboard digests the checkpoint's bytes: saving the same weights gives the same
    net = NextUseNet.load(Path(cfg.out) / "model.zip")
    for copy in ("a.zip", "b.zip"):
        net.save(Path(cfg.out).parent / copy)
    assert (Path(cfg.out).parent / "a.zip").read_bytes() == (
        Path(cfg.out) / "model.zip"
    ).read_bytes()
    assert (Path(cfg.out).parent / "b.zip").read_bytes() == (
        Path(cfg.out) / "model.zip"
    ).read_bytes()
    fast, _ = simulate(NextUsePolicy(cfg.out), "tinymoe-docs", 5, tokens=96)
    assert fast["stall_per_token_s"] == pytest.approx(runs[0].metrics["stall_per_token_s"])
    assert runs[0].metrics["prefetches"] == 0


def test_bad_inputs_are_refused_with_the_reason(trained, tmp_path):
    cfg, _ = trained
    with pytest.raises(SchedgymError, match="moe env"):
        run_episode("jobshop", f"nextuse:{cfg.out}", case="ft06")
    bare = tinymoe_trace("docs")
    save_npz(replace(bare, calibration=None), tmp_path / "bare.npz")
    with pytest.raises(SchedgymError, match="nextuse policies fit .* no calibration"):
        simulate(NextUsePolicy(cfg.out), f"file:{tmp_path / 'bare.npz'}", 0, model="mixtral-8x7b")
    stale = tmp_path / "stale.zip"
    with zipfile.ZipFile(Path(cfg.out) / "model.zip") as z, zipfile.ZipFile(stale, "w") as w:
        data = json.loads(z.read("data.json"))
        w.writestr("policy.pth", z.read("policy.pth"))
        w.writestr("data.json", json.dumps({**data, "features": data["features"][:-1]}))
    with pytest.raises(SchedgymError, match="retrain"):
        NextUsePolicy(stale)
    # damaged checkpoints, each refused in one line naming the file (a break-it pass found
    # tracebacks for all of them)
    good = json.loads(zipfile.ZipFile(Path(cfg.out) / "model.zip").read("data.json"))
    weights = zipfile.ZipFile(Path(cfg.out) / "model.zip").read("policy.pth")
    for i, (pth, data, why) in enumerate(
        [
            (b"garbage", good, "not a nextuse checkpoint"),
            (weights[: len(weights) // 2], good, "not a nextuse checkpoint"),
            (weights, {**good, "hidden": good["hidden"] * 2}, "do not fit"),
            (weights, {k: v for k, v in good.items() if k != "hidden"}, "hidden must be"),
            (weights, {**good, "hidden": "abc"}, "hidden must be"),
            (weights, [good], "retrain"),
        ]
    ):
        damaged = tmp_path / f"damaged{i}.zip"
        with zipfile.ZipFile(damaged, "w") as w:
            w.writestr("policy.pth", pth)
            w.writestr("data.json", json.dumps(data))
        with pytest.raises(SchedgymError, match=f"damaged{i}.zip: .*{why}"):
            NextUsePolicy(damaged)
    with pytest.raises(SchedgymError, match="not a nextuse checkpoint"):
        NextUsePolicy(tmp_path / "bare.npz")
    with pytest.raises(SchedgymError, match="no such nextuse checkpoint"):
        NextUsePolicy(tmp_path / "missing")
    with pytest.raises(SchedgymError, match="fold must be 0 or 1"):
        profiling_holdout(bare, 2)
    with pytest.raises(SchedgymError, match="rounds must be an integer >= 0"):
        train(replace(cfg, rounds=-1, out=str(tmp_path / "x")), progress=False)
    with pytest.raises(SchedgymError, match="is a file"):
        train(replace(cfg, out=str(tmp_path / "bare.npz")), progress=False)


@pytest.mark.parametrize(
    "case, kwargs",
    [
        ("tinymoe-docs", {"tokens": 64, "batch": 3}),
        ("tinymoe-docs", {"tokens": 48, "prefetch": 2, "cache_fraction": 0.25}),
        ("tinymoe-code", {"tokens": 32, "capacity": 1, "cpu_offload": True}),
        ("olmoe", {"tokens": 8, "capacity": 7, "cpu_offload": True}),
        ("deepseek", {"tokens": 8, "batch": 2}),
    ],
)
def test_it_plays_legally_wherever_the_env_accepts_the_setting(trained, case, kwargs):
    # batches of lanes, several prefetch decisions, caches smaller than one layer's needs (the
    # CPU the one legal action then), 1,024 and 1,664 experts: the env refuses illegal actions
    # and the record is replayed by the independent validator
    cfg, _ = trained
    played = run_episode("moe", f"nextuse:{cfg.out}", case=case, seed=1, env_kwargs=kwargs)
    assert played.metrics["tokens"] > 0 and played.metrics["prefetches"] == 0


@pytest.mark.parametrize("name", ["heuristic:next-use", "heuristic:lru", "nextuse"])
def test_policies_play_an_env_made_by_gym_make_as_given(trained, name):
    # a user hands the policy the env gym.make returns, wrappers and all
    import gymnasium as gym

    from schedgym.policy import resolve_policy

    cfg, _ = trained
    env = gym.make("schedgym/MoEOffload-v0", case="tinymoe-docs", tokens=24)
    policy = resolve_policy("moe", f"nextuse:{cfg.out}" if name == "nextuse" else name)
    obs, _ = env.reset(seed=4)
    policy.reset(env)
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(policy.act(env, obs))
        done = terminated or truncated
    assert info["metrics"]["tokens"] == 24


@pytest.mark.parametrize("name", ["mixtral", "olmoe"])
def test_the_generator_recipes_train_on_other_text_than_their_suite_plays(name):
    recipe = load_script("train_nextuse").RECIPES[name]
    suite = SUITES[recipe.suite]
    assert {c.case for c in suite.cases} == {recipe.case}
    assert not {c.seed for c in suite.cases} & set(range(recipe.episodes))
    env = MoEOffloadEnv(recipe.case)
    test = [env.make_core(c.case, c.seed).episode.trace for c in suite.cases]
    played = [env.make_core(recipe.case, s).episode.trace for s in range(recipe.episodes)]
    # episodes as long as the suite's, none of them (nor the validation routing) a test episode
    assert {t.n_tokens for t in played} == {t.n_tokens for t in test}
    for fold in (0, 1):
        played.append(profiling_holdout(env.make_core(recipe.validate_on, 0).episode.trace, fold))
    for a in played:
        assert not any(
            a.experts.shape == b.experts.shape and np.array_equal(a.experts, b.experts)
            for b in test
        )
