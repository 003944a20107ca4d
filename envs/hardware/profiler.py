"""Measure schedgym's kernels with torch on the device at hand and write a cost table.

On a CPU each grid point is timed by ``torch.utils.benchmark.Timer.blocked_autorange``, which
warms up, repeats the statement in blocks until ``min_run_time`` has passed and reports the median
and interquartile range; it uses every thread torch is allowed (recorded in the table's
provenance), as a serving process would.

On a GPU the figure is the kernels' own time, as vidur's published tables and a CUDA-graph serving
engine see it: each block of calls is queued behind a spin kernel (``torch.cuda._sleep``) and timed
with CUDA events, so the GPU never waits for Python to launch the next call (`_cuda_time`). The
plan covers every GEMM and attention shape the model zoo issues (`zoo_plan`).

The table's roofline figures are the best throughput and bandwidth measured in the same run
(``Roofline.sources`` says which).
"""

from __future__ import annotations

import datetime as dt
import math
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right
from torch.utils.benchmark import Timer
from tqdm import tqdm

from schedgym.envs.hardware.costs import KernelCostTable, KernelEntry, Roofline, Series
from schedgym.envs.hardware.kernels import KERNELS
from schedgym.envs.hardware.models import MODELS, Batch, step_calls
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


def zoo_plan(tp_degrees: tuple[int, ...] = (1, 2, 4, 8)) -> Plan:
    """The GPU plan: every ``linear`` and attention shape that a step of a zoo model issues
    (``models.step_calls``) at each tensor-parallel degree its heads divide, plus the expert
    MLPs and routers of the MoE models, over serving-sized axes (up to 4,096 tokens a step and
    8,192 tokens of context). MoE models are taken at TP 1, as the MoE environment runs them."""
    linear: set[tuple[int, int]] = set()
    attn: set[tuple[int, int, int]] = set()
    for m in MODELS.values():
        for tp in tp_degrees if not m.experts else (1,):
            if m.heads % tp or (m.kv_heads % tp and tp % m.kv_heads):
                continue
            for c in step_calls(m, Batch(prefill=[(1, 1)], decode_contexts=[1]), tp):
                p = c.params
                if c.kernel == "linear":
                    linear.add((int(p["d_in"]), int(p["d_out"])))
                elif c.kernel.startswith("attention"):
                    attn.add((int(p["heads"]), int(p["kv_heads"]), int(p["head_dim"])))
        if m.experts:
            widths = [m.intermediate] + ([m.shared_intermediate] if m.shared_experts else [])
            for w in widths:
                linear |= {(m.hidden, w), (w, m.hidden)}
            linear.add((m.hidden, m.experts))
    return Plan(
        linear_shapes=tuple(sorted(linear)),
        tokens=(1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
        + (3072, 4096),
        attn_shapes=tuple(sorted(attn)),
        prefill_tokens=tuple(2**k for k in range(4, 13)),
        prefill_context=tuple(2**k for k in range(4, 14)),
        decode_batch=tuple(2**k for k in range(0, 9)),
        decode_context=tuple(2**k for k in range(6, 14)),
        elements=tuple(2**k for k in range(10, 29)),
        copy_bytes=tuple(2**k for k in range(12, 31)),
        min_run_time=0.02,
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

        self.starved = 0  # GPU blocks whose queue may have run dry even after retries
        self._weight: torch.Tensor | None = None

    def time(self, fn: Callable[[], object]) -> tuple[float, float]:
        if self.device.type == "cuda":
            med, iqr, starved = _cuda_time(fn, self.plan.min_run_time)
            self.starved += starved
        else:
            m = Timer(
                "fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()
            ).blocked_autorange(min_run_time=self.plan.min_run_time)
            med, iqr = float(m.median), float(m.iqr)
        self.bar.update(1)
        return med, iqr

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=self.device, dtype=self.dtype)

    def weight(self, d_out: int, d_in: int) -> torch.Tensor:
        if self._weight is None or self._weight.shape != (d_out, d_in):
            self._weight = None  # free the old one first: the largest is about 1 GB
            self._weight = self.rand(d_out, d_in)
        return self._weight

    def attention(self, q, k, v, **kw) -> Callable[[], object]:
        """A call of SDPA over grouped KV heads (``k``, ``v`` hold ``kv_heads`` heads)."""
        return lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kw)

    def grid(self, axes: list[Iterable[int]], make: Callable[..., Callable[[], object]]):
        axes = [list(a) for a in axes]
        shape = tuple(len(a) for a in axes)
        med, spread = np.zeros(shape), np.zeros(shape)
        for idx in np.ndindex(*shape):
            med[idx], spread[idx] = self.time(make(*(a[i] for a, i in zip(axes, idx, strict=True))))
        return med, spread


# Traffic past which an elementwise add streams from memory rather than from cache.
STREAM_BYTES = 128 * 2**20

# Host time to queue one call, an upper estimate: the spin before a block lasts this long per call.
_QUEUE_S = 20e-6


def _cuda_block(
    fn: Callable[[], object], reps: int, spin_s: float, hz: float
) -> tuple[float, bool]:
    """Seconds per call of ``reps`` calls queued behind a spin of ``spin_s``, and whether the
    spin ended before the last call was queued (then the GPU may have waited for the host)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(int(spin_s * hz))
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    starved = start.query()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / reps, starved


def _cuda_time(
    fn: Callable[[], object], min_run_time: float, blocks: int = 5
) -> tuple[float, float, int]:
    """Median and interquartile range (seconds) of the GPU time per call over ``blocks`` blocks
    of about ``min_run_time / blocks`` of GPU work each, and how many blocks stayed starved after
    three longer spins. Warm-up first (autotuning, the caching allocator)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    hz = 2e9  # about the boost clock of current datacentre GPUs; a slower clock only spins longer
    one, _ = _cuda_block(fn, 1, _QUEUE_S, hz)
    reps = int(min(200, max(1, math.ceil(min_run_time / blocks / max(one, 1e-7)))))
    times, starved = [], 0
    for _ in range(blocks):
        spin = reps * _QUEUE_S
        for _ in range(4):
            t, dry = _cuda_block(fn, reps, spin, hz)
            if not dry:
                break
            spin *= 4
        starved += dry
        times.append(t)
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return float(med), float(q3 - q1), starved


def _device(device: str) -> tuple[torch.device, torch.dtype]:
    if device not in ("cpu", "cuda"):
        raise SchedgymError(f"--device must be cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SchedgymError("--device cuda: torch sees no CUDA device on this machine")
    # fp16 is what GPUs serve in; CPUs serve fp32 (their fp16/bf16 GEMMs are emulated or slow).
    return torch.device(device), torch.float16 if device == "cuda" else torch.float32


def _n_points(plan: Plan, device: torch.device) -> int:
    n = len(plan.linear_shapes) * len(plan.tokens)
    n += len(plan.attn_shapes) * (
        len(plan.prefill_tokens) * len(plan.prefill_context)
        + len(plan.decode_batch) * len(plan.decode_context)
    )
    n += 3 * len(plan.elements) + 2 * len(plan.copy_bytes)
    return n


MEASURABLE = (
    "linear",
    "attention_prefill",
    "attention_decode",
    "elementwise",
    "activation",
    "layernorm",
    "copy_h2d",
    "copy_d2h",
)


def kernel_call(b: _Bench, kernel: str, **p: int) -> Callable[[], object]:
    """A call of ``kernel`` at the parameters ``p`` (its axes and shape, as in ``KERNELS``),
    on fresh random inputs; a linear layer's weight is kept while its shape stays the same."""
    if kernel == "linear":
        w = b.weight(p["d_out"], p["d_in"])
        x = b.rand(p["tokens"], p["d_in"])
        return lambda: F.linear(x, w)
    if kernel in ("attention_prefill", "attention_decode"):
        heads, kv, hd = p["heads"], p["kv_heads"], p["head_dim"]
        if kernel == "attention_decode":
            n, c = p["batch"], p["context"]
            return b.attention(b.rand(n, heads, 1, hd), b.rand(n, kv, c, hd), b.rand(n, kv, c, hd))
        t = p["tokens"]
        c = max(p["context"], t)  # cells below the diagonal hold the chunk-is-whole-context time
        q, k, v = b.rand(1, heads, t, hd), b.rand(1, kv, c, hd), b.rand(1, kv, c, hd)
        if c == t:
            return b.attention(q, k, v, is_causal=True)
        # query i of the chunk sees the c - t earlier keys and the chunk up to itself
        if b.device.type == "cuda":  # lower-right causal runs in the fused kernels
            return b.attention(q, k, v, attn_mask=causal_lower_right(t, c))
        mask = torch.ones(t, c, dtype=torch.bool, device=b.device).tril(c - t)
        return b.attention(q, k, v, attn_mask=mask)
    if kernel in ("elementwise", "activation", "layernorm"):
        n = p["elements"]
        if kernel == "elementwise":
            x, y, out = b.rand(n), b.rand(n), b.rand(n)
            return lambda: torch.add(x, y, out=out)
        if kernel == "activation":
            x, y = b.rand(n), b.rand(n)
            return lambda: F.silu(x) * y
        width = 2048 if n >= 2048 else n
        x = b.rand(n // width, width)
        return lambda: F.layer_norm(x, (width,))
    if kernel in ("copy_h2d", "copy_d2h"):
        gpu = b.device.type == "cuda"
        host = torch.empty(p["bytes"], dtype=torch.uint8, pin_memory=gpu)
        dst_dev = torch.empty(p["bytes"], dtype=torch.uint8, device=b.device)
        src, dst = (host, dst_dev) if kernel == "copy_h2d" else (dst_dev, host)
        # asynchronous from pinned memory, as an offloading engine copies
        return lambda: dst.copy_(src, non_blocking=gpu)
    raise SchedgymError(f"the profiler cannot measure kernel {kernel!r}")


def profile(device: str = "cpu", quick: bool = False, progress: bool = True) -> KernelCostTable:
    """Measure every kernel of the plan on ``device`` and return the table (not yet saved).

    Raises ``SchedgymError`` for a device other than cpu or cuda, or cuda where torch sees none.
    """
    dev, dtype = _device(device)
    plan = QUICK if quick else (zoo_plan() if dev.type == "cuda" else FULL)
    b = _Bench(dev, dtype, plan, progress, _n_points(plan, dev))
    torch.manual_seed(0)
    grids: list[tuple[str, list[dict[str, int]], dict[str, tuple[int, ...]]]] = [
        (
            "linear",
            [{"d_in": i, "d_out": o} for i, o in plan.linear_shapes],
            {"tokens": plan.tokens},
        )
    ]
    attn = [{"heads": h, "kv_heads": k, "head_dim": d} for h, k, d in plan.attn_shapes]
    grids += [
        (
            "attention_prefill",
            attn,
            {"tokens": plan.prefill_tokens, "context": plan.prefill_context},
        ),
        ("attention_decode", attn, {"batch": plan.decode_batch, "context": plan.decode_context}),
    ]
    grids += [
        (k, [{}], {"elements": plan.elements}) for k in ("elementwise", "activation", "layernorm")
    ]
    grids += [(k, [{}], {"bytes": plan.copy_bytes}) for k in ("copy_h2d", "copy_d2h")]
    kernels: dict[str, list[Series]] = {}
    with torch.inference_mode():
        for kernel, shapes, axes in grids:
            for shape in shapes:
                med, spr = b.grid(
                    list(axes.values()),
                    lambda *v, kernel=kernel, shape=shape, axes=axes: kernel_call(
                        b, kernel, **shape, **dict(zip(axes, v, strict=True))
                    ),
                )
                series = Series(shape, {a: np.array(v, float) for a, v in axes.items()}, med, spr)
                kernels.setdefault(kernel, []).append(series)
        extra = _gpu_notes(b, max(plan.attn_shapes)) if dev.type == "cuda" else {}
    b.bar.close()
    return _assemble(dev, dtype, plan, quick, kernels, extra)


def _gpu_notes(b: _Bench, shape: tuple[int, int, int]) -> dict[str, object]:
    """What a reviewer asks of a GPU table: which attention kernels SDPA ran (one call of each
    kind on ``shape``) and how many blocks may have waited for the host."""
    heads, kv, hd = shape
    shape_p = {"heads": heads, "kv_heads": kv, "head_dim": hd}
    calls = {
        "attention_prefill (whole prompt of 1024)": ("attention_prefill", 1024, 1024),
        "attention_prefill (chunk of 256 at context 2048)": ("attention_prefill", 256, 2048),
        "attention_decode (64 sequences at context 1024)": ("attention_decode", 64, 1024),
    }
    seen: dict[str, object] = {}
    for what, (kernel, n, c) in calls.items():
        axes = {"tokens" if kernel == "attention_prefill" else "batch": n, "context": c}
        try:
            seen[f"{what}, heads {heads}/{kv}, head_dim {hd}"] = _kernel_names(
                kernel_call(b, kernel, **axes, **shape_p)
            )
        except Exception as e:  # the measurements above must survive a profiler that fails
            seen[what] = f"torch.profiler failed: {e}"[:200]
    return {"gpu_kernels_seen": seen, "starved_blocks": b.starved}


def _kernel_names(fn: Callable[[], object]) -> list[str]:
    """The GPU kernels one call launches (torch.profiler), to say which backend was measured."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type.name == "CUDA"]
    return sorted(set(names))[:8]


def measured_roofline(kernels: dict[str, list[Series]], dtype_bytes: int) -> Roofline:
    """Roofline figures from a profile's own measurements: best GEMM FLOP/s, streaming
    elementwise-add bandwidth (at least ``STREAM_BYTES`` of traffic), smallest add latency and
    best host-to-device copy rate. ``kernels`` needs ``linear``, ``elementwise``, ``copy_h2d``."""
    lin = KERNELS["linear"]
    best_flops = max(
        float(np.max(lin.work(dtype_bytes, tokens=s.axes["tokens"], **s.shape)[0] / s.median_s))
        for s in kernels["linear"]
    )
    add = kernels["elementwise"][0]
    traffic = 3 * dtype_bytes * add.axes["elements"]
    # Smaller adds stay in the last-level cache: an H200's 60 MB L2 gave 5.5 TB/s at 24 MiB of
    # traffic, beyond its HBM's 4.8 TB/s datasheet figure.
    big = traffic >= STREAM_BYTES
    best_bw = float(np.max((traffic / add.median_s)[big if big.any() else slice(None)]))
    h2d = kernels["copy_h2d"][0]
    return Roofline(
        peak_flops=best_flops,
        mem_bandwidth=best_bw,
        launch_s=float(add.median_s.min()),
        host_bandwidth=float(np.max(h2d.axes["bytes"] / h2d.median_s)),
        host_latency_s=float(h2d.median_s.min()),
        sources={
            "peak_flops": "best GEMM throughput measured in this profile",
            "mem_bandwidth": "best elementwise-add bandwidth measured in this profile over "
            "at least 128 MiB of traffic (past the caches)",
            "launch_s": "smallest elementwise-add latency measured in this profile",
            "host_bandwidth": "best copy_h2d bandwidth measured in this profile",
        },
    )


def _assemble(dev, dtype, plan, quick, kernels, extra) -> KernelCostTable:
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    roofline = measured_roofline(kernels, dtype_bytes)
    best_bw = roofline.mem_bandwidth
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
    method = (
        "GPU time per call from CUDA events over 5 blocks of calls queued behind a spin kernel "
        f"(torch.cuda._sleep), about {plan.min_run_time} s of GPU work per point, after 3 "
        "warm-up calls; median and IQR of the blocks"
        if dev.type == "cuda"
        else "torch.utils.benchmark.Timer.blocked_autorange per grid point "
        f"(warm-up, repeats for >= {plan.min_run_time} s, median and IQR)"
    )
    provenance = {
        "method": method,
        "date": dt.date.today().isoformat(),
        "device": name,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "plan": "quick" if quick else ("model zoo" if dev.type == "cuda" else "full"),
        "libraries": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "spread": "interquartile range of the repeats (seconds)",
        "copy_semantics": "pinned host <-> device"
        if dev.type == "cuda"
        else "host memcpy (no device: copy_h2d and copy_d2h both measure DRAM to DRAM)",
        **extra,
    }
    device = {"name": name, "kind": "gpu" if dev.type == "cuda" else "cpu", "memory": memory}
    # "NVIDIA H200" -> "h200", the name `load_cost_table` knows a shipped table by
    table_name = "cpu" if dev.type == "cpu" else name.removeprefix("NVIDIA ").split()[0].lower()
    return KernelCostTable(table_name, device, provenance, roofline, entries, dtype_bytes)


def _cuda_time_each(fn: Callable[[], object], flush: bool, reps: int = 15) -> float:
    """Median GPU time (s) of single calls, each between its own pair of CUDA events, with the
    L2 cache overwritten before each call if ``flush``. A flushed call is what a layer meets in
    a real forward pass (other layers ran in between); the grid's warm repeats find small
    operands still cached. Compare the two settings of ``flush`` with each other: timing single
    calls adds its own microseconds."""
    buf = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda") if flush else None
    fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(int(reps * 4 * _QUEUE_S * 2e9))
    pairs = []
    for _ in range(reps):
        if buf is not None:
            buf.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    return float(np.median([s.elapsed_time(e) / 1e3 for s, e in pairs]))


def _gpu_model(name: object) -> str:
    """A GPU's name without a parenthesised form factor: vidur's tables say "NVIDIA H100 80GB
    HBM3 (SXM5)" where torch reports "NVIDIA H100 80GB HBM3"."""
    return str(name).split("(")[0].strip().lower()


def check_device(table: KernelCostTable, device: str) -> tuple[torch.device, torch.dtype]:
    """The torch device and dtype to measure ``table``'s kernels on. Raises ``SchedgymError``
    when ``table`` was measured on another kind of device or another GPU model."""
    dev, dtype = _device(device)
    here, kind = _device_name(dev), "gpu" if dev.type == "cuda" else "cpu"
    there = table.device.get("name")
    if table.device.get("kind") != kind or (
        kind == "gpu" and _gpu_model(there) != _gpu_model(here)
    ):
        hint = " (--device cuda on that GPU)" if table.device.get("kind") == "gpu" else ""
        raise SchedgymError(
            f"table {table.name!r} was measured on {there!r} ({table.device.get('kind')}); "
            f"measuring on {here!r} would compare another device{hint}"
        )
    return dev, dtype


def _off_grid(rng: np.random.Generator, grid: np.ndarray, where: str) -> int:
    """An integer drawn log-uniformly in ``[grid.min(), grid.max()]``, not on the grid (the
    grid's one value where it has one). Raises ``SchedgymError`` when no integer is off it."""
    lo, hi = float(grid.min()), float(grid.max())
    if grid.size == 1:
        return int(lo)
    if hi - lo + 1 <= grid.size:
        raise SchedgymError(f"{where}: no integer between {lo:g} and {hi:g} is off the grid")
    for _ in range(1000):
        v = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        if v not in grid:
            return v
    # a grid nearly filling its range: take the free integers directly
    free = np.setdiff1d(np.arange(int(lo), int(hi) + 1), grid.astype(int))
    return int(rng.choice(free))


def held_out(
    table: KernelCostTable, device: str, n: int, seed: int = 0, progress: bool = True
) -> list[dict[str, Any]]:
    """Measure ``n`` points the table was not built from and price them with the table.

    Each point takes a measured series of a measured kernel at random (kernels in turn) and
    draws every axis log-uniformly inside that series' range, off its grid points. Rows:
    ``kernel``, ``params``, ``measured_s``, ``predicted_s`` and, on a GPU, ``cold_s`` and
    ``warm_s``: single calls with and without the L2 cache overwritten first
    (`_cuda_time_each`). Raises ``SchedgymError`` when the table was measured on another kind of
    device or another GPU model, or measured no kernel this profiler can run.
    """
    dev, dtype = check_device(table, device)
    if n < 1:
        raise SchedgymError(f"--measure must be a count of points >= 1, got {n}")
    kinds = [k for k, e in sorted(table.kernels.items()) if e.series and k in MEASURABLE]
    if not kinds:
        raise SchedgymError(f"table {table.name!r} holds no measured kernel to check")
    rng = np.random.default_rng(seed)
    b = _Bench(dev, dtype, FULL, progress, n)
    rows = []
    with torch.inference_mode():
        for i in range(n):
            kernel = kinds[i % len(kinds)]
            series = table.kernels[kernel].series
            s = series[rng.integers(len(series))]
            params = {k: int(v) for k, v in s.shape.items()}
            for axis, grid in s.axes.items():
                params[axis] = _off_grid(rng, grid, f"{table.name}: {kernel} {s.shape} {axis}")
            if params.get("context", np.inf) < params.get("tokens", 0):  # a chunk in its context
                params["context"], params["tokens"] = params["tokens"], params["context"]
            fn = kernel_call(b, kernel, **params)
            measured, _ = b.time(fn)
            row = {
                "kernel": kernel,
                "params": params,
                "measured_s": measured,
                "predicted_s": table.predict(kernel, **params),
            }
            if dev.type == "cuda" and not kernel.startswith("copy"):
                row["cold_s"] = _cuda_time_each(fn, flush=True)
                row["warm_s"] = _cuda_time_each(fn, flush=False)
            rows.append(row)
    b.bar.close()
    return rows
