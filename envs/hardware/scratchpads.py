"""Software-managed on-chip memories (scratchpads) as the memory env's fast tier, from datasheets.

The memory env's default fast tier is a GPU's L2 cache (`envs.memory.env`): hardware decides
what it holds, so the env's placements are a model of what a compiler could pin there. On TPUs
and NPUs the on-chip memory is a *scratchpad*: nothing enters it unless the compiler puts it
there, so a placement is exactly what the hardware does. A `Scratchpad` names one such chip's
figures, each quoted from its source, and the env (``fast_tier=NAME``) uses them for the fast
tier, the slow tier, the copy engine and the compute of traced ops.

Only figures that a vendor document states are used; the derived ones show their arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from schedgym.errors import CostTableError

GIB = 2**30
MIB = 2**20


@dataclass(frozen=True)
class Scratchpad:
    """One accelerator core's scratchpad, its HBM share and its DMA, for the memory env.

    Units: bytes and bytes/s; ``peak_flops`` in FLOP/s at ``dtype_bytes``-byte elements.
    ``source`` names the document and the sections each figure comes from.
    """

    name: str
    capacity_bytes: int  # the scratchpad
    bandwidth: float  # scratchpad bytes/s an op streams (reads and writes together)
    slow_bandwidth: float  # HBM bytes/s available to one core
    copy_bandwidth: float  # HBM <-> scratchpad DMA bytes/s of one core
    peak_flops: float  # the core's matrix engine
    dtype_bytes: int
    source: str


# AWS Trainium (Trn1) / Inferentia2, one NeuronCore-v2. AWS Neuron documentation, "Trainium/
# Inferentia2 Architecture Guide for NKI" (the NKI architecture guide, section "NeuronCore-v2
# Compute Engines" and "Data Movement"), and "Trainium Architecture" (Trn1):
# * "a NeuronCore-v2 consists of two software-managed on-chip SRAMs, a 24MiB SBUF ..."
# * SBUF "can supply a peak bandwidth of 128 elements/cycle at 1.4 GHz for each tensor
#   read/write interface": 128 x 2 B x 1.4e9 = 358.4 GB/s per interface at bf16; an op streams
#   its inputs in through a read interface while its results leave through a write interface,
#   so reads and writes together move at up to 2 x 358.4 = 716.8 GB/s;
# * "2 HBM stacks with a total device memory capacity of 32GiB and bandwidth of 820 GB/s" for
#   the device's 2 NeuronCores: 410 GB/s per core when both run;
# * "16 parallel DMA engines" per NeuronCore-v2, each "driving a peak bandwidth of 27 GiB/s":
#   432 GiB/s = 463.9 GB/s of DMA per core, more than its 410 GB/s of HBM, so a copy between
#   HBM and SBUF runs at the HBM share (Trn1's datasheet line "1 TB/sec of DMA bandwidth" per
#   chip, 500 GB/s per core, agrees: the DMA engines are not the limit);
# * TensorE "BF16 ... at a maximum throughput of 92 TFLOPS".
_TRN1 = Scratchpad(
    name="trn1-sbuf",
    capacity_bytes=24 * MIB,
    bandwidth=2 * 128 * 2 * 1.4e9,
    slow_bandwidth=820e9 / 2,
    copy_bandwidth=min(16 * 27 * GIB, 820e9 / 2),
    peak_flops=92e12,
    dtype_bytes=2,
    source=(
        "AWS Neuron documentation: Trainium/Inferentia2 Architecture Guide for NKI "
        "(https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/arch/"
        "trainium_inferentia2_arch.html: 24 MiB SBUF per NeuronCore-v2, software-managed; SBUF "
        "128 elements/cycle at 1.4 GHz per read/write interface; HBM 820 GB/s per device of 2 "
        "NeuronCores; 16 DMA engines of 27 GiB/s per NeuronCore; TensorE 92 TFLOPS BF16) and "
        "Trainium Architecture (https://awsdocs-neuron.readthedocs-hosted.com/en/latest/general/"
        "arch/neuron-hardware/trainium.html: 1 TB/s of DMA bandwidth per chip)"
    ),
)

SCRATCHPADS: dict[str, Scratchpad] = {s.name: s for s in (_TRN1,)}


def get_scratchpad(name: str) -> Scratchpad:
    """The scratchpad called ``name``; raises ``CostTableError`` naming the known ones."""
    if name not in SCRATCHPADS:
        raise CostTableError(f"unknown scratchpad {name!r}; known: {', '.join(SCRATCHPADS)}")
    return SCRATCHPADS[name]
