"""Reduce vidur's published GPU operator profiles to schedgym's compact committed cost tables.

    python scripts/reduce_vidur.py [--vidur ../shared/data/kernel-profiles/vidur] [--out DIR]

For each GPU it keeps every measured shape but only a log-spaced subset of the swept axis
(tokens, elements, bytes), so the committed table is small and the rows left out stay available
as held-out measurements (``schedgym profile --check TABLE --against VIDUR_DIR``). Collectives
come from the node topology the profile claims (`schedgym.envs.hardware.vidur.NETWORK_TOPOLOGY`).
Attention and host copies were not in vidur's published files: until a table measured on the GPU
exists, prefill attention is priced at the forward-pass throughput FlashAttention's papers
measured on that GPU, decode attention at the streaming bandwidth vidur measured on it, and host
copies at the commonly reported achievable PCIe rate, not the link's peak; each entry names its
source.
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
        achievable_host_bandwidth=50e9,
        pcie="PCIe 5.0 x16",
        # FlashAttention-3 (Shah et al., 2024, arXiv:2407.08608): FP16 forward up to 740 TFLOP/s
        attention_tflops=740.0,
        attention_source="FlashAttention-3 (Shah et al., 2024, arXiv:2407.08608), FP16 forward "
        "pass on H100 SXM5: up to 740 TFLOP/s, 75 % of peak (vLLM v1 runs FlashAttention-3 on "
        "Hopper); the best figure, reached on long sequences",
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
        achievable_host_bandwidth=25e9,
        pcie="PCIe 4.0 x16",
        attention_tflops=0.73 * 312.0,
        attention_source="FlashAttention-2 (Dao, 2023, arXiv:2307.08691): the forward pass "
        "reaches up to 73 % of the A100's 312 TFLOP/s (FP16/BF16); the best figure, reached "
        "on long sequences",
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
        achievable_host_bandwidth=25e9,
        pcie="PCIe 4.0 x16",
        attention_tflops=0.73 * 149.7,
        attention_source="FlashAttention-2 (Dao, 2023, arXiv:2307.08691) measured up to 73 % of "
        "peak on the A100; no published A40 figure, so the same share of the A40's 149.7 TFLOP/s "
        "(same Ampere generation), an assumption",
        network_bandwidth=56.25e9,
        source="NVIDIA A40 datasheet: 149.7 TFLOP/s dense FP16 tensor, 696 GB/s GDDR6, "
        "NVLink bridge 112.5 GB/s, PCIe Gen4 x16 64 GB/s (both directions)",
    ),
}
# GEMM latency steps with the tile size (64-128 tokens), so the kept grid is dense enough to
# follow the steps: every 16 tokens to 256, then every 128.
TOKEN_GRID = [1, 2, 4, 8, *range(16, 256, 16), *range(256, 4097, 128)]
LOG_POINTS = 40  # kept points per series on a shape-free axis (elements, bytes)
# Streaming bandwidth is taken from elementwise ops at least this large: far beyond the L2
# caches (40-50 MiB), so the rate is HBM's.
STREAMING_BYTES = 128 * 2**20
PCIE_SOURCE = (
    "host copies: commonly reported achievable pinned host-to-device rate on {pcie} (CUDA "
    "bandwidthTest, about {rate:.0f} GB/s of the link's {peak:.0f} GB/s per direction), an "
    "estimate until measured with `schedgym profile --device cuda`"
)
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
    streaming = float(
        np.median(
            np.concatenate(
                [
                    (nbytes := ew.work(2, elements=s.axes["elements"])[1])[
                        nbytes >= STREAMING_BYTES
                    ]
                    / s.median_s[nbytes >= STREAMING_BYTES]
                    for s in kernels["elementwise"]
                ]
            )
        )
    )
    compute_eff = min(1.0, flops_s / sheet["peak_flops"])
    memory_eff = min(1.0, bytes_s / sheet["mem_bandwidth"])
    roofline = Roofline(
        peak_flops=sheet["peak_flops"],
        mem_bandwidth=sheet["mem_bandwidth"],
        launch_s=launch_s,
        compute_efficiency=round(compute_eff, 4),
        memory_efficiency=round(memory_eff, 4),
        host_bandwidth=sheet["achievable_host_bandwidth"],
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
            "host_bandwidth": PCIE_SOURCE.format(
                pcie=sheet["pcie"],
                rate=sheet["achievable_host_bandwidth"] / 1e9,
                peak=sheet["host_bandwidth"] / 1e9,
            ),
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
    pcie = (
        PCIE_SOURCE.format(
            pcie=sheet["pcie"],
            rate=sheet["achievable_host_bandwidth"] / 1e9,
            peak=sheet["host_bandwidth"] / 1e9,
        )
        + " + 10 us launch latency"
    )
    derived = {
        "attention_prefill": (
            f"roofline at {sheet['attention_tflops']:.0f} TFLOP/s: {sheet['attention_source']}",
            sheet["attention_tflops"] * 1e12 / sheet["peak_flops"],
        ),
        "attention_decode": (
            f"roofline at {streaming / 1e9:.0f} GB/s, the median streaming bandwidth vidur "
            f"measured on this GPU (elementwise ops of {STREAMING_BYTES >> 20} MiB and more): "
            "a ceiling for paged decode attention, which no published measurement used here "
            "prices",
            min(1.0, streaming / sheet["mem_bandwidth"]),
        ),
        "copy_h2d": (pcie, None),
        "copy_d2h": (pcie.replace("host-to-device", "device-to-host"), None),
    }
    for k, (source, eff) in derived.items():
        entries[k] = KernelEntry(KERNELS[k], (), source, None if eff is None else round(eff, 4))
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
