"""Planning on batching from what the scheduler knows: `BatchingEnv.known_state` (a forecast
truncated at its horizon), the heuristics' fast play-out of it, SCORPIO's guard in any state a
planner can reach, and the anchored search that keeps its base heuristic's choice on ties."""

from __future__ import annotations

import numpy as np
import pytest
from test_forecast import _guard_until
from test_muzero import Indifferent

from schedgym.agents.muzero.models import ANCHOR_NATS, SimulatorModel, make_model
from schedgym.agents.muzero.networks import MuZeroNet
from schedgym.agents.muzero.policy import MuZeroPolicy
from schedgym.agents.muzero.search import SearchConfig
from schedgym.baselines.batching import POLICIES
from schedgym.envs.batching.core import BatchingEngine
from schedgym.envs.batching.env import BatchingEnv
from schedgym.episode import make_env, run_episode
from schedgym.errors import IllegalActionError
from schedgym.policy import resolve_policy
from schedgym.workloads.serving import ServingTrace, SLOClass


def _mid_episode(seed: int, decisions: int) -> tuple[BatchingEnv, dict]:
    env = BatchingEnv("azure-conv-synth:120", forecast_s=2.0)
    obs, _ = env.reset(seed=seed)
    guard = POLICIES["heuristic:sarathi-guard"]()
    guard.reset(env)
    for _ in range(decisions):
        obs, *_ = env.step(guard.act(env, obs))
    return env, obs


@pytest.mark.parametrize("seed", [0, 5])
def test_a_forecast_steps_to_its_horizon_and_the_fast_play_out_agrees(seed):
    """From mid-episode, the known state holds the arrived requests only; stepping the guard
    through the env from it ends truncated (not terminated) at the first decision at or after
    ``forecast_s`` simulated seconds, with no legal action left and `step` refused; the rewards
    summed on the way equal the guard's fast play-out on the core from the same state; and the
    episode itself is untouched by all of it."""
    env, obs = _mid_episode(seed, 150)
    core = env.core
    before = (core.now, core.n_missed, list(core.waiting), core.steps, core.next_arrival)
    assert core.next_arrival < core.n  # arrivals still to come: the forecast must not see them
    known = env.known_state()
    guard = POLICIES["heuristic:sarathi-guard"]()
    guard.reset(env)

    obs = env.set_state(known)
    start = env.core.now
    assert env.core.n == before[4] and env.core is not core
    total, terminated, truncated = 0.0, False, False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(guard.act(env, obs))
        total += reward
    assert truncated and not terminated and "metrics" not in info
    assert env.core.now >= start + 2.0
    assert not env.action_masks().any()
    with pytest.raises(IllegalActionError, match="horizon"):
        env.step(0)

    env.set_state(known)
    assert guard.play_out(env) == pytest.approx(total, abs=1e-12)
    after = (core.now, core.n_missed, list(core.waiting), core.steps, core.next_arrival)
    assert after == before


def test_the_guard_prices_the_chunk_an_admission_gets_at_any_budget():
    """SCORPIO's TPOT guard prices a newcomer's first chunk beside the running decodes. At the
    largest budget (8,192 tokens, the cost table's largest batch) with three requests decoding,
    an 8,190-token prompt gets the 8,189 tokens left, a batch of 8,192: the guard prices that
    (a planner may choose this budget, and the guard then finishes its play-out). Priced at
    the whole step budget it was 8,193 tokens, past the table, and raised."""
    slo = (SLOClass("relaxed", ttft_s=60.0, tbt_s=5.0),)
    trace = ServingTrace(
        np.array([0.0, 0.0, 0.0, 0.001]),
        np.array([16, 16, 16, 8190]),
        np.array([50, 50, 50, 10]),
        np.zeros(4, np.int64),
        slo,
    )
    engine = BatchingEngine(trace)
    assert engine.config.max_tokens == 8192
    guard = POLICIES["heuristic:sarathi-guard"]()
    engine.set_budget(512)
    for _ in range(3):
        engine.admit(0)
    engine.run_step()  # the three prompts are done: they decode from now on
    assert engine.waiting == [3] and engine.n_run == 3
    engine.set_budget(8192)
    assert engine.budget_left == 8189
    assert guard.choose_admission(engine) == 0  # a 5 s TBT target: the long step is allowed


def test_an_anchored_planner_with_one_simulation_plays_its_base_heuristic():
    """The anchor ranks the rollout policy's own action first in the root's prior, so with one
    simulation (only the first-ranked action is ever visited) the planner is its base
    heuristic, move for move, on any prior. Without it a uniform prior's first-ranked action is
    the lowest legal index, which plays a different schedule on these shops."""
    env = make_env("jobshop")
    net = MuZeroNet(env.observation_space)
    net.policy_head = Indifferent()
    planner = {"kind": "simulator", "env": "jobshop", "rollout": "heuristic:spt"}
    one = SearchConfig(simulations=1)
    anchored = MuZeroPolicy(net=net, planner={**planner, "anchor": True}, search=one)
    plain = MuZeroPolicy(net=net, planner=planner, search=one)
    differs = 0
    for seed in range(4):
        case = f"random:4x4:{seed}"
        spt = run_episode("jobshop", "heuristic:spt", case=case).metrics["makespan"]
        assert run_episode("jobshop", anchored, case=case).metrics["makespan"] == spt
        differs += run_episode("jobshop", plain, case=case).metrics["makespan"] != spt
    assert differs


def test_the_anchor_is_a_small_lead_in_the_roots_prior():
    """The anchored action's logit is the best other legal logit plus `ANCHOR_NATS`: the rest
    of the prior is the network's."""
    env = make_env("jobshop")
    obs, _ = env.reset(seed=0, options={"case": "ft06"})
    net = MuZeroNet(env.observation_space)
    spt = resolve_policy("jobshop", "heuristic:spt")
    plain = SimulatorModel(net, spt)
    _, logits, _, masks = plain.root([env], [obs])
    plain.finish()
    model = SimulatorModel(net, spt, anchor=True)
    _, anchored, _, _ = model.root([env], [obs])
    model.finish()
    spt.reset(env)
    base = int(spt.act(env, obs))
    legal = masks[0]
    assert anchored[0, base] == pytest.approx(logits[0, legal].max() + ANCHOR_NATS)
    others = np.flatnonzero(legal & (np.arange(legal.size) != base))
    assert np.array_equal(anchored[0, others], logits[0, others])


def test_an_anchor_needs_the_simulator_and_a_rollout_policy():
    env = make_env("jobshop")
    net = MuZeroNet(env.observation_space)
    with pytest.raises(ValueError, match="anchor needs the true simulator"):
        make_model("learned", net, anchor=True)
    with pytest.raises(ValueError, match="rollout policy to anchor to"):
        make_model("simulator", net, anchor=True)


def test_a_forecast_reads_nothing_a_scheduler_does_not_know():
    """Two replicas whose traces agree on everything a scheduler has seen by some moment, but
    not on the future (later arrivals come 5 s later and are twice as long in the second, and a
    request still decoding will produce 100 more tokens there), play alike up to that moment
    and give the very same forecast there: arrays, scalars and queue. (Slot rows past the
    running ones are scratch no step reads; they keep what earlier requests left there.)"""
    base = POLICIES["heuristic:sarathi-guard"]()
    env = BatchingEnv("azure-conv-synth:60")
    env.reset(seed=2)
    first = env.trace
    m = 40

    a = BatchingEngine(first, env.core.config)
    _guard_until(a, base, lambda: a.next_arrival >= m)
    assert a.next_arrival >= m and not a.done
    m = a.next_arrival  # every request before it has arrived, none after
    rows = a.running
    running = rows[rows[:, 3] > 0][:, 0]
    assert running.size  # a request mid-decode whose true length the second trace changes
    j = int(running[0])
    output = first.output_tokens.copy()
    output[j] += 100
    output[m:] *= 2
    arrival = first.arrival_s.copy()
    arrival[m:] += 5.0
    second = ServingTrace(
        arrival, first.prompt_tokens, output, first.slo_class, first.slo_classes, "other"
    )
    b = BatchingEngine(second, env.core.config)
    _guard_until(b, base, lambda: b.next_arrival >= m)
    assert (a.now, a.next_arrival, a.waiting) == (b.now, b.next_arrival, b.waiting)
    guess = np.full(first.n_requests, 40)
    fa, fb = a.forecast(guess, 4.0), b.forecast(guess, 4.0)
    sa, sb = fa.get_state(), fb.get_state()
    live = fa.n_run
    assert live == fb.n_run
    for key in BatchingEngine._ARRAYS:
        x, y = (sa[key][:live], sb[key][:live]) if key.startswith("slot") else (sa[key], sb[key])
        np.testing.assert_array_equal(x, y, err_msg=key)
    assert [sa[k] for k in BatchingEngine._SCALARS] == [sb[k] for k in BatchingEngine._SCALARS]
    assert sa["waiting"] == sb["waiting"]
    assert (fa.output == fb.output).all() and (fa.arrival == fb.arrival).all()


def test_the_committed_planner_with_one_simulation_is_the_guard():
    """`policies/batching-muzero` is anchored to SCORPIO's guard, so with one simulation it
    plays the guard's episode exactly (same decisions, same goodput); at its own 8 it takes
    only legal actions and plans from the forecast, never the true future."""
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "policies" / "batching-muzero"
    if not (folder / "model.pt").is_file():
        pytest.skip("policies/batching-muzero is not committed in this checkout")
    case = "azure-conv-synth:40"
    guard = run_episode("batching", "heuristic:sarathi-guard", case=case, seed=1)
    one = run_episode("batching", f"muzero:{folder}@1", case=case, seed=1)
    assert one.decisions == guard.decisions
    assert one.metrics["goodput_rps"] == guard.metrics["goodput_rps"]
