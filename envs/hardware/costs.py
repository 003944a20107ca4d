"""`KernelCostTable`: measured kernel latencies, interpolated, with a roofline fallback.

A table holds, per named kernel (see ``kernels.py``), one or more measured *series*: a fixed
shape and a regular grid over the kernel's axes with the median latency and its spread at every
grid point. A query is priced by, in order of preference:

1. ``measured``/``interpolated``: the series of the same shape, multilinear interpolation of
   log(time) over log(axes) inside the grid;
2. ``shape-scaled``: no series has this shape, so the nearest measured shape (in log distance)
   is used and scaled by the kernel's ``shape_scale`` ratio (weight size for GEMMs, head size for
   attention), which holds in both the compute-bound and the memory-bound regime;
3. ``roofline-extrapolated``: an axis lies outside the grid, so the value at the grid's edge is
   carried out by the ratio of roofline times, query over edge;
4. ``roofline``: the kernel has no measurements at all; max(FLOPs / achieved peak, bytes /
   achieved bandwidth) + launch latency, from the table's ``roofline`` figures, the peaks
   derated by the kernel's own ``efficiency`` where its entry gives one (a published measured
   throughput of that kernel on that device) instead of the table-wide efficiencies.

Every table names its provenance (device, libraries, date, method, sources), and each kernel
names its own source. Tables are JSON files; ``load_table`` refuses a malformed one with the file
name and the offending field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from schedgym.envs.hardware.kernels import KERNELS, KernelSpec
from schedgym.errors import CostTableError

FORMAT = "schedgym-kernel-costs/1"


@dataclass(frozen=True)
class Roofline:
    """Peak figures and the share of them kernels achieve on this device, with their sources."""

    peak_flops: float  # FLOP/s of the table's dtype
    mem_bandwidth: float  # bytes/s
    launch_s: float  # fixed per-kernel overhead
    compute_efficiency: float = 1.0
    memory_efficiency: float = 1.0
    host_bandwidth: float | None = None  # bytes/s per direction of the host link
    host_latency_s: float = 0.0
    network_bandwidth: float | None = None  # bytes/s per direction of the device interconnect
    network_latency_s: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)

    def time(
        self,
        spec: KernelSpec,
        dtype_bytes: float,
        params: dict[str, Any],
        efficiency: float | None = None,
    ) -> np.ndarray:
        """Seconds of one call: transfers by their link, kernels by the roofline; a kernel's
        ``efficiency`` replaces ``compute_efficiency`` and ``memory_efficiency``."""
        flops, nbytes = spec.work(dtype_bytes, **params)
        if spec.transfer is not None:
            bw, lat = (
                (self.host_bandwidth, self.host_latency_s)
                if spec.transfer == "host"
                else (self.network_bandwidth, self.network_latency_s)
            )
            if bw is None:
                raise CostTableError(f"kernel {spec.name!r}: table has no {spec.transfer} link")
            return (
                lat
                + np.asarray(nbytes, float)
                * spec.shape_scale(**{k: params[k] for k in spec.shape})
                / bw
            )
        c_eff = self.compute_efficiency if efficiency is None else efficiency
        m_eff = self.memory_efficiency if efficiency is None else efficiency
        compute = np.asarray(flops, float) / (self.peak_flops * c_eff)
        memory = np.asarray(nbytes, float) / (self.mem_bandwidth * m_eff)
        return self.launch_s + np.maximum(compute, memory)


@dataclass(frozen=True)
class Series:
    """One measured grid: a fixed shape, axis values, median latency and spread (seconds)."""

    shape: dict[str, int]
    axes: dict[str, np.ndarray]
    median_s: np.ndarray
    spread_s: np.ndarray

    def __post_init__(self) -> None:
        log_axes = tuple(np.log(v) for v in self.axes.values())
        if len(log_axes) == 1:
            interp = None  # np.interp is several times faster for the common 1-D case
        else:
            interp = RegularGridInterpolator(log_axes, np.log(self.median_s))
        object.__setattr__(self, "_log_axes", log_axes)
        object.__setattr__(self, "_log_t", np.log(self.median_s))
        object.__setattr__(self, "_interp", interp)

    def interpolate(self, points: list[np.ndarray]) -> np.ndarray:
        """Interpolate log time at log ``points`` (one array per axis, already inside the grid)."""
        if self._interp is None:
            return np.exp(np.interp(np.log(points[0]), self._log_axes[0], self._log_t))
        stacked = np.stack([np.log(p) for p in points], axis=-1)
        return np.exp(self._interp(stacked)).reshape(stacked.shape[:-1])

    def n_points(self) -> int:
        return int(self.median_s.size)


@dataclass(frozen=True)
class KernelEntry:
    """A kernel's measured series, where they come from, and, for a kernel priced by the
    roofline, the share of the device's peaks it reaches (``efficiency``, in (0, 1])."""

    spec: KernelSpec
    series: tuple[Series, ...]
    source: str
    efficiency: float | None = None


class KernelCostTable:
    """Prices named kernels on one device from measured points (see the module docstring)."""

    def __init__(
        self,
        name: str,
        device: dict[str, Any],
        provenance: dict[str, Any],
        roofline: Roofline,
        kernels: dict[str, KernelEntry],
        dtype_bytes: int,
    ):
        self.name = name
        self.device = device
        self.provenance = provenance
        self.roofline = roofline
        self.kernels = kernels
        self.dtype_bytes = dtype_bytes

    # -- pricing -------------------------------------------------------------------------------

    def predict(self, kernel: str, **params: float) -> float:
        """Latency in seconds of one call of ``kernel`` with scalar parameters."""
        return float(self.predict_many(kernel, **params)[()])

    def predict_many(self, kernel: str, **params: Any) -> np.ndarray:
        """Latency in seconds, vectorised: axis parameters may be arrays (broadcast together)."""
        return self._price(kernel, params)[0]

    def explain(self, kernel: str, **params: float) -> str:
        """Which rule priced this query: measured, interpolated, shape-scaled, roofline, ..."""
        return self._price(kernel, params, label=True)[1]

    def _price(
        self, kernel: str, params: dict[str, Any], label: bool = False
    ) -> tuple[np.ndarray, str]:
        """Latencies and the rule that priced them; telling a measured point from an
        interpolated one costs a grid lookup, so pricing alone (``label=False``) skips it."""
        spec = KERNELS.get(kernel)
        if spec is None:
            raise CostTableError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")
        missing = [p for p in spec.params if p not in params]
        extra = [p for p in params if p not in spec.params]
        if missing or extra:
            raise CostTableError(
                f"kernel {kernel!r} takes ({', '.join(spec.params)}); "
                f"missing {missing or '-'}, unexpected {extra or '-'}"
            )
        axes = np.broadcast_arrays(*(np.asarray(params[a], dtype=float) for a in spec.axes))
        if any(np.any(a <= 0) for a in axes):
            raise CostTableError(f"kernel {kernel!r}: axis values must be positive, got {params}")
        shape = {s: params[s] for s in spec.shape}
        entry = self.kernels.get(kernel)
        if entry is None or not entry.series:
            link = {
                "host": self.roofline.host_bandwidth,
                "network": self.roofline.network_bandwidth,
            }
            if spec.transfer is not None and link[spec.transfer] is None:
                raise CostTableError(
                    f"cost table {self.name!r} cannot price {kernel!r}: it measured none and has "
                    f"no {spec.transfer} link (a one-GPU table cannot run tensor parallelism)"
                )
            eff = None if entry is None else entry.efficiency
            return self.roofline.time(spec, self.dtype_bytes, params, eff), "roofline"

        series, how = self._series_for(entry, shape)
        scale = 1.0
        if how == "shape-scaled":
            scale = spec.shape_scale(**shape) / spec.shape_scale(**series.shape)
        lo = [v[0] for v in series.axes.values()]
        hi = [v[-1] for v in series.axes.values()]
        clamped = [np.clip(a, lo_, hi_) for a, lo_, hi_ in zip(axes, lo, hi, strict=True)]
        t = series.interpolate(clamped) * scale
        if how == "shape-scaled":
            # a much smaller shape cannot beat the cost of launching a kernel at all
            t = np.maximum(t, self.roofline.launch_s)
        outside = np.zeros(t.shape, dtype=bool)
        for a, c in zip(axes, clamped, strict=True):
            outside |= a != c
        if np.any(outside):
            names = list(series.axes)
            q = {**shape, **dict(zip(names, axes, strict=True))}
            e = {**shape, **dict(zip(names, clamped, strict=True))}
            ratio = self.roofline.time(spec, self.dtype_bytes, q) / self.roofline.time(
                spec, self.dtype_bytes, e
            )
            t = np.where(outside, t * ratio, t)
            how = "roofline-extrapolated" if np.all(outside) else f"{how}+roofline-extrapolated"
        elif how == "exact" and label:
            on_grid = all(
                np.all(np.isin(a, v)) for a, v in zip(axes, series.axes.values(), strict=True)
            )
            how = "measured" if on_grid else "interpolated"
        return t, how

    @staticmethod
    def _series_for(entry: KernelEntry, shape: dict[str, Any]) -> tuple[Series, str]:
        best, best_d = entry.series[0], math.inf
        for s in entry.series:
            d = sum(abs(math.log(float(shape[k]) / s.shape[k])) for k in shape) if shape else 0.0
            if d == 0.0:
                return s, "exact"
            if d < best_d:
                best, best_d = s, d
        return best, "shape-scaled"

    # -- (de)serialisation ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        kernels: dict[str, Any] = {}
        for name, entry in self.kernels.items():
            kernels[name] = {
                "source": entry.source,
                **({"efficiency": entry.efficiency} if entry.efficiency is not None else {}),
                "series": [
                    {
                        "shape": s.shape,
                        "axes": {k: _clean(v) for k, v in s.axes.items()},
                        "median_s": _clean(s.median_s),
                        "spread_s": _clean(s.spread_s),
                    }
                    for s in entry.series
                ],
            }
        r = self.roofline
        return {
            "format": FORMAT,
            "name": self.name,
            "device": self.device,
            "dtype_bytes": self.dtype_bytes,
            "provenance": self.provenance,
            "roofline": {
                "peak_flops": r.peak_flops,
                "mem_bandwidth": r.mem_bandwidth,
                "launch_s": r.launch_s,
                "compute_efficiency": r.compute_efficiency,
                "memory_efficiency": r.memory_efficiency,
                "host_bandwidth": r.host_bandwidth,
                "host_latency_s": r.host_latency_s,
                "network_bandwidth": r.network_bandwidth,
                "network_latency_s": r.network_latency_s,
                "sources": r.sources,
            },
            "kernels": kernels,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    def n_points(self) -> int:
        return sum(s.n_points() for e in self.kernels.values() for s in e.series)

    def __repr__(self) -> str:
        return (
            f"KernelCostTable({self.name!r}, device={self.device.get('name')!r}, "
            f"kernels={sorted(self.kernels)}, points={self.n_points()})"
        )


def _clean(a: np.ndarray) -> list:
    """JSON lists with 5 significant digits: measurement noise is far above that."""
    return (
        [float(f"{x:.5g}") if not float(x).is_integer() else int(x) for x in np.ravel(a)]
        if (np.ndim(a) == 1)
        else [_clean(row) for row in a]
    )


# -- loading and validation --------------------------------------------------------------------


def table_from_json(doc: Any, origin: str = "<table>") -> KernelCostTable:
    """Build a table from its JSON document, refusing anything malformed with a one-line reason."""

    def fail(where: str, why: str) -> CostTableError:
        return CostTableError(f"{origin}: {where}: {why}")

    if not isinstance(doc, dict):
        raise fail("top level", "expected a JSON object")
    if doc.get("format") != FORMAT:
        raise fail("format", f"expected {FORMAT!r}, found {doc.get('format')!r}")
    for key in ("name", "device", "provenance", "roofline", "kernels", "dtype_bytes"):
        if key not in doc:
            raise fail(key, "missing")
    prov = doc["provenance"]
    for key in ("method", "date"):
        if not isinstance(prov, dict) or not prov.get(key):
            raise fail(f"provenance.{key}", "missing: every table must say where it came from")
    if not isinstance(doc["device"], dict) or not doc["device"].get("name"):
        raise fail("device.name", "missing")
    dtype_bytes = doc["dtype_bytes"]
    if not isinstance(dtype_bytes, int) or dtype_bytes not in (1, 2, 4, 8):
        raise fail("dtype_bytes", f"must be 1, 2, 4 or 8, got {dtype_bytes!r}")

    r = doc["roofline"]
    try:
        roofline = Roofline(**r)
    except TypeError as exc:
        raise fail("roofline", str(exc)) from None
    for key in ("peak_flops", "mem_bandwidth"):
        v = getattr(roofline, key)
        if not isinstance(v, int | float) or not v > 0:
            raise fail(f"roofline.{key}", f"must be a positive number, got {v!r}")
    for key in ("compute_efficiency", "memory_efficiency"):
        v = getattr(roofline, key)
        if not isinstance(v, int | float) or not 0 < v <= 1:
            raise fail(f"roofline.{key}", f"must be in (0, 1], got {v!r}")

    kernels: dict[str, KernelEntry] = {}
    if not isinstance(doc["kernels"], dict):
        raise fail("kernels", "expected an object of kernel name -> entry")
    for name, entry in doc["kernels"].items():
        spec = KERNELS.get(name)
        if spec is None:
            raise fail(f"kernels.{name}", f"unknown kernel; known: {', '.join(KERNELS)}")
        if not isinstance(entry, dict) or not entry.get("source"):
            raise fail(f"kernels.{name}.source", "missing: name where these numbers come from")
        series = []
        for i, s in enumerate(entry.get("series", [])):
            where = f"kernels.{name}.series[{i}]"
            series.append(_series_from_json(spec, s, lambda w, why, p=where: fail(f"{p}{w}", why)))
        shapes = [tuple(sorted(s.shape.items())) for s in series]
        if len(set(shapes)) != len(shapes):
            raise fail(f"kernels.{name}", "two series have the same shape")
        eff = entry.get("efficiency")
        if eff is not None and not (isinstance(eff, int | float) and 0 < eff <= 1):
            raise fail(f"kernels.{name}.efficiency", f"must be in (0, 1], got {eff!r}")
        kernels[name] = KernelEntry(spec, tuple(series), entry["source"], eff)
    return KernelCostTable(doc["name"], doc["device"], prov, roofline, kernels, dtype_bytes)


def _series_from_json(spec: KernelSpec, s: Any, fail) -> Series:
    if not isinstance(s, dict):
        raise fail("", "expected an object")
    shape = s.get("shape", {})
    if set(shape) != set(spec.shape):
        raise fail(".shape", f"needs exactly ({', '.join(spec.shape)}), got {sorted(shape)}")
    for k, v in shape.items():
        if not isinstance(v, int | float) or v <= 0:
            raise fail(f".shape.{k}", f"must be positive, got {v!r}")
    axes_doc = s.get("axes", {})
    if list(axes_doc) != list(spec.axes):
        raise fail(".axes", f"needs ({', '.join(spec.axes)}) in that order, got {list(axes_doc)}")
    axes = {}
    for k, v in axes_doc.items():
        a = np.asarray(v, dtype=float)
        if a.ndim != 1 or a.size < 1:
            raise fail(f".axes.{k}", "must be a non-empty list of numbers")
        if np.any(a <= 0) or np.any(np.diff(a) <= 0):
            raise fail(f".axes.{k}", "values must be positive and strictly increasing")
        axes[k] = a
    grid = tuple(a.size for a in axes.values())
    arrays = {}
    for key in ("median_s", "spread_s"):
        try:
            a = np.asarray(s.get(key), dtype=float)
        except (TypeError, ValueError):
            raise fail(f".{key}", "must be a (nested) list of numbers") from None
        if a.shape != grid:
            raise fail(f".{key}", f"shape {a.shape} does not match the axes grid {grid}")
        if not np.all(np.isfinite(a)):
            raise fail(f".{key}", "contains a non-finite value")
        arrays[key] = a
    if np.any(arrays["median_s"] <= 0):
        raise fail(".median_s", "latencies must be positive")
    if np.any(arrays["spread_s"] < 0):
        raise fail(".spread_s", "spreads must be non-negative")
    if any(n < 2 for n in grid):
        raise fail(".axes", "every axis needs at least two measured values to interpolate")
    return Series(
        {k: int(v) for k, v in shape.items()}, axes, arrays["median_s"], arrays["spread_s"]
    )


def load_table(path: str | Path) -> KernelCostTable:
    """Load a kernel cost table JSON file (see ``table_from_json`` for what is checked)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise CostTableError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CostTableError(f"{p}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    return table_from_json(doc, str(p))
