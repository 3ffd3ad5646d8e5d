"""Freeze a timm classifier for linear probing, and say what architecture was built (models
come from pretrain.engine.models.create_model)."""

from __future__ import annotations

from typing import Any

from fractaldb.core.errors import FractalDBError


def freeze_for_linear_probe(model: Any) -> list[str]:
    """Freeze everything except the classifier head; return the names left trainable."""
    heads = model.get_classifier()
    # distilled DeiTs have two heads (class, distillation)
    heads = heads if isinstance(heads, (tuple, list)) else (heads,)
    head_ids = {id(p) for head in heads for p in head.parameters()}
    if not head_ids:
        raise FractalDBError("model has no classifier head to probe; fix: use a timm classifier")
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(id(param) in head_ids)
        if param.requires_grad:
            trainable.append(name)
    return trainable


def architecture(model: Any, name: str, img_size: int) -> dict[str, Any]:
    """What was built: model name, depth (blocks), width (embedding size), image size, parameters."""
    blocks = getattr(model, "blocks", None)
    width = getattr(model, "embed_dim", None) or getattr(model, "num_features", None)
    return {
        "model": name,
        "depth": len(blocks) if blocks is not None else None,
        "width": int(width) if width else None,
        "img_size": int(img_size),
        "params": sum(p.numel() for p in model.parameters()),
    }


def architecture_line(arch: dict[str, Any]) -> str:
    """One log line for `architecture`, e.g. `built vit_tiny_patch16_224: depth 12, ...`."""
    shape = [f"{key} {arch[key]}" for key in ("depth", "width") if arch.get(key) is not None]
    shape += [f"image size {arch['img_size']} px", f"{arch['params'] / 1e6:.2f} M parameters"]
    return f"built {arch['model']}: " + ", ".join(shape)
