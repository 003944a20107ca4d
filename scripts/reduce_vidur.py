"""Reduce vidur's published GPU operator profiles to schedgym's compact committed cost tables.

    python scripts/reduce_vidur.py [--vidur ../shared/data/kernel-profiles/vidur] [--out DIR]

For each GPU it keeps every measured shape but only a log-spaced subset of the swept axis
(tokens, elements, bytes), so the committed table is small and the rows left out stay available
as held-out measurements (``schedgym profile --check TABLE --against VIDUR_DIR``). Attention and
host copies were not in vidur's published files: they are priced by the roofline of the device's
datasheet peaks, derated by the efficiency the same device's measured GEMMs and elementwise ops
reach, and each entry names that source.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np

from schedgym.envs.hardware.costs import KernelCostTable, KernelEntry, Roofline, Series
from schedgym.envs.hardware.kernels import KERNELS
from schedgym.envs.hardware.vidur import device_measurements, group_series

GiB = 1024**3
# Datasheet figures (dense fp16/bf16 tensor-core peak, memory, host and NVLink per direction).
DATASHEETS = {
    "h100": dict(
        name="NVIDIA H100 80GB HBM3 (SXM5)",
        peak_flops=989.4e12,
        mem_bandwidth=3.35e12,
        memory=80 * GiB,
        host_bandwidth=64e9,
        network_bandwidth=450e9,
        source="NVIDIA H100 Tensor Core GPU datasheet (SXM5): 989.4 TFLOP/s dense BF16/FP16, "
        "3.35 TB/s HBM3, NVLink 900 GB/s, PCIe Gen5 x16 128 GB/s (both directions)",
    ),
    "a100": dict(
        name="NVIDIA A100 80GB (SXM4)",
        peak_flops=312e12,
        mem_bandwidth=2.039e12,
        memory=80 * GiB,
        host_bandwidth=32e9,
        network_bandwidth=300e9,
        source="NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): 312 TFLOP/s dense BF16/FP16, "
        "2,039 GB/s HBM2e, NVLink 600 GB/s, PCIe Gen4 x16 64 GB/s (both directions)",
        on_chip=[
            {
                "name": "l2",
                "capacity_bytes": 40 * 2**20,
                "bandwidth": 5120 * 1.41e9,
                "source": "NVIDIA A100 Tensor Core GPU Architecture whitepaper (2020): 40 MB L2, "
                "5,120 bytes/clk at 1,410 MHz",
            }
        ],
    ),
    "a40": dict(
        name="NVIDIA A40 48GB",
        peak_flops=149.7e12,
        mem_bandwidth=696e9,
        memory=48 * GiB,
        host_bandwidth=32e9,
        network_bandwidth=56.25e9,
        source="NVIDIA A40 datasheet: 149.7 TFLOP/s dense FP16 tensor, 696 GB/s GDDR6, "
        "NVLink bridge 112.5 GB/s, PCIe Gen4 x16 64 GB/s (both directions)",
    ),
}
# GEMM latency steps with the tile size (64-128 tokens), so the kept grid is dense enough to
# follow the steps: every 16 tokens to 256, then every 128.
TOKEN_GRID = [1, 2, 4, 8, *range(16, 256, 16), *range(256, 4097, 128)]
LOG_POINTS = 40  # kept points per series on a shape-free axis (elements, bytes)
NCCL_LATENCY_S = 20e-6  # vidur's nccl_cpu_launch_overhead_ms default (0.02 ms)


def _subset(axis: np.ndarray, kernel: str) -> np.ndarray:
    """Indices of the kept points: the token grid for GEMMs, log-spaced otherwise."""
    if kernel == "linear":
        return np.flatnonzero(np.isin(axis, TOKEN_GRID))
    targets = np.geomspace(axis[0], axis[-1], LOG_POINTS)
    return np.unique([int(np.argmin(np.abs(np.log(axis / t)))) for t in targets])


def reduce_device(vidur: Path, gpu: str) -> KernelCostTable:
    sheet = DATASHEETS[gpu]
    series = group_series(device_measurements(vidur, gpu))
    kernels: dict[str, list[Series]] = {}
    for (kernel, shape), (axis, med, std) in sorted(series.items()):
        keep = _subset(axis, kernel)
        axis_name = KERNELS[kernel].axes[0]
        kernels.setdefault(kernel, []).append(
            Series(dict(shape), {axis_name: axis[keep]}, med[keep], std[keep])
        )

    # Achieved efficiency of this device, measured: best GEMM FLOP/s and best streaming bandwidth.
    spec = KERNELS["linear"]
    flops_s = max(
        float(np.max(spec.work(2, tokens=s.axes["tokens"], **s.shape)[0] / s.median_s))
        for s in kernels["linear"]
    )
    ew = KERNELS["elementwise"]
    bytes_s = max(
        float(np.max(ew.work(2, elements=s.axes["elements"])[1] / s.median_s))
        for s in kernels["elementwise"]
    )
    launch_s = min(float(s.median_s.min()) for s in kernels["elementwise"])
    compute_eff = min(1.0, flops_s / sheet["peak_flops"])
    memory_eff = min(1.0, bytes_s / sheet["mem_bandwidth"])
    roofline = Roofline(
        peak_flops=sheet["peak_flops"],
        mem_bandwidth=sheet["mem_bandwidth"],
        launch_s=launch_s,
        compute_efficiency=round(compute_eff, 4),
        memory_efficiency=round(memory_eff, 4),
        host_bandwidth=sheet["host_bandwidth"],
        host_latency_s=10e-6,
        network_bandwidth=sheet["network_bandwidth"],
        network_latency_s=NCCL_LATENCY_S,
        sources={
            "peaks": sheet["source"],
            "compute_efficiency": f"best measured GEMM throughput in vidur's {gpu} profiles "
            f"({flops_s / 1e12:.0f} TFLOP/s) over the datasheet peak",
            "memory_efficiency": f"best measured residual-add bandwidth in vidur's {gpu} profiles "
            f"({bytes_s / 1e9:.0f} GB/s) over the datasheet bandwidth",
            "launch_s": "smallest measured elementwise kernel latency",
            "host_latency_s": "typical cudaMemcpyAsync launch latency (10 us), an assumption",
            "network_latency_s": "vidur's NCCL CPU launch overhead default (0.02 ms)",
        },
    )
    entries = {
        k: KernelEntry(
            KERNELS[k],
            tuple(v),
            f"vidur profiles, {gpu} (microsoft/vidur "
            "data/profiling, MIT); median of vidur's repeats",
        )
        for k, v in kernels.items()
    }
    derived = {
        "attention_prefill": "roofline: datasheet peak x measured GEMM efficiency "
        "(vidur's attention profiles are not in the published files used here)",
        "attention_decode": "roofline: datasheet bandwidth x measured streaming efficiency",
        "copy_h2d": "datasheet PCIe bandwidth per direction + 10 us launch latency",
        "copy_d2h": "datasheet PCIe bandwidth per direction + 10 us launch latency",
    }
    for k, source in derived.items():
        entries[k] = KernelEntry(KERNELS[k], (), source)
    device = {
        "name": sheet["name"],
        "kind": "gpu",
        "memory": [
            {
                "name": "hbm",
                "capacity_bytes": sheet["memory"],
                "bandwidth": sheet["mem_bandwidth"],
                "source": sheet["source"],
            },
            *sheet.get("on_chip", []),
        ],
    }
    provenance = {
        "method": "reduced from published per-operator measurements by scripts/reduce_vidur.py",
        "source": "microsoft/vidur data/profiling (compute: mlp.csv; network: all_reduce, "
        "send_recv)",
        "date": dt.date.today().isoformat(),
        "dtype": "float16",
        "libraries": {"vidur profiles": "as published in microsoft/vidur"},
        "kept_axis_points": (
            "GEMMs: tokens 1, 2, 4, 8, every 16 to 256, every 128 to 4096; "
            "40 log-spaced points otherwise"
        ),
    }
    return KernelCostTable(gpu, device, provenance, roofline, entries, dtype_bytes=2)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--vidur", type=Path, default=here.parent / "shared" / "data" / "kernel-profiles" / "vidur"
    )
    ap.add_argument("--out", type=Path, default=here / "envs" / "hardware" / "tables")
    ap.add_argument("--gpus", nargs="+", default=sorted(DATASHEETS))
    args = ap.parse_args(argv)
    if not args.vidur.is_dir():
        print(f"error: vidur profiles not found at {args.vidur}", file=sys.stderr)
        return 2
    for gpu in args.gpus:
        table = reduce_device(args.vidur, gpu)
        path = args.out / f"{gpu}.json"
        table.save(path)
        print(f"{path}: {table.n_points()} points, kernels {', '.join(sorted(table.kernels))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
