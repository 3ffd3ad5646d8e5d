"""Fine-tuning image transforms, built with timm's `create_transform`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

# keys of a recipe's `augment:` section passed to timm's create_transform for training
TRAIN_TRANSFORM_KEYS = (
    "scale",
    "ratio",
    "hflip",
    "vflip",
    "color_jitter",
    "auto_augment",
    "interpolation",
    "re_prob",
    "re_mode",
    "re_count",
)


def build_transforms(
    img_size: int,
    augment: Mapping[str, Any] | None = None,
    *,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    crop_pct: float | None = None,
) -> tuple[Callable, Callable]:
    """Return (train, eval) transforms: recipe augmentation for training, resize + centre crop for eval."""
    from timm.data import create_transform

    augment = dict(augment or {})
    train_kw = {k: augment[k] for k in TRAIN_TRANSFORM_KEYS if augment.get(k) is not None}
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
