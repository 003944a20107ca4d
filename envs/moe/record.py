"""MoEOffload episode records: the picture and an independent validator that replays the record."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from schedgym.envs.moe.core import RECORD_FORMAT
from schedgym.envs.moe.env import plot_hit_rate_curve
from schedgym.errors import RecordError, SchedgymError


def plot_record(
    record: dict[str, Any], path: str | Path, policy: str | None = None, **kw: Any
) -> None:
    """Per-layer hit rate and cumulative stall of the episode; with ``policy`` (the policy that
    produced it, or any), a second image beside ``path`` (``<stem>-curve.png``) plots hit rate
    against cache size for it and Belady's MIN on the record's case and settings."""
    if record.get("bound") is not None:
        raise SchedgymError(f"a {record['bound']} bound record has no episode to draw")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    replay = _replay(record)
    fig, (ax_layer, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    L = record["n_layers"]
    ax_layer.bar(np.arange(L), replay["layer_hit_rate"], color="tab:blue")
    ax_layer.set(
        xlabel="MoE layer",
        ylabel="hit rate",
        ylim=(0, 1.02),
        title=f"{record['case']}: hit rate {replay['metrics']['hit_rate']:.3f}, "
        f"capacity {record['capacity']}",
    )
    ends = np.array(replay["step_end_s"])
    ax_time.plot(
        np.arange(1, ends.size + 1), np.array(replay["step_stall_s"]).cumsum() * 1e3, label="stall"
    )
    ax_time.plot(np.arange(1, ends.size + 1), ends * 1e3, label="elapsed")
    ax_time.set(
        xlabel="decode step",
        ylabel="ms",
        title=f"{replay['metrics']['tokens_per_s']:.1f} tokens/s, stall "
        f"{replay['metrics']['stall_per_token_s'] * 1e3:.2f} ms/token",
    )
    ax_time.legend()
    for ax in (ax_layer, ax_time):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    if policy is not None:
        settings = {k: v for k, v in record["settings"].items() if k != "capacity"}
        p = Path(path)
        names = [policy] + (["oracle:belady"] if policy != "oracle:belady" else [])
        plot_hit_rate_curve(
            names,
            p.with_name(f"{p.stem}-curve{p.suffix or '.png'}"),
            record["case"],
            record["seed"],
            **settings,
            **kw,
        )


# --- independent validation ---------------------------------------------------------------------


def validate(record: dict[str, Any]) -> dict[str, Any]:
    """Replay ``record`` from its routing, costs and decisions alone; raise `RecordError` at the
    first fault (cache above capacity, a needed expert neither cached nor on the CPU, an
    eviction of a needed or absent expert, a decision that does not match a miss) and return the
    metrics it recomputes, plus per-layer hit rates. A bound's record (``record["bound"]``,
    ``"min-copies"``) is re-derived instead (`_min_copies_bound`)."""
    if isinstance(record, dict) and record.get("bound") is not None:
        return _min_copies_bound(record)
    replay = _replay(record)
    return {**replay["metrics"], "layer_hit_rate": replay["layer_hit_rate"]}


def bound_metrics(
    stall_s: float, copies: int, reference_s: float, tokens: int, steps: int, expert_bytes: int
) -> dict[str, float | int]:
    """The metrics of ``bound:min-copies`` (its ``solve`` and the validator build them alike):
    the least stall (seconds, total and per decode step), hence the shortest time and highest
    tokens/s, and the fewest copies and bytes of any policy without CPU offload."""
    time_s = reference_s + stall_s
    return {
        "stall_s": stall_s,
        "stall_per_token_s": stall_s / max(1, steps),
        "time_s": time_s,
        "tokens": tokens,
        "tokens_per_s": tokens / time_s if time_s > 0 else 0.0,
        "min_copies": copies,
        "bytes_copied": copies * expert_bytes,
    }


def _fail(record: dict[str, Any]):
    def fail(why: str) -> RecordError:
        return RecordError(f"moe record ({record.get('case', '?')}): {why}")

    return fail


def _header(record: Any) -> dict[str, Any]:
    """The fields every moe record needs, checked: sizes, routing, steps, costs and a legal
    initial cache (``resident``); raises `RecordError` naming the fault."""
    fail = _fail(record if isinstance(record, dict) else {})
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise fail(f"format is not {RECORD_FORMAT!r}")
    try:
        L, E, C = int(record["n_layers"]), int(record["n_experts"]), int(record["capacity"])
        costs = record["costs"]
        head = {
            "L": L,
            "E": E,
            "C": C,
            "routing": record["routing"],
            "steps": record["steps"],
            "events": record["events"],
            "copy_s": costs["copy_s"],
            "gpu_s": costs["gpu_s"],
            "pre_s": costs["pre_s"],
            "cpu_s": costs["cpu_s"],
            "cpu_ok": bool(record["cpu_offload"]),
            "expert_bytes": int(record["expert_bytes"]),
            "resident": set(record["initial"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"missing or malformed field: {exc}") from None
    resident = head["resident"]
    if len(resident) != len(record["initial"]) or not all(0 <= g < L * E for g in resident):
        raise fail("initial cache has repeated or out-of-range experts")
    if len(resident) > C:
        raise fail(f"initial cache holds {len(resident)} experts, capacity {C}")
    if len(head["pre_s"]) != len(head["steps"]):
        raise fail("pre_s has one entry per step")
    return head


def _needs(head: dict[str, Any], active: list[int], layer: int, fail) -> Counter:
    """``{global expert id: tokens routed to it}`` for one layer of a step's ``active`` tokens."""
    E, routing = head["E"], head["routing"]
    try:
        needed = Counter(layer * E + e for t in active for e in routing[t][layer])
    except (IndexError, TypeError) as exc:
        raise fail(f"tokens {active} have no routing at layer {layer} ({exc})") from None
    if any(not layer * E <= g < (layer + 1) * E for g in needed):
        raise fail(f"tokens {active} route to an expert outside layer {layer}'s {E}")
    return needed


def _min_copies_bound(record: dict[str, Any]) -> dict[str, Any]:
    """Re-derive ``bound:min-copies`` from the record's routing and costs: MIN by a plain scan
    (each miss with a full cache evicts the cached expert whose next request is furthest), the
    copies of each prefix of visits through one engine, less the visits' all-resident time."""

    head, fail = _header(record), _fail(record)
    if record["bound"] != "min-copies":
        raise fail(f"unknown bound {record.get('bound')!r}")
    if head["cpu_ok"] or head["events"]:
        raise fail("the min-copies bound holds without CPU offload and makes no decisions")
    L, C, steps, copy_s = head["L"], head["C"], head["steps"], head["copy_s"]
    gpu_s, pre_s, cache = head["gpu_s"], head["pre_s"], head["resident"]
    requests, visit_end, reference, tokens = [], [], [], 0
    for s, lane_tokens in enumerate(steps):
        active = [t for t in lane_tokens if t >= 0]
        tokens += len(active)
        for layer in range(L):
            needed = _needs(head, active, layer, fail)
            requests += sorted(needed)
            visit_end.append(len(requests))
            reference.append(pre_s[s] + sum(gpu_s[n] for n in needed.values()))
    upcoming: dict[int, list[int]] = {}
    for i in range(len(requests) - 1, -1, -1):
        upcoming.setdefault(requests[i], []).append(i)
    copies, i, elapsed, worst, fastest = 0, 0, 0.0, 0.0, min(gpu_s[1:])
    for end, ref in zip(visit_end, reference, strict=True):
        for g in requests[i:end]:
            upcoming[g].pop()  # this request; what is left are its later ones
            if g not in cache:
                copies += 1
                if len(cache) >= C:
                    cache.remove(
                        max(cache, key=lambda h: upcoming[h][-1] if upcoming.get(h) else 1 << 62)
                    )
                cache.add(g)
        i = end
        elapsed += ref
        if copies:
            worst = max(worst, copies * copy_s + fastest - elapsed)
    return bound_metrics(worst, copies, elapsed, tokens, len(steps), int(record["expert_bytes"]))


def _layer_end(routed: float, compute: dict[int, float], arrival: dict[int, float]) -> float:
    """The GPU's end of a layer whose experts (``compute`` seconds each) start in order of
    ``arrival``, each once it has arrived and the GPU is free."""
    t = routed
    for at, g in sorted((arrival[g], g) for g in compute):
        t = max(t, at) + compute[g]
    return t


def _replay(record: dict[str, Any]) -> dict[str, Any]:
    head, fail = _header(record), _fail(record)
    L, C, G = head["L"], head["C"], head["L"] * head["E"]
    steps, events = head["steps"], head["events"]
    copy_s, gpu_s, pre_s = head["copy_s"], head["gpu_s"], head["pre_s"]
    cpu_s, cpu_ok, expert_bytes = head["cpu_s"], head["cpu_ok"], head["expert_bytes"]
    resident = head["resident"]
    ready: dict[int, float] = dict.fromkeys(resident, 0.0)
    prefetched: set[int] = set()
    clock = stall = late_stall = 0.0
    hits = accesses = loads = prefetches = prefetch_hits = cpu_experts = tokens = late_n = 0
    # the copy engine's order: (expert, issued, is demand); a copy's start is the later of its
    # issue and the previous copy's end. Copies finished by a visit's start can no longer move:
    # they leave the order, and ``base`` keeps when the last of them ended.
    order: list[tuple[int, float, bool]] = []
    base = 0.0

    def schedule() -> None:
        end = base
        for g, issued, _ in order:
            end = max(end, issued) + copy_s
            ready[g] = end

    def started_before(t: float) -> int:
        """How many copies of the order have started before time ``t``."""
        end, n = base, 0
        for _, issued, _ in order:
            start = max(end, issued)
            if start >= t:
                break
            end, n = start + copy_s, n + 1
        return n

    def drop_finished(now: float) -> None:
        nonlocal base
        end, k = base, 0
        for _, issued, _ in order:
            finish = max(end, issued) + copy_s
            if finish > now:
                break
            end, k = finish, k + 1
        base = end
        del order[:k]

    layer_hits, layer_acc = [0] * L, [0] * L
    step_end, step_stall = [], []
    ei = 0

    def take(visit: int) -> list | None:
        nonlocal ei
        if ei < len(events) and events[ei][0] == visit:
            ei += 1
            return events[ei - 1]
        return None

    def evict(victim: int, needed: dict[int, int], why: str) -> None:
        if victim not in resident:
            raise fail(f"{why}: evicts expert {victim}, which is not in GPU memory")
        if victim in needed:
            raise fail(f"{why}: evicts expert {victim}, which this layer needs")
        resident.discard(victim)
        prefetched.discard(victim)

    for s, lane_tokens in enumerate(steps):
        active = [t for t in lane_tokens if t >= 0]
        if not active:
            raise fail(f"step {s} decodes no token")
        tokens += len(active)
        stall_before = stall
        for layer in range(L):
            v = s * L + layer
            drop_finished(clock)
            needed = _needs(head, active, layer, fail)
            while ei < len(events) and events[ei][0] == v and events[ei][1] == 0:
                _, _, g, victim = take(v)
                where = f"visit {v}: prefetch of expert {g}"
                if g in resident or not 0 <= g < G:
                    raise fail(f"{where}: already cached or out of range")
                if victim >= 0:
                    evict(victim, {}, where)
                elif len(resident) >= C:
                    raise fail(f"{where}: cache full and nothing evicted")
                resident.add(g)
                prefetched.add(g)
                order.append((g, clock, False))
                schedule()
                prefetches += 1
            routed = clock + pre_s[s]
            misses = sorted(g for g in needed if g not in resident)
            late = {g for g in needed if g in resident and ready[g] > routed}
            for g in needed:
                if g in prefetched and g in resident and g not in late:
                    prefetch_hits += 1
                prefetched.discard(g)
            layer_hits[layer] += len(needed) - len(misses) - len(late)
            layer_acc[layer] += len(needed)
            late_n += len(late)
            on_cpu: set[int] = set()
            for g in misses:
                ev = take(v)
                if ev is None or ev[2] != g or ev[1] not in (1, 2):
                    raise fail(
                        f"visit {v}: expert {g} is needed, not cached, and no load or "
                        f"CPU decision follows (found {ev})"
                    )
                if ev[1] == 2:
                    if not cpu_ok or cpu_s is None:
                        raise fail(f"visit {v}: expert {g} on the CPU but CPU offload is off")
                    on_cpu.add(g)
                    continue
                if ev[3] >= 0:
                    evict(ev[3], needed, f"visit {v}: load of expert {g}")
                elif len(resident) >= C:
                    raise fail(f"visit {v}: load of expert {g} into a full cache, no eviction")
                resident.add(g)
                # ahead of every prefetch not started by now, behind earlier demand copies
                ahead = max(
                    started_before(routed),
                    max((i + 1 for i, c in enumerate(order) if c[2]), default=0),
                )
                order.insert(ahead, (g, routed, True))
                schedule()
                loads += 1
            if len(resident) > C:
                raise fail(f"visit {v}: {len(resident)} experts cached, capacity {C}")
            gpu = {g: gpu_s[n] for g, n in needed.items() if g not in on_cpu}
            gpu_end = _layer_end(routed, gpu, ready)
            cpu_end = routed + sum(cpu_s[needed[g]] for g in on_cpu)
            end = max(gpu_end, cpu_end)
            all_resident = routed + sum(gpu_s[n] for n in needed.values())
            split = max(_layer_end(routed, gpu, dict.fromkeys(gpu, routed)), cpu_end)
            stall += end - min(all_resident, split)
            if late:
                landed = {g: routed if g in late else ready[g] for g in gpu}
                late_stall += end - max(_layer_end(routed, gpu, landed), cpu_end)
            clock = end
            cpu_experts += len(on_cpu)
        step_end.append(clock)
        step_stall.append(stall - stall_before)
    if ei != len(events):
        raise fail(f"event {events[ei]} matches no prefetch or miss")
    hits, accesses = sum(layer_hits), sum(layer_acc)
    metrics = {
        "hit_rate": hits / max(1, accesses),
        "hits": hits,
        "in_flight": late_n,
        "in_flight_stall_s": late_stall,
        "residency_rate": (hits + late_n) / max(1, accesses),
        "accesses": accesses,
        "demand_loads": loads,
        "prefetches": prefetches,
        "prefetch_hits": prefetch_hits,
        "cpu_experts": cpu_experts,
        "bytes_copied": (loads + prefetches) * expert_bytes,
        "stall_s": stall,
        "stall_per_token_s": stall / max(1, len(steps)),
        "time_s": clock,
        "tokens": tokens,
        "tokens_per_s": tokens / clock if clock > 0 else 0.0,
    }
    return {
        "metrics": metrics,
        "layer_hit_rate": [h / max(1, a) for h, a in zip(layer_hits, layer_acc, strict=True)],
        "step_end_s": step_end,
        "step_stall_s": step_stall,
    }
