"""Speed of the cost model itself: how many kernel prices and engine steps per second."""

from __future__ import annotations

import time

import numpy as np

from schedgym.envs.hardware.devices import load_cost_table
from schedgym.envs.hardware.models import Batch, StepCost, get_model, price, step_calls


def _rate(fn, min_s: float = 0.3) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_s:
        fn()
        n += 1
    return n / elapsed


def bench() -> list[dict]:
    table = load_cost_table("h100")
    model = get_model("llama-2-7b")
    step = StepCost(table, model)
    batch = Batch(prefill=[(512, 1536)], decode_contexts=list(range(200, 200 + 64 * 20, 20)))
    tokens = np.arange(1, 4097, dtype=float)
    return [
        {
            "name": "KernelCostTable.predict (linear, scalar)",
            "unit": "calls/s",
            "value": _rate(lambda: table.predict("linear", tokens=300, d_in=4096, d_out=4096)),
        },
        {
            "name": "KernelCostTable.predict_many (linear, 4096 points)",
            "unit": "points/s",
            "value": 4096
            * _rate(lambda: table.predict_many("linear", tokens=tokens, d_in=4096, d_out=4096)),
        },
        {
            "name": "StepCost (llama-2-7b, h100, 1 chunk + 64 decodes)",
            "unit": "steps/s",
            "value": _rate(lambda: step(batch)),
            "note": "what the batching env pays per engine step",
        },
        {
            "name": "price(step_calls(...)) same batch, uncached",
            "unit": "steps/s",
            "value": _rate(lambda: price(table, step_calls(model, batch))),
        },
    ]
