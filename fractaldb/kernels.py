"""Numba kernels of the chaos game.

The hot loop never builds a coordinate array: eight independent chains are advanced in an
interleaved, unrolled loop (so the CPU overlaps their multiply-add chains), one xorshift64*
draw supplies the map choice for all eight chains (one byte each, looked up in a 256-entry
table) and every point is splatted straight into the image. The bounding box comes from a
warm-up run of the same chains. No fastmath: results are bit-identical on every IEEE-754 CPU.

The steps are separate kernels (start_chains, advance, image_frame, draw_rounds, draw_last),
so that fractaldb.chaos can draw an image in bounded slices with a stop point between them;
`chaos_game` chains them in one call. Any slicing gives the same image.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Chains whose state leaves this box are treated as escaped (divergent) and restarted.
ESCAPE_LIMIT = 1e10
BURN_IN = 32
MULT = np.uint64(0x2545F4914F6CDD1D)


@njit(cache=True, nogil=True, inline="always")
def _xorshift64star(state: np.uint64) -> tuple:
    """Advance a xorshift64* state; return (new_state, 64 random bits)."""
    state ^= state >> np.uint64(12)
    state ^= state << np.uint64(25)
    state ^= state >> np.uint64(27)
    return state, state * MULT


@njit(cache=True, nogil=True)
def splitmix64(seed: np.uint64) -> np.uint64:
    """Scramble a seed into a non-zero xorshift state (SplitMix64 finaliser)."""
    z = seed + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    if z == np.uint64(0):
        z = np.uint64(1)
    return z


@njit(cache=True, nogil=True, inline="always")
def _apply(coef: np.ndarray, k: np.int64, x: float, y: float) -> tuple:
    """Apply affine map k to (x, y)."""
    return (
        coef[k, 0] * x + coef[k, 1] * y + coef[k, 4],
        coef[k, 2] * x + coef[k, 3] * y + coef[k, 5],
    )


@njit(cache=True, nogil=True, inline="always")
def _sane(v: float) -> bool:
    """True if a coordinate is finite and inside the escape box (False for NaN)."""
    return abs(v) < ESCAPE_LIMIT


@njit(cache=True, nogil=True)
def advance(coef, table, state, xs, ys, iters, track, bbox):
    """Run the 8 chains `iters` steps without drawing; optionally track their bounding box.

    Returns (state, escapes). Escaped chains restart at the origin.
    """
    escapes = 0
    for _ in range(iters):
        state, r = _xorshift64star(state)
        for c in range(8):
            k = np.int64(table[(r >> np.uint64(8 * c)) & np.uint64(255)])
            x, y = _apply(coef, k, xs[c], ys[c])
            if not (_sane(x) and _sane(y)):
                x = 0.0
                y = 0.0
                escapes += 1
            xs[c] = x
            ys[c] = y
            if track:
                bbox[0] = min(bbox[0], x)
                bbox[1] = max(bbox[1], x)
                bbox[2] = min(bbox[2], y)
                bbox[3] = max(bbox[3], y)
    return state, escapes


@njit(cache=True, nogil=True, inline="always")
def _splat(out, px: float, py: float, width: float, height: float, count: bool) -> None:
    """Add one point to the image if it falls inside (NaN never does)."""
    if px >= 0.0 and px < width and py >= 0.0 and py < height:
        if count:
            out[np.int64(py), np.int64(px)] += 1
        else:
            out[np.int64(py), np.int64(px)] = 1


@njit(cache=True, nogil=True)
def start_chains(seed, xs, ys):
    """Seed the xorshift state and the 8 chains' start points (`xs`, `ys`); return the state."""
    state = splitmix64(np.uint64(seed))
    for c in range(8):
        state, r = _xorshift64star(state)
        xs[c] = (np.float64(r >> np.uint64(11)) / 9007199254740992.0) * 2.0 - 1.0
        state, r = _xorshift64star(state)
        ys[c] = (np.float64(r >> np.uint64(11)) / 9007199254740992.0) * 2.0 - 1.0
    return state


@njit(cache=True, nogil=True)
def image_frame(bbox, height, width, pad):
    """The scale and offset (sx, sy, ox, oy) that map the bounding box into the image."""
    span_x = max(bbox[1] - bbox[0], 1e-12)
    span_y = max(bbox[3] - bbox[2], 1e-12)
    sx = (width - 2.0 * pad) / span_x
    sy = (height - 2.0 * pad) / span_y
    return sx, sy, pad - bbox[0] * sx, pad - bbox[2] * sy


@njit(cache=True, nogil=True)
def draw_rounds(coef, table, state, xs, ys, rounds, out, frame, count):
    """Advance the 8 chains from (`xs`, `ys`) by `rounds` steps, splatting every point into
    `out` through `frame`; store the chains back and return (state, escapes).

    Any split of the rounds into successive calls draws the same image."""
    sx, sy, ox, oy = frame
    height, width = out.shape
    wf = np.float64(width)
    hf = np.float64(height)
    escapes = 0
    # Unrolled: eight scalar chains stay in registers.
    x0, x1, x2, x3, x4, x5, x6, x7 = xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7]
    y0, y1, y2, y3, y4, y5, y6, y7 = ys[0], ys[1], ys[2], ys[3], ys[4], ys[5], ys[6], ys[7]
    m = np.uint64(255)
    for _ in range(rounds):
        state, r = _xorshift64star(state)
        x0, y0 = _apply(coef, np.int64(table[r & m]), x0, y0)
        x1, y1 = _apply(coef, np.int64(table[(r >> np.uint64(8)) & m]), x1, y1)
        x2, y2 = _apply(coef, np.int64(table[(r >> np.uint64(16)) & m]), x2, y2)
        x3, y3 = _apply(coef, np.int64(table[(r >> np.uint64(24)) & m]), x3, y3)
        x4, y4 = _apply(coef, np.int64(table[(r >> np.uint64(32)) & m]), x4, y4)
        x5, y5 = _apply(coef, np.int64(table[(r >> np.uint64(40)) & m]), x5, y5)
        x6, y6 = _apply(coef, np.int64(table[(r >> np.uint64(48)) & m]), x6, y6)
        x7, y7 = _apply(coef, np.int64(table[(r >> np.uint64(56)) & m]), x7, y7)
        _splat(out, x0 * sx + ox, y0 * sy + oy, wf, hf, count)
        _splat(out, x1 * sx + ox, y1 * sy + oy, wf, hf, count)
        _splat(out, x2 * sx + ox, y2 * sy + oy, wf, hf, count)
        _splat(out, x3 * sx + ox, y3 * sy + oy, wf, hf, count)
        _splat(out, x4 * sx + ox, y4 * sy + oy, wf, hf, count)
        _splat(out, x5 * sx + ox, y5 * sy + oy, wf, hf, count)
        _splat(out, x6 * sx + ox, y6 * sy + oy, wf, hf, count)
        _splat(out, x7 * sx + ox, y7 * sy + oy, wf, hf, count)
        # One branch per 8 points; escaped (or NaN) chains restart at the origin.
        if not (
            _sane(x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7)
            and _sane(y0 + y1 + y2 + y3 + y4 + y5 + y6 + y7)
        ):
            xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7] = x0, x1, x2, x3, x4, x5, x6, x7
            ys[0], ys[1], ys[2], ys[3], ys[4], ys[5], ys[6], ys[7] = y0, y1, y2, y3, y4, y5, y6, y7
            for c in range(8):
                if not (_sane(xs[c]) and _sane(ys[c])):
                    xs[c] = 0.0
                    ys[c] = 0.0
                    escapes += 1
            x0, x1, x2, x3, x4, x5, x6, x7 = xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7]
            y0, y1, y2, y3, y4, y5, y6, y7 = ys[0], ys[1], ys[2], ys[3], ys[4], ys[5], ys[6], ys[7]
    xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7] = x0, x1, x2, x3, x4, x5, x6, x7
    ys[0], ys[1], ys[2], ys[3], ys[4], ys[5], ys[6], ys[7] = y0, y1, y2, y3, y4, y5, y6, y7
    return state, escapes


@njit(cache=True, nogil=True)
def draw_last(coef, table, state, xs, ys, n, out, frame, count):
    """Draw the last `n` (< 8) points, one per chain, after the whole rounds."""
    sx, sy, ox, oy = frame
    height, width = out.shape
    wf = np.float64(width)
    hf = np.float64(height)
    m = np.uint64(255)
    state, r = _xorshift64star(state)
    for c in range(n):
        k = np.int64(table[(r >> np.uint64(8 * c)) & m])
        x, y = _apply(coef, k, xs[c], ys[c])
        _splat(out, x * sx + ox, y * sy + oy, wf, hf, count)
    return state


@njit(cache=True, nogil=True)
def chaos_game(coef, table, n_points, seed, out, pad, warmup, count):
    """Draw `n_points` points of the IFS `coef` (N x 6) into `out` (H x W); return escapes.

    `table` is a 256-entry uint8 map-choice table, `seed` a uint64, `pad` the margin in pixels,
    `warmup` the points per chain used to find the bounding box, and `count` selects hit
    counting (`out[y, x] += 1`) instead of binary marking (`out[y, x] = 1`). In one call: it
    cannot be interrupted; fractaldb.chaos runs the same steps in slices for large images.
    """
    xs = np.empty(8)
    ys = np.empty(8)
    state = start_chains(seed, xs, ys)
    bbox = np.array([np.inf, -np.inf, np.inf, -np.inf])
    state, esc0 = advance(coef, table, state, xs, ys, BURN_IN, False, bbox)
    state, esc1 = advance(coef, table, state, xs, ys, max(warmup, 1), True, bbox)
    height, width = out.shape
    frame = image_frame(bbox, np.float64(height), np.float64(width), pad)
    state, esc2 = draw_rounds(coef, table, state, xs, ys, n_points // 8, out, frame, count)
    draw_last(coef, table, state, xs, ys, n_points % 8, out, frame, count)
    return esc0 + esc1 + esc2


@njit(cache=True, nogil=True)
def stamp(hits, mask, out):
    """Stamp the 3x3 `mask` at every hit: `out` = sum of the hits shifted by each set mask cell.

    This is the same image as stamping the patch at every point, but done as a dense,
    vectorisable pass over the image instead of nine scattered writes per point.
    """
    height, width = hits.shape
    for dy in range(3):
        for dx in range(3):
            if mask[dy, dx]:
                # A hit at (y0, x0) lights (y0 + dy - 1, x0 + dx - 1).
                for y in range(max(0, dy - 1), min(height, height + dy - 1)):
                    src = y - dy + 1
                    for x in range(max(0, dx - 1), min(width, width + dx - 1)):
                        out[y, x] += hits[src, x - dx + 1]
