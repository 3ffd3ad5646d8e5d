"""Optimizer for fine-tuning via timm's factory (layer-wise lr decay included)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def build_optimizer(model: Any, cfg: Mapping[str, Any], lr: float) -> Any:
    """Create the recipe's optimizer with timm's `create_optimizer_v2` over trainable params."""
    from timm.optim import create_optimizer_v2

    kwargs: dict[str, Any] = {}
    if cfg.get("opt_betas") is not None:
        kwargs["betas"] = tuple(cfg["opt_betas"])
    return create_optimizer_v2(
        model,
        opt=cfg.get("opt", "adamw"),
        lr=lr,
        weight_decay=float(cfg.get("weight_decay", 0.0)),
        momentum=float(cfg.get("momentum", 0.9)),
        layer_decay=cfg.get("layer_decay"),
        **kwargs,
    )
