"""Make timm's PIL augmentation policies behave the same on every Pillow version.

timm's RandAugment/AutoAugment/AugMix maps the strongest 'PosterizeIncreasing' magnitude (and
some AutoAugment sub-policies) to "keep 0 bits". Pillow < 13 turned that into a black image,
as the TensorFlow reference (`shift = 8 - bits`) does; Pillow 13 raises
`ValueError: bits must be between or equal to 1 and 8`, which kills a fine-tuning epoch about
once in a thousand images. `robust_pil_augment` swaps the posterize op of the timm policies
inside a transform for one that keeps the old, published behaviour on any Pillow.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from PIL import Image, ImageOps


def posterize_any_bits(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """Keep the `bits_to_keep` most significant bits per channel; 0 bits gives a black image
    (Pillow < 13 and the TensorFlow reference), 8 or more leaves the image as it is."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        # what ImageOps.posterize(img, 0) returned before Pillow 13: every level masked away
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, int(bits_to_keep))


def _policy_ops(transform: Any) -> Iterator[Any]:
    """The timm AugmentOp objects held by a transform (Compose, RandAugment, AutoAugment, AugMix)."""
    for inner in getattr(transform, "transforms", None) or ():
        yield from _policy_ops(inner)
    yield from getattr(transform, "ops", None) or ()
    for sub_policy in getattr(transform, "policy", None) or ():
        yield from sub_policy


def robust_pil_augment(transform: Any) -> Any:
    """Replace timm's posterize in every augmentation policy of `transform`; returns it."""
    from timm.data import auto_augment

    for op in _policy_ops(transform):
        if getattr(op, "aug_fn", None) is auto_augment.posterize:
            op.aug_fn = posterize_any_bits
    return transform
