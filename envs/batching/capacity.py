"""Capacity at SLO: the highest arrival rate at which a policy keeps its SLO attainment.

vidur (Agrawal et al., MLSys 2024) reports a deployment's *capacity* as the highest request rate
it serves within its scheduling-delay SLO, and DistServe (Zhong et al., OSDI 2024) its *goodput*
as the highest rate at which at least 90 % of requests meet their TTFT and TPOT SLOs; both find
it by searching over the rate. Here the search scales one trace's arrival pattern (the same
requests, arrival times stretched or compressed) and bisects on the rate in log space.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from schedgym.errors import SchedgymError

DEFAULT_TARGET = 0.9  # DistServe's 90 % SLO attainment
DEFAULT_REL_TOL = 0.04


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
