"""Simulated accelerators and what their kernels cost, measured rather than guessed."""

from schedgym.envs.hardware.costs import KernelCostTable, Roofline, load_table, table_from_json
from schedgym.envs.hardware.devices import (
    Device,
    HardwareProfile,
    Link,
    MemoryTier,
    builtin_tables,
    device_from_table,
    load_cost_table,
    load_profile,
)
from schedgym.envs.hardware.kernels import KERNELS, KernelSpec
from schedgym.envs.hardware.models import (
    MODELS,
    Batch,
    KernelCall,
    ModelConfig,
    StepCost,
    get_model,
    price,
    step_calls,
)

__all__ = [
    "KERNELS",
    "MODELS",
    "Batch",
    "Device",
    "HardwareProfile",
    "KernelCall",
    "KernelCostTable",
    "KernelSpec",
    "Link",
    "MemoryTier",
    "ModelConfig",
    "Roofline",
    "StepCost",
    "builtin_tables",
    "device_from_table",
    "get_model",
    "load_cost_table",
    "load_profile",
    "load_table",
    "price",
    "step_calls",
    "table_from_json",
]
