"""Instance schemes and per-image preparation: everything a kernel needs for one image.

Instance i is flip i % 4 (none, up-down, left-right, both) of render j = i // 4 when flips are
on (j = i otherwise), so the four flips of one render are exact mirror images, as in FractalDB.

Work that depends only on the category (the map-choice table, every parameter variant) is
done once by `prepare_category`; `plan_instance` then derives one image's inputs (affine
coefficients, point seed, patch mask, colour, flip) with a few integer hashes. Both are pure
functions of their arguments, shared by the CPU renderer and any other backend, so every
backend starts from the same per-image inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fractaldb.categories import Category
from fractaldb.chaos import choice_table
from fractaldb.core.seeding import (
    TAG_COLOR,
    TAG_JITTER,
    TAG_MASK,
    TAG_POINTS,
    hash_seed,
    substream,
    uniform_array,
    unit_float,
)
from fractaldb.settings import RenderSettings

FLIP_NAMES = ("none", "up-down", "left-right", "both")
GRAY_VALUE = 127  # FractalDB's grey level


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
        u = uniform_array(hash_seed(settings.seed, TAG_JITTER, category_index, variant), maps.size)
        maps *= 1.0 - settings.jitter + 2.0 * settings.jitter * u.reshape(maps.shape)
    return maps


@dataclass(frozen=True)
class PreparedCategory:
    """The per-category part of every image's inputs, computed once per category."""

    category: Category
    index: int
    table: np.ndarray  # (256,) uint8 map-choice table
    variants: np.ndarray | None  # (V, N, 6) float64: every fractaldb-scheme variant, else None


def prepare_category(
    category: Category, category_index: int, settings: RenderSettings
) -> PreparedCategory:
    """Hoist the per-category work (choice table, parameter variants) out of the image loop."""
    variants = None
    if settings.scheme == "fractaldb":
        # Row v of `scales` is 1 except factor (v - 1) % F at coefficient (v - 1) // F, so
        # variants[v] equals variant_maps(..., v) exactly (multiplying by 1.0 is exact).
        nf = len(settings.factors)
        scales = np.ones((settings.num_variants, 6))
        v = np.arange(1, settings.num_variants)
        scales[v, (v - 1) // nf] = np.asarray(settings.factors)[(v - 1) % nf]
        variants = category.maps[None, :, :] * scales[:, None, :]
    return PreparedCategory(category, category_index, choice_table(category.probs), variants)


@dataclass(frozen=True)
class InstancePlan:
    """Everything a renderer needs for one image, as plain numbers and small arrays.

    `color` depends on the colour mode: gray: (grey level,); color: (R, G, B) of the
    instance; hue: (hue shift in [0, 180), saturation, value) of the density colouring.
    """

    category: int
    instance: int
    maps: np.ndarray  # (N, 6) float64, C-contiguous affine coefficients a, b, c, d, e, f
    table: np.ndarray  # (256,) uint8 map-choice table
    points_seed: int  # uint64 seed of the chaos game
    mask: np.ndarray  # (3, 3) uint8 patch stamp (all ones in point mode: unused there)
    color: tuple[float, ...]
    flip: int  # bit 0: up-down, bit 1: left-right


POINT_MASK = np.ones((3, 3), dtype=np.uint8)


def mask_from_bits(bits: int) -> np.ndarray:
    """Return the non-empty 3x3 binary mask numbered 1..511 by `1 + bits % 511`."""
    code = 1 + bits % 511
    return ((code >> np.arange(9)) & 1).astype(np.uint8).reshape(3, 3)


def instance_color(settings: RenderSettings, bits: int) -> tuple[float, ...]:
    """Return the colour parameters of an instance (see `InstancePlan.color`) from 64 bits."""
    if settings.color == "gray":
        return (GRAY_VALUE,)
    hue, sat, val = bits % 180, 128 + (bits >> 8) % 128, (bits >> 16) % 256
    if settings.color == "color":
        # One colour per instance, bright enough to be seen (AAAI 2022 colour fractals).
        hsv = np.array([[[hue, sat, 128 + val % 128]]], dtype=np.uint8)
        return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])
    # hue: a shift in [0, 180), saturation in [128, 256), value in [160, 256).
    return (180.0 * unit_float(substream(bits, 0)), sat, 160 + val % 96)


def plan_instance(
    prepared: PreparedCategory, settings: RenderSettings, instance: int
) -> InstancePlan:
    """Return the inputs of image (category, instance): a pure function of its arguments."""
    meta = instance_meta(settings, instance)
    variant, render = meta["variant"], meta["render"]
    if prepared.variants is not None:
        maps = prepared.variants[variant]
    else:
        maps = variant_maps(prepared.category, settings, prepared.index, variant)
    base = hash_seed(settings.seed, prepared.index, variant, render)
    return InstancePlan(
        category=prepared.index,
        instance=instance,
        maps=maps,
        table=prepared.table,
        points_seed=substream(base, TAG_POINTS),
        mask=mask_from_bits(substream(base, TAG_MASK)) if settings.mode == "patch" else POINT_MASK,
        color=instance_color(settings, substream(base, TAG_COLOR)),
        flip=meta["flip"],
    )
