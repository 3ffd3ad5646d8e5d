"""Dataset layout: which (category, instance) goes where, and what the files are called.

The global sample order is a keyed pseudo-random permutation of the (category, instance)
grid, computed index by index (a Feistel network with cycle walking) so that any shard's
contents are a pure function of the shard index, independent of NumPy's RNG streams, and
categories are interleaved inside every shard.
"""

from __future__ import annotations

import numpy as np

SHARD_PREFIX = "fractaldb-"
SHARD_SUFFIX = ".tar"
FEISTEL_ROUNDS = 6
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = 0x9E3779B97F4A7C15


def shard_name(index: int) -> str:
    """Return the file name of shard `index`."""
    return f"{SHARD_PREFIX}{index:06d}{SHARD_SUFFIX}"


def shard_pattern(num_shards: int) -> str:
    """Return the brace pattern naming all shards, e.g. `fractaldb-{000000..000009}.tar`."""
    if num_shards == 1:
        return shard_name(0)
    return f"{SHARD_PREFIX}{{{0:06d}..{num_shards - 1:06d}}}{SHARD_SUFFIX}"


def sample_key(category: int, instance: int) -> str:
    """Return the WebDataset key of a sample (no dots, unique within the dataset)."""
    return f"c{category:06d}_i{instance:06d}"


def num_shards(num_samples: int, samples_per_shard: int) -> int:
    """Return how many shards hold `num_samples` samples."""
    return -(-num_samples // samples_per_shard)


def shard_range(index: int, num_samples: int, samples_per_shard: int) -> range:
    """Return the global positions stored in shard `index`."""
    start = index * samples_per_shard
    return range(start, min(start + samples_per_shard, num_samples))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def permute(positions: np.ndarray | range, n: int, key: int) -> np.ndarray:
    """Map positions in [0, n) to a keyed pseudo-random permutation of [0, n).

    A balanced Feistel network on the smallest even number of bits covering n is a bijection
    of [0, 4^h); cycle walking (re-applying it until the value falls below n) restricts it to
    a bijection of [0, n).
    """
    x = np.asarray(positions, dtype=np.uint64).copy()
    if n <= 1:
        return x.astype(np.int64)
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)
    keys = [
        np.uint64((key * _GOLDEN + r * 0xD1B54A32D192ED03 + 1) % (1 << 64))
        for r in range(FEISTEL_ROUNDS)
    ]

    def encrypt(v: np.ndarray) -> np.ndarray:
        left, right = v >> shift, v & mask
        for k in keys:
            left, right = right, left ^ (_mix(right ^ k) & mask)
        return (left << shift) | right

    with np.errstate(over="ignore"):
        todo = np.ones(x.shape, dtype=bool)
        while todo.any():
            x[todo] = encrypt(x[todo])
            todo = x >= np.uint64(n)
    return x.astype(np.int64)


def grid_cells(
    positions: np.ndarray | range, num_categories: int, instances: int, key: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the (category, instance) arrays at the given global positions."""
    cells = permute(positions, num_categories * instances, key)
    return cells // instances, cells % instances
