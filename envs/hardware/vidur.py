"""Reading vidur's published GPU operator profiles as schedgym kernel measurements.

vidur (Agrawal et al., MLSys 2024; github.com/microsoft/vidur, MIT) profiled every non-attention
operator of Llama-2-7B/70B and phi-2 on A100, H100 and A40 over token counts and tensor-parallel
degrees (``compute/<gpu>/<model>/mlp.csv``, milliseconds), and NCCL collectives on two node
topologies (``size`` in bytes): ``network/<gpu>_dgx/`` on 8-GPU SXM nodes where every GPU reaches
every other through NVSwitch (DGX A100, DGX H100), and ``network/<gpu>_pairwise_nvlink/`` on
4-GPU nodes whose GPUs are NVLinked in pairs, so 4-way traffic crosses PCIe. The SXM profiles
(``h100``, ``a100``) claim the NVSwitch node and take its measurements (`NETWORK_TOPOLOGY`); the
pairwise files stay readable for a table of that topology. This module maps each operator to a
schedgym kernel and shape; ``scripts/reduce_vidur.py`` reduces the points to a
compact committed table, and the tests compare that table with the rows it left out.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schedgym.errors import WorkloadError

MS = 1e-3
# The collectives' node topology of each GPU profile: SXM parts sit in NVSwitch nodes.
NETWORK_TOPOLOGY = {"h100": "dgx", "a100": "dgx"}


@dataclass(frozen=True)
class Measurement:
    kernel: str
    shape: tuple[tuple[str, int], ...]  # sorted (name, value) pairs
    axis: float  # the kernel's single swept axis (tokens, elements or bytes)
    median_s: float
    std_s: float
    origin: str  # "<model> tp=<n> <op>" or "<collective> n=<workers>"


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("true", "1")


def compute_measurements(csv_path: Path) -> list[Measurement]:
    """Every operator row of one vidur ``mlp.csv`` as schedgym kernel measurements."""
    model = csv_path.parent.name
    out: list[Measurement] = []
    with csv_path.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                heads, kv = int(row["n_head"]), int(row["n_kv_head"])
                h, inter = int(row["n_embd"]), int(row["n_expanded_embd"])
                gated, tokens = _truthy(row["use_gated_mlp"]), int(row["num_tokens"])
                tp = int(row["num_tensor_parallel_workers"])
            except (KeyError, ValueError) as exc:
                raise WorkloadError(f"bad shape column: {exc}", csv_path, line) from None
            hd = h // heads
            ops = {
                "attn_pre_proj": (
                    "linear",
                    {"d_in": h, "d_out": (heads + 2 * kv) * hd // tp},
                    tokens,
                ),
                "attn_post_proj": ("linear", {"d_in": heads * hd // tp, "d_out": h}, tokens),
                "mlp_up_proj": (
                    "linear",
                    {"d_in": h, "d_out": (2 if gated else 1) * inter // tp},
                    tokens,
                ),
                "mlp_down_proj": ("linear", {"d_in": inter // tp, "d_out": h}, tokens),
                "mlp_act": ("activation", {}, tokens * inter // tp),
                "input_layernorm": ("layernorm", {}, tokens * h),
                "post_attention_layernorm": ("layernorm", {}, tokens * h),
                "add": ("elementwise", {}, tokens * h),
            }
            for op, (kernel, shape, axis) in ops.items():
                if f"time_stats.{op}.median" not in row:
                    continue  # phi-2 has no post-attention layernorm (parallel attention/MLP)
                try:
                    med = float(row[f"time_stats.{op}.median"]) * MS
                    std = float(row[f"time_stats.{op}.std"]) * MS
                except (KeyError, ValueError) as exc:
                    raise WorkloadError(
                        f"bad time column for {op}: {exc}", csv_path, line
                    ) from None
                out.append(
                    Measurement(
                        kernel,
                        tuple(sorted(shape.items())),
                        float(axis),
                        med,
                        std,
                        f"{model} tp={tp} {op}",
                    )
                )
    return out


def network_measurements(csv_path: Path) -> list[Measurement]:
    """vidur's NCCL all_reduce / send_recv rows within one node (``size`` is bytes); rows whose
    workers span several nodes are left out: schedgym models one node."""
    kernel = csv_path.stem
    out: list[Measurement] = []
    with csv_path.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                workers, size = int(row["num_workers"]), float(row["size"])
                med = float(row[f"time_stats.{kernel}.median"]) * MS
                std = float(row[f"time_stats.{kernel}.std"]) * MS
                same_node = int(row["devices_per_node"]) == workers
            except (KeyError, ValueError) as exc:
                raise WorkloadError(f"bad column: {exc}", csv_path, line) from None
            if not same_node:
                continue
            shape = (("workers", workers),) if kernel == "all_reduce" else ()
            out.append(Measurement(kernel, shape, size, med, std, f"{kernel} n={workers}"))
    return out


def device_measurements(root: Path, gpu: str, topology: str | None = None) -> list[Measurement]:
    """All measurements vidur published for one GPU (``a100``, ``h100``, ``a40``), its
    collectives from the node ``topology`` (``"dgx"`` or ``"pairwise_nvlink"``; default
    `NETWORK_TOPOLOGY`'s, else pairwise)."""
    compute = sorted((root / "compute" / gpu).glob("*/*/mlp.csv"))
    if not compute:
        raise WorkloadError(f"no vidur compute profiles for {gpu!r}", root / "compute" / gpu)
    out = [m for p in compute for m in compute_measurements(p)]
    topology = topology or NETWORK_TOPOLOGY.get(gpu, "pairwise_nvlink")
    for p in sorted((root / "network" / f"{gpu}_{topology}").glob("*.csv")):
        out += network_measurements(p)
    return out


def group_series(
    measurements: list[Measurement],
) -> dict[tuple[str, tuple[tuple[str, int], ...]], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Group by (kernel, shape); points of equal axis value are merged by their median.

    Returns ``{(kernel, shape): (axis, median_s, std_s)}`` with axis strictly increasing.
    """
    groups: dict[tuple, dict[float, list[Measurement]]] = defaultdict(lambda: defaultdict(list))
    for m in measurements:
        groups[(m.kernel, m.shape)][m.axis].append(m)
    out = {}
    for key, by_axis in groups.items():
        axis = np.array(sorted(by_axis))
        med = np.array([np.median([m.median_s for m in by_axis[a]]) for a in axis])
        std = np.array([np.median([m.std_s for m in by_axis[a]]) for a in axis])
        out[key] = (axis, med, std)
    return out


def held_out_errors(table, root: Path, gpu: str) -> list:
    """APE of ``table`` on every vidur measurement of ``gpu`` that is not one of its grid points.

    Repeated rows of one point are compared one by one, as separate measurements.
    """
    from schedgym.envs.hardware.accuracy import ErrorSummary

    by_kernel: dict[str, list[float]] = defaultdict(list)
    for m in device_measurements(root, gpu):
        entry = table.kernels.get(m.kernel)
        if entry is None:
            continue
        shape = dict(m.shape)
        kept = any(s.shape == shape and m.axis in s.axes[entry.spec.axes[0]] for s in entry.series)
        if kept:
            continue
        params = {entry.spec.axes[0]: m.axis, **shape}
        by_kernel[m.kernel].append(abs(table.predict(m.kernel, **params) / m.median_s - 1.0))
    out = [ErrorSummary.of(k, np.array(v)) for k, v in sorted(by_kernel.items())]
    out.append(ErrorSummary.of("all", np.concatenate([np.array(v) for v in by_kernel.values()])))
    return out
