"""Simulated accelerators: devices with memory tiers, the links between them, and their costs.

A device is described by its kernel cost table (``costs.py``), whose ``device`` section also lists
the memory tiers (capacity, bandwidth, source) and whose ``roofline`` section carries the host
link. ``load_profile("h100")`` gives a one-device profile priced by the shipped H100 table;
``HardwareProfile.compose`` joins several devices with links for the DAG environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from schedgym.envs.hardware.costs import KernelCostTable, load_table
from schedgym.errors import CostTableError

TABLES = resources.files("schedgym.envs.hardware.tables")


@dataclass(frozen=True)
class MemoryTier:
    name: str  # "hbm", "dram", "sram"
    capacity_bytes: int
    bandwidth: float  # bytes/s
    source: str


@dataclass(frozen=True)
class Device:
    name: str  # unique within a profile: "h100", "h100:1", "cpu"
    kind: str  # "gpu" | "cpu" | "npu"
    costs: KernelCostTable
    memory: tuple[MemoryTier, ...]

    @property
    def peak_flops(self) -> float:
        return self.costs.roofline.peak_flops

    def tier(self, name: str) -> MemoryTier:
        for t in self.memory:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.memory) or "none"
        raise CostTableError(f"device {self.name!r} has no memory tier {name!r}; has: {known}")


@dataclass(frozen=True)
class Link:
    src: str
    dst: str
    bandwidth: float  # bytes/s, one direction
    latency_s: float

    def transfer_time(self, nbytes: float) -> float:
        return self.latency_s + nbytes / self.bandwidth


@dataclass(frozen=True)
class HardwareProfile:
    """A set of devices and the links between them; transfers on one device cost nothing."""

    name: str
    devices: tuple[Device, ...]
    links: tuple[Link, ...] = ()

    def __post_init__(self) -> None:
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise CostTableError(f"profile {self.name!r}: duplicate device names in {names}")
        for link in self.links:
            for end in (link.src, link.dst):
                if end not in names and end != "host":
                    raise CostTableError(f"profile {self.name!r}: link to unknown device {end!r}")

    @property
    def costs(self) -> KernelCostTable:
        """The cost table of a one-device profile (the common case)."""
        if len(self.devices) != 1:
            raise CostTableError(f"profile {self.name!r} has {len(self.devices)} devices")
        return self.devices[0].costs

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise CostTableError(f"profile {self.name!r} has no device {name!r}")

    def link(self, src: str, dst: str) -> Link:
        for link in self.links:
            if {link.src, link.dst} == {src, dst}:
                return link
        raise CostTableError(f"profile {self.name!r} has no link between {src!r} and {dst!r}")

    def transfer_time(self, src: str, dst: str, nbytes: float) -> float:
        return 0.0 if src == dst else self.link(src, dst).transfer_time(nbytes)

    @classmethod
    def compose(
        cls, name: str, devices: list[Device], links: list[Link] | None = None
    ) -> HardwareProfile:
        """Several devices; without explicit links, every pair talks through host memory
        (two hops over the slower of their host links, as a PCIe peer copy staged in DRAM)."""
        if links is None:
            links = []
            for i, a in enumerate(devices):
                for b in devices[i + 1 :]:
                    la, lb = _host_link(a), _host_link(b)
                    links.append(
                        Link(
                            a.name,
                            b.name,
                            min(la.bandwidth, lb.bandwidth) / 2.0,
                            la.latency_s + lb.latency_s,
                        )
                    )
        return cls(name, tuple(devices), tuple(links))


def _host_link(device: Device) -> Link:
    r = device.costs.roofline
    if device.kind == "cpu" or r.host_bandwidth is None:
        # the host itself: a copy is a DRAM-to-DRAM memcpy at its measured bandwidth
        bw = r.host_bandwidth or r.mem_bandwidth * r.memory_efficiency
        return Link(device.name, "host", bw, r.host_latency_s)
    return Link(device.name, "host", r.host_bandwidth, r.host_latency_s)


def builtin_tables() -> list[str]:
    """Names of the shipped cost tables (``cpu``, ``a100``, ``h100``, ...)."""
    return sorted(p.name[: -len(".json")] for p in TABLES.iterdir() if p.name.endswith(".json"))


def load_cost_table(name_or_path: str | Path) -> KernelCostTable:
    """A shipped table by name, or any table file by path."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        return load_table(p)
    if str(name_or_path) not in builtin_tables():
        known = ", ".join(builtin_tables())
        raise CostTableError(f"unknown hardware profile {name_or_path!r}; shipped: {known}")
    with resources.as_file(TABLES / f"{name_or_path}.json") as path:
        return load_table(path)


def device_from_table(table: KernelCostTable, name: str | None = None) -> Device:
    tiers = tuple(
        MemoryTier(t["name"], int(t["capacity_bytes"]), float(t["bandwidth"]), t["source"])
        for t in table.device.get("memory", [])
    )
    return Device(name or table.name, table.device.get("kind", "gpu"), table, tiers)


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """A one-device profile (device plus its host link) from a shipped table or a table file."""
    table = load_cost_table(name_or_path)
    device = device_from_table(table)
    return HardwareProfile(table.name, (device,), (_host_link(device),))
