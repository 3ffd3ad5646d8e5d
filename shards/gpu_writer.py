"""`fractaldb render --device cuda`: render shards on the GPU, encode and write them on the CPU.

The GPU renders in the exact mode (fractaldb.gpu), whose images equal the CPU renderer's byte
for byte, so the shards are byte-identical to CPU-rendered ones and share their dataset id:
CPU and GPU nodes may even fill one folder together. Encoding (the CPU's share of the work)
runs in a thread pool (OpenCV releases the GIL); everything else (manifest records, skipping
of complete shards, atomic tar writes, finalisation) goes through shards.writer's helpers.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from fractaldb.categories import CategorySet
from fractaldb.render import Renderer
from fractaldb.settings import RenderSettings
from shards.layout import shard_name
from shards.manifest import write_partial
from shards.presets import Layout
from shards.tario import write_tar_atomically
from shards.writer import (
    RenderReport,
    close_output,
    encode_members,
    open_output,
    ordered_map,
    shard_cells,
    shard_write_failed,
)


def gpu_device_name() -> str:
    """Name of the GPU Numba renders on, as recorded in shard records ("cuda:0 NVIDIA ...")."""
    from numba import cuda

    from fractaldb.gpu import SIMULATOR

    if SIMULATOR:
        return "cuda:0 Numba CUDA simulator"
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    return f"cuda:{dev.id} {name}"


def write_shards_gpu(
    categories: CategorySet,
    settings: RenderSettings,
    layout: Layout,
    out: str | os.PathLike,
    *,
    name: str = "fractaldb",
    workers: int = 1,
    num_nodes: int = 1,
    node_rank: int = 0,
    progress: bool = True,
    batch_size: int = 1024,
) -> RenderReport:
    """`shards.writer.write_shards` with the images rendered on the GPU (exact mode).

    Each shard record also names the device (`"device": "cuda:0 ..."`); `workers` threads
    encode the images.
    """
    from fractaldb.gpu import render_batch_to_host, require_cuda

    require_cuda("--device cuda")
    device = gpu_device_name()
    out = Path(out)
    header, done, owned, todo = open_output(
        categories, settings, layout, out, name, num_nodes, node_rank, workers
    )
    renderer = Renderer(categories, settings)  # prepares each category once for every batch
    cells = {k: shard_cells(k, len(categories), settings, layout) for k in todo}
    bar = tqdm(
        total=sum(len(c) for c in cells.values()),
        unit="img",
        desc=f"render (GPU) node {node_rank}/{num_nodes}" if num_nodes > 1 else "render (GPU)",
        disable=not progress,
        smoothing=0.05,
    )
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for k in todo:
            members: list[tuple[str, bytes]] = []
            for start in range(0, len(cells[k]), batch_size):
                batch = cells[k][start : start + batch_size]
                images = render_batch_to_host(renderer, batch, settings, "exact")
                encoded = ordered_map(
                    lambda item: encode_members(layout, *item),
                    zip(batch, images, strict=True),
                    pool,
                    window=8 * max(1, workers),
                )
                for sample in encoded:
                    members.extend(sample)
                    bar.update(1)
            final = out / shard_name(k)
            try:
                sha, size = write_tar_atomically(final, members)
            except OSError as exc:
                raise shard_write_failed(final, exc) from None
            done[k] = {
                "index": k,
                "filename": final.name,
                "num_samples": len(cells[k]),
                "bytes": size,
                "sha256": sha,
                "device": device,
            }
            write_partial(out, header, node_rank, num_nodes, list(done.values()))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    return close_output(out, header, owned, todo, num_nodes)
