"""Fine-tuning image transforms, built with timm's `create_transform`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

# recipe key -> timm create_transform argument (recipes use DeiT's option names)
TRAIN_TRANSFORM_KEYS = {
    "scale": "scale",
    "ratio": "ratio",
    "hflip": "hflip",
    "color_jitter": "color_jitter",
    "auto_augment": "auto_augment",
    "interpolation": "interpolation",
    "reprob": "re_prob",
    "remode": "re_mode",
    "recount": "re_count",
}


def build_transforms(
    img_size: int,
    augment: Mapping[str, Any] | None = None,
    *,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    crop_pct: float | None = None,
) -> tuple[Callable, Callable]:
    """Return (train, eval) transforms: the recipe's augmentation, and resize + centre crop."""
    from timm.data import create_transform

    augment = dict(augment or {})
    train_kw = {
        arg: augment[k] for k, arg in TRAIN_TRANSFORM_KEYS.items() if augment.get(k) is not None
    }
    if augment.get("color_jitter", 0) is None:  # null means off (timm's default is 0.4)
        train_kw["color_jitter"] = 0.0
    for key in ("scale", "ratio"):
        if key in train_kw:
            train_kw[key] = tuple(train_kw[key])
    norm = {"mean": tuple(mean), "std": tuple(std)}
    train = create_transform(img_size, is_training=True, **train_kw, **norm)
    interp = augment.get("interpolation") or "bicubic"
    evaluate = create_transform(
        img_size, is_training=False, interpolation=interp, crop_pct=crop_pct, **norm
    )
    return train, evaluate
