"""The forecast of a batching replica from what its scheduler knows (`BatchingEngine.forecast`,
what `scripts/headroom.py --known` and the batching planner play out), against the true engine
it is taken from."""

from __future__ import annotations

import numpy as np

from schedgym.baselines.batching import POLICIES
from schedgym.envs.batching.env import BatchingEnv


def _guard_until(engine, base, stop) -> None:
    """Drive ``engine`` with ``base`` step by step until ``stop()``."""
    while not engine.done and not stop():
        if not engine.phase_open:
            if not engine.choice_needed():
                engine.fast_forward(max_steps=1)
                continue
            engine.set_budget(base.step_budget(engine), base.prefill_first)
        while (pos := base.choose_admission(engine)) is not None:
            engine.admit(pos)
        engine.run_step()


def _state(engine) -> tuple:
    return engine.n_missed, engine.finished_at.tolist(), engine.token_time.tolist(), engine.steps


def test_a_forecast_that_knows_the_true_lengths_after_the_last_arrival_is_the_engine():
    """Once every request has arrived, a known engine given the true output lengths holds the
    whole state, so the guard plays it to the end exactly as it plays the true engine: same
    misses, same finish and token times (to the last bit), same steps."""
    env = BatchingEnv("azure-conv-synth:40")
    env.reset(seed=3)
    engine, base = env.core, POLICIES["heuristic:sarathi-guard"]()
    _guard_until(engine, base, lambda: engine.next_arrival == engine.n and engine.n_run > 2)
    assert not engine.done and len(engine.waiting) + engine.n_run > 2  # mid-run, work left
    known = engine.forecast(engine.output)
    for e in (engine, known):
        _guard_until(e, base, lambda: False)
    assert _state(known) == _state(engine)


def test_a_forecast_holds_the_arrived_requests_at_their_guessed_lengths():
    """Before the last arrival a known engine holds only the requests that have arrived; an
    unfinished one's output is the guess, or one token more than it has produced when it has
    outgrown the guess; a finished one keeps its length; and nothing else of the state moves."""
    env = BatchingEnv("azure-conv-synth:80")
    env.reset(seed=4)
    engine, base = env.core, POLICIES["heuristic:sarathi-guard"]()
    _guard_until(engine, base, lambda: engine.next_arrival >= 50)
    k = engine.next_arrival
    assert k < engine.n
    guess = np.full(engine.n, 3)  # shorter than most outputs: the floor must hold
    known = engine.forecast(guess)
    assert known.n == k and not known.done
    produced = engine.generated[:k].copy()
    produced[engine.running[:, 0]] = engine.running[:, 3]
    live = np.isnan(engine.finished_at[:k])
    assert (known.output[live] == np.maximum(3, produced[live] + 1)).all()
    assert (known.output[~live] == engine.output[:k][~live]).all()
    assert (known.now, known.n_missed, known.waiting, known.free) == (
        engine.now,
        engine.n_missed,
        engine.waiting,
        engine.free,
    )
    assert known.last_step_s == engine.last_step_s
    assert (known.generated == engine.generated[:k]).all()
    # the forecast ends when the arrived requests are served: none arrives later
    _guard_until(known, base, lambda: False)
    assert known.done and not np.isnan(known.finished_at).any()
