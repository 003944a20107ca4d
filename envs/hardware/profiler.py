"""Measure schedgym's kernels with torch on the device at hand and write a cost table.

Each grid point is timed by ``torch.utils.benchmark.Timer.blocked_autorange``, which warms up,
repeats the statement in blocks until ``min_run_time`` has passed, synchronises CUDA, and reports
the median and interquartile range. CPU timings use every thread torch is allowed (recorded in the
table's provenance), as a serving process would. The table's roofline figures for a CPU are the
best throughput and bandwidth measured here; for a GPU, they are measured too, and the datasheet
peak should be written in by hand if wanted (``Roofline.sources`` says which).
"""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer
from tqdm import tqdm

from schedgym.envs.hardware.costs import KernelCostTable, KernelEntry, Roofline, Series
from schedgym.envs.hardware.kernels import KERNELS
from schedgym.errors import SchedgymError


@dataclass(frozen=True)
class Plan:
    """Which shapes and axis values to measure."""

    linear_shapes: tuple[tuple[int, int], ...]
    tokens: tuple[int, ...]
    attn_shapes: tuple[tuple[int, int, int], ...]  # (heads, kv_heads, head_dim)
    prefill_tokens: tuple[int, ...]
    prefill_context: tuple[int, ...]
    decode_batch: tuple[int, ...]
    decode_context: tuple[int, ...]
    elements: tuple[int, ...]
    copy_bytes: tuple[int, ...]
    min_run_time: float


# The shapes of the models schedgym serves on a CPU (tiny-llama-4l) and of the traced zoo models.
FULL = Plan(
    linear_shapes=(
        (256, 256),
        (256, 1024),
        (1024, 256),
        (768, 768),
        (768, 3072),
        (3072, 768),
        (1024, 1024),
        (2048, 2048),
        (2048, 2560),
        (2048, 11264),
        (5632, 2048),
        (4096, 4096),
    ),
    tokens=(1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048),
    attn_shapes=((32, 4, 64), (12, 12, 64)),
    prefill_tokens=(16, 32, 64, 128, 256, 512, 1024),
    prefill_context=(16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
    decode_batch=(1, 2, 4, 8, 16, 32, 64),
    decode_context=(64, 128, 256, 512, 1024, 2048, 4096),
    elements=tuple(2**k for k in range(10, 27)),
    copy_bytes=tuple(2**k for k in range(12, 29)),
    min_run_time=0.05,
)
QUICK = Plan(
    linear_shapes=((512, 512), (2048, 2048), (2048, 5632)),
    tokens=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    attn_shapes=((32, 4, 64),),
    prefill_tokens=(16, 64, 256, 1024),
    prefill_context=(16, 64, 256, 1024, 2048),
    decode_batch=(1, 4, 16, 32),
    decode_context=(128, 512, 1024, 4096),
    elements=tuple(2**k for k in range(10, 25, 2)),
    copy_bytes=tuple(2**k for k in range(12, 27, 2)),
    min_run_time=0.01,
)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class _Bench:
    def __init__(
        self, device: torch.device, dtype: torch.dtype, plan: Plan, progress: bool, total: int
    ):
        self.device, self.dtype, self.plan = device, dtype, plan
        self.bar = tqdm(
            total=total, desc=f"profiling {device.type}", unit="pt", disable=not progress
        )

    def time(self, fn: Callable[[], object]) -> tuple[float, float]:
        m = Timer(
            "fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()
        ).blocked_autorange(min_run_time=self.plan.min_run_time)
        self.bar.update(1)
        return float(m.median), float(m.iqr)

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=self.device, dtype=self.dtype)

    def grid(self, axes: list[Iterable[int]], make: Callable[..., Callable[[], object]]):
        axes = [list(a) for a in axes]
        shape = tuple(len(a) for a in axes)
        med, spread = np.zeros(shape), np.zeros(shape)
        for idx in np.ndindex(*shape):
            med[idx], spread[idx] = self.time(make(*(a[i] for a, i in zip(axes, idx, strict=True))))
        return med, spread


def _n_points(plan: Plan, device: torch.device) -> int:
    n = len(plan.linear_shapes) * len(plan.tokens)
    n += len(plan.attn_shapes) * (
        len(plan.prefill_tokens) * len(plan.prefill_context)
        + len(plan.decode_batch) * len(plan.decode_context)
    )
    n += 3 * len(plan.elements) + 2 * len(plan.copy_bytes)
    return n


def profile(device: str = "cpu", quick: bool = False, progress: bool = True) -> KernelCostTable:
    """Measure every kernel of the plan on ``device`` and return the table (not yet saved)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SchedgymError("--device cuda: torch sees no CUDA device on this machine")
    if device not in ("cpu", "cuda"):
        raise SchedgymError(f"--device must be cpu or cuda, not {device!r}")
    dev = torch.device(device)
    # fp16 is what GPUs serve in; CPUs serve fp32 (their fp16/bf16 GEMMs are emulated or slow).
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    plan = QUICK if quick else FULL
    b = _Bench(dev, dtype, plan, progress, _n_points(plan, dev))
    kernels: dict[str, list[Series]] = {}
    torch.manual_seed(0)

    with torch.inference_mode():
        for d_in, d_out in plan.linear_shapes:
            w = b.rand(d_out, d_in)

            def make_linear(t, w=w, d_in=d_in):
                x = b.rand(t, d_in)
                return lambda: F.linear(x, w)

            med, spr = b.grid([plan.tokens], make_linear)
            kernels.setdefault("linear", []).append(
                Series(
                    {"d_in": d_in, "d_out": d_out},
                    {"tokens": np.array(plan.tokens, float)},
                    med,
                    spr,
                )
            )

        for heads, kv, hd in plan.attn_shapes:
            shape = {"heads": heads, "kv_heads": kv, "head_dim": hd}

            def make_prefill(t, c, heads=heads, kv=kv, hd=hd):
                c = max(c, t)  # cells below the diagonal hold the chunk-is-whole-context time
                q, k, v = b.rand(1, heads, t, hd), b.rand(1, kv, c, hd), b.rand(1, kv, c, hd)
                if c == t:
                    return lambda: F.scaled_dot_product_attention(
                        q, k, v, is_causal=True, enable_gqa=True
                    )
                # query i of the chunk sees the c - t earlier keys and the chunk up to itself
                mask = torch.ones(t, c, dtype=torch.bool, device=dev).tril(c - t)
                return lambda: F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, enable_gqa=True
                )

            med, spr = b.grid([plan.prefill_tokens, plan.prefill_context], make_prefill)
            kernels.setdefault("attention_prefill", []).append(
                Series(
                    shape,
                    {
                        "tokens": np.array(plan.prefill_tokens, float),
                        "context": np.array(plan.prefill_context, float),
                    },
                    med,
                    spr,
                )
            )

            def make_decode(n, c, heads=heads, kv=kv, hd=hd):
                q, k, v = b.rand(n, heads, 1, hd), b.rand(n, kv, c, hd), b.rand(n, kv, c, hd)
                return lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

            med, spr = b.grid([plan.decode_batch, plan.decode_context], make_decode)
            kernels.setdefault("attention_decode", []).append(
                Series(
                    shape,
                    {
                        "batch": np.array(plan.decode_batch, float),
                        "context": np.array(plan.decode_context, float),
                    },
                    med,
                    spr,
                )
            )

        def make_add(n):
            x, y, out = b.rand(n), b.rand(n), b.rand(n)
            return lambda: torch.add(x, y, out=out)

        def make_act(n):
            x, y = b.rand(n), b.rand(n)
            return lambda: F.silu(x) * y

        def make_norm(n):
            width = 2048 if n >= 2048 else n
            x = b.rand(n // width, width)
            return lambda: F.layer_norm(x, (width,))

        elems = np.array(plan.elements, float)
        for name, make in (
            ("elementwise", make_add),
            ("activation", make_act),
            ("layernorm", make_norm),
        ):
            med, spr = b.grid([plan.elements], make)
            kernels[name] = [Series({}, {"elements": elems}, med, spr)]

        for name in ("copy_h2d", "copy_d2h"):

            def make_copy(n, name=name):
                host = torch.empty(n, dtype=torch.uint8, pin_memory=dev.type == "cuda")
                dst_dev = torch.empty(n, dtype=torch.uint8, device=dev)
                src, dst = (host, dst_dev) if name == "copy_h2d" else (dst_dev, host)
                return lambda: dst.copy_(src, non_blocking=False)

            med, spr = b.grid([plan.copy_bytes], make_copy)
            kernels[name] = [Series({}, {"bytes": np.array(plan.copy_bytes, float)}, med, spr)]
    b.bar.close()
    return _assemble(dev, dtype, plan, quick, kernels)


def _assemble(dev, dtype, plan, quick, kernels) -> KernelCostTable:
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    lin = KERNELS["linear"]
    best_flops = max(
        float(np.max(lin.work(dtype_bytes, tokens=s.axes["tokens"], **s.shape)[0] / s.median_s))
        for s in kernels["linear"]
    )
    add = kernels["elementwise"][0]
    best_bw = float(np.max(3 * dtype_bytes * add.axes["elements"] / add.median_s))
    h2d = kernels["copy_h2d"][0]
    copy_bw = float(np.max(h2d.axes["bytes"] / h2d.median_s))
    roofline = Roofline(
        peak_flops=best_flops,
        mem_bandwidth=best_bw,
        launch_s=float(add.median_s.min()),
        host_bandwidth=copy_bw,
        host_latency_s=float(h2d.median_s.min()),
        sources={
            "peak_flops": "best GEMM throughput measured in this profile",
            "mem_bandwidth": "best elementwise-add bandwidth measured in this profile",
            "launch_s": "smallest elementwise-add latency measured in this profile",
            "host_bandwidth": "best copy_h2d bandwidth measured in this profile",
        },
    )
    name = _device_name(dev)
    source = f"measured on {name} by `schedgym profile --device {dev.type}`"
    entries = {k: KernelEntry(KERNELS[k], tuple(v), source) for k, v in kernels.items()}
    memory = []
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        memory.append(
            {
                "name": "hbm",
                "capacity_bytes": int(props.total_memory),
                "bandwidth": best_bw,
                "source": "torch.cuda device properties; bandwidth as measured here",
            }
        )
    else:
        try:
            import os

            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 0
        if total:
            memory.append(
                {
                    "name": "dram",
                    "capacity_bytes": int(total),
                    "bandwidth": best_bw,
                    "source": "os.sysconf physical pages; bandwidth as measured here",
                }
            )
    provenance = {
        "method": "torch.utils.benchmark.Timer.blocked_autorange per grid point "
        f"(warm-up, repeats for >= {plan.min_run_time} s, median and IQR)",
        "date": dt.date.today().isoformat(),
        "device": name,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "plan": "quick" if quick else "full",
        "libraries": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "spread": "interquartile range of the repeats (seconds)",
        "copy_semantics": "pinned host <-> device"
        if dev.type == "cuda"
        else "host memcpy (no device: copy_h2d and copy_d2h both measure DRAM to DRAM)",
    }
    device = {"name": name, "kind": "gpu" if dev.type == "cuda" else "cpu", "memory": memory}
    table_name = "cpu" if dev.type == "cpu" else "cuda"
    return KernelCostTable(table_name, device, provenance, roofline, entries, dtype_bytes)
