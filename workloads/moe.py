"""Expert routing traces of mixture-of-experts models: the dataclass, its loaders, its statistics,
and a generator calibrated to published routing statistics.

A `RoutingTrace` holds, for every decoded token and every MoE layer, the ids of the experts the
router picked, best first (``experts[token, layer, :k]``), and where each sequence starts.

Sources of traces:

1. **Recorded**: ``scripts/train_tiny_moe.py`` trains a small MoE transformer on the Python
   standard library's sources and on its bundled documentation topics, and records routing on
   held-out text of both domains (``workloads/data/tinymoe/*.npz``, loaded by `tinymoe_trace`).
2. **Files**: JSONL, one ``{"layer": l, "token_idx": t, "experts": [e0, e1, ...]}`` object per
   line (an optional ``"seq"`` key marks sequences), or numpy ``tokens x layers x k`` arrays
   (``.npy``; ``.npz`` with an ``experts`` array and optional ``seq_starts``, ``n_experts``,
   ``calibration``). The expert count is declared (a JSONL header line ``{"n_experts": E}``,
   the ``.npz``'s ``n_experts``, or the model), never taken from the largest id seen. A bad
   file is refused whole with its name, line (JSONL) and the fault.
3. **Generated**: `generate_routing` draws traces whose consecutive-token repetition follows the
   Mixtral paper's Table 5 (Jiang et al., 2024) and whose expert skew follows the figures given
   for OLMoE (hottest expert 4.5-7.8x its uniform share, top 8 of 64 taking 27-51 % of
   selections), with routing correlated across layers and per-sequence topics (domains).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np

from schedgym.errors import WorkloadError
from schedgym.randomness import SeedLike, as_generator
from schedgym.workloads.base import open_text

TINYMOE_DOMAINS = ("code", "docs")


@dataclass(frozen=True)
class RoutingTrace:
    """Per-token routing of a MoE model: ``experts[token, layer, rank]``, best choice first.

    ``seq_starts`` lists the first token of each sequence (``seq_starts[0] == 0``): statistics
    and per-sequence policies never link the last token of one sequence to the next one.
    ``calibration`` optionally holds routing of *other* text by the same model (same layers,
    experts and k), what an offline profiling run would see; static policies read it.
    """

    experts: np.ndarray
    n_experts: int
    seq_starts: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    name: str = "trace"
    source: str = ""
    calibration: np.ndarray | None = None

    def __post_init__(self) -> None:
        experts = _check_routing(np.asarray(self.experts), self.n_experts, self.name)
        starts = np.asarray(self.seq_starts, dtype=np.int64)
        if starts.ndim != 1 or starts.size == 0 or starts[0] != 0:
            raise WorkloadError("seq_starts must be a non-empty list starting at 0", self.name)
        if np.any(np.diff(starts) <= 0) or starts[-1] >= experts.shape[0]:
            raise WorkloadError(
                f"seq_starts must increase strictly and stay below {experts.shape[0]} tokens",
                self.name,
            )
        calibration = self.calibration
        if calibration is not None:
            calibration = _check_routing(
                np.asarray(calibration), self.n_experts, f"{self.name} (calibration)"
            )
            if calibration.shape[1:] != experts.shape[1:]:
                raise WorkloadError(
                    f"calibration routing is layers x k = {calibration.shape[1:]}, the trace "
                    f"{experts.shape[1:]}",
                    self.name,
                )
            calibration.setflags(write=False)
        experts.setflags(write=False)
        starts.setflags(write=False)
        object.__setattr__(self, "experts", experts)
        object.__setattr__(self, "seq_starts", starts)
        object.__setattr__(self, "calibration", calibration)

    @property
    def n_tokens(self) -> int:
        return int(self.experts.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.experts.shape[1])

    @property
    def top_k(self) -> int:
        return int(self.experts.shape[2])

    @property
    def n_seqs(self) -> int:
        return int(self.seq_starts.size)

    def seq_ends(self) -> np.ndarray:
        return np.append(self.seq_starts[1:], self.n_tokens)

    def seq_ids(self) -> np.ndarray:
        """Sequence index of every token."""
        ids = np.zeros(self.n_tokens, np.int64)
        ids[self.seq_starts[1:]] = 1
        return np.cumsum(ids)

    def window(self, first_seq: int, n_tokens: int) -> RoutingTrace:
        """``n_tokens`` tokens from the start of sequence ``first_seq``, wrapping to the start of
        the trace when the end is reached (sequence boundaries are kept).

        A window holds each token at most once: ``n_tokens`` above the trace's own tokens is
        refused (``WorkloadError``), never filled by replaying the trace."""
        if n_tokens < 1:
            raise WorkloadError(f"a window needs at least one token, asked {n_tokens}", self.name)
        if n_tokens > self.n_tokens:
            raise WorkloadError(
                f"tokens must be at most the {self.n_tokens} tokens the trace records, got "
                f"{n_tokens}",
                self.name,
            )
        first_seq %= self.n_seqs
        order = np.r_[first_seq : self.n_seqs, 0:first_seq]
        starts, ends = self.seq_starts[order], self.seq_ends()[order]
        idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
        new_starts = np.concatenate([[0], np.cumsum(ends - starts)[:-1]])
        keep = new_starts < n_tokens
        return replace(
            self,
            experts=self.experts[idx[:n_tokens]],
            seq_starts=new_starts[keep],
            name=f"{self.name}[seq {first_seq}, {n_tokens} tokens]",
        )

    def activation_counts(self, calibration: bool = False) -> np.ndarray:
        """``counts[layer, expert]``: tokens that chose the expert (of the calibration routing
        when ``calibration``)."""
        routing = self.calibration if calibration else self.experts
        if routing is None:
            raise WorkloadError("trace has no calibration routing", self.name)
        counts = np.zeros((self.n_layers, self.n_experts), np.int64)
        layer = np.broadcast_to(np.arange(self.n_layers)[None, :, None], routing.shape)
        np.add.at(counts, (layer.ravel(), routing.ravel().astype(np.int64)), 1)
        return counts


def _check_routing(experts: np.ndarray, n_experts: int, where: str) -> np.ndarray:
    """Refuse routing arrays of the wrong shape, ids out of range, or repeated experts."""
    if not isinstance(n_experts, int | np.integer) or n_experts < 1:
        raise WorkloadError(f"n_experts must be a positive int, got {n_experts!r}", where)
    if experts.ndim != 3 or min(experts.shape) < 1:
        raise WorkloadError(
            f"routing must be tokens x layers x k with all sizes >= 1, got shape {experts.shape}",
            where,
        )
    if not np.issubdtype(experts.dtype, np.integer):
        raise WorkloadError(f"expert ids must be integers, got dtype {experts.dtype}", where)
    if experts.shape[2] > n_experts:
        raise WorkloadError(f"k = {experts.shape[2]} exceeds the {n_experts} experts", where)
    bad = np.argwhere((experts < 0) | (experts >= n_experts))
    if bad.size:
        t, layer, r = bad[0]
        raise WorkloadError(
            f"token {t}, layer {layer}: expert id {experts[t, layer, r]} out of range "
            f"0..{n_experts - 1}",
            where,
        )
    if experts.shape[2] > 1:
        ranked = np.sort(experts, axis=2)
        dup = np.argwhere(np.any(ranked[:, :, 1:] == ranked[:, :, :-1], axis=2))
        if dup.size:
            t, layer = dup[0]
            raise WorkloadError(
                f"token {t}, layer {layer}: expert chosen twice in {experts[t, layer].tolist()}",
                where,
            )
    dtype = np.int16 if n_experts <= np.iinfo(np.int16).max else np.int32
    return np.ascontiguousarray(experts, dtype=dtype)


# -- loaders ---------------------------------------------------------------------------------


def load_trace(
    path: str | Path,
    *,
    n_experts: int | None = None,
    top_k: int | None = None,
    layers: int | None = None,
) -> RoutingTrace:
    """Load a JSONL or numpy (``.npy``/``.npz``) routing trace, checking it against the model's
    ``n_experts``, ``top_k`` and ``layers`` where given."""
    p = Path(path)
    if p.suffix in (".jsonl", ".json"):
        return load_jsonl(p, n_experts=n_experts, top_k=top_k, layers=layers)
    if p.suffix in (".npy", ".npz"):
        return load_numpy(p, n_experts=n_experts, top_k=top_k, layers=layers)
    raise WorkloadError("unknown routing trace format (use .jsonl, .npy or .npz)", p)


def load_jsonl(
    path: str | Path,
    *,
    n_experts: int | None = None,
    top_k: int | None = None,
    layers: int | None = None,
) -> RoutingTrace:
    """One ``{"layer", "token_idx", "experts": [...]}`` object per line; an optional ``"seq"``
    names the sequence (tokens of one sequence are consecutive).

    The expert count is declared, never guessed from the ids seen (a trace may never route to
    some expert): by a header object on the first line, ``{"n_experts": E}`` (optionally with
    ``"top_k"`` and ``"n_layers"``), as `save_jsonl` writes, or by ``n_experts`` (the model's).

    Raises:
        WorkloadError: ``FILE:LINE: reason`` for bad JSON, a missing key, an id outside the
            declared ``0..n_experts - 1``, a header that contradicts the model; ``FILE: reason``
            when no expert count is declared or a token lacks a layer.
    """
    rows: list[tuple[int, int, int, list[int], int | None]] = []
    header_line = 0
    with open_text(path) as fh:
        try:
            lines = fh.read().splitlines()
        except UnicodeDecodeError as exc:
            raise WorkloadError(f"not UTF-8 text: {exc.reason}", path) from None
    for line_no, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise WorkloadError(f"not valid JSON: {why}", path, line_no) from None
        if not isinstance(obj, dict):
            raise WorkloadError("expected a JSON object", path, line_no)
        if not rows and not header_line and "token_idx" not in obj and "n_experts" in obj:
            header_line = line_no
            n_experts, top_k, layers = _jsonl_header(obj, n_experts, top_k, layers, path, line_no)
            continue
        missing = [k for k in ("layer", "token_idx", "experts") if k not in obj]
        if missing:
            raise WorkloadError(f"missing key(s) {', '.join(missing)}", path, line_no)
        layer, token = obj["layer"], obj["token_idx"]
        for key, value in (("layer", layer), ("token_idx", token)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise WorkloadError(f"{key} must be an int >= 0, got {value!r}", path, line_no)
        experts = obj["experts"]
        if (
            not isinstance(experts, list)
            or not experts
            or not all(isinstance(e, int) and not isinstance(e, bool) for e in experts)
        ):
            raise WorkloadError(
                f"experts must be a non-empty list of ints, got {experts!r}", path, line_no
            )
        k = top_k if top_k is not None else (len(rows[0][3]) if rows else len(experts))
        if len(experts) != k:
            raise WorkloadError(f"expected k = {k} experts, found {len(experts)}", path, line_no)
        if n_experts is not None and not all(0 <= e < n_experts for e in experts):
            raise WorkloadError(
                f"expert id out of range 0..{n_experts - 1} in {experts}", path, line_no
            )
        if len(set(experts)) != len(experts):
            raise WorkloadError(f"expert chosen twice in {experts}", path, line_no)
        seq = obj.get("seq")
        if seq is not None and (
            not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**62
        ):
            raise WorkloadError(f"seq must be an int in 0..2**62, got {seq!r}", path, line_no)
        rows.append((line_no, token, layer, experts, seq))
    if not rows:
        raise WorkloadError("no routing records", path)
    if n_experts is None:
        raise WorkloadError(_UNDECLARED, path)
    n_tokens = max(r[1] for r in rows) + 1
    n_layers = layers if layers is not None else max(r[2] for r in rows) + 1
    if n_tokens * n_layers > len(rows):  # a hole: found without allocating for a huge index
        have = {(r[1], r[2]) for r in rows}
        hole = next(
            (t, la) for t in range(n_tokens) for la in range(n_layers) if (t, la) not in have
        )
        _raise_hole(hole, n_layers, n_tokens * n_layers - len(have), path)
    k = len(rows[0][3])
    out = np.full((n_tokens, n_layers, k), -1, np.int64)
    seq_of = np.full(n_tokens, -1, np.int64)
    for line_no, token, layer, experts, seq in rows:
        if layer >= n_layers:
            raise WorkloadError(f"layer {layer} out of range 0..{n_layers - 1}", path, line_no)
        if out[token, layer, 0] >= 0:
            raise WorkloadError(f"token {token}, layer {layer} given twice", path, line_no)
        out[token, layer] = experts
        if seq is not None:
            if seq_of[token] >= 0 and seq_of[token] != seq:
                raise WorkloadError(f"token {token} is in two sequences", path, line_no)
            seq_of[token] = seq
    holes = np.argwhere(out[:, :, 0] < 0)
    if holes.size:
        _raise_hole(holes[0], n_layers, len(holes), path)
    if np.any(seq_of >= 0) and np.any(seq_of < 0):
        raise WorkloadError("either every line or none names its seq", path)
    starts = np.flatnonzero(np.r_[True, seq_of[1:] != seq_of[:-1]]) if seq_of[0] >= 0 else [0]
    if seq_of[0] >= 0 and len(np.unique(seq_of)) != len(starts):
        raise WorkloadError("the tokens of a sequence must be consecutive", path)
    return _build(out, n_experts, starts, None, Path(path).stem, f"file {path}", path)


def _raise_hole(hole, n_layers: int, missing: int, path) -> None:
    t, layer = hole
    raise WorkloadError(
        f"token {t} has no routing for layer {layer} (every token needs layers "
        f"0..{n_layers - 1}; {missing} token-layer pair(s) missing)",
        path,
    )


_UNDECLARED = (
    "the number of experts is not declared (start the file with a header line "
    '{"n_experts": E}, or name the model)'
)


def _jsonl_header(
    obj: dict, n_experts: int | None, top_k: int | None, layers: int | None, path, line_no: int
) -> tuple[int, int | None, int | None]:
    """Merge a JSONL header's declared counts with the caller's; refuse contradictions."""
    unknown = sorted(set(obj) - {"n_experts", "top_k", "n_layers"})
    if unknown:
        raise WorkloadError(f"unknown header key(s) {', '.join(unknown)}", path, line_no)
    out = []
    for key, given in (("n_experts", n_experts), ("top_k", top_k), ("n_layers", layers)):
        value = obj.get(key)
        if value is None:
            out.append(given)
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise WorkloadError(f"{key} must be an int >= 1, got {value!r}", path, line_no)
        if given is not None and value != given:
            raise WorkloadError(
                f"header declares {key} {value}, the model has {given}", path, line_no
            )
        out.append(value)
    return out[0], out[1], out[2]


def load_numpy(
    path: str | Path,
    *,
    n_experts: int | None = None,
    top_k: int | None = None,
    layers: int | None = None,
) -> RoutingTrace:
    """A ``tokens x layers x k`` array (``.npy``) or an ``.npz`` holding ``experts`` and
    optionally ``seq_starts``, ``n_experts``, ``calibration``, ``name`` and ``source``.

    The expert count is the ``.npz``'s ``n_experts`` or the caller's (the model's), which must
    agree; a bare ``.npy`` needs the caller's. ``WorkloadError`` (naming the file) for an
    unreadable file, a wrong shape, k or layer count, an undeclared count, or an id outside it
    (with its token and layer)."""
    p = Path(path)
    if not p.is_file():
        raise WorkloadError("no such file", p)
    meta: dict[str, object] = {}
    try:
        loaded = np.load(p, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            experts = loaded
        else:
            with loaded:
                if "experts" not in loaded.files:
                    raise WorkloadError(f"npz has no 'experts' array (has {loaded.files})", p)
                experts = loaded["experts"]
                meta = {k: loaded[k] for k in loaded.files if k != "experts"}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, WorkloadError):
            raise
        if "allow_pickle" in str(exc):  # numpy's advice to unpickle it anyway is not ours
            raise WorkloadError("not a numpy array file (no plain array in it)", p) from None
        raise WorkloadError(f"not a readable numpy file: {exc}", p) from None
    if experts.ndim != 3:
        raise WorkloadError(f"routing must be tokens x layers x k, got shape {experts.shape}", p)
    if top_k is not None and experts.shape[2] != top_k:
        raise WorkloadError(f"expected k = {top_k} experts per token, found {experts.shape[2]}", p)
    if layers is not None and experts.shape[1] != layers:
        raise WorkloadError(f"expected {layers} layers, found {experts.shape[1]}", p)
    stored = int(meta["n_experts"]) if "n_experts" in meta else None
    if n_experts is not None and stored is not None and stored != n_experts:
        raise WorkloadError(f"trace is for {stored} experts, the model has {n_experts}", p)
    experts_n = n_experts or stored
    if experts_n is None:
        raise WorkloadError(
            "the number of experts is not declared (save an .npz with n_experts, or name the "
            "model)",
            p,
        )
    starts = meta.get("seq_starts", np.zeros(1, np.int64))
    name = str(meta["name"]) if "name" in meta else p.stem
    source = str(meta["source"]) if "source" in meta else f"file {p}"
    return _build(experts, experts_n, starts, meta.get("calibration"), name, source, p)


def _build(experts, n_experts, starts, calibration, name, source, path) -> RoutingTrace:
    """Construct a trace, re-labelling any fault with the file it came from."""
    try:
        return RoutingTrace(
            np.asarray(experts),
            int(n_experts),
            np.asarray(starts, np.int64),
            name,
            source,
            calibration,
        )
    except WorkloadError as exc:
        raise WorkloadError(exc.reason, path) from None


def save_npz(trace: RoutingTrace, path: str | Path) -> None:
    """Write a trace in the ``.npz`` form `load_numpy` reads (compressed)."""
    arrays = {
        "experts": trace.experts,
        "seq_starts": trace.seq_starts,
        "n_experts": np.int64(trace.n_experts),
        "name": np.str_(trace.name),
        "source": np.str_(trace.source),
    }
    if trace.calibration is not None:
        arrays["calibration"] = trace.calibration
    np.savez_compressed(path, **arrays)


def save_jsonl(trace: RoutingTrace, path: str | Path) -> None:
    """Write a trace as JSONL: a header line declaring its counts, then one line per token and
    layer, with its sequence."""
    seq = trace.seq_ids()
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(
            json.dumps(
                {"n_experts": trace.n_experts, "top_k": trace.top_k, "n_layers": trace.n_layers}
            )
            + "\n"
        )
        for t in range(trace.n_tokens):
            for layer in range(trace.n_layers):
                fh.write(
                    json.dumps(
                        {
                            "seq": int(seq[t]),
                            "token_idx": t,
                            "layer": layer,
                            "experts": trace.experts[t, layer].tolist(),
                        }
                    )
                    + "\n"
                )


def tinymoe_file(domain: str) -> Traversable:
    """The shipped file of the tiny MoE's ``"code"`` or ``"docs"`` routing (a resource)."""
    if domain not in TINYMOE_DOMAINS:
        raise WorkloadError(f"unknown tiny-MoE domain {domain!r}; known: {TINYMOE_DOMAINS}")
    return resources.files("schedgym.workloads") / "data" / "tinymoe" / f"{domain}.npz"


def tinymoe_trace(domain: str) -> RoutingTrace:
    """Routing recorded from the tiny MoE on held-out ``"code"`` or ``"docs"`` text."""
    with resources.as_file(tinymoe_file(domain)) as path:
        return load_numpy(path)


# -- statistics ------------------------------------------------------------------------------


def _consecutive_pairs(trace: RoutingTrace) -> np.ndarray:
    """Indices t of tokens whose predecessor t-1 is in the same sequence."""
    same = np.ones(trace.n_tokens, bool)
    same[trace.seq_starts] = False
    return np.flatnonzero(same)


def repetition_rates(trace: RoutingTrace) -> tuple[np.ndarray, np.ndarray]:
    """Per layer, the share of consecutive token pairs (within a sequence) whose first choice is
    the same expert, and whose first-or-second choices share an expert (Mixtral, Table 5)."""
    t = _consecutive_pairs(trace)
    cur, prev = trace.experts[t], trace.experts[t - 1]
    first = (cur[:, :, 0] == prev[:, :, 0]).mean(axis=0)
    top = min(2, trace.top_k)
    either = (cur[:, :, :top, None] == prev[:, :, None, :top]).any(axis=(2, 3)).mean(axis=0)
    return first, either


def selection_shares(trace: RoutingTrace) -> np.ndarray:
    """``shares[layer, expert]``: the expert's share of all selections made at the layer."""
    counts = trace.activation_counts().astype(float)
    return counts / counts.sum(axis=1, keepdims=True)


def skew_stats(trace: RoutingTrace, top: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per layer: the hottest expert's share over the uniform share ``1/E``, and the share of
    selections taken by the ``top`` most selected experts."""
    shares = np.sort(selection_shares(trace), axis=1)[:, ::-1]
    return shares[:, 0] * trace.n_experts, shares[:, :top].sum(axis=1)


def layer_predictability(trace: RoutingTrace) -> np.ndarray:
    """For each layer l >= 1: how often the first choice at l is the one most often seen after
    the token's first choice at l-1, over how often it is the layer's most frequent first choice.
    1 means the previous layer tells nothing; larger means routing correlates across layers."""
    E = trace.n_experts
    out = np.ones(trace.n_layers - 1)
    for layer in range(1, trace.n_layers):
        a = trace.experts[:, layer - 1, 0].astype(np.int64)
        b = trace.experts[:, layer, 0].astype(np.int64)
        joint = np.bincount(a * E + b, minlength=E * E).reshape(E, E)
        conditional = joint.max(axis=1).sum()
        out[layer - 1] = conditional / max(1, np.bincount(b, minlength=E).max())
    return out


# -- the calibrated generator ----------------------------------------------------------------

# Mixtral paper (Jiang et al., 2024, "Mixtral of Experts"), Table 5: share of consecutive tokens
# with the same first choice / the same first-or-second choice, at layers 0, 15 and 31, over
# eight Pile subsets: 13.6-14.9 / 44.9-49.9 %, 23.6-28.4 / 61.6-67.0 %, 19.7-26.3 / 44.5-53.6 %.
# The generator aims at the middle of each range.
MIXTRAL_TABLE5 = {
    "depth": (0.0, 15 / 31, 1.0),
    "first": ((0.136, 0.149), (0.236, 0.284), (0.197, 0.263)),
    "either": ((0.449, 0.499), (0.616, 0.670), (0.445, 0.536)),
}
_REPEAT_KNOTS = {
    key: tuple((lo + hi) / 2 for lo, hi in MIXTRAL_TABLE5[key]) for key in ("first", "either")
}
_CALIBRATION_ROUNDS = 4
# Target figures for OLMoE-1B-7B: hottest expert of a layer 4.5-7.8x its uniform
# share, top 8 of 64 experts taking 27-51 % of the selections.
OLMOE_SKEW = {"hottest_ratio": (4.5, 7.8), "top8_share": (0.27, 0.51)}


def _chance_first(E: int) -> float:
    return 1.0 / E


def _chance_either(E: int, k: int) -> float:
    """Chance that two uniform random draws of min(k, 2) distinct experts share one."""
    m = min(k, 2)
    return 1.0 - math.comb(E - m, m) / math.comb(E, m)


@dataclass(frozen=True)
class RoutingProfile:
    """How one model routes, for `generate_routing`.

    ``skew`` is the range of the Zipf exponent of each layer's expert popularity (drawn per layer
    from the model seed); ``topics`` and ``topic_tilt`` give each sequence one of a few domains
    that tilt popularity (log-normal, per layer); ``affinity`` is the log-boost a layer's first
    choice gives to ``affinity_fanout`` successor experts at the next layer. Consecutive-token
    repetition follows Mixtral's Table 5, as excess over chance, at every model's relative depth.
    """

    name: str
    layers: int
    experts: int
    top_k: int
    skew: tuple[float, float]
    topics: int = 4
    topic_tilt: float = 0.3
    affinity: float = 1.5
    affinity_fanout: int = 2
    seq_len: int = 64


PROFILES: dict[str, RoutingProfile] = {
    p.name: p
    for p in (
        # Mixtral spreads tokens evenly over its experts (Jiang et al., 2024, routing analysis):
        # mild popularity skew.
        RoutingProfile("mixtral-8x7b", 32, 8, 2, skew=(0.05, 0.2), topic_tilt=0.2),
        RoutingProfile("olmoe-1b-7b", 16, 64, 8, skew=(0.85, 0.92), affinity_fanout=4),
        # No published routing skew for these two: aimed at OLMoE's ranges, as models of
        # fine-grained experts like it.
        RoutingProfile("qwen1.5-moe-a2.7b", 24, 60, 4, skew=(0.66, 0.72), affinity_fanout=3),
        RoutingProfile("deepseek-v2-lite", 26, 64, 6, skew=(0.7, 0.76), affinity_fanout=3),
    )
}


def get_profile(name: str) -> RoutingProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise WorkloadError(f"no routing profile {name!r}; known: {', '.join(PROFILES)}") from None


def _excess(knots: tuple[float, float, float], chance: float, depth: float) -> float:
    """Mixtral's repetition at ``depth`` as the share of the gap from chance to certainty."""
    value = float(np.interp(depth, MIXTRAL_TABLE5["depth"], knots))
    return (value - chance) / (1.0 - chance)


@dataclass(frozen=True)
class _ModelRouting:
    """What the model seed fixes: per-layer popularity logits, topic tilts, layer affinity."""

    base: np.ndarray  # [L, E]
    tilt: np.ndarray  # [topics, L, E]
    successors: np.ndarray  # [L, E, fanout]: boosted experts at layer l given first choice at l-1


def _model_routing(profile: RoutingProfile, seed: SeedLike) -> _ModelRouting:
    rng = as_generator(seed)
    L, E = profile.layers, profile.experts
    alpha = rng.uniform(*profile.skew, size=L)
    ranks = np.argsort(rng.random((L, E)), axis=1) + 1.0
    base = -alpha[:, None] * np.log(ranks)
    tilt = rng.normal(0.0, profile.topic_tilt, size=(profile.topics, L, E))
    fan = min(profile.affinity_fanout, E)
    successors = np.argsort(rng.random((L, E, E)), axis=2)[:, :, :fan]
    return _ModelRouting(base, tilt, successors)


def generate_routing(
    profile: RoutingProfile | str,
    n_tokens: int,
    seed: SeedLike = 0,
    *,
    model_seed: int = 0,
    calibration_tokens: int = 0,
) -> RoutingTrace:
    """Draw ``n_tokens`` tokens of routing in sequences of ``profile.seq_len``.

    ``model_seed`` fixes the model (popularity, topic tilts, layer affinity); ``seed`` the text.
    Each layer first draws every token's ranked choices (Gumbel top-k of the popularity of the
    sequence's topic, boosted by the token's first choice at the previous layer); then, token by
    token, the first choice repeats the previous token's first choice with probability ``a`` or
    takes its second choice with probability ``b``. ``a`` and ``b`` are solved per layer from the
    chance repetition of the drawn choices so the repetition hits Mixtral's Table 5 excess over
    chance. ``calibration_tokens`` > 0 adds routing of other text by the same model.
    """
    if isinstance(profile, str):
        profile = get_profile(profile)
    if n_tokens < 1:
        raise WorkloadError(f"n_tokens must be >= 1, got {n_tokens}", profile.name)
    model = _model_routing(profile, model_seed)
    rng = as_generator(seed)
    experts, starts = _draw(profile, model, n_tokens, rng)
    calibration = None
    if calibration_tokens > 0:
        calibration, _ = _draw(profile, model, calibration_tokens, rng)
    return RoutingTrace(
        experts,
        profile.experts,
        starts,
        name=f"{profile.name}-synth",
        source=f"generate_routing({profile.name!r}, seed={seed}, model_seed={model_seed})",
        calibration=calibration,
    )


def _draw(
    profile: RoutingProfile, model: _ModelRouting, n_tokens: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    L, E, k = profile.layers, profile.experts, profile.top_k
    starts = np.arange(0, n_tokens, profile.seq_len)
    seq = np.repeat(np.arange(starts.size), profile.seq_len)[:n_tokens]
    topic = rng.integers(profile.topics, size=starts.size)[seq]
    follows = np.ones(n_tokens, bool)  # token t continues the sequence of token t-1
    follows[starts] = False
    pairs = np.flatnonzero(follows)
    out = np.empty((n_tokens, L, k), np.int16)
    drawn = min(k + 2, E)  # spares so repeated or avoided experts can be skipped
    prev_first: np.ndarray | None = None
    for layer in range(L):
        logits = model.base[layer][None, :] + model.tilt[topic, layer]
        if prev_first is not None:
            boost = np.zeros((n_tokens, E))
            np.put_along_axis(boost, model.successors[layer, prev_first], profile.affinity, 1)
            logits = logits + boost
        keys = logits + rng.gumbel(size=logits.shape)
        fresh = np.argsort(-keys, axis=1)[:, :drawn]
        targets = _repeat_targets(E, k, layer / max(1, L - 1))
        u = rng.random(n_tokens)
        u[~follows] = 2.0  # the first token of a sequence has nothing to repeat
        rows = out[:, layer]
        f0, e0 = _pair_rates(fresh, pairs, k)
        a, x = _initial_stickiness(f0, e0, k, targets)
        for _ in range(_CALIBRATION_ROUNDS):
            _apply_stickiness(rows, fresh, u, a, x, k)
            first, either = _pair_rates(rows, pairs, k)
            # Repeats interact with the layer's popularity and affinity, so the closed form
            # misses a little: step towards the targets with the same random draws.
            a = float(np.clip(a + targets[0] - first, 0.0, 1.0))
            if k > 1:
                gain = max(1.0 - e0 if x >= 0 else e0, 1e-3)
                x = float(np.clip(x + (targets[1] - either) / gain, -1.0, 1.0 - a))
        _apply_stickiness(rows, fresh, u, a, x, k)
        prev_first = out[:, layer, 0].astype(np.int64)
    return out, starts


def _repeat_targets(E: int, k: int, depth: float) -> tuple[float, float]:
    """First-choice and first-or-second repetition at ``depth``: Mixtral's Table 5, carried to
    other expert counts as the same excess over uniform chance."""
    first = _chance_first(E)
    either = _chance_either(E, k)
    return (
        first + (1 - first) * _excess(_REPEAT_KNOTS["first"], _chance_first(8), depth),
        either + (1 - either) * _excess(_REPEAT_KNOTS["either"], _chance_either(8, 2), depth),
    )


def _pair_rates(rows: np.ndarray, pairs: np.ndarray, k: int) -> tuple[float, float]:
    if pairs.size == 0:
        return 0.0, 0.0
    cur, prev = rows[pairs], rows[pairs - 1]
    m = min(k, 2)
    either = (cur[:, :m, None] == prev[:, None, :m]).any(axis=(1, 2))
    return float(np.mean(cur[:, 0] == prev[:, 0])), float(np.mean(either))


def _initial_stickiness(
    f0: float, e0: float, k: int, targets: tuple[float, float]
) -> tuple[float, float]:
    """(a, x) if the drawn choices repeated as often after the repeats as before them."""
    if k == 1:
        return float(np.clip((targets[0] - f0) / max(1 - f0, 1e-9), 0.0, 1.0)), 0.0
    s = (targets[1] - e0) / max(1 - e0, 1e-9)
    a = float(np.clip(targets[0] - (1 - s) * f0, 0.0, 1.0))
    return a, float(np.clip(s - a, -1.0, 1.0 - a))


def _apply_stickiness(
    rows: np.ndarray, fresh: np.ndarray, u: np.ndarray, a: float, x: float, k: int
) -> None:
    """Token by token (a repeat may repeat a repeat). With ``u < a`` the first choice is the
    previous token's first; else, with ``u < a + |x|``, it is the previous token's second
    (``x > 0``) or the token's first two choices avoid the previous token's first two
    (``x < 0``; Mixtral's last layer repeats first choices yet shares fewer experts than
    chance would). Everything else comes from the token's own draw."""
    rows[:] = fresh[:, :k]
    m = min(k, 2)
    for t in np.flatnonzero(u < a + abs(x)).tolist():
        drawn = fresh[t].tolist()
        if u[t] < a or x > 0:
            keep = int(rows[t - 1, 0] if u[t] < a else rows[t - 1, 1])
            rows[t] = [keep] + [e for e in drawn if e != keep][: k - 1]
        else:
            banned = rows[t - 1, :m].tolist()
            head = [e for e in drawn if e not in banned][:m]
            rows[t] = head + [e for e in drawn if e not in head][: k - m]
