"""The GPU rendering backend of `fractaldb render --device cuda` (shards.writer.write_shards).

The GPU renders in the exact mode (fractaldb.gpu), whose images equal the CPU renderer's byte
for byte, so the shards are byte-identical to CPU-rendered ones and share their dataset id:
CPU and GPU nodes may even fill one folder together. Encoding (the CPU's share of the work)
runs in a thread pool (OpenCV releases the GIL); the per-shard loop, manifest records,
skipping of complete shards, atomic tar writes and finalisation are shards.writer's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fractaldb.categories import CategorySet
from fractaldb.render import Renderer
from fractaldb.settings import RenderSettings
from shards.encode import encode_members, ordered_map
from shards.presets import Layout


def gpu_device_name() -> str:
    """Name of the GPU Numba renders on, as recorded in shard records ("cuda:0 NVIDIA ...")."""
    from numba import cuda

    from fractaldb.gpu import SIMULATOR

    if SIMULATOR:
        return "cuda:0 Numba CUDA simulator"
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    return f"cuda:{dev.id} {name}"


class GpuRendering:
    """Samples rendered on the GPU `batch_size` at a time (exact mode) and encoded by
    `workers` threads; each shard record also names the device (`"device": "cuda:0 ..."`)."""

    def __init__(
        self, categories: CategorySet, settings: RenderSettings, workers: int, batch_size: int
    ) -> None:
        from fractaldb.gpu import require_cuda

        require_cuda("--device cuda")
        self.settings, self.workers, self.batch_size = settings, workers, batch_size
        self.record: dict[str, Any] = {"device": gpu_device_name()}
        self.renderer = Renderer(categories, settings)  # prepares each category once
        self.pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None

    def samples(
        self, layout: Layout, cells: list[tuple[int, int]], tick: Callable[[], None]
    ) -> Iterator[list[tuple[str, bytes]]]:
        """Each cell's tar members, in order; `tick()` after each image is encoded."""
        from fractaldb.gpu import render_batch_to_host

        for start in range(0, len(cells), self.batch_size):
            batch = cells[start : start + self.batch_size]
            images = render_batch_to_host(self.renderer, batch, self.settings, "exact")
            encoded = ordered_map(
                lambda item: encode_members(layout, *item),
                zip(batch, images, strict=True),
                self.pool,
                window=8 * max(1, self.workers),
            )
            for sample in encoded:
                yield sample
                tick()

    def close(self) -> None:
        """Stop the encoding threads."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
