"""The serving plugin's time per engine step (``schedgym bench --env export``).

Measured on `ServingPolicy.decide` alone (the budget and every admission, each a freshly
encoded observation and a graph call), for a busy replica's state; numpy and onnxruntime only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from schedgym.plugins.vllm.policy import EngineState, ServingPolicy
from schedgym.report import latency_percentiles


def serving_state(n_waiting: int = 256, n_running: int = 32, seed: int = 0) -> Any:
    """A busy serving replica's state for the plugin's decision (``EngineState``): ``n_waiting``
    requests with Azure-conversation-like prompts waiting, ``n_running`` decoding, 16-token
    blocks, Llama-2-7B / H100-sized KV cache and vLLM's default limits."""
    rng = np.random.default_rng(seed)
    now = 100.0
    return EngineState(
        now=now,
        w_prompt=rng.integers(50, 2000, n_waiting),
        w_generated=np.zeros(n_waiting, np.int64),
        w_arrival=np.sort(now - rng.uniform(0, 2, n_waiting)),
        w_last_token=np.full(n_waiting, np.nan),
        w_max_tokens=rng.integers(16, 512, n_waiting),
        r_prompt=(r_prompt := rng.integers(50, 2000, n_running)),
        r_generated=(r_generated := rng.integers(1, 200, n_running)),
        r_computed=r_prompt + r_generated - 1,  # decoding
        r_last_token=now - rng.uniform(0, 0.02, n_running),
        free_blocks=20_000,
        kv_capacity=28_000,
        block_size=16,
        max_num_seqs=256,
        max_batched_tokens=8192,
        recent_arrivals=50,
        mean_rate=10.0,
        last_step_s=0.03,
        finished=100,
        n_requests=400,
    )


def bench(folder: str | Path) -> list[dict[str, Any]]:
    """p50 and p99 of the decision on `serving_state` (256 waiting, 32 running requests) with
    the batching policy exported in ``folder``, over 100 decisions."""
    serving = ServingPolicy(folder, ttft_s=1.0, tbt_s=0.1)
    serving.load_model()
    state = serving_state()
    calls = len(serving.decide(state, record=True).trace)
    p50, p99 = latency_percentiles(serving.decide, [state] * 100)
    return [
        {
            "name": "batching: vLLM plugin time per engine step p50 / p99",
            "value": f"{p50 * 1e6:,.0f} / {p99 * 1e6:,.0f}",
            "unit": "us",
            "note": f"256 waiting, 32 running; {calls} graph calls per step (the budget and "
            "each admission); target < 100 us",
        }
    ]
