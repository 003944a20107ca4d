"""The named kernels schedgym prices, their parameters, and the work each one does.

A kernel has *axes*, the parameters a measurement sweeps and the cost model interpolates over
(tokens, context, bytes), and *shape* parameters that stay fixed within one measured series
(a linear layer's ``d_in`` and ``d_out``). The work functions give FLOPs and bytes moved; they
serve the roofline fallback outside the measured range and the transfer of a measured series to a
nearby unmeasured shape (``shape_scale``: time grows with the weight or head size in both the
compute-bound and the memory-bound regime).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from schedgym.errors import CostTableError

Work = tuple[np.ndarray, np.ndarray]  # (flops, bytes), broadcast over the axes


@dataclass(frozen=True)
class KernelSpec:
    name: str
    axes: tuple[str, ...]
    shape: tuple[str, ...]
    doc: str
    work: Callable[..., Work]  # (dtype_bytes, **axes, **shape) -> (flops, bytes)
    shape_scale: Callable[..., float]  # (**shape) -> relative time of a series of this shape
    transfer: str | None = None  # "host", "network": priced by a link, not by FLOPs/bytes

    @property
    def params(self) -> tuple[str, ...]:
        return self.axes + self.shape


def _linear(b, tokens, d_in, d_out):
    flops = 2.0 * tokens * d_in * d_out
    return flops, b * (d_in * d_out + tokens * (d_in + d_out))


def _prefill(b, tokens, context, heads, kv_heads, head_dim):
    # Causal chunk: query i of the chunk sees context - tokens + i + 1 keys.
    seen = context - (tokens - 1) / 2.0
    flops = 4.0 * heads * head_dim * tokens * seen
    return flops, b * (2.0 * tokens * heads * head_dim + 2.0 * context * kv_heads * head_dim)


def _decode(b, batch, context, heads, kv_heads, head_dim):
    flops = 4.0 * batch * heads * head_dim * context
    return flops, b * batch * (2.0 * context * kv_heads * head_dim + 2.0 * heads * head_dim)


def _elementwise(reads_writes: float):
    def work(b, elements):
        return np.asarray(elements, dtype=float), reads_writes * b * np.asarray(elements, float)

    return work


def _bytes_only(b, bytes, **_):  # noqa: A002 - the parameter is named after the kernel's axis
    return np.zeros_like(np.asarray(bytes, float)), np.asarray(bytes, float)


def _one(**_):
    return 1.0


KERNELS: dict[str, KernelSpec] = {
    k.name: k
    for k in (
        KernelSpec(
            "linear",
            ("tokens",),
            ("d_in", "d_out"),
            "dense GEMM of a [tokens, d_in] activation by a [d_in, d_out] weight",
            _linear,
            lambda d_in, d_out: float(d_in) * float(d_out),
        ),
        KernelSpec(
            "attention_prefill",
            ("tokens", "context"),
            ("heads", "kv_heads", "head_dim"),
            "causal attention of a chunk of `tokens` new queries over `context` keys in all "
            "(the chunk included)",
            _prefill,
            lambda heads, kv_heads, head_dim: float(heads) * float(head_dim),
        ),
        KernelSpec(
            "attention_decode",
            ("batch", "context"),
            ("heads", "kv_heads", "head_dim"),
            "one decode query per sequence for `batch` sequences of mean KV length `context`",
            _decode,
            lambda heads, kv_heads, head_dim: float(kv_heads) * float(head_dim),
        ),
        KernelSpec(
            "elementwise",
            ("elements",),
            (),
            "binary elementwise op (residual add): two reads and one write per element",
            _elementwise(3.0),
            _one,
        ),
        KernelSpec(
            "activation",
            ("elements",),
            (),
            "gated activation SiLU(a) * b producing `elements` outputs from 2x inputs",
            _elementwise(3.0),
            _one,
        ),
        KernelSpec(
            "layernorm",
            ("elements",),
            (),
            "RMS/layer normalisation over `elements` values (read, write)",
            _elementwise(2.0),
            _one,
        ),
        KernelSpec(
            "copy_h2d",
            ("bytes",),
            (),
            "host-to-device copy (pinned memory)",
            _bytes_only,
            _one,
            transfer="host",
        ),
        KernelSpec(
            "copy_d2h",
            ("bytes",),
            (),
            "device-to-host copy (pinned memory)",
            _bytes_only,
            _one,
            transfer="host",
        ),
        KernelSpec(
            "all_reduce",
            ("bytes",),
            ("workers",),
            "ring all-reduce of `bytes` across `workers` devices of one node",
            _bytes_only,
            lambda workers: 2.0 * (float(workers) - 1.0) / float(workers),
            transfer="network",
        ),
        KernelSpec(
            "send_recv",
            ("bytes",),
            (),
            "point-to-point transfer of `bytes` between two devices",
            _bytes_only,
            _one,
            transfer="network",
        ),
    )
}


def kernel_spec(name: str) -> KernelSpec:
    try:
        return KERNELS[name]
    except KeyError:
        raise CostTableError(f"unknown kernel {name!r}; known: {', '.join(KERNELS)}") from None
