"""Numba kernels of the contour families (VisualAtom, RCDB): 1-D Perlin noise, a 1-px line
rasteriser and the orbit loop that moves every vertex and draws each closed contour.

`pnoise1` follows the `noise` package's definition (Ken Perlin's improved-noise permutation
table, gradient g = (h & 7) + 1, or -1 when h & 8, quintic fade, times 0.4, everything in
float32 as its C code computes). `line` draws as Pillow's `ImageDraw.line` with width 1:
end points truncated towards zero, integer Bresenham from the first end point, both ends drawn.
Random draws are counter-based (splitmix64 of seed + index), so any backend can compute draw
(orbit, vertex) without running the ones before it. No fastmath: no FMA contraction, the
same bits on every IEEE-754 machine.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Ken Perlin's reference permutation of 0..255 (Improved Noise, 2002), twice, as `noise` has it.
_PERM_256 = (
    151, 160, 137, 91, 90, 15, 131, 13, 201, 95, 96, 53, 194, 233, 7, 225, 140, 36, 103, 30,
    69, 142, 8, 99, 37, 240, 21, 10, 23, 190, 6, 148, 247, 120, 234, 75, 0, 26, 197, 62, 94,
    252, 219, 203, 117, 35, 11, 32, 57, 177, 33, 88, 237, 149, 56, 87, 174, 20, 125, 136, 171,
    168, 68, 175, 74, 165, 71, 134, 139, 48, 27, 166, 77, 146, 158, 231, 83, 111, 229, 122, 60,
    211, 133, 230, 220, 105, 92, 41, 55, 46, 245, 40, 244, 102, 143, 54, 65, 25, 63, 161, 1,
    216, 80, 73, 209, 76, 132, 187, 208, 89, 18, 169, 200, 196, 135, 130, 116, 188, 159, 86,
    164, 100, 109, 198, 173, 186, 3, 64, 52, 217, 226, 250, 124, 123, 5, 202, 38, 147, 118, 126,
    255, 82, 85, 212, 207, 206, 59, 227, 47, 16, 58, 17, 182, 189, 28, 42, 223, 183, 170, 213,
    119, 248, 152, 2, 44, 154, 163, 70, 221, 153, 101, 155, 167, 43, 172, 9, 129, 22, 39, 253,
    19, 98, 108, 110, 79, 113, 224, 232, 178, 185, 112, 104, 218, 246, 97, 228, 251, 34, 242,
    193, 238, 210, 144, 12, 191, 179, 162, 241, 81, 51, 145, 235, 249, 14, 239, 107, 49, 192,
    214, 31, 181, 199, 106, 157, 184, 84, 204, 176, 115, 121, 50, 45, 127, 4, 150, 254, 138,
    236, 205, 93, 222, 114, 67, 29, 24, 72, 243, 141, 128, 195, 78, 66, 215, 61, 156, 180,
)  # fmt: skip
PERM = np.array(_PERM_256 * 2, dtype=np.int64)

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# a draw's 32 low / high bits times this give the noise position U(0, 10000), as the originals
NOISE_SPAN = 10000.0 / 2.0**32
F32 = np.float32


@njit(cache=True, nogil=True, inline="always")
def mix(z: np.uint64) -> np.uint64:
    """The splitmix64 finaliser (the same as fractaldb.core.seeding.mix64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True, inline="always")
def draw(seed: np.uint64, index: np.int64) -> np.uint64:
    """64 random bits of draw `index` of a stream (splitmix64 at seed + (index + 1) * golden)."""
    return mix(seed + np.uint64(index + 1) * GOLDEN)


@njit(cache=True, nogil=True, inline="always")
def _grad1(h: np.int64, x: np.float32) -> np.float32:
    g = F32((h & 7) + 1)
    if h & 8:
        g = F32(-1.0)  # sic: `noise` negates to -1, not to -g
    return g * x


@njit(cache=True, nogil=True, inline="always")
def noise1(x: np.float32, repeat: np.int64, base: np.int64) -> np.float32:
    """One octave of `noise`'s 1-D improved Perlin noise at x (float32 throughout)."""
    fl = np.floor(x)
    i = np.int64(fl) % repeat
    ii = (i + 1) % repeat
    i = (i & 255) + base
    ii = (ii & 255) + base
    x = x - fl
    fx = x * x * x * (x * (x * F32(6.0) - F32(15.0)) + F32(10.0))
    a = _grad1(PERM[i], x)
    b = _grad1(PERM[ii], x - F32(1.0))
    return (a + fx * (b - a)) * F32(0.4)


@njit(cache=True, nogil=True)
def pnoise1(
    x: float,
    octaves: int = 1,
    persistence: float = 0.5,
    lacunarity: float = 2.0,
    repeat: int = 1024,
    base: int = 0,
) -> float:
    """`noise.pnoise1`: fractal sum of `octaves` octaves, normalised by the amplitude sum."""
    xf = F32(x)
    if octaves == 1:
        return float(noise1(xf, repeat, base))
    freq, amp, peak, total = F32(1.0), F32(1.0), F32(0.0), F32(0.0)
    for _ in range(octaves):
        total += noise1(xf * freq, np.int64(F32(repeat) * freq), base) * amp
        peak += amp
        freq *= F32(lacunarity)
        amp *= F32(persistence)
    return float(total / peak)


@njit(cache=True, nogil=True, inline="always")
def segment(canvas, nc, w, h, x0, y0, x1, y1, ink) -> None:
    """Draw integer segment (x0, y0)-(x1, y1) into a flat (h * w + 1) * nc canvas, pixel for
    pixel as Pillow's Bresenham (major axis walked from (x0, y0), both ends drawn).

    The error-term branch, which mispredicts about every other pixel, becomes arithmetic;
    a segment wholly left, right, above or below the image draws nothing and is skipped;
    off-image pixels of the others go to the trash slot after the image.
    """
    if (x0 < 0 and x1 < 0) or (x0 >= w and x1 >= w) or (y0 < 0 and y1 < 0) or (y0 >= h and y1 >= h):
        return
    dx, dy = abs(x1 - x0), abs(y1 - y0)
    sx = 1 if x1 >= x0 else -1
    sy = 1 if y1 >= y0 else -1
    x_major = dx > dy
    n = dx if x_major else dy
    m = dy if x_major else dx
    major_x, major_y = (sx, 0) if x_major else (0, sy)
    minor_x, minor_y = (0, sy) if x_major else (sx, 0)
    e = 2 * m - n
    if (x0 >= 0) & (x0 < w) & (x1 >= 0) & (x1 < w) & (y0 >= 0) & (y0 < h) & (y1 >= 0) & (y1 < h):
        # wholly inside (most segments): walk the flat index, no bounds checks
        p = (y0 * w + x0) * nc
        major = (major_y * w + major_x) * nc
        minor = (minor_y * w + minor_x) * nc
        for _ in range(n + 1):
            for c in range(nc):
                canvas[p + c] = ink[c]
            step = np.int64(e >= 0)
            p += major + minor * step
            e += 2 * m - 2 * n * step
        return
    trash = h * w * nc
    for _ in range(n + 1):
        ok = (x0 >= 0) & (x0 < w) & (y0 >= 0) & (y0 < h)
        p = (y0 * w + x0) * nc if ok else trash
        for c in range(nc):
            canvas[p + c] = ink[c]
        step = np.int64(e >= 0)
        x0 += major_x + minor_x * step
        y0 += major_y + minor_y * step
        e += 2 * m - 2 * n * step


@njit(cache=True, nogil=True)
def line(out: np.ndarray, x0f: float, y0f: float, x1f: float, y1f: float, ink: np.ndarray):
    """Draw a 1-px segment into out (H, W, C) as Pillow's `ImageDraw.line(width=1)` does."""
    h, w, nc = out.shape
    canvas = np.zeros((h * w + 1) * nc, dtype=np.uint8)
    canvas[: h * w * nc] = out.reshape(h * w * nc)
    segment(canvas, nc, w, h, np.int64(x0f), np.int64(y0f), np.int64(x1f), np.int64(y1f), ink)
    out[:] = canvas[: h * w * nc].reshape(h, w, nc)


@njit(cache=True, nogil=True)
def contour_ink(color_seed: np.uint64, orbit: np.int64, ink: np.ndarray) -> None:
    """Fill ink (C,) with contour `orbit`'s level: one byte (gray) or three (RGB) of a draw."""
    bits = draw(color_seed, orbit)
    for c in range(ink.shape[0]):
        ink[c] = np.uint8((bits >> np.uint64(8 * c)) & np.uint64(255))


@njit(cache=True, nogil=True, inline="always")
def noise_pair(noise_seed: np.uint64, index: np.int64) -> tuple:
    """The x and y Perlin samples of one (orbit, vertex) draw: pnoise1 at U(0, 10000) each."""
    bits = draw(noise_seed, index)
    ux = float(bits & np.uint64(0xFFFFFFFF)) * NOISE_SPAN
    uy = float(bits >> np.uint64(32)) * NOISE_SPAN
    return float(noise1(F32(ux), 1024, 0)), float(noise1(F32(uy), 1024, 0))


@njit(cache=True, nogil=True)
def draw_contours(
    cos_t: np.ndarray,
    sin_t: np.ndarray,
    wave: np.ndarray,
    eta: float,
    gain: float,
    orbits: int,
    start_x: float,
    start_y: float,
    cx: float,
    cy: float,
    scale: float,
    noise_seed: np.uint64,
    color_seed: np.uint64,
    out: np.ndarray,
) -> None:
    """Draw `orbits` closed contours of q = len(cos_t) vertices into out (H, W, C) uint8.

    The vertices start on the ellipse (start_x cos t, start_y sin t); orbit k moves vertex v
    outwards by eta (1 - gain p) + wave[v] (p: a fresh Perlin sample per vertex and axis) and
    draws the polygon at centre (cx, cy), coordinates times `scale` (1 at 512 px).
    """
    q = cos_t.shape[0]
    h, w, nc = out.shape
    canvas = np.zeros((h * w + 1) * nc, dtype=np.uint8)  # + the trash slot
    xs = np.empty(q)
    ys = np.empty(q)
    for v in range(q):
        xs[v] = cos_t[v] * start_x
        ys[v] = sin_t[v] * start_y
    ix = np.empty(q + 1, dtype=np.int64)
    iy = np.empty(q + 1, dtype=np.int64)
    ink = np.empty(nc, dtype=np.uint8)
    for k in range(orbits):
        contour_ink(color_seed, k, ink)
        base = k * q
        for v in range(q):
            px, py = noise_pair(noise_seed, base + v)
            xs[v] += cos_t[v] * (eta * (1.0 - gain * px) + wave[v])
            ys[v] += sin_t[v] * (eta * (1.0 - gain * py) + wave[v])
        # pixel coordinates truncate towards zero, as Pillow's (int) casts (a loop of its
        # own: it vectorises)
        for v in range(q):
            ix[v] = np.int64(cx + scale * xs[v])
            iy[v] = np.int64(cy + scale * ys[v])
        ix[q], iy[q] = ix[0], iy[0]
        for v in range(q):
            segment(canvas, nc, w, h, ix[v], iy[v], ix[v + 1], iy[v + 1], ink)
    out[:] = canvas[: h * w * nc].reshape(h, w, nc)
