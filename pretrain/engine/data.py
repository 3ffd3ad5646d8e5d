"""Data sources for the engine: in-memory tensors (tests, synthetic benchmarks), map-style
datasets (fine-tuning: torchvision / ImageFolder) and, in shards_source.py, shards.

Each source implements the `task.DataSource` contract: per-epoch train loaders that are a
deterministic function of (seed, epoch, rank, world_size), and a validation loader that visits
every held-out sample exactly once across ranks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from fractaldb.core.errors import FractalDBError
from fractaldb.core.workers import loader_worker_init


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 32-bit seed derived from (seed, epoch, rank); independent streams for each triple."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def epoch_order(
    num_samples: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    samples_per_epoch: int | None = None,
) -> torch.Tensor:
    """This rank's sample indices for one epoch: a permutation seeded by (seed, epoch), split
    into equal strided slices so every rank yields the same number of batches.

    With `samples_per_epoch`, the epoch is that many samples (the permutation repeated, each
    copy reshuffled, when it exceeds the dataset).
    """
    total = int(samples_per_epoch or num_samples)
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    copies = -(-total // num_samples)
    order = torch.cat([torch.randperm(num_samples, generator=g) for _ in range(copies)])[:total]
    per_rank = total // world_size
    if per_rank < batch_size:
        raise FractalDBError(
            f"{total} training samples per epoch give each of {world_size} ranks fewer than "
            f"one batch of {batch_size}; fix: a smaller --batch-size or more data"
        )
    return order[rank::world_size][:per_rank]


class _IndexBatches:
    """Batches of (images, labels) gathered from in-memory tensors by a fixed index order."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        order: torch.Tensor,
        batch_size: int,
        drop_last: bool,
    ) -> None:
        self.x, self.y, self.order, self.batch_size = x, y, order, batch_size
        n = len(order)
        self.n_batches = n // batch_size if drop_last else -(-n // batch_size)

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in range(self.n_batches):
            idx = self.order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


class TensorData:
    """A DataSource over tensors already in memory (already transformed, no augmentation)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        val_images: torch.Tensor | None = None,
        val_labels: torch.Tensor | None = None,
        num_classes: int | None = None,
        manifest_sha256: str | None = None,
    ) -> None:
        self.images, self.labels = images, labels.long()
        self.val_images = val_images
        self.val_labels = None if val_labels is None else val_labels.long()
        self.num_classes = int(num_classes if num_classes is not None else labels.max() + 1)
        self.num_samples = len(images)
        self.manifest_sha256 = manifest_sha256

    def train_loader(
        self, epoch: int, *, batch_size: int, seed: int, rank: int, world_size: int
    ) -> _IndexBatches:
        """Shuffle with a generator seeded by (seed, epoch) and give each rank an equal slice."""
        order = epoch_order(self.num_samples, batch_size, seed, epoch, rank, world_size)
        return _IndexBatches(self.images, self.labels, order, batch_size, drop_last=True)

    def val_loader(self, *, batch_size: int, rank: int, world_size: int) -> _IndexBatches | None:
        """Every held-out sample exactly once across ranks (strided split, last batch kept)."""
        if self.val_images is None:
            return None
        order = torch.arange(len(self.val_images))[rank::world_size]
        return _IndexBatches(self.val_images, self.val_labels, order, batch_size, drop_last=False)


def sample_seeds(seed: int, epoch: int, total: int) -> np.ndarray:
    """One 32-bit augmentation seed per position of an epoch's global sample order."""
    return np.random.SeedSequence([seed, epoch, _TAG_SAMPLE_AUGMENT]).generate_state(total)


_TAG_SAMPLE_AUGMENT = 301  # apart from epoch_seed's [seed, epoch, rank] streams


class SeededSamples:
    """A map-style dataset read by (seed, index) keys: each sample's random augmentation is
    drawn from its own seed, so it is the same with any number of loader workers (or none),
    and the caller's random, numpy and torch generators are left as they were."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        seed, index = key
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class _EpochIndices(torch.utils.data.Sampler):
    """A sampler whose indices are replaced every epoch (the loader and its workers stay)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class DatasetData:
    """A DataSource over map-style datasets (torchvision, ImageFolder, Subset) that return
    (transformed image tensor, label) pairs; batches are collated by a torch DataLoader.

    `manifest_sha256` identifies the data (resume refuses other data); `samples_per_epoch`
    shortens or lengthens an epoch. `persistent_workers`: one training DataLoader whose workers
    live for the whole run, its sampler given each epoch's order. Training samples are read
    through SeededSamples, so augmentations do not depend on the number of workers.
    """

    def __init__(
        self,
        train: Any,
        val: Any | None,
        num_classes: int,
        manifest_sha256: str | None,
        workers: int = 0,
        samples_per_epoch: int | None = None,
        persistent_workers: bool = False,
        max_bad_samples: int | None = None,
    ) -> None:
        from shards.badsamples import BadSamples, LeaveOutUndecodable, SkipUndecodable

        if len(train) == 0:
            raise FractalDBError("the training set is empty; fix: check the data folder")
        # unreadable training images are replaced by the next one, counted and named
        # (badsamples.py); unreadable held-out images are left out (a replacement could be of
        # another class) and counted apart, in their own split: val_unreadable beside
        # val_samples, with the same limit
        self.bad_samples = BadSamples(max_bad_samples, kind="photos")
        self.val_left_out = BadSamples(max_bad_samples, kind="photos")
        train = SkipUndecodable(train, self.bad_samples)
        if val is not None:
            val = LeaveOutUndecodable(val, self.val_left_out)
        self.train, self.val = SeededSamples(train), val
        self.num_classes = int(num_classes)
        self.num_samples = int(samples_per_epoch or len(train))
        self.samples_per_epoch = samples_per_epoch
        self.manifest_sha256 = manifest_sha256
        self.workers = int(workers)
        self.persistent_workers = bool(persistent_workers) and self.workers > 0
        self._persistent: tuple[int, Any, _EpochIndices] | None = None

    def _loader(self, dataset: Any, indices: Any, batch_size: int, generator=None, collate=None):
        from torch.utils.data import DataLoader

        return DataLoader(
            dataset,
            collate_fn=collate,
            batch_size=batch_size,
            sampler=indices,
            num_workers=self.workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
            # Worker seeds derive from this generator: augmentation replays on resume.
            generator=generator,
            persistent_workers=isinstance(indices, _EpochIndices),
            worker_init_fn=loader_worker_init(),  # workers end with this process
        )

    def train_loader(self, epoch: int, *, batch_size: int, seed: int, rank: int, world_size: int):
        """Seeded (seed, epoch) shuffle, an equal whole number of batches on every rank; each
        sample augmented from the seed of its place in the epoch's global order."""
        from shards.badsamples import CheckedLoader

        order = epoch_order(
            len(self.train), batch_size, seed, epoch, rank, world_size, self.samples_per_epoch
        )
        order = order[: len(order) // batch_size * batch_size].tolist()
        seeds = sample_seeds(seed, epoch, rank + world_size * len(order))
        order = [(int(seeds[rank + world_size * k]), i) for k, i in enumerate(order)]
        if self.persistent_workers:
            if self._persistent is None or self._persistent[0] != batch_size:
                sampler = _EpochIndices()
                loader = self._loader(self.train, sampler, batch_size)
                self._persistent = (batch_size, loader, sampler)
            _, loader, sampler = self._persistent
            sampler.indices = order
        else:
            g = torch.Generator().manual_seed(epoch_seed(seed, epoch, rank))
            loader = self._loader(self.train, order, batch_size, g)
        return CheckedLoader(loader, self.bad_samples, new_epoch=True)

    def val_loader(self, *, batch_size: int, rank: int, world_size: int):
        """Every held-out sample exactly once across ranks (strided split, last batch kept)."""
        from shards.badsamples import CheckedLoader, collate_readable

        if self.val is None:
            return None
        self.val_left_out.start_epoch()  # counts this evaluation's left-out images
        share = list(range(rank, len(self.val), world_size))
        loader = self._loader(self.val, share, batch_size, collate=collate_readable)
        return CheckedLoader(loader, self.val_left_out, new_epoch=False)


def synthetic_patterns(
    num_classes: int,
    per_class: int,
    img_size: int,
    seed: int = 0,
    noise: float = 0.6,
    instance_seed: int = 1,
    channels: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-dependent images: a fixed random template per class plus per-sample noise.

    `seed` fixes the classes, `instance_seed` the instances (use another one for held-out data).
    Learnable in a few dozen steps by a tiny ViT; used by tests and the synthetic benchmark.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num_classes, channels, 4, 4, generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=img_size, mode="bilinear")
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    g2 = torch.Generator().manual_seed(instance_seed)
    images = templates[labels] + noise * torch.randn(
        len(labels), channels, img_size, img_size, generator=g2
    )
    return images.clamp(-3, 3), labels


def synthetic_data(
    num_classes: int = 4, per_class: int = 32, img_size: int = 32, seed: int = 0, channels: int = 3
) -> TensorData:
    """A TensorData of synthetic_patterns with a held-out set drawn with other noise."""
    x, y = synthetic_patterns(
        num_classes, per_class, img_size, seed=seed, instance_seed=1, channels=channels
    )
    vx, vy = synthetic_patterns(
        num_classes,
        max(per_class // 4, 2),
        img_size,
        seed=seed,
        instance_seed=2,
        channels=channels,
    )
    return TensorData(x, y, vx, vy, num_classes=num_classes, manifest_sha256=f"synthetic-{seed}")
