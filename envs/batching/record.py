"""Metrics, episode records, the independent record validator and the CDF plot of Batching-v0,
and the search for a policy's capacity at SLO (`capacity_at_slo`).

`validate` replays a record's steps from scratch: it knows only the token model (a request with
``P`` prompt tokens that has produced ``G`` tokens must compute ``P + G`` tokens to sample the
next one; its KV cache holds ``ceil(computed / block)`` blocks; a preemption drops its computed
tokens), not the engine's scheduler, and recomputes every metric from the token times it derives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from schedgym.errors import RecordError, SchedgymError

RECORD_FORMAT = "schedgym-batching-record/1"


def serving_metrics(
    arrival: np.ndarray,
    admitted: np.ndarray,
    token_time: np.ndarray,
    output: np.ndarray,
    ttft_target: np.ndarray,
    tbt_target: np.ndarray,
    step_start: np.ndarray,
    step_end: np.ndarray,
    step_kv: np.ndarray,
    preemptions: np.ndarray,
    kv_capacity: int,
) -> dict[str, float | int]:
    """The episode's metrics from per-token times (``token_time`` holds each request's output
    tokens back to back, ``output[i]`` of them for request ``i``). Times in seconds.

    Per request: TTFT = first token - arrival; TPOT = (last token - first token) / (output - 1),
    0 for a one-token output; end-to-end latency (``e2e``) = last token - arrival. TBT is every
    gap between two consecutive tokens of one request.

    * ``goodput_rps`` and ``slo_attainment``, the default: a request is good when its TTFT is
      within its class's TTFT target and its TPOT within its class's per-token target
      (``tbt_target``): DistServe's SLO attainment (Zhong et al., OSDI 2024, §2.2) and vLLM's
      ``benchmark_serving --goodput`` (TTFT and TPOT SLOs). Goodput is good requests per second
      of the episode (first arrival to last token).
    * ``strict_goodput_rps`` and ``strict_slo_attainment``: the stricter streaming view, where
      every single gap must be within the target (one stall is a miss), the per-token deadline
      of Andes (Liu et al., 2024) and of Sarathi-Serve's stall analysis (Agrawal et al., OSDI
      2024, which reports P99 TBT).
    * ``ttft_attainment`` and ``tpot_attainment``: the share meeting each target alone.
    * ``<x>_mean_s``, ``<x>_p50_s``, ``<x>_p90_s``, ``<x>_p99_s`` for x in ttft, tpot, tbt, e2e
      (TBT over every gap of every request, the others over requests).
    """
    n = arrival.size
    start = np.concatenate([[0], np.cumsum(output)[:-1]])
    first = token_time[start]
    finish = token_time[start + output - 1]
    ttft = first - arrival
    e2e = finish - arrival
    tpot = np.where(output > 1, (finish - first) / np.maximum(output - 1, 1), 0.0)
    tbt, owner = token_gaps(token_time, output)
    max_gap = np.zeros(n)
    np.maximum.at(max_gap, owner, tbt)
    ttft_ok = ttft <= ttft_target
    tpot_ok = tpot <= tbt_target
    good = ttft_ok & tpot_ok
    strict = ttft_ok & (max_gap <= tbt_target)
    duration = float(finish.max() - arrival.min())
    busy = step_end - step_start
    tokens = int(output.sum())
    queue = admitted - arrival
    pct = lambda a, q: float(np.percentile(a, q)) if a.size else 0.0  # noqa: E731
    rate = lambda ok: float(ok.sum()) / duration if duration > 0 else 0.0  # noqa: E731
    spread = {
        f"{name}_{stat}_s": (float(x.mean()) if x.size else 0.0) if stat == "mean" else pct(x, q)
        for name, x in (("ttft", ttft), ("tpot", tpot), ("tbt", tbt), ("e2e", e2e))
        for stat, q in (("mean", 0), ("p50", 50), ("p90", 90), ("p99", 99))
    }
    return {
        "requests": int(n),
        "output_tokens": tokens,
        "duration_s": duration,
        "throughput_tok_s": tokens / duration if duration > 0 else 0.0,
        "goodput_rps": rate(good),
        "slo_attainment": float(good.mean()),
        "strict_goodput_rps": rate(strict),
        "strict_slo_attainment": float(strict.mean()),
        "ttft_attainment": float(ttft_ok.mean()),
        "tpot_attainment": float(tpot_ok.mean()),
        **spread,
        "queue_delay_mean_s": float(queue.mean()),
        "queue_delay_p99_s": pct(queue, 99),
        "preemptions": int(preemptions.sum()),
        "kv_util_mean": float((step_kv * busy).sum() / (kv_capacity * busy.sum())),
        "kv_util_max": float(step_kv.max() / kv_capacity),
        "steps": int(step_start.size),
        "busy_s": float(busy.sum()),
    }


def token_gaps(token_time: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every gap between two consecutive tokens of one request, and the request it belongs to
    (``token_time`` holds each request's tokens back to back)."""
    gaps = np.diff(token_time)
    inside = np.ones(gaps.size, bool)
    inside[np.cumsum(output)[:-1] - 1] = False  # one request's last token to the next's first
    owner = np.repeat(np.arange(output.size), output)[1:]
    return gaps[inside], owner[inside]


def engine_metrics(engine: Any) -> dict[str, float | int]:
    """`serving_metrics` of a finished `BatchingEngine`."""
    return serving_metrics(**engine.summary_inputs(), kv_capacity=engine.kv_capacity)


def make_record(engine: Any, case: str) -> dict[str, Any]:
    """The JSON-serialisable record of a finished episode: the requests, their timelines and
    every step's batch (request ids and token counts, flattened with offsets)."""
    trace = engine.trace
    first = engine.token_time[engine.token_offset]
    steps = engine.step_log
    entries = engine.entry_log
    return {
        "format": RECORD_FORMAT,
        "env": "batching",
        "case": case,
        "config": {
            **engine.config.to_dict(),
            "kv_capacity_blocks": int(engine.kv_capacity),
            "block_tokens": engine.block,
        },
        "slo_classes": [
            {"name": c.name, "ttft_s": c.ttft_s, "tbt_s": c.tbt_s} for c in trace.slo_classes
        ],
        "requests": {
            "arrival_s": trace.arrival_s.tolist(),
            "prompt_tokens": trace.prompt_tokens.tolist(),
            "output_tokens": trace.output_tokens.tolist(),
            "slo_class": trace.slo_class.tolist(),
            "admitted_s": engine.admitted_at.tolist(),
            "first_token_s": first.tolist(),
            "finish_s": engine.finished_at.tolist(),
            "tokens": engine.generated.tolist(),
            "preemptions": engine.preemptions.tolist(),
        },
        "steps": {
            "start_s": steps.view("start").tolist(),
            "end_s": steps.view("end").tolist(),
            "kv_blocks": steps.view("kv").tolist(),
            "offsets": np.concatenate([[0], np.cumsum(steps.view("entries"))]).tolist(),
            "rid": entries.view("rid").tolist(),
            "tokens": entries.view("tokens").tolist(),
        },
        "preemptions": {
            "step": engine.preempt_log.view("step").tolist(),
            "rid": engine.preempt_log.view("rid").tolist(),
        },
    }


def _arrays(record: dict[str, Any]) -> dict[str, np.ndarray]:
    try:
        req, steps, pre = record["requests"], record["steps"], record["preemptions"]
        out = {
            "arrival": np.asarray(req["arrival_s"], float),
            "prompt": np.asarray(req["prompt_tokens"], np.int64),
            "output": np.asarray(req["output_tokens"], np.int64),
            "cls": np.asarray(req["slo_class"], np.int64),
            "admitted": np.asarray(req["admitted_s"], float),
            "first": np.asarray(req["first_token_s"], float),
            "finish": np.asarray(req["finish_s"], float),
            "tokens": np.asarray(req["tokens"], np.int64),
            "n_preempt": np.asarray(req["preemptions"], np.int64),
            "start": np.asarray(steps["start_s"], float),
            "end": np.asarray(steps["end_s"], float),
            "kv": np.asarray(steps["kv_blocks"], np.int64),
            "offsets": np.asarray(steps["offsets"], np.int64),
            "rid": np.asarray(steps["rid"], np.int64),
            "chunk": np.asarray(steps["tokens"], np.int64),
            "p_step": np.asarray(pre["step"], np.int64),
            "p_rid": np.asarray(pre["rid"], np.int64),
        }
        out["ttft"] = np.array([c["ttft_s"] for c in record["slo_classes"]], float)
        out["tbt"] = np.array([c["tbt_s"] for c in record["slo_classes"]], float)
        out["capacity"] = np.int64(record["config"]["kv_capacity_blocks"])
        out["block"] = np.int64(record["config"]["block_tokens"])
    except KeyError as exc:
        raise RecordError(f"batching record lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise RecordError(f"batching record is malformed: {exc}") from None
    n = out["arrival"].size
    for key in ("prompt", "output", "cls", "admitted", "first", "finish", "tokens", "n_preempt"):
        if out[key].size != n:
            raise RecordError(f"requests.{key} has {out[key].size} entries, arrivals {n}")
    s = out["start"].size
    if out["end"].size != s or out["kv"].size != s or out["offsets"].size != s + 1:
        raise RecordError("steps: start_s, end_s, kv_blocks and offsets disagree in length")
    if (
        out["offsets"][0] != 0
        or np.any(np.diff(out["offsets"]) < 0)
        or (out["offsets"][-1] != out["rid"].size or out["chunk"].size != out["rid"].size)
    ):
        raise RecordError("steps: offsets do not index rid/tokens")
    if np.any((out["cls"] < 0) | (out["cls"] >= out["ttft"].size)):
        raise RecordError("requests: an SLO class index is out of range")
    if np.any((out["rid"] < 0) | (out["rid"] >= n)) or np.any(
        (out["p_rid"] < 0) | (out["p_rid"] >= n)
    ):
        raise RecordError("steps or preemptions name a request that does not exist")
    if out["p_step"].size != out["p_rid"].size or np.any(np.diff(out["p_step"]) < 0):
        raise RecordError("preemptions: step and rid disagree, or steps are out of order")
    return out


def _replay(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Replay the steps of a record (see `validate`); return every token's time, each request's
    first admission, tokens produced and preemptions. Raises `RecordError` at the first fault."""
    n = a["arrival"].size
    prompt, output, cap = a["prompt"], a["output"], int(a["capacity"])
    block = int(a["block"])
    computed = np.zeros(n, np.int64)
    produced = np.zeros(n, np.int64)
    blocks = np.zeros(n, np.int64)
    admitted = np.full(n, np.nan)
    preempted = np.zeros(n, np.int64)
    token_time = np.full(int(output.sum()), np.nan)
    offset = np.concatenate([[0], np.cumsum(output)[:-1]])
    held = 0
    pre_at = np.searchsorted(a["p_step"], np.arange(a["start"].size + 1))
    prev_end = -np.inf
    for s in range(a["start"].size):
        start, end = a["start"][s], a["end"][s]
        if not (end > start >= prev_end - 1e-12):
            raise RecordError(f"step {s}: runs {start}..{end}, after the previous end {prev_end}")
        prev_end = end
        for r in a["p_rid"][pre_at[s] : pre_at[s + 1]].tolist():
            if computed[r] == 0 and blocks[r] == 0:
                raise RecordError(f"step {s}: request {r} is preempted while holding nothing")
            held -= blocks[r]
            computed[r] = blocks[r] = 0
            preempted[r] += 1
        lo, hi = a["offsets"][s], a["offsets"][s + 1]
        rid, chunk = a["rid"][lo:hi], a["chunk"][lo:hi]
        if rid.size == 0:
            raise RecordError(f"step {s}: empty batch")
        if np.unique(rid).size != rid.size:
            raise RecordError(f"step {s}: a request appears twice in one batch")
        if np.any(chunk < 1):
            raise RecordError(f"step {s}: a request is scheduled for < 1 token")
        early = rid[a["arrival"][rid] > start + 1e-12]
        if early.size:
            raise RecordError(f"step {s}: request {early[0]} runs before it arrives")
        over = rid[produced[rid] >= output[rid]]
        if over.size:
            raise RecordError(f"step {s}: request {over[0]} runs after producing all its tokens")
        fresh = rid[np.isnan(admitted[rid])]
        admitted[fresh] = start
        computed[rid] += chunk
        known = prompt[rid] + produced[rid]
        beyond = rid[computed[rid] > known]
        if beyond.size:
            r = beyond[0]
            raise RecordError(
                f"step {s}: request {r} computes {computed[r]} tokens but knows only "
                f"{prompt[r] + produced[r]} (prompt + produced)"
            )
        new_blocks = -(-computed[rid] // block)
        held += int((new_blocks - blocks[rid]).sum())
        blocks[rid] = new_blocks
        if held > cap:
            raise RecordError(f"step {s}: {held} KV blocks held, capacity {cap}")
        if held != a["kv"][s]:
            raise RecordError(
                f"step {s}: the replay holds {held} KV blocks, the record says {a['kv'][s]}"
            )
        out = rid[computed[rid] == known]
        token_time[offset[out] + produced[out]] = end
        produced[out] += 1
        done = out[produced[out] == output[out]]
        held -= int(blocks[done].sum())
        blocks[done] = 0
    return {
        "token_time": token_time,
        "admitted": admitted,
        "produced": produced,
        "preempted": preempted,
        "offset": offset,
    }


def validate(record: dict[str, Any]) -> dict[str, Any]:
    """Re-check a Batching-v0 episode record from scratch; return the metrics it implies.

    Replays every step: each scheduled request has arrived by the step's start and is not
    finished; it computes at most the tokens it knows (prompt plus produced); it produces a token
    exactly when its computed tokens reach prompt + produced (never before its prefill is done);
    steps do not overlap; the KV blocks held (``ceil(computed / block)`` per live request) never
    exceed the capacity and equal the step's logged figure. At the end every request has produced
    exactly its output length, and the record's per-request times and counts match the replay.
    Raises `RecordError` naming the first fault.
    """
    a = _arrays(record)
    return _checked_metrics(a, _replay(a))


def _checked_metrics(a: dict[str, np.ndarray], r: dict[str, np.ndarray]) -> dict[str, Any]:
    output, offset = a["output"], r["offset"]
    short = np.flatnonzero(r["produced"] != output)
    if short.size:
        i = short[0]
        raise RecordError(
            f"request {i} produced {r['produced'][i]} tokens, its output is {output[i]}"
        )
    token_time = r["token_time"]
    mine = {
        "admitted": r["admitted"],
        "first": token_time[offset],
        "finish": token_time[offset + output - 1],
        "tokens": r["produced"],
        "n_preempt": r["preempted"],
    }
    for key, value in mine.items():
        bad = np.flatnonzero(~np.isclose(value, a[key], rtol=0, atol=1e-9))
        if bad.size:
            i = bad[0]
            raise RecordError(
                f"request {i}: the record says {key} {a[key][i]}, the replay gives {value[i]}"
            )
    return serving_metrics(
        a["arrival"],
        r["admitted"],
        token_time,
        output,
        a["ttft"][a["cls"]],
        a["tbt"][a["cls"]],
        a["start"],
        a["end"],
        a["kv"],
        r["preempted"],
        int(a["capacity"]),
    )


def plot_record(
    record: dict[str, Any] | list[dict[str, Any]],
    path: str,
    labels: list[str] | None = None,
    **_: Any,
) -> None:
    """TTFT and TBT CDFs (one line per record, e.g. one per policy run on the same case) with
    the SLO targets marked, and the first record's batches, queue and KV cache over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = record if isinstance(record, list) else [record]
    labels = labels or [r.get("label") or r.get("case", f"run {i}") for i, r in enumerate(records)]
    fig, ((ax_ttft, ax_tbt), (ax_batch, ax_kv)) = plt.subplots(2, 2, figsize=(13, 8.5))
    for rec, label in zip(records, labels, strict=True):
        a = _arrays(rec)
        replay = _replay(a)
        m = _checked_metrics(a, replay)
        tbt, _ = token_gaps(replay["token_time"], a["output"])
        for ax, xs, key in ((ax_ttft, a["first"] - a["arrival"], "ttft"), (ax_tbt, tbt, "tbt")):
            xs = np.sort(xs)
            if xs.size:
                ax.plot(
                    np.maximum(xs, 1e-4),
                    np.arange(1, xs.size + 1) / xs.size,
                    label=f"{label}: p50 {m[key + '_p50_s'] * 1e3:.0f} ms, "
                    f"p99 {m[key + '_p99_s'] * 1e3:.0f} ms, "
                    f"SLO met {m['slo_attainment']:.0%}",
                )
    for ax, key, title in (
        (ax_ttft, "ttft_s", "time to first token"),
        (ax_tbt, "tbt_s", "time between tokens"),
    ):
        for c in records[0]["slo_classes"]:
            ax.axvline(c[key], ls=":", color="grey")
            ax.text(
                c[key],
                0.98,
                f" {c['name']} target",
                rotation=90,
                color="grey",
                va="top",
                fontsize=8,
            )
        ax.set_xscale("log")
        ax.set_xlabel("seconds (log scale)")
        ax.set_ylabel("share of " + ("requests" if key == "ttft_s" else "token gaps"))
        ax.set_title(f"CDF of the {title}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="lower right")

    # over time, in bins: a step counts in the bin of its midpoint
    a = _arrays(records[0])
    t0, t1 = float(a["arrival"].min()), float(a["end"].max())
    edges = np.linspace(t0, t1, 301)
    width = edges[1] - edges[0]
    mid = np.clip(np.searchsorted(edges, (a["start"] + a["end"]) / 2) - 1, 0, 299)
    dur = a["end"] - a["start"]
    counts = np.diff(a["offsets"])
    prefill = np.add.reduceat(a["chunk"], a["offsets"][:-1]) - counts  # tokens beyond 1 each
    busy = np.bincount(mid, dur, 300)
    with np.errstate(invalid="ignore", divide="ignore"):
        seqs = np.bincount(mid, counts * dur, 300) / busy
        kv = np.bincount(mid, a["kv"] * dur, 300) / busy / a["capacity"]
    x = edges[:-1] + width / 2
    ax_batch.plot(x, seqs, color="tab:blue", lw=1, label="sequences per step")
    ax_batch.set_ylabel("sequences per step", color="tab:blue")
    twin = ax_batch.twinx()
    twin.fill_between(
        x,
        np.bincount(mid, np.maximum(prefill, 0), 300) / width,
        step="mid",
        color="tab:orange",
        alpha=0.35,
        label="prefill tokens / s",
    )
    twin.set_ylabel("prefill tokens / s", color="tab:orange")
    ax_batch.set_xlabel("time (s)")
    ax_batch.set_title(f"batches ({labels[0]})")
    ax_batch.grid(alpha=0.3)

    ax_kv.plot(x, kv, color="tab:red", lw=1, label="KV cache in use")
    if a["p_step"].size:
        when = a["start"][np.minimum(a["p_step"], a["start"].size - 1)]
        ax_kv.plot(when, np.full(when.size, 1.03), "|", color="k", ms=6, label="preemption")
    ax_kv.set_ylim(0, 1.08)
    ax_kv.set_ylabel(f"share of {int(a['capacity'])} KV blocks", color="tab:red")
    admitted = np.sort(a["admitted"])
    arrived = np.searchsorted(np.sort(a["arrival"]), x, side="right")
    queue = arrived - np.searchsorted(admitted, x, side="right")
    twin = ax_kv.twinx()
    twin.plot(x, queue, color="tab:green", lw=1, label="requests waiting (first admission)")
    twin.set_ylabel("requests waiting", color="tab:green")
    ax_kv.set_xlabel("time (s)")
    ax_kv.set_title(f"KV cache and queue ({labels[0]})")
    ax_kv.grid(alpha=0.3)
    lines = ax_kv.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax_kv.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    cfg = records[0].get("config", {})
    fig.suptitle(
        f"Batching-v0, case {records[0].get('case')}: {cfg.get('model')} on "
        f"{cfg.get('hardware')} (tp={cfg.get('tp')}), {a['arrival'].size} requests"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


DEFAULT_TARGET = 0.9  # DistServe's 90 % SLO attainment
DEFAULT_REL_TOL = 0.04


# Capacity at SLO. vidur (Agrawal et al., MLSys 2024) reports a deployment's capacity as the
# highest request rate it serves within its scheduling-delay SLO, and DistServe (Zhong et al.,
# OSDI 2024) its per-GPU goodput as the highest rate at which at least 90 % of requests meet
# their TTFT and TPOT SLOs; both search over the rate. Here the search scales one trace's arrival
# pattern (the same requests, arrival times stretched or compressed), bisecting in log space.


def capacity_at_slo(
    attainment: Callable[[float], float],
    start_rate: float,
    *,
    target: float = DEFAULT_TARGET,
    rel_tol: float = DEFAULT_REL_TOL,
    max_steps: int = 12,
) -> float:
    """The highest rate (requests/s) found at which ``attainment(rate)`` (SLO attainment in
    [0, 1] of one episode at that arrival rate) is at least ``target``.

    From ``start_rate`` it doubles (or halves) the rate until the target is crossed, then
    bisects the bracket in log space until its ends are within ``rel_tol`` of each other, and
    returns the lower end: a rate that was run and met the target. Attainment is assumed to fall
    as the rate rises; where it does not, this is one crossing. Returns 0.0 when even
    ``start_rate / 2**max_steps`` misses the target; raises `SchedgymError` when
    ``start_rate * 2**max_steps`` still meets it (no load found that overloads the server).
    """
    if not (start_rate > 0 and 0 < target <= 1 and rel_tol > 0):
        raise SchedgymError(
            f"capacity search needs start_rate > 0, 0 < target <= 1 and rel_tol > 0; got "
            f"{start_rate}, {target}, {rel_tol}"
        )
    rate = float(start_rate)
    if attainment(rate) >= target:
        lo = rate
        for _ in range(max_steps):
            rate *= 2.0
            if attainment(rate) < target:
                hi = rate
                break
            lo = rate
        else:
            raise SchedgymError(
                f"SLO attainment stays at or above {target} up to {rate:g} requests/s: no "
                "capacity found"
            )
    else:
        hi = rate
        for _ in range(max_steps):
            rate /= 2.0
            if attainment(rate) >= target:
                lo = rate
                break
            hi = rate
        else:
            return 0.0
    while hi / lo > 1.0 + rel_tol:
        mid = math.sqrt(lo * hi)
        if attainment(mid) >= target:
            lo = mid
        else:
            hi = mid
    return lo
