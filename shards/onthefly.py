"""Render samples in data-loader workers instead of reading shards: same pixels, no disk.

Sample (category, instance) is rendered exactly as `fractaldb render` writes it (PNG is
lossless, so the decoded shard image equals the rendered one); the label is the category.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from fractaldb.categories import CategorySet, load_categories
from fractaldb.core.errors import FractalDBError
from fractaldb.core.seeding import derive_seed
from fractaldb.render import Renderer
from fractaldb.settings import RenderSettings
from shards.layout import permute
from shards.loader import dist_rank_world, to_model_input

TAG_ONTHEFLY = 204
CHUNK = 256  # positions whose cells are computed in one vectorised call


class OnTheFlyDataset(IterableDataset):
    """An IterableDataset rendering the (category, instance) grid in data-loader workers.

    Each epoch visits a permutation of the grid keyed by (seed, epoch), split between ranks
    (each gets samples_per_epoch // world_size) and then between workers; call `set_epoch`
    before each epoch. Images are RGB (or gray with image_mode="L") PIL images passed to
    `transform`, or uint8 CHW tensors without one.
    """

    def __init__(
        self,
        categories: CategorySet | str | os.PathLike,
        settings: RenderSettings,
        instances_per_category: int,
        transform: Callable | None = None,
        seed: int = 0,
        epoch: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        samples_per_epoch: int | None = None,
        image_mode: str | None = "RGB",
    ) -> None:
        super().__init__()
        if not isinstance(categories, CategorySet):
            categories = load_categories(categories)
        if instances_per_category < 1:
            raise FractalDBError(
                f"instances_per_category must be >= 1, got {instances_per_category}"
            )
        if image_mode not in ("RGB", "L", None):
            raise FractalDBError(f"image_mode must be 'RGB', 'L' or None, got {image_mode!r}")
        self.categories, self.settings = categories, settings
        self.instances = instances_per_category
        self.transform, self.seed, self.epoch = transform, seed, epoch
        self.rank, self.world_size = dist_rank_world(rank, world_size)
        self.num_samples = len(categories) * instances_per_category
        self.samples_per_epoch = samples_per_epoch or self.num_samples
        self.image_mode = image_mode
        self.renderer = Renderer(categories, settings)  # prepares each category once

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (the permutation of the grid) of the next iteration."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch // self.world_size

    def cells(self, positions: np.ndarray) -> np.ndarray:
        """Return the (category, instance) rows at positions of this epoch's order."""
        positions = np.asarray(positions, dtype=np.int64)
        cycles = positions // self.num_samples  # an epoch longer than the grid wraps around
        flat = np.empty(len(positions), dtype=np.int64)
        for cycle in np.unique(cycles).tolist():
            at = cycles == cycle
            key = derive_seed(self.seed, TAG_ONTHEFLY, self.epoch, cycle)
            flat[at] = permute(positions[at] % self.num_samples, self.num_samples, key)
        return np.stack([flat // self.instances, flat % self.instances], axis=1)

    def cell(self, position: int) -> tuple[int, int]:
        """Return the (category, instance) at a position of this epoch's order."""
        c, i = self.cells(np.array([position]))[0].tolist()
        return c, i

    def image(self, category: int, instance: int) -> np.ndarray:
        """Render one image as the shards store it, converted to `image_mode`."""
        img = self.renderer.render(category, instance)
        if self.image_mode == "RGB" and img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        elif self.image_mode == "L" and img.ndim == 3:
            import cv2

            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        return img

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # Positions of this rank, then of this worker; an epoch longer than the grid wraps
        # into the next permutation.
        positions = range(
            self.rank + self.world_size * worker,
            len(self) * self.world_size,
            self.world_size * num_workers,
        )
        for start in range(0, len(positions), CHUNK):
            for c, i in self.cells(np.asarray(positions[start : start + CHUNK])).tolist():
                yield to_model_input(self.image(c, i), self.transform), c
