"""The chaos game on one IFS: map probabilities -> lookup table -> hit image.

The bottom of the renderer (below categories, instances and render): the category loader's
divergence check (fractaldb.ifs) and the per-image renderer both draw points through here.
"""

from __future__ import annotations

import numpy as np

from fractaldb.core.stopping import check_stop
from fractaldb.kernels import (
    BURN_IN,
    advance,
    chaos_game,
    draw_last,
    draw_rounds,
    image_frame,
    start_chains,
)

TABLE_SIZE = 256
# chain steps (8 points each) per kernel call: ~20 ms, so a stop request lands at once however
# many points an image has; the image does not depend on it
SLICE_STEPS = 1 << 19


def choice_table(probs: np.ndarray) -> np.ndarray:
    """Quantise map probabilities into a 256-entry lookup table (every map gets >= 1 entry)."""
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum()
    counts = np.maximum(np.floor(probs * TABLE_SIZE).astype(np.int64), (probs > 0).astype(np.int64))
    # Largest remainder first; ties broken by map index, so the table is deterministic.
    order = np.argsort(-(probs * TABLE_SIZE - np.floor(probs * TABLE_SIZE)), kind="stable")
    i = 0
    while counts.sum() < TABLE_SIZE:
        counts[order[i % len(order)]] += 1
        i += 1
    while counts.sum() > TABLE_SIZE:
        big = int(np.argmax(counts))
        counts[big] -= 1
    return np.repeat(np.arange(len(probs), dtype=np.uint8), counts)


def warmup_steps(points: int) -> int:
    """Steps per chain (8 chains) of the bounding-box warm-up: about 1/16 of the points."""
    return max(256, points // 128)


def run_chaos_game(
    maps: np.ndarray,
    table: np.ndarray,
    size: int,
    points: int,
    seed: int,
    pad: float,
    count: bool,
    warmup: int,
) -> tuple[np.ndarray, int]:
    """Run the kernel into a fresh image; return (hits, escaped chain steps).

    An image of more than SLICE_STEPS steps runs the steps of `fractaldb.kernels.chaos_game`
    in slices of SLICE_STEPS, with a stop point (`check_stop`) between them.
    """
    out = np.zeros((size, size), dtype=np.uint32 if count else np.uint8)
    coef = np.ascontiguousarray(maps, dtype=np.float64)
    if max(warmup, points // 8) <= SLICE_STEPS:  # one call: ~30 us less per small image
        return out, int(chaos_game(coef, table, points, np.uint64(seed), out, pad, warmup, count))
    xs, ys = np.empty(8), np.empty(8)
    # Numba hands a uint64 back as a Python int: re-typed, or the next call would take int64
    state = np.uint64(start_chains(np.uint64(seed), xs, ys))
    bbox = np.array([np.inf, -np.inf, np.inf, -np.inf])
    state, escapes = advance(coef, table, state, xs, ys, BURN_IN, False, bbox)
    for steps in _slices(max(warmup, 1)):
        state, esc = advance(coef, table, np.uint64(state), xs, ys, steps, True, bbox)
        escapes += esc
    frame = image_frame(bbox, np.float64(size), np.float64(size), np.float64(pad))
    for steps in _slices(points // 8):
        state, esc = draw_rounds(coef, table, np.uint64(state), xs, ys, steps, out, frame, count)
        escapes += esc
    draw_last(coef, table, np.uint64(state), xs, ys, points % 8, out, frame, count)
    return out, int(escapes)


def _slices(steps: int):
    """Split `steps` into runs of at most SLICE_STEPS, with a stop point before each but the
    first."""
    for start in range(0, steps, SLICE_STEPS):
        if start:
            check_stop()
        yield min(SLICE_STEPS, steps - start)


def draw_points(
    maps: np.ndarray,
    probs: np.ndarray,
    size: int,
    points: int,
    seed: int,
    pad: float = 0.0,
    count: bool = False,
    warmup: int | None = None,
) -> tuple[np.ndarray, int]:
    """Run the chaos game; return (size x size hit image, number of escaped chain steps).

    The image is binary uint8 (0/1) or, with `count`, uint32 hit counts. `warmup` is the
    number of steps per chain (8 chains) that set the bounding box (default: `warmup_steps`).
    """
    steps = warmup_steps(points) if warmup is None else warmup
    return run_chaos_game(maps, choice_table(probs), size, points, seed, pad, count, steps)
