"""Run an exported Batching-v0 policy as vLLM v1's scheduler (docs/serving.md).

``--scheduler-cls schedgym.plugins.vllm.PolicyAsyncScheduler`` (GPU, vLLM's default
asynchronous scheduling) or ``schedgym.plugins.vllm.PolicyScheduler`` (CPU, synchronous), with
``--additional-config '{"schedgym": {"policy": "DIR"}}'``. ``policy`` (the decision function,
numpy and onnxruntime) imports without vLLM; the scheduler classes import vLLM on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PolicyAsyncScheduler", "PolicyScheduler"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from schedgym.plugins.vllm import scheduler

        return getattr(scheduler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
