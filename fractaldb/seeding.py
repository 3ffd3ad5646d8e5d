"""Stable seeds derived from integer keys, the same on every machine and in every worker."""

from __future__ import annotations

import numpy as np

# Stream tags keep the random streams of one (category, instance) independent of each other.
TAG_SEARCH = 1
TAG_FILL = 2
TAG_POINTS = 3
TAG_MASK = 4
TAG_COLOR = 5
TAG_JITTER = 6


def derive_seed(*keys: int) -> int:
    """Return a 64-bit seed that is a pure function of the non-negative integer keys."""
    if any(int(k) < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative integers, got {keys}")
    words = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return int(words[0]) | (int(words[1]) << 32)


def derive_rng(*keys: int) -> np.random.Generator:
    """Return a numpy Generator seeded by `derive_seed(*keys)`."""
    return np.random.Generator(np.random.PCG64(derive_seed(*keys)))
