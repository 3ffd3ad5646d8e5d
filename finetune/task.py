"""Fine-tuning as an engine Task: the supervised task's loss, augmentation and top-1/top-5
evaluation, with the model initialised from --init and RUN/results.json written every epoch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fractaldb.core.errors import FractalDBError
from pretrain.engine import distributed as D
from pretrain.engine.augment import PhotoToUint8
from pretrain.engine.config import on_device
from pretrain.supervised import SupervisedTask

from .datasets import DownstreamData
from .distill import Distiller, check_distillation
from .model import architecture, architecture_line, freeze_for_linear_probe
from .results import (
    HELD_OUT,
    RESULTS_NAME,
    new_results,
    record_epoch,
    upgrade_results,
    write_results,
)
from .weights import load_init


class FinetuneTask(SupervisedTask):
    """Supervised fine-tuning (or linear probing) of a pre-trained timm model."""

    name = "finetune"
    defaults: dict[str, Any] = {
        **SupervisedTask.defaults,
        # natural images are mirror-invariant (fractal pre-training turns flips off)
        "hflip": 0.5,
        "dataset": None,
        "init": None,
        "linear_probe": False,
        "val_split": None,
        "val_per_class": None,
        "train_per_class": None,
        # DeiT's distillation through attention (finetune/distill.py)
        "teacher": None,
        "distillation": "none",
        "distillation_alpha": 0.5,
        "distillation_tau": 1.0,
        # the teacher's identity and top-1, recorded when the run is configured
        "teacher_info": None,
        # train top-1 each epoch on this many training images under the evaluation transform
        "train_eval_samples": 512,
    }

    def __init__(
        self,
        recipe: str | None = None,
        data: DownstreamData | None = None,
        dataset_sha256: str | None = None,
    ) -> None:
        """`data` and its fingerprint `dataset_sha256` only feed results.json and the log."""
        self.data = data
        self.recipe = recipe
        self.dataset_sha256 = dataset_sha256
        self.results: dict[str, Any] | None = None
        self.init_summary: dict[str, Any] = {}
        self.trainable: list[str] = []
        self.distiller: Distiller | None = None
        self.train_probe: Any = None  # fixed training images, evaluation transform (run.py)

    def setup(self, cfg: dict[str, Any], num_classes: int | None) -> None:
        """The supervised task's setup, plus the frozen teacher when distilling."""
        super().setup(cfg, num_classes)
        check_distillation(cfg["distillation"], cfg["teacher"])
        if cfg["distillation"] != "none":
            with torch.device("meta"):  # shapes only: is there a distillation token?
                probe = super().build_model()
            if not hasattr(probe, "set_distilled_training"):
                raise FractalDBError(
                    f"--distillation {cfg['distillation']} needs a model with a distillation "
                    f"token, {cfg['model']} has none; fix: --model deit_tiny_distilled_patch16_224 "
                    "(or another timm *_distilled_* model)"
                )
            self.distiller = Distiller(cfg, num_classes)

    def train_transform(self, cfg: dict[str, Any]) -> Any:
        """PIL chain in the workers (--augment cpu), or, on the device path, only decode and
        size the photos in the workers (uint8) and augment whole batches on the device."""
        if on_device(cfg):
            super().train_transform(cfg)  # validates the settings for the batched path
            return PhotoToUint8(int(cfg["img_size"]))
        return super().train_transform(cfg)

    def build_model(self) -> nn.Module:
        """The timm model with a fresh head, initialised from --init (frozen but for the head
        when linear probing)."""
        import click

        model = super().build_model()
        echo = click.echo if D.is_main_process() else (lambda line: None)
        cfg = self.cfg
        self.init_summary = load_init(model, cfg["init"], model_name=cfg["model"], echo=echo)
        if self.init_summary.get("kind") == "scratch":
            # random weights: the architecture is all there is to compare against
            arch = architecture(model, cfg["model"], cfg["img_size"])
            self.init_summary["architecture"] = arch
            echo(f"{architecture_line(arch)} (random init)")
        if cfg["linear_probe"]:
            self.trainable = freeze_for_linear_probe(model)
        else:
            self.trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        if self.distiller is not None:
            # training returns (class, distillation) logits; eval mode averages the two heads
            model.set_distilled_training(True)
        return model

    def train_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """The supervised step, or DeiT's distillation loss on the same mixed batch."""
        if self.distiller is None:
            return super().train_step(model, batch)
        images, labels = batch[0], batch[1]  # mixed already (Task.augment)
        return self.distiller.loss(images, model(images), labels, self.criterion)

    def on_epoch_end(self, epoch: int, model: nn.Module, out_dir: Path) -> dict[str, float]:
        """Top-1 on the fixed training subset under the evaluation transform (every rank takes
        its strided share; the sums are reduced over ranks)."""
        if self.train_probe is None or len(self.train_probe) == 0:
            return {}
        import torch
        from torch.utils.data import DataLoader

        rank, world = D.get_rank(), D.get_world_size()
        share = list(range(rank, len(self.train_probe), world))
        from shards.badsamples import collate_readable

        batches = DataLoader(self.train_probe, batch_size=self.cfg["batch_size"], sampler=share,
                             collate_fn=collate_readable)  # fmt: skip
        loader = (b for b in batches if b is not None)  # None: nothing of it was readable
        device = next(model.parameters()).device
        model.eval()
        with torch.no_grad():
            metrics = self.evaluate(model, loader, device)
        model.train()
        return {"train_top1": metrics["val_top1"]}

    def _new_results(self) -> dict[str, Any]:
        from pretrain.engine.loop import plan_batch

        cfg, data = self.cfg, self.data
        return new_results(
            dataset=data.name if data else cfg["dataset"],
            dataset_splits=data.splits if data else {},
            dataset_sha256=self.dataset_sha256,
            num_classes=self.num_classes,
            classes=data.classes if data else None,
            model=cfg["model"],
            model_args=cfg["model_args"],
            img_size=cfg["img_size"],
            init=self.init_summary,
            recipe=self.recipe,
            recipe_source=cfg["source"],
            linear_probe=cfg["linear_probe"],
            trainable_tensors=len(self.trainable),
            epochs=cfg["epochs"],
            batch_size=cfg["batch_size"],
            lr=plan_batch(cfg, D.get_world_size()).lr,
            normalize={"mean": cfg["mean"], "std": cfg["std"]},
            distillation=cfg["distillation"],
            teacher=cfg["teacher_info"],
            config="config.yaml",
        )

    def on_epoch_logged(self, epoch: int, metrics: dict[str, Any], out_dir: Path) -> None:
        """Record this epoch's test accuracy in RUN/results.json (rank 0)."""
        if not D.is_main_process() or "val_top1" not in metrics:
            return
        if self.results is None:
            self.results = self._new_results()
            self._replay(Path(out_dir) / RESULTS_NAME, epoch)
        k = min(5, self.num_classes or 5)
        row = {
            "top1": metrics["val_top1"],
            # fewer than 5 classes: top-5 is top-k with k = the class count (trivially 100 %)
            "top5": metrics[f"val_top{k}"],
            "loss": metrics["val_loss"],
            "train_loss": metrics["loss"],
        }
        if "train_top1" in metrics:
            row["train_top1"] = metrics["train_top1"]
        if "val_ema_top1" in metrics:
            row["ema_top1"] = metrics["val_ema_top1"]
        for key in ("samples", "unreadable"):  # what top1 was measured on, and not
            if f"val_{key}" in metrics:  # the engine's val_ is this file's test split
                row[f"{HELD_OUT}_{key}"] = metrics[f"val_{key}"]
        record_epoch(self.results, epoch + 1, row)
        write_results(out_dir, self.results)

    def _replay(self, path: Path, epoch: int) -> None:
        """On resume, keep the earlier epochs of an existing results.json (those before `epoch`)."""
        if not path.is_file():
            return
        try:
            old = upgrade_results(json.loads(path.read_text()))
        except json.JSONDecodeError:
            return  # rewritten from this epoch on
        for row in old.get("history", []):
            if row.get("epoch", 0) <= epoch:
                rest = {k: v for k, v in row.items() if k != "epoch"}
                record_epoch(self.results, int(row["epoch"]), rest)

    def describe(self) -> list[str]:
        """The supervised task's lines plus init, dataset and linear-probe settings."""
        c = self.cfg
        lines = super().describe()
        mode = (
            f"linear probe ({len(self.trainable)} trainable tensors: the head)"
            if c["linear_probe"]
            else "full fine-tuning"
        )
        lines.append(f"init: {c['init']}; {mode}; layer_decay={c['layer_decay']}")
        if self.distiller is not None:
            t = self.distiller.info
            top1 = (
                f"{t['top1']:.2f}% on {t['top1_dataset']}" if t["top1"] is not None else "unknown"
            )
            lines.append(
                f"distillation: {c['distillation']} (alpha={c['distillation_alpha']}, "
                f"tau={c['distillation_tau']}) from teacher {t['model']} [{t['source']}], "
                f"its top-1 {top1}; eval averages the class and distillation heads"
            )
        if self.data is not None:
            d = self.data
            lines.append(
                f"data: {d.name} ({len(d.train)} train [{d.splits.get('train')}] / {len(d.test)} "
                f"test [{d.splits.get('test')}], {d.num_classes} classes)"
            )
        return lines
