"""Freeze a timm classifier for linear probing (models come from pretrain.engine.models.create_model)."""

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
