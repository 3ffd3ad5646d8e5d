"""Render a category set into WebDataset shards: parallel, resumable, byte-reproducible.

Shard k holds global positions [k*S, (k+1)*S) of a keyed permutation of the (category,
instance) grid (see shards.layout), so its bytes depend only on (categories, settings,
layout, k): not on the number of worker processes, the node split, the rendering device or
earlier interrupted runs.

One writer, two rendering backends: `CpuRendering` (the Numba renderer, here) and
`shards.gpu_writer.GpuRendering` (batches rendered on the GPU in exact mode, the same bytes).
Both feed the same per-shard loop (`write_shard`) and output bookkeeping (`open_output`,
`close_output`). On the CPU with `workers > 1` each worker process (spawned: safe on every
OS) receives the categories once and then renders, encodes, writes, hashes, fsyncs and renames
whole shards; the parent only hands out shard indices, shows progress and records finished
shards in the manifest. On the GPU, `workers` threads encode.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fractaldb.categories import CategorySet
from fractaldb.core.atomic import remove_stale_temporaries
from fractaldb.core.errors import FractalDBError
from fractaldb.core.seeding import derive_seed
from fractaldb.core.stopping import add_stop_check, leave_ctrl_c_to_parent, stop_signals_deferred
from fractaldb.core.workers import exit_when_orphaned
from fractaldb.render import Renderer
from fractaldb.settings import RENDER_DEVICES, RenderSettings
from shards.encode import encode_members, ordered_map
from shards.estimate import large_render_warning
from shards.layout import grid_cells, shard_name, shard_range
from shards.manifest import (
    CATEGORIES,
    check_same_dataset,
    dataset_header,
    finalize,
    partial_name,
    write_partial,
)
from shards.presets import Layout
from shards.tario import file_sha256, write_tar_atomically

TAG_ORDER = 101  # seed stream of the global sample order (distinct from the renderer's tags)
PROGRESS_SECONDS = 0.2  # how often the parent refreshes the progress bar from the workers


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


@dataclass(frozen=True)
class ShardJob:
    """Everything needed to write any shard of one dataset (sent once to each worker)."""

    categories: CategorySet
    settings: RenderSettings
    layout: Layout
    out: str


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


class CpuRendering:
    """The CPU rendering backend: each sample rendered in this process as its turn comes."""

    record: dict[str, Any] = {}  # nothing to add to the shard records

    def __init__(self, categories: CategorySet, settings: RenderSettings) -> None:
        self.renderer = Renderer(categories, settings)  # prepares each category once

    def samples(
        self, layout: Layout, cells: list[tuple[int, int]], tick: Callable[[], None]
    ) -> Iterator[list[tuple[str, bytes]]]:
        """Each cell's tar members, in order; `tick()` before each image."""
        for cell in cells:
            tick()
            yield sample_members(self.renderer, layout, cell)

    def close(self) -> None:
        """Nothing to release."""


def sample_members(
    renderer: Renderer, layout: Layout, cell: tuple[int, int]
) -> list[tuple[str, bytes]]:
    """Render and encode one sample; return its tar members (image, .cls) in order.

    The key names the category and instance, the manifest holds the settings, so the
    instance's variant, render and flip follow from `fractaldb.instances.instance_meta`.
    """
    category, instance = cell
    return encode_members(layout, cell, renderer.render(category, instance))


def shard_write_failed(final: Path, exc: OSError) -> FractalDBError:
    """The one-line error for a shard that could not be written (full disk, read-only...)."""
    return FractalDBError(
        f"cannot write shard {final.name} in {str(final.parent)!r} ({exc.strerror or exc}); fix: "
        "free disk space or choose a writable --out folder, then re-run the same command "
        "(complete shards are kept)"
    )


def write_shard(
    job: ShardJob, rendering: Any, index: int, tick: Callable[[], None]
) -> dict[str, Any]:
    """Render (with the backend `rendering`), encode, write, hash, fsync and rename shard
    `index`; return its record.

    `tick()` is called once per image (progress, stop requests). On any failure the
    temporary file is removed, so no partial shard is left under any name.
    """
    cells = shard_cells(index, len(job.categories), job.settings, job.layout)
    out = Path(job.out)
    final = out / shard_name(index)

    def members() -> Iterator[tuple[str, bytes]]:
        for sample in rendering.samples(job.layout, cells, tick):
            yield from sample

    try:
        # the atomic writer removes its temporary on any failure: no partial shard is left
        sha, size = write_tar_atomically(final, members())
    except OSError as exc:
        raise shard_write_failed(final, exc) from None
    return {
        "index": index,
        "filename": final.name,
        "num_samples": len(cells),
        "bytes": size,
        "sha256": sha,
        **rendering.record,
    }


class _Stopped(Exception):
    """The parent asked the workers to stop, or died."""


_WORKER: dict[str, Any] = {}


def _worker_init(job: ShardJob, stop: Any, counter: Any, parent_pid: int) -> None:
    """Set up one worker process: the categories arrive here, once."""
    leave_ctrl_c_to_parent()
    _WORKER.update(
        job=job,
        rendering=CpuRendering(job.categories, job.settings),
        stop=stop,
        counter=counter,
        parent_pid=parent_pid,
        busy=False,
    )
    # an idle worker would wait for ever; one mid-shard notices first (`_worker_tick`) and
    # removes its temporary file, which the watcher waits for
    exit_when_orphaned(parent_pid, busy=lambda: _WORKER["busy"])
    add_stop_check(_worker_stop_check)  # also between slices of one long image


def _worker_stop_check() -> None:
    """Stop if the parent asked to or has died (no orphan keeps writing)."""
    if _WORKER["stop"].is_set() or os.getppid() != _WORKER["parent_pid"]:
        raise _Stopped


def _worker_tick() -> None:
    """Count one image; stop if the parent asked to or has died."""
    _worker_stop_check()
    counter = _WORKER["counter"]
    with counter.get_lock():
        counter.value += 1


def _worker_write(index: int) -> dict[str, Any] | None:
    """Write one shard in a worker process; None if the run was stopped meanwhile."""
    _WORKER["busy"] = True
    try:
        return write_shard(_WORKER["job"], _WORKER["rendering"], index, _worker_tick)
    except _Stopped:
        return None
    finally:
        _WORKER["busy"] = False


def _write_in_processes(
    job: ShardJob,
    todo: list[int],
    workers: int,
    on_record: Callable[[dict[str, Any]], None],
    bar: tqdm,
) -> None:
    """Write the shards `todo` in `workers` processes, calling on_record as each finishes."""
    ctx = mp.get_context("spawn")
    stop, counter = ctx.Event(), ctx.Value("q", 0)
    initargs = (job, stop, counter, os.getpid())
    pool = ProcessPoolExecutor(workers, ctx, initializer=_worker_init, initargs=initargs)
    futures: list[Future] = []
    recorded: set[int] = set()

    def record(f: Future) -> None:
        result = f.result()
        if result is not None and result["index"] not in recorded:
            recorded.add(result["index"])
            on_record(result)

    try:
        with stop_signals_deferred():  # the first `workers` submissions start the processes
            futures = [pool.submit(_worker_write, k) for k in todo[:workers]]
        futures += [pool.submit(_worker_write, k) for k in todo[workers:]]
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, PROGRESS_SECONDS, return_when=FIRST_COMPLETED)
            bar.update(counter.value - bar.n)
            for f in finished:
                record(f)
        bar.update(counter.value - bar.n)
    except BrokenProcessPool:
        raise FractalDBError(
            "a render worker process died (killed, or out of memory); fix: re-run the same "
            "command to resume (complete shards are kept), with fewer --workers if memory is short"
        ) from None
    finally:
        stop.set()  # workers still rendering drop their shard and remove its temporary file
        pool.shutdown(wait=True, cancel_futures=True)
        for f in futures:  # shards that completed while the run was stopping
            if f.done() and not f.cancelled() and f.exception() is None:
                record(f)
        # a worker killed outright cannot clean up after itself
        remove_stale_temporaries(*(Path(job.out) / shard_name(k) for k in todo))


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
    workers: int = 1,
) -> tuple[dict[str, Any], dict[int, dict[str, Any]], list[int], list[int]]:
    """Check and prepare the output folder; return (header, complete shard records by index,
    owned shards, shards still to write).

    Refuses another dataset's folder, saves the categories (node 0), removes this node's stale
    temporaries and checks the hashes of the shards already there.
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
    # stale temporaries of an interrupted run (only this node writes these files)
    remove_stale_temporaries(
        *(out / shard_name(k) for k in owned),
        out / partial_name(node_rank, num_nodes),
        *([cat_path] if node_rank == 0 else []),
    )
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # hashing releases the GIL
        checks = ordered_map(
            lambda k: _shard_ok(out / shard_name(k), known.get(shard_name(k))),
            owned,
            pool,
            window=4 * max(1, workers),
        )
        done = {k: known[shard_name(k)] for k, ok in zip(owned, checks, strict=True) if ok}
    todo = [k for k in owned if k not in done]
    write_partial(out, header, node_rank, num_nodes, list(done.values()))
    return header, done, owned, todo


def close_output(
    out: Path, header: dict[str, Any], owned: list[int], todo: list[int], num_nodes: int
) -> RenderReport:
    """Finalize the dataset if every shard is done; report what this call wrote (`todo`)."""
    manifest = None
    if num_nodes == 1:
        manifest = finalize(out)
    else:
        try:
            manifest = finalize(out)
        except FractalDBError:
            manifest = None  # other nodes are still writing; the last one to finish finalizes
    n_samples = header["num_samples"]
    per_shard = header["layout"]["samples_per_shard"]
    return RenderReport(
        out=out,
        num_shards=header["num_shards"],
        owned=len(owned),
        skipped=len(owned) - len(todo),
        written=len(todo),
        samples_written=sum(len(shard_range(k, n_samples, per_shard)) for k in todo),
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
    device: str = "cpu",
    batch_size: int = 1024,
    notice: Callable[[str], None] | None = None,
) -> RenderReport:
    """Write this node's shards of the dataset into `out`, skipping complete ones.

    On the CPU, `workers` > 1 renders whole shards in that many spawned processes (see the
    module docstring); 1 renders in this process. With `device="cuda"` the GPU renders
    `batch_size` images at a time, `workers` threads encode, and each shard record names the
    device. When every shard is done (always, for a single node) the partial manifests are
    merged into manifest.json and _info.json. `notice` receives a warning line before a
    render that will write more than ~50 GB or run for hours (shards.estimate).
    """
    if device not in RENDER_DEVICES:
        raise FractalDBError(f"unknown render device {device!r}; fix: --device cpu or cuda")
    if device == "cuda":
        from shards.gpu_writer import GpuRendering

        rendering: Any = GpuRendering(categories, settings, workers, batch_size)
    out = Path(out)
    # what a single-node run starts from nothing, it removes again if stopped before any
    # shard is complete (a second node may already read categories.json: not there)
    fresh = [f for f in (out / CATEGORIES, out / partial_name(node_rank, num_nodes))
             if num_nodes == 1 and not f.exists()]  # fmt: skip
    header, done, owned, todo = open_output(
        categories, settings, layout, out, name, num_nodes, node_rank, workers
    )
    n_samples = len(categories) * layout.instances_per_category
    todo_samples = sum(len(shard_range(k, n_samples, layout.samples_per_shard)) for k in todo)

    def on_record(record: dict[str, Any]) -> None:
        done[record["index"]] = record
        write_partial(out, header, node_rank, num_nodes, list(done.values()))

    job = ShardJob(categories, settings, layout, str(out))
    desc = "render (GPU)" if device == "cuda" else "render"
    try:
        if notice is not None and todo:
            cells = shard_cells(todo[0], len(categories), settings, layout)
            busy = min(workers, len(todo)) if device == "cpu" else workers
            warning = large_render_warning(
                categories, settings, layout, cells, todo_samples, busy, device
            )
            if warning is not None:
                notice(warning)
        with tqdm(
            total=todo_samples,
            unit="img",
            desc=f"{desc} node {node_rank}/{num_nodes}" if num_nodes > 1 else desc,
            disable=not progress,
            smoothing=0.05,
        ) as bar:
            if device == "cpu" and workers > 1 and len(todo) > 1:
                _write_in_processes(job, todo, min(workers, len(todo)), on_record, bar)
            else:
                if device == "cpu":
                    rendering = CpuRendering(categories, settings)
                try:
                    for k in todo:
                        on_record(write_shard(job, rendering, k, lambda: bar.update(1)))
                finally:
                    rendering.close()
    except BaseException:  # Ctrl-C, a full disk...: the error itself goes on up
        if not done:
            for f in fresh:
                f.unlink(missing_ok=True)
        raise
    return close_output(out, header, owned, todo, num_nodes)
