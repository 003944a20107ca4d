"""The exported batching policy as a serving scheduler's decision function (numpy and
onnxruntime only; no vLLM, torch, SB3 or Gymnasium).

`ServingPolicy.decide` takes what a scheduler knows at the start of an engine step
(`EngineState`) and replays Batching-v0's decision phases on it, exactly as the env poses them
(``envs/batching/env.py``): first the step's token budget, then admissions one by one, each
from a fresh observation built by the env's own encoder (``envs/batching/features.py``), until
the policy runs the step or nothing more fits. Decisions with a single legal action are taken
without asking the policy, as the env takes them. The result is the step's budget and the
waiting requests to admit, in order; the vLLM scheduler (``scheduler.py``) applies it.

In an engine two of the env's choices do not exist and are masked out of the graph's input:
the prefill-first step (vLLM v1 always schedules decodes first) and budgets above the engine's
``max_num_batched_tokens``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from schedgym.envs.batching.features import (
    ENCODER_VERSION,
    LENGTH_BUCKETS,
    SchedulerView,
    empty_observation,
    encode,
)

SPEC_ENV, SPEC_ENV_VERSION = "batching", "v0"


class PolicySpecError(ValueError):
    """A policy folder that cannot serve: no readable spec.json, another env, another env
    version, or another feature-encoder version. The message is one line naming the file."""


@dataclass(frozen=True)
class EngineState:
    """The scheduler's state at the start of a step (arrays in queue / running order; times in
    seconds; lengths in tokens; KV in blocks).

    Waiting (``(k,)`` each, the whole queue): ``w_prompt``, ``w_generated`` (tokens produced
    before a preemption), ``w_arrival``, ``w_last_token`` (time of the last produced token, NaN
    if none), ``w_max_tokens`` (the request's output cap, the only output-length hint an
    engine has). Running (``(n,)``, admission order): ``r_prompt``, ``r_generated``,
    ``r_computed``, ``r_last_token``. Replica: ``free_blocks`` (after this step's decode growth),
    ``kv_capacity``, ``block_size``, ``max_num_seqs``, ``max_batched_tokens``. History:
    ``recent_arrivals`` (last 5 s), ``mean_rate`` (requests/s), ``last_step_s``, ``finished``,
    ``n_requests``."""

    now: float
    w_prompt: np.ndarray
    w_generated: np.ndarray
    w_arrival: np.ndarray
    w_last_token: np.ndarray
    w_max_tokens: np.ndarray
    r_prompt: np.ndarray
    r_generated: np.ndarray
    r_computed: np.ndarray
    r_last_token: np.ndarray
    free_blocks: int
    kv_capacity: int
    block_size: int
    max_num_seqs: int
    max_batched_tokens: int
    recent_arrivals: int
    mean_rate: float
    last_step_s: float
    finished: int
    n_requests: int


@dataclass
class Decision:
    """A step's decision: the token ``budget`` and the waiting queue positions to admit, in
    order (``admit``); ``trace`` holds ``(observation, mask, action)`` per policy call."""

    budget: int
    admit: list[int]
    trace: list[tuple[dict[str, np.ndarray], np.ndarray, int]] = field(default_factory=list)


def load_spec(folder: str | Path) -> dict[str, Any]:
    """Read and check ``folder/spec.json``; raises `PolicySpecError` (one line) unless it is a
    Batching-v0 policy encoded by this schedgym's feature encoder."""
    path = Path(folder) / "spec.json"
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicySpecError(f"{path}: cannot read the policy spec ({exc})") from None
    if not isinstance(spec, dict):
        raise PolicySpecError(
            f"{path}: cannot read the policy spec (expected a JSON object, got "
            f"{type(spec).__name__})"
        )
    got = (spec.get("env"), spec.get("env_version"), spec.get("encoder_version"))
    want = (SPEC_ENV, SPEC_ENV_VERSION, ENCODER_VERSION)
    if got != want:
        raise PolicySpecError(
            f"{path}: policy for env {got[0]} {got[1]} with encoder {got[2]}; this plugin serves "
            f"{want[0]} {want[1]} with encoder {want[2]} (export it again with this schedgym)"
        )
    _check_layout(path, spec)
    return spec


def _check_layout(path: Path, spec: dict[str, Any]) -> None:
    """Check the parts of a Batching-v0 spec that `ServingPolicy` reads: ``inputs`` (with an
    ``entities`` input of shape ``[batch, rows, features]``), ``actions.n_actions`` and
    ``engine.budgets``, and that the action count is the rows, the budgets and the two step
    actions. Raises `PolicySpecError` (one line naming the file and the key)."""

    def bad(key: str, want: str) -> PolicySpecError:
        what = f"has an invalid {key!r}" if key in spec else f"lacks the key {key!r}"
        return PolicySpecError(f"{path}: the policy spec {what} ({want})")

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    inputs = spec.get("inputs")
    if not isinstance(inputs, list):
        raise bad("inputs", "a list of the graph's inputs")
    entities = [i for i in inputs if isinstance(i, dict) and i.get("name") == "entities"]
    shape = entities[0].get("shape") if entities else None
    if not (isinstance(shape, list) and len(shape) == 3 and count(shape[1])):
        raise bad("inputs", "an 'entities' input of shape [batch, rows, features]")
    actions = spec.get("actions")
    if not (isinstance(actions, dict) and count(actions.get("n_actions"))):
        raise bad("actions", "an object with the action count, n_actions")
    engine = spec.get("engine")
    budgets = engine.get("budgets") if isinstance(engine, dict) else None
    if not (isinstance(budgets, list) and budgets and all(count(b) for b in budgets)):
        raise bad("engine", "an object with the token budgets, a list of positive integers")
    if actions["n_actions"] != shape[1] + len(budgets) + 2:
        raise PolicySpecError(
            f"{path}: the policy spec's actions.n_actions, {actions['n_actions']}, is not its "
            f"{shape[1]} waiting rows, {len(budgets)} budgets and 2 step actions"
        )


class ServingPolicy:
    """An exported Batching-v0 policy (``schedgym export``) deciding engine steps.

    ``folder`` holds ``spec.json`` (checked by `load_spec`, which raises `PolicySpecError`) and
    ``policy.onnx`` (loaded by `load_model`; a missing or corrupt file raises there, so that a
    scheduler can run its stock order instead). ``ttft_s`` and ``tbt_s`` are the SLO targets
    the features are relative to; ``watermark`` the share of KV blocks admissions leave free,
    as in the env."""

    def __init__(
        self,
        folder: str | Path,
        ttft_s: float,
        tbt_s: float,
        watermark: float = 0.01,
        threads: int = 1,
    ):
        self.folder = Path(folder)
        self.spec = load_spec(folder)
        inputs = {i["name"]: i for i in self.spec["inputs"]}
        self.max_entities = int(inputs["entities"]["shape"][1])
        self.n_actions = int(self.spec["actions"]["n_actions"])
        self.budgets = [int(b) for b in self.spec["engine"]["budgets"]]
        self.run_action = self.max_entities + len(self.budgets) + 1
        self.ttft_s, self.tbt_s, self.watermark, self.threads = ttft_s, tbt_s, watermark, threads
        self.session: Any = None

    def load_model(self) -> None:
        """Open ``policy.onnx`` in onnxruntime (one intra-op thread by default)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(self.folder / "policy.onnx"), opts, providers=["CPUExecutionProvider"]
        )

    def act(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
        """The graph's action on one observation; raises ``FloatingPointError`` if its logits
        are not finite, ``ValueError`` if it returns an action the mask forbids."""
        feed = {k: v[None] for k, v in obs.items()}
        feed["action_mask"] = mask[None]
        logits, action = self.session.run(["masked_logits", "action"], feed)
        if not np.isfinite(logits).all():
            raise FloatingPointError("the policy's logits are not finite")
        a = int(action[0])
        if not 0 <= a < mask.size or not mask[a]:
            raise ValueError(f"the policy chose illegal action {a}")
        return a

    def decide(self, s: EngineState, record: bool = False) -> Decision | None:
        """The step's budget and admissions for state ``s``, or None when the step has nothing
        to decide (every running request decodes and no waiting request can be admitted: any
        budget gives the same step)."""
        E, bs = self.max_entities, s.block_size
        watermark = max(1, int(self.watermark * s.kv_capacity))
        remaining = s.r_prompt + s.r_generated - s.r_computed
        n_run = remaining.size
        free = s.free_blocks - watermark
        can_admit = s.w_prompt.size > 0 and n_run < s.max_num_seqs and free >= 1
        if not (remaining > 1).any() and not can_admit:
            return None
        ttft = np.full(E, self.ttft_s)
        tbt = np.full(E, self.tbt_s)
        predicted = np.searchsorted(LENGTH_BUCKETS, s.w_max_tokens, side="right")
        todo_all = s.w_prompt + s.w_generated
        base = SchedulerView(
            now=s.now,
            w_prompt=s.w_prompt[:0],
            w_generated=s.w_generated[:0],
            w_arrival=s.w_arrival[:0],
            w_ttft=ttft[:0],
            w_tbt=tbt[:0],
            w_last_token=s.w_last_token[:0],
            w_predicted=predicted[:0],
            w_fits=np.zeros(0, bool),
            n_waiting=s.w_prompt.size,
            waiting_tokens=float(todo_all.sum()),
            r_remaining=remaining,
            r_generated=s.r_generated,
            r_computed=s.r_computed,
            r_last_token=s.r_last_token,
            r_tbt=np.full(n_run, self.tbt_s),
            admitting=False,
            step_budget=0,
            budget_left=0,
            prefill_first=False,
            free_blocks=free,
            kv_capacity=s.kv_capacity,
            max_num_seqs=s.max_num_seqs,
            max_budget=float(self.budgets[-1]),
            block_size=bs,
            recent_arrivals=s.recent_arrivals,
            mean_rate=s.mean_rate,
            last_step_s=s.last_step_s,
            min_tbt=self.tbt_s,
            finished=s.finished,
            n_requests=s.n_requests,
        )
        queue = list(range(s.w_prompt.size))
        decision = Decision(budget=0, admit=[])

        def observe(fits: np.ndarray, **changes: Any) -> dict[str, np.ndarray]:
            rows = np.asarray(queue[:E], dtype=np.int64)
            view = replace(
                base,
                w_prompt=s.w_prompt[rows],
                w_generated=s.w_generated[rows],
                w_arrival=s.w_arrival[rows],
                w_ttft=ttft[: rows.size],
                w_tbt=tbt[: rows.size],
                w_last_token=s.w_last_token[rows],
                w_predicted=predicted[rows],
                w_fits=fits,
                **changes,
            )
            return encode(view, empty_observation(E))

        def ask(obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
            legal = np.flatnonzero(mask)
            a = int(legal[0]) if legal.size == 1 else self.act(obs, mask)
            if record and legal.size > 1:
                decision.trace.append((obs, mask, a))
            return a

        # budget phase: the env's budget actions, within the engine's max_num_batched_tokens
        mask = np.zeros(self.n_actions, bool)
        for j, b in enumerate(self.budgets):
            mask[E + j] = b <= s.max_batched_tokens
        if not mask.any():
            raise ValueError(
                f"max_num_batched_tokens={s.max_batched_tokens} is below every budget the "
                f"policy knows ({self.budgets})"
            )
        visible = min(len(queue), E)
        a = ask(observe(np.zeros(visible, bool)), mask)
        budget = decision.budget = self.budgets[a - E]
        # the running requests first, as the engine schedules them: a token per decode, then
        # the prefilling requests' next chunks in admission order
        left = budget - int(np.count_nonzero(remaining == 1))
        for j in np.flatnonzero(remaining > 1):
            if left < 1:
                break
            chunk = int(min(remaining[j], left))
            blocks = -(-(int(s.r_computed[j]) + chunk) // bs) - (-(-int(s.r_computed[j]) // bs))
            free -= blocks
            left -= chunk
        # admission phase: an admitted request joins the running ones with nothing computed
        admitted = decision.admit
        while queue:
            rows = np.asarray(queue[:E], dtype=np.int64)
            chunk = np.minimum(todo_all[rows], left)
            fits = (
                (-(-chunk // bs) <= free) & (n_run < s.max_num_seqs) & (left >= 1)
                if left >= 1 and n_run < s.max_num_seqs
                else np.zeros(rows.size, bool)
            )
            mask = np.zeros(self.n_actions, bool)
            mask[: rows.size] = fits
            mask[self.run_action] = n_run > 0
            if not fits.any():
                break
            a = ask(
                observe(
                    fits,
                    admitting=True,
                    step_budget=budget,
                    budget_left=left,
                    free_blocks=free,
                    r_remaining=np.concatenate([remaining, todo_all[admitted]]),
                    r_generated=np.concatenate([s.r_generated, s.w_generated[admitted]]),
                    r_computed=np.concatenate([s.r_computed, np.zeros(len(admitted), np.int64)]),
                    r_last_token=np.concatenate([s.r_last_token, s.w_last_token[admitted]]),
                    r_tbt=np.full(n_run, self.tbt_s),
                ),
                mask,
            )
            if a == self.run_action:
                break
            pos = queue.pop(a)
            decision.admit.append(pos)
            c = int(chunk[a])
            free -= -(-c // bs)
            left -= c
            n_run += 1
        return decision


def fcfs_window(waited: np.ndarray, max_wait_s: float) -> np.ndarray:
    """Queue positions of the requests that have waited longer than ``max_wait_s`` (admitted
    first, in queue order, whatever a policy says: nothing starves)."""
    if not math.isfinite(max_wait_s):
        return np.zeros(0, np.int64)
    return np.flatnonzero(waited > max_wait_s)
