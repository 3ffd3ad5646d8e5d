"""Optimizer for fine-tuning via timm's factory (layer-wise lr decay included)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def build_optimizer(model: Any, opt_cfg: Mapping[str, Any], lr: float) -> Any:
    """Create the recipe's optimizer with timm's `create_optimizer_v2` over trainable params."""
    from timm.optim import create_optimizer_v2

    kwargs: dict[str, Any] = {}
    if opt_cfg.get("betas") is not None:
        kwargs["betas"] = tuple(opt_cfg["betas"])
    return create_optimizer_v2(
        model,
        opt=opt_cfg.get("name", "adamw"),
        lr=lr,
        weight_decay=float(opt_cfg.get("weight_decay", 0.0)),
        momentum=float(opt_cfg.get("momentum", 0.9)),
        layer_decay=opt_cfg.get("layer_decay"),
        **kwargs,
    )
