"""Training and evaluation loaders over the shards, on webdataset's pipeline API.

Shards are dealt to global workers (G = world_size x num_workers; worker g = rank x
num_workers + id): each epoch, a permutation of the shards keyed by (seed, epoch) is split
into G disjoint parts; when there are fewer shards than workers, the workers sharing a
shard take every k-th sample of it. So ranks never read the same sample in the same epoch,
and every worker has data (no hang when G exceeds the number of shards).

Training: each worker cycles endlessly over its part (reshuffled every cycle, i.e. shards
are resampled rather than exhausted), through a shuffle buffer seeded by (seed, epoch,
rank, worker); the loader cuts the epoch at `samples_per_epoch // (batch_size x
world_size)` batches per rank: the same count on every rank, independent of the number
of workers. Augmentation RNGs in workers are seeded from the same tuple.

Evaluation: each worker reads its part once, so every sample is seen exactly once across
all ranks.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Callable, Iterator
from functools import partial
from itertools import chain, count
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import default_collate, get_worker_info

from fractaldb.core.errors import FractalDBError
from fractaldb.core.seeding import derive_seed
from fractaldb.core.workers import loader_worker_init
from shards.badsamples import BadSamples, SkipUndecodableStage, UndecodableSample
from shards.codec import decode_image, find_image
from shards.layout import permute
from shards.manifest import INFO, MANIFEST
from shards.tarstream import shard_samples

TAG_SHARDS, TAG_SAMPLES, TAG_AUGMENT = 201, 202, 203
SHUFFLE_BUFFER = 2000
SHUFFLE_INITIAL = 500


class EpochState:
    """The epoch and seeds a pipeline reads when it starts; pickled into each worker."""

    def __init__(self, seed: int, epoch: int, rank: int, world_size: int) -> None:
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size

    def worker(self) -> tuple[int, int]:
        """Return (worker id, number of workers) of the current data-loader worker."""
        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)


def dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Return (rank, world_size): as given, else from torch.distributed, else (0, 1)."""
    if rank is not None and world_size is not None:
        if not 0 <= rank < world_size:
            raise FractalDBError(f"rank {rank} is not in [0, {world_size})")
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _is_local_dir(p: Any) -> bool:
    return isinstance(p, (str, os.PathLike)) and os.path.isdir(p)


def _read_text(url: str) -> bytes | None:
    try:
        with wds.gopen(url, "rb") as f:
            return f.read()
    except Exception:  # noqa: BLE001 - any unreadable location means "no info there"
        return None


def read_dataset_info(path_or_urls: str | os.PathLike | list[str]) -> dict[str, Any]:
    """Read DIR/_info.json and DIR/manifest.json for a folder or the folder of shard URLs.

    Returns num_classes, num_samples, shard_lengths, filenames (full URLs), manifest_sha256,
    settings, layout, dataset_id and name. `pipe:` URLs hold no folder: pass the folder.
    """
    if _is_local_dir(path_or_urls):
        root = os.fspath(path_or_urls)
    else:
        urls = (
            wds.shardlists.expand_urls(path_or_urls)
            if isinstance(path_or_urls, str)
            else list(path_or_urls)
        )
        if not urls or urls[0].startswith("pipe:") or "/" not in urls[0]:
            first = urls[0] if urls else path_or_urls
            raise FractalDBError(
                f"cannot locate _info.json for {first!r}; fix: pass the dataset folder, or "
                "samples_per_epoch explicitly"
            )
        root = urls[0].rsplit("/", 1)[0]
    info_bytes = _read_text(f"{root}/{INFO}")
    if info_bytes is None:
        given = os.fspath(path_or_urls) if isinstance(path_or_urls, (str, os.PathLike)) else ""
        if given and os.path.isfile(given):
            raise FractalDBError(
                f"{given} is a file with no _info.json beside it, not a shard folder; fix: pass "
                "the folder written by `fractaldb render`"
            )
        if os.path.isdir(root) and not any(n.endswith(".tar") for n in os.listdir(root)):
            raise FractalDBError(
                f"no shards in {root} (no .tar files, no {INFO}); fix: pass the folder written "
                "by `fractaldb render`, or render one there"
            )
        raise FractalDBError(
            f"{root}/{INFO} not found; fix: finish the render (or run `fractaldb shards finalize "
            f"{root}`), or pass samples_per_epoch explicitly"
        )
    info = json.loads(info_bytes)
    split = info["splits"]["train"]
    manifest_bytes = _read_text(f"{root}/{MANIFEST}")
    manifest = json.loads(manifest_bytes) if manifest_bytes else {}
    return {
        "name": info.get("name"),
        "root": root,
        "num_classes": info.get("num_classes", manifest.get("num_categories")),
        "num_samples": split["num_samples"],
        "filenames": [f"{root}/{f}" for f in split["filenames"]],
        "shard_lengths": list(split["shard_lengths"]),
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest() if manifest_bytes else None,
        "dataset_id": manifest.get("dataset_id"),
        "categories_sha256": manifest.get("categories_sha256"),
        "settings": manifest.get("settings"),
        "layout": manifest.get("layout"),
    }


def _expand(urls: str | os.PathLike | list[str]) -> tuple[list[str], dict[str, Any] | None]:
    """Return (shard URLs, dataset info if it can be found)."""
    if _is_local_dir(urls):
        info = read_dataset_info(urls)
        return info["filenames"], info
    expanded = wds.shardlists.expand_urls(urls) if isinstance(urls, str) else [str(u) for u in urls]
    if not expanded:
        raise FractalDBError(f"no shards in {urls!r}; fix: pass a folder or a brace pattern")
    try:
        info = read_dataset_info(expanded)
    except FractalDBError:
        info = None
    return expanded, info


def _shard_lengths(urls: list[str], info: dict[str, Any] | None) -> list[int] | None:
    """Return the sample count of each URL's shard, when _info.json lists all of them."""
    if info is None:
        return None
    by_name = {
        f.rsplit("/", 1)[-1]: n
        for f, n in zip(info["filenames"], info["shard_lengths"], strict=True)
    }
    names = [u.rsplit("/", 1)[-1] for u in urls]
    return [by_name[n] for n in names] if all(n in by_name for n in names) else None


def decode_sample(
    sample: dict[str, Any],
    transform: Callable | None,
    label_key: str,
    image_mode: str | None,
    return_keys: bool = False,
) -> tuple[Any, ...]:
    """Decode one WebDataset sample with OpenCV into (image, label) or (image, label, key)."""
    try:
        array = decode_image(find_image(sample), image_mode)
        raw = sample["cls"] if label_key == "cls" else json.loads(sample["json"])[label_key]
        label = int(raw)
    except (ValueError, KeyError, TypeError) as exc:  # damaged image or label: skipped, counted
        name = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        raise UndecodableSample(name, f"{type(exc).__name__}: {exc}") from exc
    image = to_model_input(array, transform)
    return (image, label, sample["__key__"]) if return_keys else (image, label)


def _decode_stage(
    transform: Callable | None,
    label_key: str,
    image_mode: str | None,
    return_keys: bool,
    bad_samples: BadSamples | None = None,
):
    """The pipeline stage that decodes samples, shared by the training and evaluation loaders;
    undecodable samples are skipped and counted in `bad_samples` (shards/badsamples.py)."""
    return SkipUndecodableStage(
        partial(
            decode_sample,
            transform=transform,
            label_key=label_key,
            image_mode=image_mode,
            return_keys=return_keys,
        ),
        bad_samples,
    )


def to_model_input(array: np.ndarray, transform: Callable | None) -> Any:
    """Apply `transform` to the image as a PIL.Image, or return a uint8 CHW tensor."""
    if transform is not None:
        return transform(Image.fromarray(array))
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def assign_shards(
    num_shards: int, global_worker: int, global_workers: int
) -> list[tuple[int, int, int]]:
    """Return the (shard, offset, stride) triples of one global worker: a disjoint cover."""
    if num_shards >= global_workers:
        return [(i, 0, 1) for i in range(global_worker, num_shards, global_workers)]
    shard = global_worker % num_shards
    stride = len(range(shard, global_workers, num_shards))
    return [(shard, global_worker // num_shards, stride)]


def _worker_part(
    state: EpochState, urls: list[str], shuffled: bool
) -> tuple[int, list[tuple[int, int, int]]]:
    """Return (global worker id, its (shard, offset, stride) part) for the current epoch."""
    worker, num_workers = state.worker()
    g_size = state.world_size * num_workers
    g = state.rank * num_workers + worker
    n = len(urls)
    order = (
        permute(range(n), n, derive_seed(state.seed, TAG_SHARDS, state.epoch))
        if shuffled
        else np.arange(n)
    )
    return g, [(int(order[s]), off, k) for s, off, k in assign_shards(n, g, g_size)]


def _read_part(
    urls: list[str],
    part: list[tuple[int, int, int]],
    lengths: list[int] | None = None,
    report: bool = True,
) -> Iterator[dict[str, Any]]:
    # with the shard lengths, a truncated shard counts as the samples it lost
    for shard, offset, stride in part:
        expected = lengths[shard] if lengths is not None else None
        yield from shard_samples(urls[shard], expected, offset, stride, report=report)


def _train_samples(
    state: EpochState,
    urls: list[str],
    lengths: list[int] | None,
    bufsize: int,
    initial: int,
) -> Iterator[dict[str, Any]]:
    """Endless shuffled sample stream of this global worker (see the module docstring)."""
    g, part = _worker_part(state, urls, shuffled=True)

    def cycles() -> Iterator[dict[str, Any]]:
        for cycle in count(1):
            key = derive_seed(state.seed, TAG_SHARDS, state.epoch, g, cycle)
            got = 0
            for i in permute(range(len(part)), len(part), key):
                # a damaged shard is counted once an epoch, not again at every re-read
                for sample in _read_part(urls, [part[int(i)]], lengths, report=cycle == 1):
                    got += 1
                    yield sample
            if got == 0:
                raise RuntimeError(f"no readable samples in {[urls[s] for s, _, _ in part]}")

    if lengths is not None:  # a buffer larger than the part would only hold repeats
        share = sum(len(range(off, lengths[s], k)) for s, off, k in part)
        bufsize = max(1, min(bufsize, share))
    rng = random.Random(derive_seed(state.seed, TAG_SAMPLES, state.epoch, state.rank, g))
    yield from wds.shuffle(bufsize, min(initial, bufsize), rng=rng)(cycles())


def _seed_worker(worker_id: int) -> None:
    """Seed torch/random/numpy in a worker from (seed, epoch, rank, worker) for augmentations."""
    state = get_worker_info().dataset.fdb_state
    s = derive_seed(state.seed, TAG_AUGMENT, state.epoch, state.rank, worker_id)
    torch.manual_seed(s % (1 << 63))
    random.seed(s)
    np.random.seed(s % (1 << 32))


class TrainLoader(wds.WebLoader):
    """A WebLoader whose epochs advance: iteration k uses epoch `epoch + k` unless set."""

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use `epoch` (for resuming)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator:
        self.fdb_state.epoch = self.epoch
        self.epoch += 1
        batches = super().__iter__()
        # Start the workers now, so they copy this epoch's state even if set_epoch is called
        # again before the first batch is consumed.
        first = next(batches, None)
        return iter(()) if first is None else chain([first], batches)


def make_train_loader(
    urls: str | os.PathLike | list[str],
    *,
    batch_size: int,
    num_workers: int,
    transform: Callable | None,
    seed: int = 0,
    epoch: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    samples_per_epoch: int | None = None,
    label_key: str = "cls",
    image_mode: str | None = "RGB",
    shuffle_buffer: int = SHUFFLE_BUFFER,
    pin_memory: bool = False,
    return_keys: bool = False,
    bad_samples: BadSamples | None = None,
) -> TrainLoader:
    """Return an endless-shard training loader yielding (images, labels) batches of one rank.

    `urls`: a dataset folder, a brace pattern, a list, or `pipe:` commands (then pass
    `samples_per_epoch`). With `return_keys` batches are (images, labels, sample keys).
    `len(loader)` is the number of batches per epoch on this rank:
    samples_per_epoch (default: the dataset size) // (batch_size x world_size).
    """
    rank, world_size = dist_rank_world(rank, world_size)
    shard_urls, info = _expand(urls)
    if samples_per_epoch is None:
        if info is None:
            raise FractalDBError(
                f"no _info.json next to {shard_urls[0]!r}; fix: pass samples_per_epoch"
            )
        samples_per_epoch = info["num_samples"]
    nbatches = samples_per_epoch // (batch_size * world_size)
    if nbatches < 1:
        raise FractalDBError(
            f"{samples_per_epoch} samples per epoch make no global batch of {batch_size} x "
            f"{world_size} ranks; fix: lower batch_size or raise samples_per_epoch"
        )
    state = EpochState(seed, epoch, rank, world_size)
    lengths = _shard_lengths(shard_urls, info)
    dataset = wds.DataPipeline(
        partial(
            _train_samples,
            state,
            shard_urls,
            lengths,
            bufsize=shuffle_buffer,
            initial=SHUFFLE_INITIAL,
        ),
        _decode_stage(transform, label_key, image_mode, return_keys, bad_samples),
        wds.batched(batch_size, collation_fn=default_collate, partial=False),
    )
    dataset.fdb_state = state
    loader = TrainLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        worker_init_fn=loader_worker_init(_seed_worker),  # workers end with this process
        pin_memory=pin_memory,
    )
    loader.fdb_state, loader.epoch = state, epoch
    return loader.with_epoch(nbatches).with_length(nbatches, silent=True)


def _eval_samples(
    state: EpochState, urls: list[str], lengths: list[int] | None = None
) -> Iterator[dict[str, Any]]:
    _, part = _worker_part(state, urls, shuffled=False)
    yield from _read_part(urls, part, lengths)


def make_eval_loader(
    urls: str | os.PathLike | list[str],
    *,
    batch_size: int,
    num_workers: int,
    transform: Callable | None,
    rank: int | None = None,
    world_size: int | None = None,
    label_key: str = "cls",
    image_mode: str | None = "RGB",
    return_keys: bool = False,
    bad_samples: BadSamples | None = None,
) -> wds.WebLoader:
    """Return a loader over this rank's share of the samples: each seen once over all ranks.

    Ranks may get different numbers of batches (one may get none), so reduce metrics after
    the loop. `len()` is set when shard lengths are known (_info.json).
    """
    rank, world_size = dist_rank_world(rank, world_size)
    shard_urls, info = _expand(urls)
    state = EpochState(0, 0, rank, world_size)
    lengths = _shard_lengths(shard_urls, info)
    dataset = wds.DataPipeline(
        partial(_eval_samples, state, shard_urls, lengths),
        _decode_stage(transform, label_key, image_mode, return_keys, bad_samples),
        wds.batched(batch_size, collation_fn=default_collate, partial=True),
    )
    loader = wds.WebLoader(
        dataset, batch_size=None, num_workers=num_workers, worker_init_fn=loader_worker_init()
    )
    if lengths is not None:
        workers = max(1, num_workers)
        g_size = world_size * workers
        nbatches = 0
        for w in range(workers):
            n = sum(
                len(range(off, lengths[s], stride))
                for s, off, stride in assign_shards(len(lengths), rank * workers + w, g_size)
            )
            nbatches += math.ceil(n / batch_size)
        loader = loader.with_length(nbatches, silent=True)
    return loader
