"""The task plug-in interface of the training engine, and the data-source contract.

The engine (pretrain/engine/loop.py) owns everything generic: distributed setup, batch/lr
arithmetic, optimizer, per-step schedule, AMP, clipping, EMA, checkpoints, logging, resume.
A Task supplies only what differs between supervised pre-training, MAE and fine-tuning.
"""

from __future__ import annotations

from collections.abc import Iterable, Sized
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from pretrain.engine.augment import AugmentConfig, BatchAugment


class Task:
    """Base class for training tasks; subclasses override the methods they need.

    `defaults` declares the task's own configuration keys (merged with the engine's keys;
    anything else in a recipe or override is an error).
    """

    name: str = "task"
    defaults: dict[str, Any] = {}

    def setup(self, cfg: dict[str, Any], num_classes: int | None) -> None:
        """Receive the resolved config and the dataset's class count before anything is built."""
        self.cfg = cfg
        self.num_classes = num_classes

    def bind_data(self, data: DataSource) -> None:
        """Receive the run's data source after setup (e.g. to pick fixed images to visualise)."""
        self.data_source = data

    def batch_augment_for(self, config: AugmentConfig) -> BatchAugment:
        """The batched device augmentation for `config`, built once: the object that checks
        the settings before any loader starts is the one that augments the batches."""
        built: BatchAugment | None = getattr(self, "_built_batch_augment", None)
        if built is None or built.config != config:
            built = self._built_batch_augment = BatchAugment(config)
        return built

    def check_batch(self, micro_batch: int) -> None:
        """Reject per-rank batch sizes the task cannot use (raise FractalDBError)."""

    def build_model(self) -> nn.Module:
        """Create the model to train (on CPU; the engine moves and wraps it)."""
        raise NotImplementedError

    def train_transform(self, cfg: dict[str, Any]) -> Any:
        """The PIL-image -> tensor transform for training samples, from the config alone (the
        data source is built before setup). None: the loader delivers uint8 (B, C, H, W)
        batches as decoded (gray stays one channel) and `augment` does the rest on the device."""
        return None

    def augment(self, batch: Any) -> Any:
        """Turn one loaded micro-batch, already on the training device, into the model's input.

        The hook of the device data path (`--augment device`): `batch` is `(images, labels)`
        with images a uint8 tensor (B, C, H, W) on the training device (C = 1 for gray
        images, 3 for colour) and labels an int64 tensor (B,); return the model-ready batch:
        float, normalised, the model's channel count (3 unless the encoder takes 1), with
        mixed soft targets where the recipe mixes (Mixup/CutMix). Any producer of such
        batches (shard loaders, an on-the-fly renderer on the GPU) can feed it. With
        `--augment cpu` the images arrive already transformed (float) and only what is left
        (e.g. Mixup) happens here. Runs outside autocast, before `train_step`.
        """
        return batch

    def eval_transform(self, cfg: dict[str, Any]) -> Any:
        """The PIL-image -> tensor transform for validation samples."""
        return None

    def train_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """Forward one micro-batch (on the device, after `augment`, inside autocast); return
        (loss, extras).

        `model` may be wrapped (DDP / torch.compile). `extras` holds scalar tensors or floats
        to log next to the loss (they are averaged over the logging window, rank 0 only).
        """
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Iterable, device: torch.device
    ) -> dict[str, float]:
        """Validate `model` (unwrapped, eval mode, inside autocast) on this rank's share of
        `loader`; return metrics already reduced over ranks (see distributed.reduce_sums),
        keys prefixed `val_`."""
        return {}

    def export(self, model: nn.Module, path: Path) -> Path:
        """Write final weights (unwrapped model) to `path` (RUN/model.safetensors, or
        RUN/model_ema.safetensors for the EMA copy) for downstream use; return the path."""
        raise NotImplementedError

    def on_epoch_end(self, epoch: int, model: nn.Module, out_dir: Path) -> dict[str, float]:
        """Optional hook after each epoch (e.g. MAE reconstructions); returns extra metrics."""
        return {}

    def on_epoch_logged(self, epoch: int, metrics: dict[str, Any], out_dir: Path) -> None:
        """Optional hook (every rank) with the epoch's logged metrics, validation included, before
        its checkpoint is written (e.g. fine-tuning's RUN/results.json on rank 0)."""

    def describe(self) -> list[str]:
        """Lines printed at start-up describing task-specific settings (augmentation, loss...)."""
        return []


@runtime_checkable
class DataSource(Protocol):
    """What the engine needs from the data: class count, manifest hash and per-epoch loaders.

    `train_loader(epoch, ...)` must be a deterministic function of (seed, epoch, rank,
    world_size): that is what makes `--resume` reproduce an uninterrupted run. Its len() is the
    number of micro-batches this rank yields in the epoch and must be equal on every rank
    (otherwise DDP ranks would wait on each other forever). Batches are whatever the task's
    train_step expects (supervised: (images BxCxHxW float, labels LongTensor)).
    """

    num_classes: int | None
    num_samples: int
    manifest_sha256: str | None

    def train_loader(
        self, epoch: int, *, batch_size: int, seed: int, rank: int, world_size: int
    ) -> Iterable[Any] | Sized:
        """Loader for one training epoch, yielding `batch_size`-sized micro-batches."""
        ...

    def val_loader(self, *, batch_size: int, rank: int, world_size: int) -> Iterable[Any] | None:
        """Loader over the held-out set (each sample exactly once across ranks), or None."""
        ...
