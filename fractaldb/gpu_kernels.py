"""The CUDA kernels of the GPU renderer (Numba's CUDA target), apart from its host API.

`fractaldb.gpu` prepares every per-image input on the host and launches these; see its
docstring for the two modes ("exact": the CPU kernel's algorithm step for step, byte-identical
images; "fast": many chains per image) and for why every double product and sum below goes
through `_mul` / `_add` (libdevice's `__dmul_rn` / `__dadd_rn`, never fused into an FMA).
Under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) the same kernels run as Python.
"""

from __future__ import annotations

import math

import numpy as np

from fractaldb.instances import GRAY_VALUE
from fractaldb.kernels import BURN_IN, ESCAPE_LIMIT

MAX_MAPS = 8  # maps per IFS the kernels hold (the host refuses larger systems)

try:  # numba.cuda ships with numba (older) or with the `cuda` extra (numba-cuda)
    from numba import config as _numba_config
    from numba import cuda

    SIMULATOR = bool(_numba_config.ENABLE_CUDASIM)
except ImportError:  # pragma: no cover - numba without any CUDA target
    cuda = None
    SIMULATOR = False


# ----------------------------------------------------------------------------------------
# Device arithmetic that NVVM cannot contract into FMAs. The simulator runs kernels as
# Python, whose float * and + are single IEEE double operations already.
if cuda is not None and not SIMULATOR:
    from numba.cuda.libdevice import dadd_rn as _add
    from numba.cuda.libdevice import dmul_rn as _mul
else:

    def _mul(a, b):
        return a * b

    def _add(a, b):
        return a + b


if cuda is not None and not SIMULATOR:

    @cuda.jit(device=True, inline=True)
    def _wrapmul(a, b):
        return a * b  # uint64 multiply, modulo 2**64 on the device
else:

    def _wrapmul(a, b):
        # numpy warns on uint64 overflow; the device wraps silently.
        return np.uint64((int(a) * int(b)) & 0xFFFFFFFFFFFFFFFF)


if cuda is not None:
    _U12, _U25, _U27 = np.uint64(12), np.uint64(25), np.uint64(27)
    _U11, _U8, _U255 = np.uint64(11), np.uint64(8), np.uint64(255)
    _XS_MULT = np.uint64(0x2545F4914F6CDD1D)
    _INV53 = 1.0 / 9007199254740992.0  # exact power of two: x * _INV53 == x / 2**53

    @cuda.jit(device=True, inline=True)
    def _xorshift(state):
        state ^= state >> _U12
        state ^= state << _U25
        state ^= state >> _U27
        return state, _wrapmul(state, _XS_MULT)

    @cuda.jit(device=True, inline=True)
    def _apply(coef, b, k, x, y):
        # (c0 * x + c1 * y) + c4, rounded after every operation, as on the CPU.
        nx = _add(_add(_mul(coef[b, k, 0], x), _mul(coef[b, k, 1], y)), coef[b, k, 4])
        ny = _add(_add(_mul(coef[b, k, 2], x), _mul(coef[b, k, 3], y)), coef[b, k, 5])
        return nx, ny

    @cuda.jit(device=True, inline=True)
    def _sane(v):
        return abs(v) < ESCAPE_LIMIT

    @cuda.jit(device=True, inline=True)
    def _unit(r):
        # (r >> 11) / 2**53 * 2 - 1, exact in every step but the last subtraction.
        return _add(_mul(float(r >> _U11) * _INV53, 2.0), -1.0)

    @cuda.jit(device=True, inline=True)
    def _splat(hits, b, px, py, wf, hf, count):
        if px >= 0.0 and px < wf and py >= 0.0 and py < hf:
            if count:
                hits[b, int(py), int(px)] += 1
            else:
                hits[b, int(py), int(px)] = 1

    @cuda.jit(device=True)
    def _advance(coef, tables, b, state, xs, ys, iters, track, box):
        # The CPU's _advance: every chain checked and restarted on its own.
        for _ in range(iters):
            state, r = _xorshift(state)
            for c in range(8):
                k = tables[b, (r >> np.uint64(8 * c)) & _U255]
                x, y = _apply(coef, b, k, xs[c], ys[c])
                if not (_sane(x) and _sane(y)):
                    x = 0.0
                    y = 0.0
                xs[c] = x
                ys[c] = y
                if track:
                    if x < box[0]:
                        box[0] = x
                    if x > box[1]:
                        box[1] = x
                    if y < box[2]:
                        box[2] = y
                    if y > box[3]:
                        box[3] = y
        return state

    @cuda.jit(device=True)
    def _frame(box, pad, width, height):
        # The CPU's scale and offset from the warm-up bounding box.
        span_x = max(_add(box[1], -box[0]), 1e-12)
        span_y = max(_add(box[3], -box[2]), 1e-12)
        sx = _add(float(width), -_mul(2.0, pad)) / span_x
        sy = _add(float(height), -_mul(2.0, pad)) / span_y
        ox = _add(pad, -_mul(box[0], sx))
        oy = _add(pad, -_mul(box[2], sy))
        return sx, sy, ox, oy

    @cuda.jit(fastmath=False)
    def exact_kernel(coef, tables, states, n_points, warmup, pad, count, hits):
        """One thread per image: the CPU chaos_game, draw for draw."""
        b = cuda.grid(1)
        if b >= hits.shape[0]:
            return
        height, width = hits.shape[1], hits.shape[2]
        xs = cuda.local.array(8, np.float64)
        ys = cuda.local.array(8, np.float64)
        box = cuda.local.array(4, np.float64)
        state = states[b]
        for c in range(8):
            state, r = _xorshift(state)
            xs[c] = _unit(r)
            state, r = _xorshift(state)
            ys[c] = _unit(r)
        box[0] = math.inf
        box[1] = -math.inf
        box[2] = math.inf
        box[3] = -math.inf
        state = _advance(coef, tables, b, state, xs, ys, BURN_IN, False, box)
        state = _advance(coef, tables, b, state, xs, ys, warmup, True, box)
        sx, sy, ox, oy = _frame(box, pad, width, height)
        wf = float(width)
        hf = float(height)
        for _ in range(n_points // 8):
            state, r = _xorshift(state)
            for c in range(8):
                k = tables[b, (r >> np.uint64(8 * c)) & _U255]
                x, y = _apply(coef, b, k, xs[c], ys[c])
                xs[c] = x
                ys[c] = y
                _splat(hits, b, _add(_mul(x, sx), ox), _add(_mul(y, sy), oy), wf, hf, count)
            # The CPU tests the left-to-right sums of the 8 chains once per 8 points, then
            # restarts each escaped chain at the origin.
            tx = xs[0]
            ty = ys[0]
            for c in range(1, 8):
                tx = tx + xs[c]
                ty = ty + ys[c]
            if not (_sane(tx) and _sane(ty)):
                for c in range(8):
                    if not (_sane(xs[c]) and _sane(ys[c])):
                        xs[c] = 0.0
                        ys[c] = 0.0
        state, r = _xorshift(state)
        for c in range(n_points % 8):
            k = tables[b, (r >> np.uint64(8 * c)) & _U255]
            x, y = _apply(coef, b, k, xs[c], ys[c])
            _splat(hits, b, _add(_mul(x, sx), ox), _add(_mul(y, sy), oy), wf, hf, count)

    @cuda.jit(fastmath=False)
    def fast_kernel(coef, tables, states, n_points, warmup, pad, count, hits):
        """One block per image, one chain per thread; a shared warm-up bounding box."""
        b = cuda.blockIdx.x
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        height, width = hits.shape[1], hits.shape[2]
        shared_box = cuda.shared.array(4, np.float64)
        if t == 0:
            shared_box[0] = math.inf
            shared_box[1] = -math.inf
            shared_box[2] = math.inf
            shared_box[3] = -math.inf
        cuda.syncthreads()
        # Thread t's stream: the image's state advanced by a per-thread odd multiple.
        state = states[b] ^ _wrapmul(np.uint64(t + 1), np.uint64(0x9E3779B97F4A7C15))
        if state == np.uint64(0):
            state = np.uint64(1)
        state, r = _xorshift(state)
        x = _unit(r)
        state, r = _xorshift(state)
        y = _unit(r)
        lo_x = math.inf
        hi_x = -math.inf
        lo_y = math.inf
        hi_y = -math.inf
        steps = BURN_IN + max(8 * warmup // nt, 1)
        for i in range(steps):
            state, r = _xorshift(state)
            x, y = _apply(coef, b, tables[b, r & _U255], x, y)
            if not (_sane(x) and _sane(y)):
                x = 0.0
                y = 0.0
            if i >= BURN_IN:
                lo_x = min(lo_x, x)
                hi_x = max(hi_x, x)
                lo_y = min(lo_y, y)
                hi_y = max(hi_y, y)
        cuda.atomic.min(shared_box, 0, lo_x)
        cuda.atomic.max(shared_box, 1, hi_x)
        cuda.atomic.min(shared_box, 2, lo_y)
        cuda.atomic.max(shared_box, 3, hi_y)
        cuda.syncthreads()
        sx, sy, ox, oy = _frame(shared_box, pad, width, height)
        wf = float(width)
        hf = float(height)
        for _ in range(t, n_points, nt):
            state, r = _xorshift(state)
            x, y = _apply(coef, b, tables[b, r & _U255], x, y)
            if not (_sane(x) and _sane(y)):
                x = 0.0
                y = 0.0
            px = x * sx + ox
            py = y * sy + oy
            if px >= 0.0 and px < wf and py >= 0.0 and py < hf:
                if count:
                    cuda.atomic.add(hits, (b, int(py), int(px)), 1)
                else:
                    hits[b, int(py), int(px)] = 1

    @cuda.jit
    def zero_kernel(flat):
        for i in range(cuda.grid(1), flat.shape[0], cuda.gridsize(1)):
            flat[i] = 0

    @cuda.jit
    def finish_kernel(hits, masks, colors, flips, patch, kind, out):
        """Per output pixel: flip, 3x3 patch stamp, then raw counts (kind 0), gray (1) or
        colour (2)."""
        n, height, width = hits.shape
        total = n * height * width
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            b = i // (height * width)
            y = (i // width) % height
            x = i % width
            # out = image[::-1] / [:, ::-1]: read the unflipped image at the mirrored pixel.
            sy = height - 1 - y if flips[b] & 1 else y
            sx = width - 1 - x if flips[b] & 2 else x
            v = 0
            if patch:
                # A hit at (y0, x0) lights (y0 + dy - 1, x0 + dx - 1) for every set cell.
                for dy in range(3):
                    for dx in range(3):
                        if masks[b, dy, dx]:
                            hy = sy - dy + 1
                            hx = sx - dx + 1
                            if hy >= 0 and hy < height and hx >= 0 and hx < width:
                                v += hits[b, hy, hx]
            else:
                v = hits[b, sy, sx]
            if kind == 0:
                out[b, y, x, 0] = v
            elif kind == 1:
                out[b, y, x, 0] = GRAY_VALUE if v > 0 else 0
            else:
                for c in range(3):
                    out[b, y, x, c] = colors[b, c] if v > 0 else 0
