"""Seeds flow through ``numpy.random.Generator`` objects; nothing touches global random state."""

from __future__ import annotations

import numpy as np

SeedLike = int | np.random.Generator | None


def as_generator(seed: SeedLike) -> np.random.Generator:
    """Return ``seed`` if it already is a Generator, else a fresh PCG64 Generator seeded by it."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (not isinstance(seed, int | np.integer) or seed < 0):
        raise ValueError(
            f"seed must be a non-negative int, a numpy Generator or None, not {seed!r}"
        )
    return np.random.default_rng(seed)
