"""Render a category set into WebDataset shards: parallel, resumable, byte-reproducible.

Shard k holds global positions [k*S, (k+1)*S) of a keyed permutation of the (category,
instance) grid (see shards.layout), so its bytes depend only on (categories, settings,
layout, k): not on the number of worker threads, the node split, or earlier interrupted runs.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
from tqdm import tqdm

from fractaldb.categories import CategorySet
from fractaldb.errors import FractalDBError
from fractaldb.instances import instance_meta
from fractaldb.render import render_instance
from fractaldb.seeding import derive_seed
from fractaldb.settings import RenderSettings
from shards.layout import TMP_SUFFIX, grid_cells, sample_key, shard_name, shard_range
from shards.manifest import (
    CATEGORIES,
    check_same_dataset,
    dataset_header,
    finalize,
    write_partial,
)
from shards.presets import Layout
from shards.tario import file_sha256, write_tar

TAG_ORDER = 101  # seed stream of the global sample order (distinct from the renderer's tags)
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class RenderReport:
    """What a `write_shards` call did."""

    out: Path
    num_shards: int
    owned: int
    skipped: int
    written: int
    samples_written: int
    finalized: bool
    manifest: dict[str, Any] | None


def order_key(settings: RenderSettings) -> int:
    """Return the key of the global sample permutation (a function of the settings seed)."""
    return derive_seed(settings.seed, TAG_ORDER)


def shard_cells(
    index: int, num_categories: int, settings: RenderSettings, layout: Layout
) -> list[tuple[int, int]]:
    """Return the (category, instance) pairs of shard `index`, in member order."""
    n = num_categories * layout.instances_per_category
    positions = shard_range(index, n, layout.samples_per_shard)
    cats, insts = grid_cells(
        positions, num_categories, layout.instances_per_category, order_key(settings)
    )
    return list(zip(cats.tolist(), insts.tolist(), strict=True))


def encode_image(image: np.ndarray, fmt: str, quality: int) -> bytes:
    """Encode a gray or RGB uint8 image with OpenCV."""
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = {
        "png": [cv2.IMWRITE_PNG_COMPRESSION, quality],
        "jpg": [cv2.IMWRITE_JPEG_QUALITY, quality],
        "webp": [cv2.IMWRITE_WEBP_QUALITY, quality],
    }[fmt]
    ok, buf = cv2.imencode("." + fmt, bgr, params)
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {fmt} image")
    return buf.tobytes()


def sample_members(
    categories: CategorySet,
    settings: RenderSettings,
    layout: Layout,
    cell: tuple[int, int],
    image: np.ndarray | None = None,
) -> list[tuple[str, bytes]]:
    """Render (unless `image` is given: rendered elsewhere, e.g. on the GPU) and encode one
    sample; return its tar members (image, .cls, .json) in order."""
    category, instance = cell
    if image is None:
        image = render_instance(categories, category, instance, settings)
    key = sample_key(category, instance)
    meta = {
        "category": category,
        "instance": instance,
        **instance_meta(settings, instance),
        "seed": settings.seed,
    }
    return [
        (f"{key}.{layout.format}", encode_image(image, layout.format, layout.quality)),
        (f"{key}.cls", str(category).encode()),
        (f"{key}.json", json.dumps(meta, sort_keys=True).encode()),
    ]


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], pool: ThreadPoolExecutor | None, window: int
) -> Iterator[R]:
    """Map in a thread pool, yielding results in input order with at most `window` in flight."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _shard_ok(path: Path, record: dict[str, Any] | None) -> bool:
    """True if the shard file exists and matches its manifest record."""
    if record is None or not path.is_file() or path.stat().st_size != record.get("bytes"):
        return False
    return file_sha256(path) == record["sha256"]


def open_output(
    categories: CategorySet,
    settings: RenderSettings,
    layout: Layout,
    out: Path,
    name: str,
    num_nodes: int,
    node_rank: int,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[int]]:
    """Check and prepare the output folder; return (header, known shard records, owned shards).

    Refuses another dataset's folder, saves the categories (node 0) and removes this node's
    stale temporaries.
    """
    if num_nodes < 1 or not 0 <= node_rank < num_nodes:
        raise FractalDBError(
            f"node rank {node_rank} is not in [0, {num_nodes}); fix: pass --num-nodes K "
            "--node-rank R with 0 <= R < K"
        )
    out.mkdir(parents=True, exist_ok=True)
    header = dataset_header(
        name, categories.sha256, len(categories), settings.to_dict(), layout.to_dict()
    )
    known = check_same_dataset(out, header)
    cat_path = out / CATEGORIES
    if cat_path.is_file():
        from fractaldb.categories import load_categories

        if load_categories(cat_path).sha256 != categories.sha256:
            raise FractalDBError(
                f"{str(cat_path)!r} holds another category set; fix: choose a new --out folder "
                "or delete it"
            )
    elif node_rank == 0:
        categories.save(cat_path)

    owned = list(range(node_rank, header["num_shards"], num_nodes))
    for k in owned:  # stale temporaries of an interrupted run (only this node writes them)
        tmp = out / (shard_name(k) + TMP_SUFFIX)
        if tmp.exists():
            tmp.unlink()
    return header, known, owned


def close_output(
    out: Path,
    header: dict[str, Any],
    owned: list[int],
    cells: dict[int, list[tuple[int, int]]],
    num_nodes: int,
) -> RenderReport:
    """Finalize the dataset if every shard is done; report what this call wrote (`cells`)."""
    manifest = None
    if num_nodes == 1:
        manifest = finalize(out)
    else:
        try:
            manifest = finalize(out)
        except FractalDBError:
            manifest = None  # other nodes are still writing; the last one to finish finalizes
    return RenderReport(
        out=out,
        num_shards=header["num_shards"],
        owned=len(owned),
        skipped=len(owned) - len(cells),
        written=len(cells),
        samples_written=sum(len(c) for c in cells.values()),
        finalized=manifest is not None,
        manifest=manifest,
    )


def write_shards(
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
) -> RenderReport:
    """Write this node's shards of the dataset into `out`, skipping complete ones.

    When every shard is done (always, for a single node) the partial manifests are merged
    into manifest.json and _info.json.
    """
    out = Path(out)
    header, known, owned = open_output(
        categories, settings, layout, out, name, num_nodes, node_rank
    )

    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        checks = ordered_map(
            lambda k: _shard_ok(out / shard_name(k), known.get(shard_name(k))),
            owned,
            pool,
            window=4 * max(1, workers),
        )
        done = {k: known[shard_name(k)] for k, ok in zip(owned, checks, strict=True) if ok}
        todo = [k for k in owned if k not in done]
        write_partial(out, header, node_rank, num_nodes, list(done.values()))

        cells = {k: shard_cells(k, len(categories), settings, layout) for k in todo}
        bar = tqdm(
            total=sum(len(c) for c in cells.values()),
            unit="img",
            desc=f"render node {node_rank}/{num_nodes}" if num_nodes > 1 else "render",
            disable=not progress,
            smoothing=0.05,
        )
        results = ordered_map(
            lambda cell: sample_members(categories, settings, layout, cell),
            (cell for k in todo for cell in cells[k]),
            pool,
            window=8 * max(1, workers),
        )
        for k in todo:
            members = []
            for _ in cells[k]:
                members.extend(next(results))
                bar.update(1)
            final = out / shard_name(k)
            tmp = out / (shard_name(k) + TMP_SUFFIX)
            sha, size = write_tar(tmp, members)
            os.replace(tmp, final)
            done[k] = {
                "index": k,
                "filename": final.name,
                "num_samples": len(cells[k]),
                "bytes": size,
                "sha256": sha,
            }
            write_partial(out, header, node_rank, num_nodes, list(done.values()))
        bar.close()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    return close_output(out, header, owned, cells, num_nodes)
