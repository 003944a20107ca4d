"""Buffer sets for memory mapping: the frozen `BufferSet`, its loaders and a seeded generator.

A buffer set is what a compiler's memory planner sees: buffers with a size in bytes and a
lifetime ``[start, end)`` (half-open, in the set's own time units), and, where known, the
operators that touch them: op ``j`` runs at time ``ops.time[j]``, needs ``ops.compute_s[j]``
seconds of compute, always moves ``ops.fixed_bytes[j]`` bytes from slow memory (weights, model
inputs) and reads or writes ``access_bytes`` of buffer ``access_buf`` (an ``OpTable``).

Three families, each named by a *case* string (resolved by ``schedgym.envs.memory.env``):

* **traced models** (``gpt2-tiny``, ``resnet18``, ... from ``workloads.torch_models``):
  ``model_buffer_set`` runs liveness over the traced op order. Every op that writes a tensor
  defines one buffer, live from its definition step to one past its last use; a tensor that no
  op reads (the model's output) stays live to the end. Each op reads the bytes of its inputs that
  the trace records, writes its output, and reads its weights and the model inputs from slow
  memory. The trace runs in fp32; sizes and bytes are rescaled to ``dtype_bytes`` per element,
  the precision the pricing cost table was measured in.
* **CSV files** in the ``id,lower,upper,size`` format of MiniMalloc and idealloc (lifetimes are
  half-open ``[lower, upper)``); ``read_buffer_csv``. A file name ``NAME.CAPACITY.csv`` (as in
  MiniMalloc's benchmarks) gives the capacity the set was planned for (a positive integer: a
  capacity part such as ``-5``, ``0`` or ``1.5`` is refused). These files carry no
  access counts: ``BufferSet.op_table`` then supplies the *default* documented there.
* **random sets** (``random_buffer_set``): controlled overlap (mean number of live buffers),
  size spread (max/min ratio of log-uniform sizes), peak live bytes, and per-op compute
  intensity, for training.

A bad file or object raises ``WorkloadError`` naming the file, the line and what is wrong:
duplicate ids, non-positive sizes, empty lifetimes are refused, nothing is half-loaded.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from schedgym.errors import WorkloadError
from schedgym.randomness import SeedLike, as_generator
from schedgym.workloads.base import csv_rows, parse_number, shared_data_dir

# The traced zoo models run in fp32.
TRACE_ELEMENT_BYTES = 4


def _frozen(a: np.ndarray, dtype) -> np.ndarray:
    out = np.array(a, dtype=dtype, copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class OpTable:
    """The operators of a buffer set in execution order, and the bytes each moves.

    ``time`` is strictly increasing; op ``j`` may touch buffer ``b`` only while ``b`` is live,
    ``start[b] <= time[j] < end[b]``. The access arrays list each (op, buffer) pair at most once.
    """

    time: np.ndarray  # int64 [m]
    compute_s: np.ndarray  # float64 [m], seconds of compute (see envs.memory.core.op_seconds)
    fixed_bytes: np.ndarray  # float64 [m], bytes always from slow memory (weights, inputs)
    access_op: np.ndarray  # int64 [a]
    access_buf: np.ndarray  # int64 [a]
    access_bytes: np.ndarray  # float64 [a], bytes read plus bytes written
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name, dtype in (
            ("time", np.int64),
            ("compute_s", np.float64),
            ("fixed_bytes", np.float64),
            ("access_op", np.int64),
            ("access_buf", np.int64),
            ("access_bytes", np.float64),
        ):
            object.__setattr__(self, name, _frozen(getattr(self, name), dtype))
        m = self.time.size
        if self.compute_s.shape != (m,) or self.fixed_bytes.shape != (m,):
            raise WorkloadError("op table: time, compute_s and fixed_bytes differ in length")
        if self.access_op.shape != self.access_buf.shape or (
            self.access_op.shape != self.access_bytes.shape
        ):
            raise WorkloadError("op table: access arrays differ in length")
        if m and np.any(np.diff(self.time) <= 0):
            raise WorkloadError("op table: op times must be strictly increasing")
        if np.any(~np.isfinite(self.compute_s)) or np.any(self.compute_s < 0):
            raise WorkloadError("op table: compute times must be finite and >= 0")
        if np.any(self.fixed_bytes < 0) or np.any(self.access_bytes < 0):
            raise WorkloadError("op table: byte counts must be >= 0")
        if self.access_op.size and (self.access_op.min() < 0 or self.access_op.max() >= m):
            raise WorkloadError("op table: access names an op out of range")
        if self.names is not None and len(self.names) != m:
            raise WorkloadError("op table: one name per op expected")

    @property
    def n_ops(self) -> int:
        return int(self.time.size)


@dataclass(frozen=True, eq=False)
class BufferSet:
    """Buffers to place: ``ids`` as given, sizes in bytes, lifetimes ``[start, end)``.

    ``capacity`` is the memory the set was planned for, where its source names one (MiniMalloc's
    instances: 1,048,576); ``ops`` the per-op compute and accesses, where known.
    """

    name: str
    ids: np.ndarray
    start: np.ndarray
    end: np.ndarray
    size: np.ndarray
    capacity: int | None = None
    ops: OpTable | None = None
    labels: tuple[str, ...] | None = None  # a human name per buffer (the op that defines it)
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("ids", "start", "end", "size"):
            object.__setattr__(self, name, _frozen(getattr(self, name), np.int64))
        n = self.ids.size
        where = f"buffer set {self.name!r}"
        if n == 0:
            raise WorkloadError(f"{where}: no buffers")
        if any(getattr(self, a).shape != (n,) for a in ("start", "end", "size")):
            raise WorkloadError(f"{where}: ids, start, end and size differ in length")
        bad = _first_bad(self.ids, self.start, self.end, self.size)
        if bad is not None:
            raise WorkloadError(f"{where}: {bad}")
        if self.capacity is not None and self.capacity < 1:
            raise WorkloadError(f"{where}: capacity must be positive, got {self.capacity}")
        if self.labels is not None and len(self.labels) != n:
            raise WorkloadError(f"{where}: one label per buffer expected")
        if self.ops is not None:
            buf = self.ops.access_buf
            if buf.size and (buf.min() < 0 or buf.max() >= n):
                raise WorkloadError(f"{where}: an access names a buffer out of range")
            t = self.ops.time[self.ops.access_op]
            outside = (t < self.start[buf]) | (t >= self.end[buf])
            if np.any(outside):
                k = int(np.flatnonzero(outside)[0])
                raise WorkloadError(
                    f"{where}: op {int(self.ops.access_op[k])} at time {int(t[k])} touches buffer "
                    f"{int(self.ids[buf[k]])} outside its lifetime "
                    f"[{int(self.start[buf[k]])}, {int(self.end[buf[k]])})"
                )
            pair = self.ops.access_op * n + buf
            if np.unique(pair).size != pair.size:
                raise WorkloadError(f"{where}: an (op, buffer) access is listed twice")

    @property
    def n(self) -> int:
        return int(self.ids.size)

    @property
    def horizon(self) -> tuple[int, int]:
        return int(self.start.min()), int(self.end.max())

    def live_profile(self) -> tuple[np.ndarray, np.ndarray]:
        """``(times, live_bytes)``: live bytes are constant on ``[times[i], times[i+1])``."""
        return live_profile(self.start, self.end, self.size)

    def peak_live_bytes(self) -> int:
        """Largest total size live at one moment: a lower bound on any packing's height."""
        return self._peak

    @functools.cached_property
    def _peak(self) -> int:
        return int(self.live_profile()[1].max())

    def op_table(self) -> OpTable:
        """The set's ops, or the default for sets without access counts (CSV files).

        Default: each buffer is written once (its size in bytes) by an op at its first time step
        and read once by an op at its last, ``end - 1``; ops sit at those distinct times, need
        no compute and move no other bytes. Every op is then memory-bound, so the modelled time
        is pure traffic: a producer-consumer reading of a plan that records only lifetimes.
        """
        return self.ops if self.ops is not None else self._default_ops

    @functools.cached_property
    def _default_ops(self) -> OpTable:
        last = self.end - 1
        time = np.unique(np.concatenate([self.start, last]))
        idx = np.arange(self.n)
        op = np.concatenate([np.searchsorted(time, self.start), np.searchsorted(time, last)])
        nbytes = np.concatenate([self.size, self.size]).astype(np.float64)
        zeros = np.zeros(time.size)
        return _merge_accesses(time, zeros, zeros, op, np.concatenate([idx, idx]), nbytes, self.n)


def live_profile(
    start: np.ndarray, end: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(times, live)``: total ``size`` of the intervals live on ``[times[i], times[i+1])``."""
    times = np.unique(np.concatenate([start, end]))
    delta = np.zeros(times.size, np.asarray(size).dtype)
    np.add.at(delta, np.searchsorted(times, start), size)
    np.add.at(delta, np.searchsorted(times, end), -np.asarray(size))
    return times, np.cumsum(delta)


def _first_bad(ids: np.ndarray, start: np.ndarray, end: np.ndarray, size: np.ndarray) -> str | None:
    """The first problem with these columns, as a sentence, or None."""
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if dup.size:
        return f"duplicate buffer id {int(ids[order][dup[0]])}"
    for mask, why in (
        (size < 0, "negative size"),
        (size == 0, "zero size (nothing to place)"),
        (end <= start, "empty lifetime (end <= start)"),
        (start < 0, "negative start time"),
    ):
        if np.any(mask):
            i = int(np.flatnonzero(mask)[0])
            return (
                f"buffer {int(ids[i])}: {why}: start {int(start[i])}, end {int(end[i])}, "
                f"size {int(size[i])}"
            )
    return None


def _merge_accesses(
    time: ArrayLike,
    compute: ArrayLike,
    fixed: ArrayLike,
    op: ArrayLike,
    buf: ArrayLike,
    nbytes: ArrayLike,
    n_buffers: int,
    names: tuple[str, ...] | None = None,
) -> OpTable:
    """An OpTable with repeated (op, buffer) accesses summed into one."""
    key = np.asarray(op, np.int64) * n_buffers + np.asarray(buf, np.int64)
    uniq, inverse = np.unique(key, return_inverse=True)
    total = np.zeros(uniq.size)
    np.add.at(total, inverse, nbytes)
    return OpTable(time, compute, fixed, uniq // n_buffers, uniq % n_buffers, total, names)


# --- CSV: MiniMalloc / idealloc ---------------------------------------------------------------

# Column names as MiniMalloc's reader (src/converter.cc, FromCsv) accepts them: its old format
# writes ``buffer``/``buffer_id``, ``start``/``begin`` and ``end``, the last one inclusive.
_CSV_ALIASES = {"buffer": "id", "buffer_id": "id", "start": "lower", "begin": "lower"}


def read_buffer_csv(
    path: str | Path, capacity: int | None = None, name: str | None = None
) -> BufferSet:
    """Read a buffer file as MiniMalloc and idealloc write it: a header naming ``id``,
    ``lower``, ``upper`` (exclusive) and ``size``, one buffer a row.

    Columns follow MiniMalloc's reader: ``buffer`` or ``buffer_id`` for ``id``, ``start`` or
    ``begin`` for ``lower``, and ``end``, an *inclusive* last step (``upper = end + 1``), for
    ``upper``. Ids are labels: ``b1`` or ``17`` alike; when every id is an integer the set keeps
    them as its ``ids``, otherwise buffers are numbered in file order and the ids become
    ``labels``. MiniMalloc's ``offset`` (a solution) and ``hint`` columns are ignored; an
    ``alignment`` other than 1 or non-empty ``gaps`` is refused (placements here are byte-granular
    over whole lifetimes). ``capacity`` defaults to the number in a ``NAME.CAPACITY.csv`` name.

    Raises:
        WorkloadError: ``FILE:LINE: reason`` for a missing column, a malformed or out-of-range
            number, a duplicate id, a non-positive size or an empty lifetime; ``FILE: reason``
            for a name whose capacity part is not a positive integer (``NAME.-5.csv``).
    """
    path = Path(path)
    texts: list[str] = []
    rows: list[tuple[int, int, int]] = []
    seen: dict[str, int] = {}
    for line, row in csv_rows(path, ("id", "lower", "size"), _CSV_ALIASES):
        kw = {"path": path, "line": line}
        if "upper" in row:
            upper = parse_number(row["upper"], int, field="upper", **kw)
        elif "end" in row:
            upper = parse_number(row["end"], int, field="end", **kw) + 1
        else:
            raise WorkloadError("missing column upper (or end, inclusive)", path, 1)
        bid = row["id"]
        if not bid:
            raise WorkloadError("id is missing", path, line)
        lower = parse_number(row["lower"], int, field="lower", minimum=0, **kw)
        size = parse_number(row["size"], int, field="size", **kw)
        key = _id_key(bid)
        if key in seen:
            raise WorkloadError(
                f"duplicate buffer id {bid} (first on line {seen[key]})", path, line
            )
        if size < 0:
            raise WorkloadError(f"buffer {bid}: negative size {size}", path, line)
        if size == 0:
            raise WorkloadError(f"buffer {bid}: zero size (nothing to place)", path, line)
        if upper <= lower:
            raise WorkloadError(
                f"buffer {bid}: empty lifetime [lower {lower}, upper {upper}) (upper must exceed "
                "lower; lifetimes are half-open)",
                path,
                line,
            )
        if row.get("alignment", "1") not in ("", "1"):
            raise WorkloadError(
                f"buffer {bid}: alignment {row['alignment']} is not supported (offsets here are "
                "byte-granular)",
                path,
                line,
            )
        if row.get("gaps", ""):
            raise WorkloadError(
                f"buffer {bid}: gaps {row['gaps']!r} are not supported (a buffer occupies its "
                "whole lifetime)",
                path,
                line,
            )
        seen[key] = line
        texts.append(bid)
        rows.append((lower, upper, size))
    if not rows:
        raise WorkloadError("no buffers (header only)", path)
    # offsets and live bytes are int64 sums of sizes: keep every sum representable
    if max(r[1] for r in rows) >= 2**62 or sum(r[2] for r in rows) >= 2**62:
        raise WorkloadError("times or total size beyond 2**62: offsets would overflow", path)
    if capacity is None:
        capacity = _name_capacity(path)
    keys = [_id_key(t) for t in texts]
    numeric = all(isinstance(k, int) for k in keys)
    cols = np.array(rows, dtype=np.int64).T
    return BufferSet(
        name or path.stem.split(".")[0],
        np.array(keys if numeric else range(len(keys)), dtype=np.int64),
        cols[0],
        cols[1],
        cols[2],
        capacity=capacity,
        labels=None if numeric else tuple(texts),
        source=str(path),
    )


# The capacity part of ``NAME.CAPACITY.csv``: the dot-separated parts before the extension
# that spell a number (``-5``, ``1.5``, ``.5``, ``1e6``, ``64k``); a part that does not
# (``v2``, a date ``2023-01-05``) is a word of the name, and the file carries no capacity.
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?[a-zA-Z]{0,3}")


def _name_capacity(path: Path) -> int | None:
    """The ``CAPACITY`` of a ``NAME.CAPACITY.csv`` file name, ``None`` for a name without one.

    The capacity part is the longest run of dot-separated parts before the extension that
    spells a number (`_NUMBER`; so ``NAME.1.5.csv`` carries ``1.5``, not ``5``); it must be a
    positive integer in decimal digits.

    Raises:
        WorkloadError: ``FILE: reason`` for a capacity part that is not a positive integer.
    """
    parts = path.name.split(".")[1:-1]  # the name's first part is NAME, its last the extension
    text = next((t for i in range(len(parts)) if _NUMBER.fullmatch(t := ".".join(parts[i:]))), None)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise WorkloadError(
            f"capacity {text!r} in the file name (NAME.CAPACITY.csv) is not a positive integer",
            path,
        )
    if int(text) >= 2**63:
        raise WorkloadError(
            f"capacity {text} in the file name is out of the 64-bit integer range", path
        )
    return int(text)


def _id_key(text: str) -> int | str:
    """A buffer id as an int64 when it reads as one (``7``, ``7.0``), else the label itself."""
    try:
        value = parse_number(text, int, field="id", path=None, line=None)
    except WorkloadError:
        return text
    return value


def write_buffer_csv(buffers: BufferSet, path: str | Path) -> None:
    """Write the set in the ``id,lower,upper,size`` format MiniMalloc and idealloc read."""
    lines = ["id,lower,upper,size"] + [
        f"{i},{s},{e},{z}"
        for i, s, e, z in zip(
            buffers.ids.tolist(),
            buffers.start.tolist(),
            buffers.end.tolist(),
            buffers.size.tolist(),
            strict=True,
        )
    ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


MINIMALLOC_INSTANCES = ("A", "B", "C", "D", "E", "F")


def benchmark_path(family: str, name: str) -> Path:
    """Path of a shipped-elsewhere benchmark: ``minimalloc`` A-F or ``idealloc`` resnet50."""
    root = shared_data_dir() / "memory"
    if family == "minimalloc":
        if name not in MINIMALLOC_INSTANCES:
            raise WorkloadError(f"unknown MiniMalloc instance {name!r}; known: A-F")
        path = root / "minimalloc" / f"{name}.1048576.csv"
    elif family == "idealloc":
        path = root / "idealloc" / f"{name}.csv"
    else:
        raise WorkloadError(f"unknown benchmark family {family!r}: minimalloc or idealloc")
    if not path.is_file():
        raise WorkloadError(
            f"{family} instance {name!r} not found at {path} (reference data lives in "
            "../shared/data or $SCHEDGYM_DATA)"
        )
    return path


# --- traced models ----------------------------------------------------------------------------


@functools.cache
def _trace(model: str):
    from schedgym.workloads.tracing import trace_model  # torch is imported only when needed

    return tuple(trace_model(model))


def model_buffer_set(
    model: str, op_seconds: Callable[[object], float], dtype_bytes: int = 2
) -> BufferSet:
    """Activation buffers of a zoo model with their lifetimes in op steps (module docstring).

    ``op_seconds(traced_op)`` prices one op's compute; ``dtype_bytes`` is the element size the
    buffers are stored in (the cost table's precision).
    """
    ops = _trace(model)
    scale = dtype_bytes / TRACE_ELEMENT_BYTES
    index: dict[str, int] = {}  # op name -> buffer index
    defined: list[int] = []
    sizes: list[int] = []
    for j, op in enumerate(ops):
        if op.output_bytes > 0:
            index[op.name] = len(defined)
            defined.append(j)
            sizes.append(max(1, round(op.output_bytes * scale)))
    m, n = len(ops), len(defined)
    last = np.array(defined, np.int64)
    used = np.zeros(n, bool)
    acc_op, acc_buf, acc_bytes = [], [], []
    fixed = np.zeros(m)
    for j, op in enumerate(ops):
        fixed[j] = op.weight_bytes * scale
        for src, nbytes in zip(op.inputs, op.input_bytes, strict=True):
            b = index.get(src)
            if b is None:  # a model input ("input:<i>") or a tensor with no bytes
                fixed[j] += nbytes * scale
                continue
            acc_op.append(j)
            acc_buf.append(b)
            acc_bytes.append(nbytes * scale)
            last[b] = max(last[b], j)
            used[b] = True
        if op.name in index:
            acc_op.append(j)
            acc_buf.append(index[op.name])
            acc_bytes.append(sizes[index[op.name]])
    end = np.where(used, last + 1, m)  # an output nobody reads is the model's result: kept
    table = _merge_accesses(
        np.arange(m),
        [op_seconds(op) for op in ops],
        fixed,
        acc_op,
        acc_buf,
        acc_bytes,
        n,
        tuple(op.name for op in ops),
    )
    return BufferSet(
        model,
        np.arange(n),
        defined,
        end,
        sizes,
        ops=table,
        labels=tuple(ops[j].name for j in defined),
        source=f"traced:{model}",
    )


# --- random sets ------------------------------------------------------------------------------

# H100 SXM5 HBM3 datasheet bandwidth: the reference for turning compute intensity into seconds.
REFERENCE_BANDWIDTH = 3.35e12


def random_buffer_set(
    n_buffers: int = 64,
    seed: SeedLike = None,
    *,
    n_steps: int | None = None,
    mean_live: float = 8.0,
    size_spread: float = 64.0,
    peak_bytes: int = 128 * 2**20,
    extra_reads: float = 1.0,
    intensity: tuple[float, float] = (0.25, 4.0),
    bandwidth: float = REFERENCE_BANDWIDTH,
    name: str | None = None,
) -> BufferSet:
    """A seeded random buffer set with one op per time step.

    * overlap: lifetimes have mean length ``mean_live * n_steps / n_buffers`` (exponential, at
      least one step), so about ``mean_live`` buffers are live at a time;
    * sizes: log-uniform over a ``size_spread`` : 1 range, scaled so the peak of live bytes is
      ``peak_bytes`` (default 128 MiB, about 2.5 times the default 50 MiB fast tier);
    * accesses: each buffer is written at its first step and read at its last, plus a Poisson
      number (mean ``extra_reads``) of reads at uniform steps of its lifetime, its size each time;
    * compute: op ``j`` needs ``k_j * bytes_j / bandwidth`` seconds, ``k_j`` log-uniform over
      ``intensity``, so with the defaults about half the ops are memory-bound when all is slow.
    """
    if n_buffers < 1 or mean_live <= 0 or size_spread < 1 or peak_bytes < n_buffers:
        raise WorkloadError(
            f"random buffer set: need n_buffers >= 1, mean_live > 0, size_spread >= 1 and "
            f"peak_bytes >= n_buffers (got {n_buffers}, {mean_live}, {size_spread}, {peak_bytes})"
        )
    rng = as_generator(seed)
    steps = n_steps or n_buffers
    mean_len = max(1.0, mean_live * steps / n_buffers)
    length = np.minimum(1 + np.rint(rng.exponential(mean_len - 1.0, n_buffers)), steps)
    length = length.astype(np.int64)
    start = rng.integers(0, steps - length + 1)
    end = start + length
    raw = np.exp(rng.uniform(0.0, np.log(size_spread), n_buffers))
    size = np.maximum(1, np.rint(raw * peak_bytes / live_profile(start, end, raw)[1].max()))
    size = size.astype(np.int64)

    idx = np.arange(n_buffers)
    n_extra = rng.poisson(extra_reads, n_buffers)
    extra_buf = np.repeat(idx, n_extra)
    extra_op = start[extra_buf] + (rng.random(extra_buf.size) * length[extra_buf]).astype(np.int64)
    op = np.concatenate([start, end - 1, extra_op])
    buf = np.concatenate([idx, idx, extra_buf])
    nbytes = size[buf].astype(np.float64)
    per_op = np.bincount(op, weights=nbytes, minlength=steps)
    k = np.exp(rng.uniform(np.log(intensity[0]), np.log(intensity[1]), steps))
    ops = _merge_accesses(
        np.arange(steps), k * per_op / bandwidth, np.zeros(steps), op, buf, nbytes, n_buffers
    )
    return BufferSet(
        name or f"random:{n_buffers}", idx, start, end, size, ops=ops, source="generated"
    )


_RANDOM_CASE = re.compile(r"random(?::(\d+))?(?::(\d+))?")


def parse_random_case(case: str, rng: SeedLike = None) -> BufferSet:
    """``random``, ``random:N`` or ``random:N:SEED``; a missing seed is drawn from ``rng`` and
    kept in the set's name, so the name alone regenerates the set."""
    match = _RANDOM_CASE.fullmatch(case)
    if match is None:
        raise WorkloadError(f"bad random case {case!r}: use random[:N_BUFFERS[:SEED]]")
    n = int(match[1]) if match[1] else 64
    seed = int(match[2]) if match[2] else int(as_generator(rng).integers(2**31))
    return random_buffer_set(n, seed, name=f"random:{n}:{seed}")
