"""The engine's DataSources over the shards package: WebDataset shards, or on-the-fly rendering
in loader workers (the GPU renderer's source, pretrain.gpu_source, builds on OnTheFlyData;
pretrain.sources picks one from the configuration).

This is the only module that touches the `shards` loader API.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import torch

from fractaldb.core.errors import FractalDBError
from fractaldb.core.workers import loader_worker_init
from shards.badsamples import BadSamples, CheckedLoader


def decode_mode(train_transform: Any) -> str | None:
    """How workers decode training images: RGB for a PIL transform; as stored (gray stays one
    channel, uint8) when there is none and the task augments on the device."""
    return "RGB" if train_transform is not None else None


def check_same_categories(train_sha256: str | None, val_sha256: str | None) -> None:
    """Refuse held-out shards rendered from another category set (same class count or not)."""
    if train_sha256 and val_sha256 and train_sha256 != val_sha256:
        raise FractalDBError(
            f"--val-data was rendered from other categories (categories sha256 "
            f"{val_sha256[:12]}) than --data ({train_sha256[:12]}): its labels mean other "
            "classes; fix: render the held-out set with --categories DATA/categories.json"
        )


class _HeldOutShards:
    """Validation on held-out shards (--val-data), the same for both training sources."""

    val_urls: str | None
    workers: int
    eval_transform: Any
    bad_samples: BadSamples

    def val_loader(self, *, batch_size: int, rank: int, world_size: int):
        """shards.loader.make_eval_loader over --val-data (None without it)."""
        if self.val_urls is None:
            return None
        from shards.loader import make_eval_loader

        loader = make_eval_loader(
            self.val_urls,
            batch_size=batch_size,
            num_workers=self.workers,
            transform=self.eval_transform,
            rank=rank,
            world_size=world_size,
            bad_samples=self.bad_samples,
        )
        return CheckedLoader(loader, self.bad_samples, new_epoch=False)


class ShardsData(_HeldOutShards):
    """DataSource over a shard folder/URL list (train) and an optional held-out shard set."""

    def __init__(
        self,
        urls: str,
        val_urls: str | None,
        train_transform: Any,
        eval_transform: Any,
        workers: int,
        samples_per_epoch: int | None,
        max_bad_samples: int | None = None,
    ) -> None:
        from shards.loader import read_dataset_info

        self.bad_samples = BadSamples(max_bad_samples)
        self.pin_memory = torch.cuda.is_available()
        self.urls, self.val_urls = urls, val_urls
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.workers = workers
        info = read_dataset_info(urls)
        self.num_classes = int(info["num_classes"])
        self.num_samples = int(samples_per_epoch or info["num_samples"])
        self.manifest_sha256 = info.get("manifest_sha256")
        if val_urls is not None:
            vinfo = read_dataset_info(val_urls)
            if int(vinfo["num_classes"]) != self.num_classes:
                raise FractalDBError(
                    f"--val-data has {vinfo['num_classes']} classes but --data has "
                    f"{self.num_classes}; fix: render the held-out set from the same categories"
                )
            check_same_categories(info.get("categories_sha256"), vinfo.get("categories_sha256"))

    def train_loader(self, epoch: int, *, batch_size: int, seed: int, rank: int, world_size: int):
        """shards.loader.make_train_loader for this (seed, epoch, rank)."""
        from shards.loader import make_train_loader

        loader = make_train_loader(
            self.urls,
            batch_size=batch_size,
            num_workers=self.workers,
            transform=self.train_transform,
            seed=seed,
            epoch=epoch,
            rank=rank,
            world_size=world_size,
            samples_per_epoch=self.num_samples,
            pin_memory=self.pin_memory,
            image_mode=decode_mode(self.train_transform),
            bad_samples=self.bad_samples,
        )
        return CheckedLoader(loader, self.bad_samples, new_epoch=True)


class _Rebatch:
    """Exactly `n` batches of `batch_size` from a loader whose workers may end on partial ones.

    Each DataLoader worker batches its own share of an IterableDataset, so the last batch of
    every worker can be short; regrouping keeps the engine's len() contract and even batches.
    """

    def __init__(self, loader: Any, batch_size: int, n: int) -> None:
        self.loader, self.batch_size, self.n = loader, batch_size, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        have = done = 0
        for x, y in self.loader:
            xs.append(x)
            ys.append(torch.as_tensor(y))
            have += len(x)
            while have >= self.batch_size and done < self.n:
                x_all, y_all = torch.cat(xs), torch.cat(ys)
                yield x_all[: self.batch_size], y_all[: self.batch_size]
                done += 1
                xs, ys = [x_all[self.batch_size :]], [y_all[self.batch_size :]]
                have -= self.batch_size
            if done == self.n:
                return


class OnTheFlyData(_HeldOutShards):
    """DataSource rendering the (category, instance) grid in loader workers (no shards)."""

    render_device = "cpu"

    def __init__(
        self,
        categories_path: str,
        val_urls: str | None,
        eval_transform: Any,
        preset: str,
        instances_per_category: int | None,
        train_transform: Any,
        workers: int,
        samples_per_epoch: int | None,
        max_bad_samples: int | None = None,
        render_overrides: dict[str, Any] | None = None,
        gpu_mode: str = "exact",
    ) -> None:
        from fractaldb.categories import load_categories
        from shards.manifest import canonical_json
        from shards.presets import load_preset

        self.categories = load_categories(categories_path)
        p = load_preset(preset)
        self.settings = p.render.replace(**(render_overrides or {}))
        self.gpu_mode = gpu_mode
        self.instances = int(instances_per_category or p.layout.get("instances_per_category", 1000))
        self.transform, self.workers = train_transform, workers
        self.val_urls, self.eval_transform = val_urls, eval_transform
        self.bad_samples = BadSamples(max_bad_samples)
        self.num_classes = len(self.categories)
        if val_urls is not None:
            from shards.loader import read_dataset_info

            vinfo = read_dataset_info(val_urls)
            check_same_categories(self.categories.sha256, vinfo.get("categories_sha256"))
        self.num_samples = int(samples_per_epoch or self.num_classes * self.instances)
        # Stands in for a shard manifest: what the rendered pixels depend on. The category set
        # is identified by its canonical hash, as in shard manifests.
        ident: dict[str, Any] = {
            "categories_sha256": self.categories.sha256,
            "render": self.settings.to_dict(),
            "instances_per_category": self.instances,
        }
        if gpu_mode != "exact":  # other pixels than the CPU's
            ident["gpu_mode"] = gpu_mode
        self.manifest_sha256 = "onthefly-" + hashlib.sha256(canonical_json(ident)).hexdigest()

    def _stream(
        self, epoch: int, *, seed: int, rank: int, world_size: int, batch_size: int, **kw: Any
    ):
        """The OnTheFlyDataset of this (seed, epoch, rank): the sample stream, split by rank."""
        from shards.onthefly import OnTheFlyDataset

        ds = OnTheFlyDataset(
            self.categories,
            self.settings,
            self.instances,
            seed=seed,
            epoch=epoch,
            rank=rank,
            world_size=world_size,
            samples_per_epoch=self.num_samples,
            image_mode=decode_mode(self.transform),
            **kw,
        )
        if len(ds) // batch_size < 1:
            raise FractalDBError(
                f"{self.num_samples} samples per epoch make no batch of {batch_size} on each of "
                f"{world_size} ranks; fix: a smaller --batch-size or --samples-per-epoch"
            )
        return ds

    def train_loader(self, epoch: int, *, batch_size: int, seed: int, rank: int, world_size: int):
        """OnTheFlyDataset for this (seed, epoch, rank) in a DataLoader, regrouped into
        samples_per_epoch // (batch_size x world_size) full batches."""
        ds = self._stream(
            epoch,
            seed=seed,
            rank=rank,
            world_size=world_size,
            batch_size=batch_size,
            transform=self.transform,
        )
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=batch_size,
            num_workers=self.workers,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=loader_worker_init(),  # workers end with this process
        )
        return _Rebatch(loader, batch_size, len(ds) // batch_size)
