"""The contour renderer on an NVIDIA GPU (Numba's CUDA target): one thread per image runs the
CPU kernel (`fractaldb.contour_kernels.draw_contours`) step for step, so the images equal the
CPU's byte for byte.

What guarantees it: every per-image input (trigonometric tables, start, centre, seeds) comes
from the CPU renderer's own plan; the noise and ink draws are the same counter-based
splitmix64 words; Perlin noise is computed in float32 and the vertex updates in float64, each
product and sum rounded on its own (libdevice's `__fmul_rn`/`__fadd_rn`, `__dmul_rn`/
`__dadd_rn`, which NVVM never contracts into an FMA); float-to-pixel conversion truncates and
the line rasteriser is integer work. The simulator runs the kernel as Python on numpy scalars,
whose float32 and float64 operations are single IEEE operations already.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fractaldb.contour import REFERENCE_SIZE, ContourRenderer, check_contour_settings
from fractaldb.contour_kernels import GOLDEN, NOISE_SPAN, PERM
from fractaldb.gpu_kernels import SIMULATOR, cuda, zero_kernel
from fractaldb.settings import RenderSettings

F32 = np.float32
_MASK32, _U32, _U30, _U27, _U31 = (np.uint64(v) for v in (0xFFFFFFFF, 32, 30, 27, 31))
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)

if cuda is not None and not SIMULATOR:
    from numba.cuda.libdevice import dadd_rn as _add
    from numba.cuda.libdevice import dmul_rn as _mul
    from numba.cuda.libdevice import fadd_rn as _fadd
    from numba.cuda.libdevice import fmul_rn as _fmul

    @cuda.jit(device=True, inline=True)
    def _wrapmul(a, b):
        return a * b  # uint64, modulo 2**64 on the device

    @cuda.jit(device=True, inline=True)
    def _wrapadd(a, b):
        return a + b

else:

    def _mul(a, b):
        return a * b

    def _add(a, b):
        return a + b

    def _fmul(a, b):
        return F32(a) * F32(b)

    def _fadd(a, b):
        return F32(a) + F32(b)

    # numpy warns on uint64 overflow; the device wraps silently
    def _wrapmul(a, b):
        return np.uint64((int(a) * int(b)) & 0xFFFFFFFFFFFFFFFF)

    def _wrapadd(a, b):
        return np.uint64((int(a) + int(b)) & 0xFFFFFFFFFFFFFFFF)


if cuda is not None:

    @cuda.jit(device=True, inline=True)
    def _draw(seed, index):
        # contour_kernels.draw: splitmix64 at seed + (index + 1) * golden
        z = _wrapadd(seed, _wrapmul(np.uint64(index + 1), GOLDEN))
        z = _wrapmul(z ^ (z >> _U30), _M1)
        z = _wrapmul(z ^ (z >> _U27), _M2)
        return z ^ (z >> _U31)

    @cuda.jit(device=True, inline=True)
    def _grad1(h, x):
        g = F32((h & 7) + 1)
        if h & 8:
            g = F32(-1.0)
        return _fmul(g, x)

    @cuda.jit(device=True, inline=True)
    def _noise1(perm, x):
        # contour_kernels.noise1 with repeat 1024, base 0; x >= 0, so floor is truncation
        fl = int(x)
        i = fl % 1024
        ii = (i + 1) % 1024
        x = _fadd(x, -F32(fl))
        fx = _fmul(
            _fmul(_fmul(x, x), x),
            _fadd(_fmul(x, _fadd(_fmul(x, F32(6.0)), F32(-15.0))), F32(10.0)),
        )
        a = _grad1(perm[i & 255], x)
        b = _grad1(perm[ii & 255], _fadd(x, F32(-1.0)))
        return _fmul(_fadd(a, _fmul(fx, _fadd(b, -a))), F32(0.4))

    @cuda.jit(device=True, inline=True)
    def _plot(out, b, x, y, ink):
        if x >= 0 and x < out.shape[2] and y >= 0 and y < out.shape[1]:
            for c in range(out.shape[3]):
                out[b, y, x, c] = ink[c]

    @cuda.jit(device=True)
    def _line(out, b, x0f, y0f, x1f, y1f, ink):
        # contour_kernels.segment (Pillow's 1-px line, its Bresenham steps as arithmetic)
        x0 = int(x0f)
        y0 = int(y0f)
        x1 = int(x1f)
        y1 = int(y1f)
        dx = abs(x1 - x0)
        dy = abs(y1 - y0)
        sx = 1 if x1 >= x0 else -1
        sy = 1 if y1 >= y0 else -1
        x_major = dx > dy
        n = dx if x_major else dy
        m = dy if x_major else dx
        e = 2 * m - n
        for _ in range(n + 1):
            _plot(out, b, x0, y0, ink)
            step = 1 if e >= 0 else 0
            if x_major:
                x0 += sx
                y0 += sy * step
            else:
                x0 += sx * step
                y0 += sy
            e += 2 * m - 2 * n * step

    @cuda.jit(fastmath=False)
    def contour_kernel(
        cos_t, sin_t, wave, q, orbits, eta, gain, start, centre, seeds, scale, perm, xs, ys,
        inks, out,
    ):  # fmt: skip
        """One image per thread: the CPU's draw_contours for image b of the batch."""
        b = cuda.grid(1)
        if b >= out.shape[0]:
            return
        n = q[b]
        for v in range(n):
            xs[b, v] = _mul(cos_t[b, v], start[b, 0])
            ys[b, v] = _mul(sin_t[b, v], start[b, 1])
        ink = inks[b]
        cx = centre[b, 0]
        cy = centre[b, 1]
        for k in range(orbits[b]):
            bits = _draw(seeds[b, 1], k)
            for c in range(ink.shape[0]):
                ink[c] = np.uint8((bits >> np.uint64(8 * c)) & np.uint64(255))
            for v in range(n):
                bits = _draw(seeds[b, 0], k * n + v)
                px = F32(_noise1(perm, F32(_mul(float(bits & _MASK32), NOISE_SPAN))))
                py = F32(_noise1(perm, F32(_mul(float(bits >> _U32), NOISE_SPAN))))
                wx = _add(_mul(eta[b], _add(1.0, -_mul(gain[b], float(px)))), wave[b, v])
                wy = _add(_mul(eta[b], _add(1.0, -_mul(gain[b], float(py)))), wave[b, v])
                xs[b, v] = _add(xs[b, v], _mul(cos_t[b, v], wx))
                ys[b, v] = _add(ys[b, v], _mul(sin_t[b, v], wy))
            x_first = _add(cx, _mul(scale, xs[b, 0]))
            y_first = _add(cy, _mul(scale, ys[b, 0]))
            x_prev = x_first
            y_prev = y_first
            for v in range(1, n):
                x_next = _add(cx, _mul(scale, xs[b, v]))
                y_next = _add(cy, _mul(scale, ys[b, v]))
                _line(out, b, x_prev, y_prev, x_next, y_next, ink)
                x_prev = x_next
                y_prev = y_next
            _line(out, b, x_prev, y_prev, x_first, y_first, ink)


def prepare_contour_batch(
    renderer: ContourRenderer, cells: Sequence[tuple[int, int]]
) -> dict[str, np.ndarray]:
    """The kernel's host inputs for (category, instance) cells, from the CPU's own plans."""
    plans = [renderer.plan(c, i) for c, i in cells]
    n, qmax = len(plans), max(p.prepared.category.vertices for p in plans)
    arrays = {
        "cos_t": np.zeros((n, qmax)),
        "sin_t": np.zeros((n, qmax)),
        "wave": np.zeros((n, qmax)),
        "q": np.empty(n, np.int64),
        "orbits": np.empty(n, np.int64),
        "eta": np.empty(n),
        "gain": np.empty(n),
        "start": np.empty((n, 2)),
        "centre": np.empty((n, 2)),
        "seeds": np.empty((n, 2), np.uint64),
    }
    for b, plan in enumerate(plans):
        prep, cat = plan.prepared, plan.prepared.category
        q = cat.vertices
        arrays["cos_t"][b, :q], arrays["sin_t"][b, :q] = prep.cos_t, prep.sin_t
        arrays["wave"][b, :q] = prep.wave
        arrays["q"][b], arrays["orbits"][b] = q, cat.orbits
        arrays["eta"][b], arrays["gain"][b] = cat.eta, cat.noise_gain
        arrays["start"][b] = plan.start_x, plan.start_y
        arrays["centre"][b] = plan.cx, plan.cy
        arrays["seeds"][b] = plan.noise_seed, plan.ink_seed
    return arrays


def launch_1d(total: int) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride kernel over `total` items."""
    threads = 32 if SIMULATOR else 256
    return (1 if SIMULATOR else max(1, min(-(-total // threads), 65536))), threads


def render_contour_batch(
    renderer: ContourRenderer,
    cells: Sequence[tuple[int, int]],
    settings: RenderSettings,
    stream: Any = 0,
) -> Any:
    """Render cells into a uint8 device array, (B, H, W) gray or (B, H, W, 3) RGB, each image
    equal to the CPU renderer's."""
    check_contour_settings(settings)
    host = prepare_contour_batch(renderer, cells)
    n, size, channels = len(cells), settings.image_size, settings.channels
    dev = {k: cuda.to_device(v, stream=stream) for k, v in host.items()}
    out = cuda.device_array((n, size, size, channels), dtype=np.uint8, stream=stream)
    blocks, threads = launch_1d(out.size)
    zero_kernel[blocks, threads, stream](out.reshape(out.size))
    xs = cuda.device_array(host["cos_t"].shape, dtype=np.float64, stream=stream)
    ys = cuda.device_array(host["cos_t"].shape, dtype=np.float64, stream=stream)
    inks = cuda.device_array((n, channels), dtype=np.uint8, stream=stream)
    threads = 32 if SIMULATOR else 64
    contour_kernel[-(-n // threads), threads, stream](
        dev["cos_t"], dev["sin_t"], dev["wave"], dev["q"], dev["orbits"], dev["eta"],
        dev["gain"], dev["start"], dev["centre"], dev["seeds"],
        np.float64(size / REFERENCE_SIZE), cuda.to_device(PERM, stream=stream), xs, ys, inks,
        out,
    )  # fmt: skip
    return out.reshape(out.shape[:3]) if channels == 1 else out
