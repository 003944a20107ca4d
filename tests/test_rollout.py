"""The fortified rollout over PPO (`schedgym.agents.rollout`): the cost-improvement property of
Bertsekas, Tsitsiklis and Wu (J. Heuristics 1997, section 2), a fortified rollout ends no worse
than its base policy from the first state, on small job shops whose episodes the env's own
validator checks; determinism; the env is never stepped by a decision; and the envs whose state
holds the future are refused rather than planned as an oracle.

The base is the committed `policies/jobshop-ppo` (its network reads any job shop up to its
padding), so these run in seconds on 6x6 instances.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from schedgym.agents.rollout import RolloutPolicy
from schedgym.episode import make_env, run_episode
from schedgym.errors import SchedgymError
from schedgym.evaluate import PACKAGE_ROOT
from schedgym.policy import resolve_policy

PPO = PACKAGE_ROOT / "policies" / "jobshop-ppo"
CASES = [f"random:6x6:{s}" for s in (20000, 20001, 20002)]


@pytest.mark.parametrize("candidates", ["", "@2"])
def test_the_fortified_rollout_never_ends_worse_than_its_base_policy(candidates):
    gained = 0
    for case in CASES:
        base = run_episode("jobshop", f"ppo:{PPO}", case=case)
        rollout = run_episode("jobshop", f"rollout:{PPO}{candidates}", case=case)
        assert rollout.metrics["makespan"] <= base.metrics["makespan"], case
        gained += base.metrics["makespan"] - rollout.metrics["makespan"]
    # a lookahead over every candidate that never improved would be no lookahead at all
    assert gained > 0


def test_one_candidate_is_the_base_policy_itself():
    base = run_episode("jobshop", f"ppo:{PPO}", case=CASES[1])
    one = run_episode("jobshop", f"rollout:{PPO}@1", case=CASES[1])
    assert one.record == base.record


def test_a_rollout_episode_repeats_and_a_decision_leaves_the_env_as_it_was():
    runs = [run_episode("jobshop", f"rollout:{PPO}@3", case=CASES[0]) for _ in range(2)]
    assert runs[0].record == runs[1].record
    env = make_env("jobshop", case=CASES[0])
    policy = resolve_policy("jobshop", f"rollout:{PPO}@3")
    obs, _ = env.reset(seed=0)
    policy.reset(env)
    for _ in range(5):
        before = env.unwrapped.get_state()
        action = policy.act(env, obs)
        after = env.unwrapped.get_state()
        assert after["instance"] is before["instance"]
        for key in before.keys() - {"instance"}:
            a, b = before[key], after[key]
            assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, key
        assert env.unwrapped.action_masks()[action]
        obs, *_ = env.step(action)


def test_bad_names_and_envs_that_hold_the_future_are_refused():
    for bad in ("0", "-1", "1.5", "²"):
        with pytest.raises(SchedgymError, match=r"after '@' must be an integer >= 1"):
            RolloutPolicy(f"{PPO}@{bad}")
    with pytest.raises(SchedgymError, match="not a PPO checkpoint"):
        resolve_policy(
            "jobshop", f"rollout:{PACKAGE_ROOT / 'policies' / 'jobshop-muzero' / 'model.pt'}"
        )
    # MoE offloading's state holds the future routing and it offers no known_state(); batching
    # holds the future too, but plays out from its known_state() (a forecast of the arrived
    # requests), so it is accepted
    policy = RolloutPolicy(str(PACKAGE_ROOT / "policies" / "moe-ppo"))
    env = make_env("moe", case="tinymoe-code", max_entities=32)
    env.reset(seed=0)
    with pytest.raises(SchedgymError, match=r"MoEOffloadEnv's state holds what a scheduler cannot"):
        policy.reset(env)
    policy = RolloutPolicy(str(PACKAGE_ROOT / "policies" / "batching-ppo"))
    env = make_env("batching", case="azure-conv-synth:12")
    env.reset(seed=0)
    policy.reset(env)


@pytest.mark.parametrize(
    "env_name, checkpoint, case",
    [("jobshop", "jobshop-ppo", "ta01"), ("memmap", "memmap-ppo", None), ("dag", "dag-ppo", None)],
)
def test_the_network_cut_to_its_present_rows_gives_the_full_networks_logits(
    env_name, checkpoint, case
):
    """The rollout runs the base network on the rows up to the last present one; on states of
    random play, batched, every legal action's logit (up to the softmax's shift) is the one
    SB3's own call on the padded observation gives, and the illegal ones are out."""
    policy = RolloutPolicy(str(PACKAGE_ROOT / "policies" / checkpoint))
    env = make_env(env_name, **({"case": case} if case else {}))
    obs, _ = env.reset(seed=3)
    policy.reset(env)
    rng = np.random.default_rng(0)
    states, masks = [], []
    for _ in range(40):
        mask = np.asarray(env.unwrapped.action_masks(), bool)
        states.append({k: np.array(v) for k, v in obs.items()})
        masks.append(mask)
        obs, _, term, trunc, _ = env.step(int(rng.choice(np.flatnonzero(mask))))
        if term or trunc:
            break
    masks = np.stack(masks)
    batch = {k: np.stack([o[k] for o in states]) for k in states[0]}
    with torch.inference_mode():
        tensor, _ = policy.net.obs_to_tensor(batch)
        full = policy.net.get_distribution(tensor, action_masks=masks).distribution.logits.numpy()
    cut = policy._logits(states, masks)
    # there is padding to cut in every state
    assert batch["entity_mask"].sum(axis=1).max() < batch["entity_mask"].shape[1]
    assert np.all(np.isneginf(cut[~masks]))

    def shifted(logits: np.ndarray) -> np.ndarray:
        top = np.where(masks, logits, -np.inf).max(axis=1, keepdims=True)
        return np.where(masks, logits - top, 0.0)

    np.testing.assert_allclose(shifted(cut), shifted(full), atol=1e-4)


def _hashed_logits(obs: list[dict], masks: np.ndarray) -> np.ndarray:
    """A deterministic base policy with no consistency at all: each state's action preferences
    drawn from a hash of its observation."""
    rows = []
    for o in obs:
        seed = zlib.crc32(b"".join(np.ascontiguousarray(o[k]).tobytes() for k in sorted(o)))
        rows.append(np.random.default_rng(seed).normal(size=masks.shape[1]))
    return np.where(masks, np.array(rows), -np.inf)


def _episode(env, act) -> float:
    """The return of one episode of ``act(env, obs)`` from ``env``'s first state."""
    obs, _ = env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        obs, reward, term, trunc, _ = env.step(act(env, obs))
        total, done = total + float(reward), term or trunc
    return total


def test_fortification_never_ends_worse_than_a_sequence_it_has_found(monkeypatch):
    """Whatever the base policy, here one with no consistency at all, a fortified rollout
    returns at least the best play-out of its first decision's candidates, the base policy's
    favourite among them, whose play-out is the base policy's own episode (Bertsekas,
    Tsitsiklis and Wu 1997, section 2). A plain rollout has no such guarantee, though on
    360 such episodes of 4x4 to 8x4 shops it never broke it either: this checks the
    bookkeeping of the held sequence on real play-outs; the hand-worked test below is the one
    a plain rollout fails."""
    for s in range(20000, 20008):
        env = make_env("jobshop", case=f"random:6x6:{s}")
        obs, _ = env.reset(seed=0)
        mask = np.asarray(env.unwrapped.action_masks(), bool)
        logits = _hashed_logits([obs], mask[None])[0]
        order = np.flatnonzero(mask)[np.argsort(-logits[mask], kind="stable")]
        for k in (None, 2):
            policy = RolloutPolicy(f"{PPO}@{k}" if k else str(PPO))
            monkeypatch.setattr(policy, "_logits", _hashed_logits)
            env.reset(seed=0)
            policy.reset(env)
            first = policy._play_outs(env.unwrapped.get_state(), order[:k], env.unwrapped)
            found = max(sum(r for _, r in seq) for seq in first)
            got = _episode(env, policy.act)
            assert got >= found - 1e-9, (s, k, got, found)


def test_a_worse_later_play_out_does_not_replace_the_held_sequence(monkeypatch):
    """Hand-worked: the first decision's play-outs find a sequence returning -2 (two moves of -1);
    every play-out of the second decision returns -5, the first of them starting with a job the
    held sequence does not take next. A fortified rollout plays the held sequence's second move;
    a plain rollout would take that job."""
    env = make_env("jobshop", case=CASES[0])
    obs, _ = env.reset(seed=0)
    policy = RolloutPolicy(str(PPO))
    policy.reset(env)
    held_next = 0  # every job still has operations after one dispatch on a 6x6 shop
    first: list[int] = []

    def first_play_outs(state, actions, like):
        first.extend(int(a) for a in actions)
        return [
            [(int(a), -1.0), (held_next, -1.0)] if k == 1 else [(int(a), -3.0)]
            for k, a in enumerate(actions)
        ]

    monkeypatch.setattr(policy, "_play_outs", first_play_outs)
    chosen = policy.act(env, obs)
    assert chosen == first[1]  # the -2 sequence, not the base's favourite at -3
    obs, *_ = env.step(chosen)
    other = next(int(a) for a in np.flatnonzero(env.unwrapped.action_masks()) if a != held_next)
    monkeypatch.setattr(
        policy, "_play_outs", lambda state, actions, like: [[(other, -5.0)]] * len(actions)
    )
    assert policy.act(env, obs) == held_next


def test_a_rollout_can_teach_its_base_by_imitation():
    """Approximate policy iteration's demonstrations (scripts/train_policies.py jobshop-api):
    `collect` records the rollout's own episode, so its rows replayed on the same instance give
    the rollout's schedule, decision for decision, and a network cloned on them agrees with it
    more than its base did."""
    from sb3_contrib import MaskablePPO

    from schedgym.agents.imitation import DEMO_SEED_OFFSET, clone, collect

    spec = f"rollout:{PPO}@3"
    demos = collect("jobshop", spec, 2, {"case": "random:6x6"}, progress=False)
    own = run_episode("jobshop", spec, seed=DEMO_SEED_OFFSET, env_kwargs={"case": "random:6x6"})
    first = demos.actions[demos.episode == 0]
    assert len(first) == own.decisions
    env = make_env("jobshop", case="random:6x6")
    env.reset(seed=DEMO_SEED_OFFSET)
    for action in first:
        *_, info = env.step(int(action))
    assert info["record"] == own.record
    model = MaskablePPO.load(PPO / "model.zip", device="cpu")
    before = clone(model.policy, demos, epochs=0, holdout=0.5, progress=False)
    after = clone(model.policy, demos, epochs=30, holdout=0.5, progress=False)
    assert after["train_agreement"] > before["train_agreement"]
