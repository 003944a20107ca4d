"""LLM serving workloads: request traces (arrival, prompt tokens, output tokens, SLO class).

`ServingTrace` is the workload of the batching environment. It comes from a trace file or from a
seeded generator:

* loaders for the Azure LLM inference trace format (``TIMESTAMP,ContextTokens,GeneratedTokens``,
  the Splitwise paper's 2023 traces), the BurstGPT format (``Timestamp,Model,Request tokens,
  Response tokens,Total tokens,Log Type``) and vidur's processed-trace format (``arrived_at,
  num_prefill_tokens,num_decode_tokens``). A malformed row (missing or non-positive token counts,
  a timestamp earlier than the row before) is refused with the file and line, or dropped only
  when the caller passes ``drop_bad=True``, and then the count is printed;
* `synthetic`: Poisson or bursty (Gamma inter-arrival times with CV > 1) arrivals and prompt /
  output lengths drawn from distributions calibrated to the published statistics of the Azure
  2023 traces (`PUBLISHED`), at a rate in requests/s (the environment turns a load given as a
  fraction of the replica's measured capacity into such a rate).

SLO classes (a TTFT and a TBT target each) are part of the workload: every request carries a class
index into ``slo_classes``. Trace files carry none, so `assign_slo` draws them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.special import ndtri

from schedgym.errors import WorkloadError
from schedgym.randomness import SeedLike, as_generator
from schedgym.workloads.base import csv_rows, open_text, parse_number


@dataclass(frozen=True)
class SLOClass:
    """A service class: time-to-first-token and time-between-tokens targets (seconds)."""

    name: str
    ttft_s: float
    tbt_s: float

    def __post_init__(self) -> None:
        if not (self.ttft_s > 0 and self.tbt_s > 0 and math.isfinite(self.ttft_s + self.tbt_s)):
            raise WorkloadError(f"SLO class {self.name!r}: targets must be positive and finite")


# A stand-in when nobody names classes: loose enough that only a stalled engine misses it.
BEST_EFFORT = SLOClass("best-effort", ttft_s=60.0, tbt_s=5.0)


@dataclass(frozen=True, eq=False)
class ServingTrace:
    """Requests in arrival order; arrays are read-only copies, validated at construction."""

    arrival_s: np.ndarray  # float64 seconds, non-decreasing, >= 0
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    slo_class: np.ndarray  # int64 index into slo_classes
    slo_classes: tuple[SLOClass, ...] = (BEST_EFFORT,)
    name: str = "trace"
    source: str = ""

    def __post_init__(self) -> None:
        arrays = {"arrival_s": np.array(self.arrival_s, dtype=np.float64)}
        for key in ("prompt_tokens", "output_tokens", "slo_class"):
            raw = np.asarray(getattr(self, key))
            if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
                raise WorkloadError(f"{key} must be whole numbers", self.name)
            arrays[key] = np.array(raw, dtype=np.int64)
        n = arrays["arrival_s"].size
        for key, a in arrays.items():
            if a.ndim != 1 or a.size != n:
                raise WorkloadError(f"{key} must be 1-D with {n} entries", self.name)
            a.setflags(write=False)
            object.__setattr__(self, key, a)
        if n == 0:
            raise WorkloadError("a trace needs at least one request", self.name)
        t = self.arrival_s
        checks = (
            (~np.isfinite(t) | (t < 0), "arrival time must be finite and >= 0"),
            (np.r_[False, np.diff(t) < 0], "arrival times must be non-decreasing"),
            (self.prompt_tokens < 1, "prompt tokens must be >= 1"),
            (self.output_tokens < 1, "output tokens must be >= 1"),
            (
                (self.slo_class < 0) | (self.slo_class >= len(self.slo_classes)),
                f"SLO class index must be in 0..{len(self.slo_classes) - 1}",
            ),
        )
        for bad, reason in checks:
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise WorkloadError(f"request {i}: {reason}", self.name)
        object.__setattr__(self, "slo_classes", tuple(self.slo_classes))

    @property
    def n_requests(self) -> int:
        return int(self.arrival_s.size)

    @property
    def span_s(self) -> float:
        """Time from the first arrival to the last."""
        return float(self.arrival_s[-1] - self.arrival_s[0])

    def head(self, n: int) -> ServingTrace:
        """The first ``n`` requests."""
        if n < 1:
            raise WorkloadError(f"head({n}): need at least one request", self.name)
        return self._replace(slice(0, n), name=f"{self.name}[:{n}]")

    def at_rate(self, rate: float) -> ServingTrace:
        """The same requests with arrival times scaled so the mean rate is ``rate`` req/s."""
        if not rate > 0 or self.n_requests < 2 or self.span_s <= 0:
            raise WorkloadError(f"cannot rescale to {rate} requests/s", self.name)
        scale = (self.n_requests - 1) / self.span_s / rate
        return self._replace(
            slice(None),
            arrival_s=(self.arrival_s - self.arrival_s[0]) * scale,
            name=f"{self.name}@{rate:g}/s",
        )

    def _replace(self, rows: slice | np.ndarray, **changes) -> ServingTrace:
        fields = {
            "arrival_s": self.arrival_s[rows],
            "prompt_tokens": self.prompt_tokens[rows],
            "output_tokens": self.output_tokens[rows],
            "slo_class": self.slo_class[rows],
            "slo_classes": self.slo_classes,
            "name": self.name,
            "source": self.source,
        }
        fields.update(changes)
        return ServingTrace(**fields)


def assign_slo(
    trace: ServingTrace,
    classes: Sequence[SLOClass],
    mix: Sequence[float] | None = None,
    seed: SeedLike = 0,
) -> ServingTrace:
    """A copy of ``trace`` whose requests draw their SLO class from ``classes`` with
    probabilities ``mix`` (uniform when omitted)."""
    classes = tuple(classes)
    if not classes:
        raise WorkloadError("assign_slo: no SLO classes given", trace.name)
    try:
        p = np.full(len(classes), 1.0 / len(classes)) if mix is None else np.asarray(mix, float)
    except (TypeError, ValueError):
        p = np.array([np.nan])
    if p.shape != (len(classes),) or not np.all(p >= 0) or not math.isclose(p.sum(), 1.0):
        raise WorkloadError(
            f"assign_slo: mix {mix!r} must be {len(classes)} probabilities summing to 1",
            trace.name,
        )
    drawn = as_generator(seed).choice(len(classes), size=trace.n_requests, p=p)
    return trace._replace(slice(None), slo_class=drawn, slo_classes=classes)


# --- trace files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceFormat:
    name: str
    time: str  # column names after aliasing
    prompt: str
    output: str
    parse_time: Callable[[str, str, Path, int], float]
    # BurstGPT marks a failed request by 0 response tokens (its README: BurstGPT_1.csv "with
    # some failure that Response tokens are 0s"): such rows are no request to serve.
    zero_output_is_failure: bool = False


def _seconds(text: str, field_name: str, path: Path, line: int) -> float:
    return parse_number(text, float, field=field_name, path=path, line=line)


def _seconds_or_datetime(text: str, field_name: str, path: Path, line: int) -> float:
    """Azure traces write ``2023-11-16 18:15:46.6805900``; plain seconds are accepted too."""
    try:
        return float(text)
    except ValueError:
        pass
    if not text:
        raise WorkloadError(f"{field_name} is missing", path, line)
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise WorkloadError(
            f"{field_name} is neither seconds nor a date-time: {text!r}", path, line
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


FORMATS: dict[str, TraceFormat] = {
    f.name: f
    for f in (
        TraceFormat("azure", "TIMESTAMP", "ContextTokens", "GeneratedTokens", _seconds_or_datetime),
        TraceFormat(
            "burstgpt",
            "Timestamp",
            "Request tokens",
            "Response tokens",
            _seconds,
            zero_output_is_failure=True,
        ),
        TraceFormat("vidur", "arrived_at", "num_prefill_tokens", "num_decode_tokens", _seconds),
    )
}


def detect_format(path: str | Path) -> str:
    """The trace format whose columns the file's header names."""
    with open_text(path) as fh:
        try:
            header = {h.strip() for h in fh.readline().split(",")}
        except UnicodeDecodeError as exc:
            raise WorkloadError(f"not UTF-8 text: {exc.reason}", path, 1) from None
    for fmt in FORMATS.values():
        if {fmt.time, fmt.prompt, fmt.output} <= header:
            return fmt.name
    known = "; ".join(f"{f.name}: {f.time},{f.prompt},{f.output}" for f in FORMATS.values())
    raise WorkloadError(f"unknown trace format (header {sorted(header)}); known: {known}", path, 1)


def load_trace(
    path: str | Path,
    fmt: str | None = None,
    *,
    drop_bad: bool = False,
    slo_classes: Sequence[SLOClass] = (BEST_EFFORT,),
) -> ServingTrace:
    """Load a trace file (format detected from its header unless ``fmt`` names it).

    Arrival times are shifted so the first request arrives at 0. A malformed row raises
    `WorkloadError` naming the file and line; with ``drop_bad=True`` such rows are skipped and
    their count printed to stderr. BurstGPT's failed requests (0 response tokens, as its
    ``BurstGPT_1.csv`` holds them) are left out, counted on stderr and in ``source``. Every
    request gets class 0 of ``slo_classes``.
    """
    path = Path(path)
    spec = FORMATS.get(fmt or detect_format(path))
    if spec is None:
        raise WorkloadError(f"unknown trace format {fmt!r}; known: {', '.join(FORMATS)}", path)
    times: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    dropped: dict[str, int] = {}
    failed = 0
    for line, row in csv_rows(path, (spec.time, spec.prompt, spec.output)):
        if spec.zero_output_is_failure and row[spec.output] == "0":
            failed += 1
            continue
        try:
            t = spec.parse_time(row[spec.time], spec.time, path, line)
            p = parse_number(
                row[spec.prompt], int, field=spec.prompt, path=path, line=line, minimum=1
            )
            o = parse_number(
                row[spec.output], int, field=spec.output, path=path, line=line, minimum=1
            )
            if not math.isfinite(t):
                raise WorkloadError(f"{spec.time} is not finite: {row[spec.time]!r}", path, line)
            if times and t < times[-1]:
                raise WorkloadError(
                    f"{spec.time} {row[spec.time]} is earlier than the previous row's "
                    "(timestamps must be non-decreasing)",
                    path,
                    line,
                )
        except WorkloadError as exc:
            if not drop_bad:
                raise
            dropped[exc.reason] = dropped.get(exc.reason, 0) + 1
            continue
        times.append(t)
        prompts.append(p)
        outputs.append(o)
    if dropped:
        total = sum(dropped.values())
        print(f"{path}: dropped {total} malformed row(s) (drop_bad=True)", file=sys.stderr)
    if failed:
        print(f"{path}: left out {failed} failed request(s) ({spec.output} 0)", file=sys.stderr)
    if not times:
        raise WorkloadError("no usable request rows", path)
    arrival = np.asarray(times) - times[0]
    return ServingTrace(
        arrival,
        prompts,
        outputs,
        np.zeros(len(times), np.int64),
        tuple(slo_classes),
        name=path.stem,
        source=f"{spec.name} trace {path}"
        + (f" ({failed} failed requests left out)" if failed else ""),
    )


# --- synthetic workloads ---------------------------------------------------------------------

# Published statistics of the Azure LLM inference traces 2023 (Patel et al., "Splitwise",
# ISCA 2024, and the AzurePublicDataset notes); tokens per request.
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "conv": {
        "prompt": {"mean": 1155, "p50": 1020, "p90": 2734, "p99": 4142},
        "output": {"mean": 211, "p50": 129, "p90": 424, "p99": 601},
    },
    "code": {
        "prompt": {"mean": 2048, "p50": 1469},
        "output": {"mean": 28, "p50": 13},
    },
}


@dataclass(frozen=True)
class QuantileLengths:
    """A length distribution given by its quantile function, piecewise linear through knots
    ``(u, tokens)``; sampling is inverse-CDF."""

    u: tuple[float, ...]
    tokens: tuple[float, ...]

    def quantile(self, u: np.ndarray) -> np.ndarray:
        return np.interp(u, self.u, self.tokens)

    def mean(self) -> float:
        u, v = np.asarray(self.u), np.asarray(self.tokens)
        return float(np.sum(np.diff(u) * (v[1:] + v[:-1]) / 2.0))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.maximum(np.rint(self.quantile(rng.random(n))), 1).astype(np.int64)

    @classmethod
    def calibrated(
        cls, quantiles: dict[float, float], mean: float, lo: float, hi: float, free_u: float
    ) -> QuantileLengths:
        """Knots at the published quantiles, ``lo`` at u=0 and ``hi`` at u=1, plus one knot at
        ``free_u`` whose value is solved so the distribution's mean is ``mean``."""
        base = {0.0: lo, 1.0: hi, **quantiles}
        u = sorted({*base, free_u})

        # the mean is linear in the free knot's value: solve from two evaluations
        def mean_with(x: float) -> float:
            return cls(tuple(u), tuple(base.get(k, x) for k in u)).mean()

        m0, m1 = mean_with(0.0), mean_with(1.0)
        x = (mean - m0) / (m1 - m0)
        out = cls(tuple(u), tuple(base.get(k, x) for k in u))
        if np.any(np.diff(out.tokens) < 0):
            raise ValueError(f"calibration for mean {mean} gives a non-monotone quantile {out}")
        return out


@dataclass(frozen=True)
class LogNormalLengths:
    """A log-normal with the given median and mean (sigma^2 = 2 ln(mean / median)), clipped to
    ``[1, hi]``; for traces whose published statistics are only a mean and a median."""

    median: float
    mean_: float
    hi: float

    def quantile(self, u: np.ndarray) -> np.ndarray:
        sigma = math.sqrt(2.0 * math.log(self.mean_ / self.median))
        return np.clip(self.median * np.exp(sigma * ndtri(u)), 1, self.hi)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.rint(self.quantile(rng.random(n))).astype(np.int64)


def _conv(kind: str, lo: float, hi: float) -> QuantileLengths:
    s = PUBLISHED["conv"][kind]
    # The free knot sits at u=0.8, where the real trace's lengths still cluster near the median.
    return QuantileLengths.calibrated(
        {0.5: s["p50"], 0.9: s["p90"], 0.99: s["p99"]}, s["mean"], lo, hi, free_u=0.8
    )


# Lengths per workload family: (prompt, output). Tails: conversation prompts run to 8k tokens
# and outputs to 1,000 (the trace's maximum); code prompts are cut at 16k.
FAMILIES: dict[str, tuple[QuantileLengths | LogNormalLengths, ...]] = {
    "conv": (_conv("prompt", 2, 8192), _conv("output", 2, 1000)),
    "code": (
        LogNormalLengths(
            PUBLISHED["code"]["prompt"]["p50"], PUBLISHED["code"]["prompt"]["mean"], 16384
        ),
        LogNormalLengths(
            PUBLISHED["code"]["output"]["p50"], PUBLISHED["code"]["output"]["mean"], 2048
        ),
    ),
}


def interarrival_times(
    rng: np.random.Generator, n: int, rate: float, process: str = "poisson", cv: float = 1.0
) -> np.ndarray:
    """``n`` gaps with mean ``1/rate``: exponential (``poisson``) or Gamma with coefficient of
    variation ``cv`` (``gamma``; cv > 1 is burstier than Poisson)."""
    if not rate > 0:
        raise WorkloadError(f"arrival rate must be > 0 requests/s, got {rate}")
    if process == "poisson":
        return rng.exponential(1.0 / rate, n)
    if process == "gamma":
        if not cv > 0:
            raise WorkloadError(f"gamma arrivals need cv > 0, got {cv}")
        shape = 1.0 / cv**2
        return rng.gamma(shape, 1.0 / (rate * shape), n)
    raise WorkloadError(f"unknown arrival process {process!r}; known: poisson, gamma")


def synthetic(
    n: int,
    rate: float,
    *,
    family: str = "conv",
    process: str = "poisson",
    cv: float = 1.0,
    slo_classes: Sequence[SLOClass] = (BEST_EFFORT,),
    slo_mix: Sequence[float] | None = None,
    seed: SeedLike = 0,
) -> ServingTrace:
    """``n`` requests arriving at ``rate`` requests/s (first at 0) with lengths of ``family``
    (``conv`` or ``code``, calibrated to the Azure 2023 traces) and SLO classes drawn by
    ``slo_mix``."""
    if n < 1:
        raise WorkloadError(f"synthetic workload needs n >= 1, got {n}")
    if family not in FAMILIES:
        raise WorkloadError(f"unknown workload family {family!r}; known: {', '.join(FAMILIES)}")
    rng = as_generator(seed)
    gaps = interarrival_times(rng, n, rate, process, cv)
    arrival = np.concatenate([[0.0], np.cumsum(gaps[1:])])
    prompt_dist, output_dist = FAMILIES[family]
    trace = ServingTrace(
        arrival,
        prompt_dist.sample(rng, n),
        output_dist.sample(rng, n),
        np.zeros(n, np.int64),
        name=f"{family}-{process}",
        source=f"synthetic {family}, {process} at {rate:g} req/s",
    )
    return assign_slo(trace, slo_classes, slo_mix, rng)
