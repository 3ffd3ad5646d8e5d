"""Instance schemes: how instance i of a category differs from the others.

Instance i is flip i % 4 (none, up-down, left-right, both) of render j = i // 4 when flips are
on (j = i otherwise), so the four flips of one render are exact mirror images, as in FractalDB.
"""

from __future__ import annotations

import numpy as np

from fractaldb.categories import Category
from fractaldb.seeding import TAG_JITTER, derive_rng
from fractaldb.settings import RenderSettings

FLIP_NAMES = ("none", "up-down", "left-right", "both")


def instance_meta(settings: RenderSettings, instance: int) -> dict[str, int]:
    """Return the variant, render and flip indices of an instance under the settings' scheme."""
    if instance < 0:
        raise ValueError(f"instance must be non-negative, got {instance}")
    flip, j = (instance % 4, instance // 4) if settings.flips else (0, instance)
    if settings.scheme == "fractaldb":
        variant, render = j % settings.num_variants, j // settings.num_variants
    elif settings.scheme == "jitter":
        variant, render = j, 0
    else:
        variant, render = 0, j
    return {"variant": variant, "render": render, "flip": flip}


def variant_maps(
    category: Category, settings: RenderSettings, category_index: int, variant: int
) -> np.ndarray:
    """Return the (N, 6) affine coefficients of one parameter variant of a category."""
    maps = category.maps.copy()
    if settings.scheme == "fractaldb" and variant > 0:
        # FractalDB: variant v scales coefficient (v - 1) // F of every map by factor (v - 1) % F.
        nf = len(settings.factors)
        maps[:, (variant - 1) // nf] *= settings.factors[(variant - 1) % nf]
    elif settings.scheme == "jitter" and settings.jitter > 0:
        rng = derive_rng(settings.seed, TAG_JITTER, category_index, variant)
        maps *= rng.uniform(1.0 - settings.jitter, 1.0 + settings.jitter, size=maps.shape)
    return maps
