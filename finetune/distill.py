"""DeiT's distillation through attention (Touvron et al. 2021, section 5; facebookresearch/deit
losses.py): a teacher classifier supervises the distillation head of a distilled DeiT.

  hard: (1 - alpha) CE(class head, labels) + alpha CE(distillation head, teacher argmax);
        DeiT's alpha = 0.5 makes it the plain average of the two cross-entropies.
  soft: (1 - alpha) CE(class head, labels)
        + alpha tau^2 KL(softmax(teacher / tau) || softmax(dist head / tau)) / (B x classes),
        normalised by the number of logits as DeiT's losses.py does.

The teacher (a fractaldb run or an exported weights file) runs in eval mode without gradients
on the same augmented (mixed) batch as the student. At evaluation timm's distilled models
average the class and distillation heads, as DeiT does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fractaldb.core.errors import FractalDBError

from .options import DISTILLATIONS
from .weights import _sha256

KINDS = DISTILLATIONS


def distillation_loss(
    kind: str,
    base_loss: torch.Tensor,
    dist_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    alpha: float,
    tau: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeiT's combined loss from the class-head loss `base_loss`; returns (loss, teacher term)."""
    if kind == "hard":
        term = F.cross_entropy(dist_logits, teacher_logits.argmax(dim=1))
    elif kind == "soft":
        t = float(tau)
        term = (
            F.kl_div(
                F.log_softmax(dist_logits / t, dim=1),
                F.log_softmax(teacher_logits / t, dim=1),
                reduction="sum",
                log_target=True,
            )
            * (t * t)
            / dist_logits.numel()
        )
    else:
        raise FractalDBError(f"unknown distillation {kind!r}; fix: one of {', '.join(KINDS)}")
    return (1.0 - alpha) * base_loss + alpha * term, term


def _teacher_files(source: str) -> tuple[Path, Path | None]:
    """(weights file, its run folder or None) of a --teacher RUN|FILE."""
    path = Path(source)
    if path.is_dir():
        return path / "model.safetensors", path
    if path.is_file():
        parent = path.parent
        return path, parent if (parent / "config.yaml").is_file() else None
    raise FractalDBError(
        f"--teacher {source} does not exist; fix: a fine-tuning run folder or its model.safetensors"
    )


def describe_teacher(source: str) -> dict[str, Any]:
    """The teacher's identity for the run's config: weights, hash, architecture, classes,
    input normalisation and the top-1 its own run reported (RUN/results.json)."""
    import yaml

    weights, run = _teacher_files(source)
    meta_path = weights.with_suffix(".json")
    if not weights.is_file() or not meta_path.is_file():
        raise FractalDBError(
            f"--teacher {source}: {weights.name} or {meta_path.name} is missing; fix: point at a "
            "finished fractaldb run (its model.safetensors is written with a model.json)"
        )
    meta = json.loads(meta_path.read_text())
    info: dict[str, Any] = {
        "source": str(source),
        "weights": str(weights),
        "sha256": "sha256:" + _sha256(weights),
        "model": meta["architecture"],
        "model_args": meta.get("model_args") or {},
        "num_classes": meta.get("num_classes"),
        "normalize": None,
        "top1": None,
        "top1_dataset": None,
    }
    if run is not None and (run / "config.yaml").is_file():
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
        if cfg.get("mean") is not None and cfg.get("std") is not None:
            info["normalize"] = {"mean": list(cfg["mean"]), "std": list(cfg["std"])}
    results = run / "results.json" if run is not None else None
    if results is not None and results.is_file():
        res = json.loads(results.read_text())
        info["top1"] = (res.get("last") or {}).get("top1")
        info["top1_dataset"] = res.get("dataset")
    return info


def check_distillation(kind: str, teacher: str | None) -> None:
    """--distillation and --teacher must come together (one-line errors otherwise)."""
    if kind not in KINDS:
        raise FractalDBError(f"--distillation {kind!r}: fix: one of {', '.join(KINDS)}")
    if kind != "none" and not teacher:
        raise FractalDBError(
            f"--distillation {kind} needs a teacher; fix: --teacher RUN (e.g. a run of "
            "`fractaldb finetune --model resnet18 ...` on the same data)"
        )
    if kind == "none" and teacher:
        raise FractalDBError(
            "--teacher is given but --distillation is none; fix: --distillation hard (DeiT's "
            "best) or soft, or drop --teacher"
        )


class Distiller:
    """Holds the frozen teacher and turns (student outputs, labels) into DeiT's loss."""

    def __init__(self, cfg: dict[str, Any], num_classes: int | None) -> None:
        """Load the teacher recorded in cfg['teacher_info'] and check its class count."""
        from pretrain.engine.models import load_exported

        info = cfg["teacher_info"] or describe_teacher(cfg["teacher"])
        if info["num_classes"] != num_classes:
            raise FractalDBError(
                f"--teacher {info['source']} predicts {info['num_classes']} classes, the data has "
                f"{num_classes}; fix: a teacher fine-tuned on the same dataset"
            )
        self.kind = cfg["distillation"]
        self.alpha = float(cfg["distillation_alpha"])
        self.tau = float(cfg["distillation_tau"])
        self.info = info
        self.teacher: nn.Module = load_exported(info["weights"]).eval().requires_grad_(False)
        self.renorm = _renormalisation(cfg, info.get("normalize"))

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits on the student's (augmented) batch, without gradients."""
        if next(self.teacher.parameters()).device != images.device:
            self.teacher.to(images.device)
        self.teacher.eval()
        with torch.no_grad():
            if self.renorm is not None:
                scale, shift = (t.to(images.device, images.dtype) for t in self.renorm)
                images = images * scale + shift
            return self.teacher(images).float()

    def loss(
        self, images: torch.Tensor, outputs: Any, labels: torch.Tensor, criterion: nn.Module
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """DeiT's loss for the (class, distillation) outputs of a distilled model in training."""
        if not isinstance(outputs, (tuple, list)):
            raise FractalDBError(
                "the model returned one output in distilled training; fix: use a timm "
                "*_distilled_* model (e.g. deit_tiny_distilled_patch16_224)"
            )
        cls_logits, dist_logits = outputs
        base = criterion(cls_logits, labels)
        loss, term = distillation_loss(
            self.kind,
            base,
            dist_logits.float(),
            self.teacher_logits(images),
            self.alpha,
            self.tau,
        )
        return loss, {"loss_cls": base.detach(), "loss_distill": term.detach()}


def _renormalisation(
    cfg: dict[str, Any], teacher_norm: dict[str, Any] | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) mapping the student's normalised pixels to the teacher's normalisation,
    or None when both normalise alike (the usual case: same recipe)."""
    if teacher_norm is None:
        return None
    ms, ss = (torch.tensor(cfg[k], dtype=torch.float32) for k in ("mean", "std"))
    mt, st = (torch.tensor(teacher_norm[k], dtype=torch.float32) for k in ("mean", "std"))
    if torch.equal(ms, mt) and torch.equal(ss, st):
        return None
    # x_t = (x_s * s_s + m_s - m_t) / s_t
    scale, shift = ss / st, (ms - mt) / st
    return scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)
