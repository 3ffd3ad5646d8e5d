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

Contour sets (visualatom, rcdb) go to `fractaldb.contour_gpu` (one mode: exact, one thread
per image); the choice follows `fractaldb.render.Renderer`'s.

Hue colour ("hue") needs OpenCV's float HSV conversion: `render_batch_to_host` renders the hit
counts on the GPU and colours them on the CPU with the CPU renderer's own function; the
device-array API supports gray and colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fractaldb.categories import CategorySet
from fractaldb.contour import ContourRenderer
from fractaldb.contour_gpu import render_contour_batch
from fractaldb.core.errors import FractalDBError
from fractaldb.gpu_kernels import (
    MAX_MAPS,
    SIMULATOR,
    cuda,
    exact_kernel,
    fast_kernel,
    finish_kernel,
    zero_kernel,
)
from fractaldb.kernels import splitmix64
from fractaldb.render import Renderer, colorize, warmup_steps
from fractaldb.settings import GPU_MODES, RenderSettings

FAST_THREADS = 256  # chains (threads) per image in fast mode
RENDERERS = (Renderer, ContourRenderer)  # what `Renderer(categories, settings)` returns


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
    zero_kernel[blocks, threads, stream](hits.reshape(hits.size))
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
        exact_kernel[-(-n // per_block), per_block, stream](*args)
    else:
        fast_kernel[n, 16 if SIMULATOR else FAST_THREADS, stream](*args)
    shape = (n, size, size, 1 if counts else settings.channels)
    out = cuda.device_array(shape, dtype=np.uint32 if counts else np.uint8, stream=stream)
    blocks, threads = _launch_1d(n * size * size)
    finish_kernel[blocks, threads, stream](
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
    renderer = categories if isinstance(categories, RENDERERS) else Renderer(categories, settings)
    if isinstance(renderer, ContourRenderer):
        return render_contour_batch(renderer, cells, settings, stream=stream)
    prep = prepare_batch(renderer, cells, settings)
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
    renderer = categories if isinstance(categories, RENDERERS) else Renderer(categories, settings)
    if isinstance(renderer, ContourRenderer):
        return list(render_contour_batch(renderer, cells, settings).copy_to_host())
    prep = prepare_batch(renderer, cells, settings)
    if settings.color != "hue":
        return list(render_prepared(prep, settings, gpu_mode).copy_to_host())
    counts = render_prepared(prep, settings, gpu_mode, counts=True).copy_to_host()
    return [
        np.ascontiguousarray(colorize(c, settings, color))
        for c, color in zip(counts, prep.hue_colors, strict=True)
    ]
