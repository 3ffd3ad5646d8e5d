"""Supervised classification pre-training (DeiT recipe): timm model, Mixup/CutMix, top-1/top-5."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fractaldb.core.errors import FractalDBError
from pretrain.engine.augment import AugmentConfig, BatchAugment
from pretrain.engine.config import describe_value, effective_color_jitter, on_device
from pretrain.engine.distributed import reduce_sums
from pretrain.engine.models import check_model_name, create_model, export_safetensors
from pretrain.engine.task import Task


def one_channel(transform: Any, cfg: dict[str, Any]) -> Any:
    """For a one-channel model (--model-arg in_chans=1): gray the PIL image just before timm's
    ToTensor and normalise with the first mean/std value; any other model: `transform` as is.

    timm's PIL ops stay on RGB (RandAugment's fill colour is an RGB tuple), so a gray fractal
    goes gray -> RGB -> augmented -> gray, the same image the device path's BatchAugment makes.
    """
    if int(cfg["model_args"].get("in_chans", 3)) != 1:
        return transform
    from torchvision import transforms as T

    steps = list(transform.transforms)
    at = next(i for i, s in enumerate(steps) if type(s).__name__ in ("MaybeToTensor", "ToTensor"))
    steps.insert(at, T.Grayscale(1))
    mean, std = [float(cfg["mean"][0])], [float(cfg["std"][0])]
    steps = [T.Normalize(mean, std) if isinstance(s, T.Normalize) else s for s in steps]
    return T.Compose(steps)


class SupervisedTask(Task):
    """Image classification with a timm model; soft-target loss when Mixup/CutMix is on."""

    name = "supervised"
    defaults: dict[str, Any] = {
        "drop_path": 0.1,
        # Fractal categories are not mirror-invariant-by-design; the AAAI recipe disables flips.
        "hflip": 0.0,
        "color_jitter": 0.4,
        # DeiT main.py's default; without inc1 the colour ops at m9 always scale by 1.72
        "auto_augment": "rand-m9-mstd0.5-inc1",
        "interpolation": "bicubic",
        "scale": [0.08, 1.0],
        "reprob": 0.25,
        "remode": "pixel",
        "mixup": 0.8,
        "cutmix": 1.0,
        "mixup_prob": 1.0,
        "mixup_switch_prob": 0.5,
        "mixup_mode": "batch",
        "smoothing": 0.1,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "eval_crop_pct": 1.0,
    }

    def setup(self, cfg: dict[str, Any], num_classes: int | None) -> None:
        """Validate the model name early and build the loss / mixup for `num_classes`."""
        super().setup(cfg, num_classes)
        check_model_name(cfg["model"])
        if not num_classes or num_classes < 2:
            raise FractalDBError(
                f"supervised training needs at least 2 classes, the data has {num_classes}; "
                "fix: check the dataset's _info.json"
            )
        from timm.data import Mixup
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        self.mixup_active = cfg["mixup"] > 0 or cfg["cutmix"] > 0
        self.mixup_fn = None
        if self.mixup_active:
            self.mixup_fn = Mixup(
                mixup_alpha=float(cfg["mixup"]),
                cutmix_alpha=float(cfg["cutmix"]),
                prob=float(cfg["mixup_prob"]),
                switch_prob=float(cfg["mixup_switch_prob"]),
                mode=cfg["mixup_mode"],
                label_smoothing=float(cfg["smoothing"]),
                num_classes=num_classes,
            )
            # Mixup already smooths the soft targets.
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif cfg["smoothing"] > 0:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=float(cfg["smoothing"]))
        else:
            self.criterion = nn.CrossEntropyLoss()

        # built now on the device path (bad settings fail early), lazily for any other uint8
        # producer (e.g. a renderer on the GPU feeding Task.augment)
        self.batch_augment = self._batch_augment() if on_device(cfg) else None

    def _batch_augment(self) -> BatchAugment:
        in_chans = int(self.cfg["model_args"].get("in_chans", 3))
        return self.batch_augment_for(AugmentConfig.from_cfg(self.cfg, in_chans))

    def check_batch(self, micro_batch: int) -> None:
        """timm's batch-mode Mixup pairs each sample with its mirror: the batch must be even."""
        if self.mixup_active and micro_batch % 2:
            raise FractalDBError(
                f"mixup/cutmix needs an even per-rank batch, got {micro_batch}; fix: choose "
                "--batch-size so that batch / ranks / accumulation is even, or --set mixup=0 "
                "--set cutmix=0"
            )

    def build_model(self) -> nn.Module:
        """timm.create_model(name, num_classes, drop_path_rate, img_size, **model_args)."""
        cfg = self.cfg
        model = create_model(
            cfg["model"],
            img_size=int(cfg["img_size"]),
            num_classes=self.num_classes,
            drop_path_rate=float(cfg["drop_path"]),
            **cfg["model_args"],
        )
        if cfg.get("init_weights"):
            from pretrain.engine.models import load_matching_weights

            load_matching_weights(model, cfg["init_weights"])
        return model

    def train_transform(self, cfg: dict[str, Any]) -> Any:
        """timm's training transform: RandomResizedCrop, RandAugment, colour jitter, erasing;
        None with --augment device (the same steps then run in `augment`, on the device)."""
        if on_device(cfg):
            # bad settings fail before any loader; the same object augments after setup
            in_chans = int(cfg["model_args"].get("in_chans", 3))
            self.batch_augment_for(AugmentConfig.from_cfg(cfg, in_chans))
            return None
        from timm.data import create_transform

        from pretrain.engine.augment_pil import robust_pil_augment

        c = cfg
        transform = create_transform(
            int(c["img_size"]),
            is_training=True,
            scale=tuple(c["scale"]),
            hflip=float(c["hflip"]),
            # the same rule as timm's, stated once so every augmentation path shares it
            color_jitter=effective_color_jitter(c),
            auto_augment=c["auto_augment"] or None,
            interpolation=c["interpolation"],
            mean=tuple(c["mean"]),
            std=tuple(c["std"]),
            re_prob=float(c["reprob"]),
            re_mode=c["remode"],
        )
        # timm's posterize asks Pillow for 0 bits at RandAugment's top magnitude (Pillow 13 raises)
        return one_channel(robust_pil_augment(transform), cfg)

    def eval_transform(self, cfg: dict[str, Any]) -> Any:
        """Resize + centre crop (crop_pct from eval_crop_pct) and normalise."""
        from timm.data import create_transform

        c = cfg
        transform = create_transform(
            int(c["img_size"]),
            is_training=False,
            interpolation=c["interpolation"],
            mean=tuple(c["mean"]),
            std=tuple(c["std"]),
            crop_pct=float(c["eval_crop_pct"]),
        )
        return one_channel(transform, cfg)

    def augment(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 batches: crop/flip/RandAugment/erasing on the device (pretrain/engine/augment.py);
        then, on either path, Mixup/CutMix (timm's, on the device) when the recipe mixes."""
        images, labels = batch[0], batch[1]
        if images.dtype == torch.uint8:
            if self.batch_augment is None:
                self.batch_augment = self._batch_augment()
            images = self.batch_augment(images)
        if self.mixup_fn is not None:
            images, labels = self.mixup_fn(images, labels)
        return images, labels

    def train_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """Forward the augmented batch; soft-target or smoothed cross-entropy."""
        images, labels = batch[0], batch[1]
        logits = model(images)
        return self.criterion(logits, labels), {}

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Iterable, device: torch.device
    ) -> dict[str, float]:
        """Top-1 / top-5 accuracy (%) and mean cross-entropy over the held-out set, all ranks."""
        k = min(5, self.num_classes or 5)
        # device accumulators: no host read per batch, one in reduce_sums
        totals: dict[str, Any] = {
            key: torch.zeros((), dtype=torch.float64, device=device)
            for key in ("n", "top1", "topk", "loss")
        }
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            logits = model(images).float()
            totals["loss"] += nn.functional.cross_entropy(logits, labels, reduction="sum")
            top = logits.topk(k, dim=1).indices
            hit = top == labels[:, None]
            totals["top1"] += hit[:, 0].sum()
            totals["topk"] += hit.any(dim=1).sum()
            totals["n"] += len(labels)
        t = reduce_sums(totals, device)
        n = max(t["n"], 1.0)
        return {
            "val_top1": 100.0 * t["top1"] / n,
            f"val_top{k}": 100.0 * t["topk"] / n,
            "val_loss": t["loss"] / n,
            "val_samples": int(t["n"]),
        }

    def export(self, model: nn.Module, path: Path) -> Path:
        """safetensors loadable by timm.create_model(pretrained=True, pretrained_cfg_overlay=...)."""
        args = getattr(model, "fractaldb_model_args", dict(self.cfg["model_args"]))
        return export_safetensors(model, path, self.cfg["model"], args, self.num_classes)

    def describe(self) -> list[str]:
        """Log the loss, label smoothing and augmentation actually used."""
        c = self.cfg
        if self.mixup_active:
            loss = (
                f"loss: SoftTargetCrossEntropy with Mixup(mixup_alpha={c['mixup']}, "
                f"cutmix_alpha={c['cutmix']}, prob={c['mixup_prob']}, "
                f"switch_prob={c['mixup_switch_prob']}, label_smoothing={c['smoothing']})"
            )
        else:
            loss = f"loss: cross-entropy, label_smoothing={c['smoothing']} (no mixup/cutmix)"
        aug = (
            f"augmentation ({'device, batched' if on_device(c) else 'cpu, PIL in workers'}): "
            f"RandomResizedCrop {c['img_size']} scale={tuple(c['scale'])}, "
            f"hflip={c['hflip']}, color_jitter={describe_value(c, 'color_jitter')}, "
            f"auto_augment={c['auto_augment']}, random_erasing={c['reprob']}, "
            f"mean={tuple(c['mean'])}, std={tuple(c['std'])}"
        )
        return [
            f"model: {c['model']} {c['model_args']}, {self.num_classes} classes, "
            f"drop_path={c['drop_path']}",
            loss,
            aug,
        ]
