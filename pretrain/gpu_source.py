"""Pre-training straight from the GPU renderer: each micro-batch is rendered on the GPU inside
the training process (no DataLoader workers, no disk) and handed to the model without leaving
the device (torch takes Numba's array through `__cuda_array_interface__`, no copy); the
engine's device augmentation (`Task.augment`) then crops, flips, augments and normalises it.

The sample stream is the CPU loader's (shards.onthefly.OnTheFlyDataset): epoch e visits a
permutation of the (category, instance) grid keyed by (seed, e), rank r takes positions
r, r + W, r + 2W, ... So every rank draws a disjoint part of it, the loader of an epoch is a
pure function of (seed, epoch, rank, world size) and `--resume auto` replays it exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from fractaldb.core.errors import FractalDBError
from pretrain.shards_source import OnTheFlyData


def device_images_to_torch(images: Any, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W) or (B, H, W, 3) device array -> uint8 (B, C, H, W) tensor on `device`.

    Zero-copy on a GPU (`__cuda_array_interface__`); Numba's simulator has host arrays only.
    """
    if device.type == "cuda" and hasattr(images, "__cuda_array_interface__"):
        t = torch.as_tensor(images, device=device)
    else:
        t = torch.from_numpy(images.copy_to_host()).to(device)
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)


class GpuRenderedBatches:
    """This rank's micro-batches of one epoch, rendered on the GPU as they are asked for."""

    def __init__(self, stream: Any, batch_size: int, source: GpuOnTheFlyData) -> None:
        self.stream, self.batch_size, self.source = stream, batch_size, source
        self.n = len(stream) // batch_size

    def __len__(self) -> int:
        return self.n

    def cells(self, index: int) -> list[tuple[int, int]]:
        """(category, instance) pairs of micro-batch `index`: stream positions r + W * j."""
        s = self.stream
        first = index * self.batch_size
        return [s.cell(s.rank + s.world_size * j) for j in range(first, first + self.batch_size)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in range(self.n):
            yield self.source.render_cells(self.cells(b))


class GpuOnTheFlyData(OnTheFlyData):
    """OnTheFlyData whose training batches are rendered on the GPU (validation: held-out
    shards, as on the CPU)."""

    render_device = "cuda"

    def __init__(self, *args: Any, cfg: dict[str, Any], **kwargs: Any) -> None:
        from fractaldb.gpu import check_gpu_settings, require_cuda

        super().__init__(*args, **kwargs)
        require_cuda("--render-device cuda", alternative="--render-device cpu")
        check_gpu_settings(self.settings, self.gpu_mode, on_device=True)
        if cfg.get("augment", "device") != "device":
            raise FractalDBError(
                "--render-device cuda hands uint8 batches on the GPU to the device augmentation, "
                f"but --augment is {cfg['augment']!r}; fix: --augment device (the default on "
                "CUDA) or --render-device cpu"
            )
        self.cfg = cfg

    def render_cells(self, cells: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Render cells on the GPU; return (uint8 images (B, C, H, W), int64 labels) on the
        training device: the batch `Task.augment` turns into the model's input."""
        from fractaldb.gpu import render_batch

        # Resolved per batch: under torchrun the engine picks this rank's GPU after we are built.
        device = _training_device(self.cfg["device"])
        stream = 0
        if device.type == "cuda":
            from numba import cuda

            cuda.select_device(device.index)
            stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
        images = render_batch(self.categories, cells, self.settings, self.gpu_mode, stream)
        labels = torch.tensor([c for c, _ in cells], dtype=torch.int64, device=device)
        return device_images_to_torch(images, device), labels

    def train_loader(self, epoch: int, *, batch_size: int, seed: int, rank: int, world_size: int):
        """This rank's GPU-rendered micro-batches of epoch `epoch` (samples_per_epoch //
        (batch_size x world_size) of them)."""
        return GpuRenderedBatches(
            self._stream(epoch, seed=seed, rank=rank, world_size=world_size, batch_size=batch_size),
            batch_size,
            self,
        )


def _training_device(name: str) -> torch.device:
    """The torch device batches go to: the engine's choice for `device` (auto: cuda if any)."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    )
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device
