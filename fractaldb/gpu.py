"""The chaos game on an NVIDIA GPU (Numba's CUDA target): a batch of (category, instance) pairs
rendered into one device array that torch takes without a copy (`__cuda_array_interface__`).

Host side, every per-instance input (variant coefficients, choice table, point seed, patch
mask, colour, flip) comes from the CPU renderer's own plan (`fractaldb.render.Renderer.plan`,
i.e. `fractaldb.instances.plan_instance`) and `kernels.splitmix64`; the kernels never derive a
seed themselves.

Two modes:
- "exact" (default): one thread per image runs the CPU kernel's algorithm step for step (the
  same 8 interleaved chains, the same xorshift64* draws and choice table, the same burn-in,
  warm-up bounding box, escape handling and splat), so the images equal the CPU renderer's
  byte for byte. What guarantees it: every float operation is an IEEE-754 double operation in
  the same order as on the CPU, correctly rounded to nearest; products are taken with
  libdevice's `__dmul_rn` and sums with `__dadd_rn`, which NVVM never fuses into an FMA
  (NVVM contracts a plain `a * b + c` into an FMA even without fastmath, and an FMA rounds
  once, not twice); the one division rounds correctly (no fastmath, so `div.rn.f64`);
  integer draws are exact; float-to-pixel conversion truncates as on the CPU. The patch stamp,
  colour and flip are exact integer work.
- "fast": many chains per image (one block per image, one chain per thread). The same
  attractor, bounding-box framing, patch mask, colour and flip, but other random draws:
  the same distribution, different pixels.

Hue colour ("hue") needs OpenCV's float HSV conversion: `render_batch_to_host` renders the hit
counts on the GPU and colours them on the CPU with the CPU renderer's own function; the
device-array API supports gray and colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fractaldb.categories import CategorySet
from fractaldb.errors import FractalDBError
from fractaldb.kernels import BURN_IN, ESCAPE_LIMIT, splitmix64
from fractaldb.render import GRAY_VALUE, Renderer, colorize, warmup_steps
from fractaldb.settings import RenderSettings

GPU_MODES = ("exact", "fast")
FAST_THREADS = 256  # chains (threads) per image in fast mode
MAX_MAPS = 8

try:  # numba.cuda ships with numba (older) or with the `cuda` extra (numba-cuda)
    from numba import config as _numba_config
    from numba import cuda

    SIMULATOR = bool(_numba_config.ENABLE_CUDASIM)
except ImportError:  # pragma: no cover - numba without any CUDA target
    cuda = None
    SIMULATOR = False


def cuda_available() -> bool:
    """True if Numba can run CUDA kernels here (a GPU and driver, or the CUDA simulator)."""
    if cuda is None:
        return False
    try:
        if SIMULATOR:
            return bool(cuda.is_available())
        from numba.cuda.cudadrv import nvvm

        # A driver without the NVVM compiler (numba without the `cuda` extra) cannot compile.
        return bool(cuda.is_available()) and nvvm.is_available()
    except Exception:  # a broken driver install reads as "no GPU"
        return False


INSTALL_CUDA = "pip install 'fractaldb[cuda]' (or: uv sync --extra cuda)"


def numba_cuda_installed() -> bool:
    """True if the `cuda` extra (numba-cuda, Numba's maintained CUDA target) is installed."""
    import importlib.util

    return importlib.util.find_spec("numba_cuda") is not None


def cuda_unavailable_reason() -> str:
    """Why CUDA kernels cannot run here, with the fix, in words for a one-line message."""
    if not numba_cuda_installed():
        return f"GPU rendering needs numba-cuda, which is not installed; fix: {INSTALL_CUDA}"
    return (
        "no CUDA GPU is available to Numba; fix: run on a machine with an NVIDIA GPU and "
        f"driver, with {INSTALL_CUDA}"
    )


def require_cuda(what: str = "--device cuda", alternative: str | None = "--device cpu") -> None:
    """Raise a one-line FractalDBError if CUDA kernels cannot run here."""
    if not cuda_available():
        other = f", or use {alternative}" if alternative else ""
        raise FractalDBError(f"{what}: {cuda_unavailable_reason()}{other}")


def check_gpu_settings(settings: RenderSettings, gpu_mode: str, on_device: bool) -> None:
    """Reject a GPU mode or colour the GPU renderer cannot produce, in one line."""
    if gpu_mode not in GPU_MODES:
        raise FractalDBError(
            f"unknown GPU render mode {gpu_mode!r}; fix: use one of {', '.join(GPU_MODES)}"
        )
    if on_device and settings.color == "hue":
        raise FractalDBError(
            "hue colour is coloured on the CPU and cannot stay on the GPU; fix: --color gray "
            "or color, or render on the CPU"
        )


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
    def _exact_kernel(coef, tables, states, n_points, warmup, pad, count, hits):
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
    def _fast_kernel(coef, tables, states, n_points, warmup, pad, count, hits):
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
    def _zero_kernel(flat):
        for i in range(cuda.grid(1), flat.shape[0], cuda.gridsize(1)):
            flat[i] = 0

    @cuda.jit
    def _finish_kernel(hits, masks, colors, flips, patch, kind, out):
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


@dataclass
class PreparedBatch:
    """Host arrays holding every per-image input of one batch (what the kernels read)."""

    coef: np.ndarray  # (B, MAX_MAPS, 6) float64, unused maps zero
    tables: np.ndarray  # (B, 256) uint8 map-choice tables
    states: np.ndarray  # (B,) uint64 initial xorshift states (splitmix64 of the point seeds)
    masks: np.ndarray  # (B, 3, 3) uint8 patch masks (zeros in point mode)
    colors: np.ndarray  # (B, 3) uint8 RGB (color mode) or (B, 0)
    flips: np.ndarray  # (B,) uint8
    hue_colors: list  # each plan's (shift, saturation, value), for the CPU-side hue colouring


def prepare_batch(
    categories: CategorySet | Renderer,
    cells: Sequence[tuple[int, int]],
    settings: RenderSettings,
) -> PreparedBatch:
    """Compute the kernels' inputs for (category, instance) cells with the CPU's plans (pass a
    Renderer to keep its per-category preparation across batches)."""
    renderer = categories if isinstance(categories, Renderer) else Renderer(categories, settings)
    n = len(cells)
    coef = np.zeros((n, MAX_MAPS, 6), dtype=np.float64)
    tables = np.empty((n, 256), dtype=np.uint8)
    states = np.empty(n, dtype=np.uint64)
    masks = np.zeros((n, 3, 3), dtype=np.uint8)
    colors = np.zeros((n, 3 if settings.color == "color" else 0), dtype=np.uint8)
    flips = np.empty(n, dtype=np.uint8)
    hue = []
    for i, (category, instance) in enumerate(cells):
        plan = renderer.plan(category, instance)
        if len(plan.maps) > MAX_MAPS:
            raise FractalDBError(
                f"category {category} has {len(plan.maps)} maps; the GPU renderer takes at most "
                f"{MAX_MAPS}; fix: render on the CPU"
            )
        coef[i, : len(plan.maps)] = plan.maps
        tables[i] = plan.table
        states[i] = splitmix64(np.uint64(plan.points_seed))
        if settings.mode == "patch":
            masks[i] = plan.mask
        if settings.color == "color":
            colors[i] = np.asarray(plan.color, dtype=np.uint8)
        flips[i] = plan.flip
        hue.append(plan.color)
    return PreparedBatch(coef, tables, states, masks, colors, flips, hue)


def _launch_1d(total: int) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride kernel over `total` items."""
    threads = 32 if SIMULATOR else 256
    blocks = 1 if SIMULATOR else max(1, min(-(-total // threads), 65536))
    return blocks, threads


def render_prepared(
    prep: PreparedBatch,
    settings: RenderSettings,
    gpu_mode: str = "exact",
    counts: bool = False,
    stream: Any = 0,
) -> Any:
    """Render a prepared batch; return a device array (B, H, W) gray, (B, H, W, 3) colour, or
    (B, H, W) uint32 stamped and flipped hit counts with `counts` (hue is coloured from them).

    Everything is queued on `stream` (e.g. torch's current stream via cuda.external_stream).
    """
    check_gpu_settings(settings, gpu_mode, on_device=False)
    n, size = len(prep.states), settings.image_size
    count = settings.color == "hue"
    # Fast mode's threads add counts atomically, which CUDA offers for 32-bit words only.
    wide = count or gpu_mode == "fast"
    hits = cuda.device_array((n, size, size), dtype=np.uint32 if wide else np.uint8, stream=stream)
    blocks, threads = _launch_1d(hits.size)
    _zero_kernel[blocks, threads, stream](hits.reshape(hits.size))
    args = (
        cuda.to_device(prep.coef, stream=stream),
        cuda.to_device(prep.tables, stream=stream),
        cuda.to_device(prep.states, stream=stream),
        np.int64(settings.points),
        np.int64(max(warmup_steps(settings.points), 1)),
        np.float64(settings.pad * size),
        count,
        hits,
    )
    if gpu_mode == "exact":
        per_block = 32 if SIMULATOR else 64
        _exact_kernel[-(-n // per_block), per_block, stream](*args)
    else:
        _fast_kernel[n, 16 if SIMULATOR else FAST_THREADS, stream](*args)
    shape = (n, size, size, 1 if counts else settings.channels)
    out = cuda.device_array(shape, dtype=np.uint32 if counts else np.uint8, stream=stream)
    blocks, threads = _launch_1d(n * size * size)
    _finish_kernel[blocks, threads, stream](
        hits,
        cuda.to_device(prep.masks, stream=stream),
        cuda.to_device(prep.colors, stream=stream),
        cuda.to_device(prep.flips, stream=stream),
        settings.mode == "patch",
        0 if counts else (1 if settings.color == "gray" else 2),
        out,
    )
    return out.reshape(out.shape[:3]) if out.shape[3] == 1 else out


def render_batch(
    categories: CategorySet | Renderer,
    cells: Sequence[tuple[int, int]],
    settings: RenderSettings,
    gpu_mode: str = "exact",
    stream: Any = 0,
) -> Any:
    """Render (category, instance) cells on the GPU into a uint8 device array: (B, H, W) gray
    or (B, H, W, 3) RGB, each image equal to `render_instance` in exact mode."""
    require_cuda("GPU rendering", alternative="the CPU renderer")
    check_gpu_settings(settings, gpu_mode, on_device=True)
    prep = prepare_batch(categories, cells, settings)
    return render_prepared(prep, settings, gpu_mode, stream=stream)


def render_batch_to_host(
    categories: CategorySet | Renderer,
    cells: Sequence[tuple[int, int]],
    settings: RenderSettings,
    gpu_mode: str = "exact",
) -> list[np.ndarray]:
    """Render cells on the GPU and return host images as `render_instance` does (all colours:
    hue is coloured on the CPU from the GPU's hit counts)."""
    require_cuda("GPU rendering", alternative="the CPU renderer")
    check_gpu_settings(settings, gpu_mode, on_device=False)
    prep = prepare_batch(categories, cells, settings)
    if settings.color != "hue":
        return list(render_prepared(prep, settings, gpu_mode).copy_to_host())
    counts = render_prepared(prep, settings, gpu_mode, counts=True).copy_to_host()
    return [
        np.ascontiguousarray(colorize(c, settings, color))
        for c, color in zip(counts, prep.hue_colors, strict=True)
    ]
