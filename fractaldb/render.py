"""The renderer's Python API: (category set, category, instance, settings) -> image."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fractaldb.categories import Category, CategorySet
from fractaldb.instances import instance_meta, variant_maps
from fractaldb.kernels import chaos_game, stamp
from fractaldb.seeding import TAG_COLOR, TAG_MASK, TAG_POINTS, derive_rng, derive_seed
from fractaldb.settings import RenderSettings

GRAY_VALUE = 127  # FractalDB's grey level
TABLE_SIZE = 256


def choice_table(probs: np.ndarray) -> np.ndarray:
    """Quantise map probabilities into a 256-entry lookup table (every map gets >= 1 entry)."""
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum()
    counts = np.maximum(np.floor(probs * TABLE_SIZE).astype(np.int64), (probs > 0).astype(np.int64))
    # Largest remainder first; ties broken by map index, so the table is deterministic.
    order = np.argsort(-(probs * TABLE_SIZE - np.floor(probs * TABLE_SIZE)), kind="stable")
    i = 0
    while counts.sum() < TABLE_SIZE:
        counts[order[i % len(order)]] += 1
        i += 1
    while counts.sum() > TABLE_SIZE:
        big = int(np.argmax(counts))
        counts[big] -= 1
    return np.repeat(np.arange(len(probs), dtype=np.uint8), counts)


def warmup_steps(points: int) -> int:
    """Steps per chain (8 chains) of the bounding-box warm-up: about 1/16 of the points."""
    return max(256, points // 128)


def draw_points(
    maps: np.ndarray,
    probs: np.ndarray,
    size: int,
    points: int,
    seed: int,
    pad: float = 0.0,
    count: bool = False,
    warmup: int | None = None,
) -> tuple[np.ndarray, int]:
    """Run the chaos game; return (size x size hit image, number of escaped chain steps).

    The image is binary uint8 (0/1) or, with `count`, uint32 hit counts. `warmup` is the
    number of steps per chain (8 chains) that set the bounding box (default: `warmup_steps`).
    """
    out = np.zeros((size, size), dtype=np.uint32 if count else np.uint8)
    coef = np.ascontiguousarray(maps, dtype=np.float64)
    escapes = chaos_game(
        coef,
        choice_table(probs),
        points,
        np.uint64(seed),
        out,
        pad,
        warmup_steps(points) if warmup is None else warmup,
        count,
    )
    return out, int(escapes)


def patch_mask(rng: np.random.Generator) -> np.ndarray:
    """Draw a random non-empty 3x3 binary mask."""
    bits = int(rng.integers(1, 512))
    return np.array([(bits >> i) & 1 for i in range(9)], dtype=np.uint8).reshape(3, 3)


def instance_color(rng: np.random.Generator) -> np.ndarray:
    """Draw the RGB colour (uint8, 3) of a "color"-mode instance from its colour stream."""
    # One random colour per instance, bright enough to be seen (AAAI 2022 colour fractals).
    hsv = np.array(
        [[[rng.integers(0, 180), rng.integers(128, 256), rng.integers(128, 256)]]],
        dtype=np.uint8,
    )
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]


def _colorize(hits: np.ndarray, settings: RenderSettings, rng: np.random.Generator) -> np.ndarray:
    """Turn a hit image into the final uint8 image (gray HxW or RGB HxWx3)."""
    on = hits > 0
    if settings.color == "gray":
        return on.astype(np.uint8) * np.uint8(GRAY_VALUE)
    if settings.color == "color":
        rgb = instance_color(rng)
        return on[..., None].astype(np.uint8) * rgb[None, None, :]
    # "hue": hit density to hue over a random shift, random saturation and value
    # (Anderson & Farrell 2022).
    density = np.log1p(hits.astype(np.float32))
    density /= max(float(density.max()), 1e-6)
    shift = rng.uniform(0, 180)
    hsv = np.empty(hits.shape + (3,), dtype=np.uint8)
    hsv[..., 0] = ((shift + density * 179.0) % 180).astype(np.uint8)
    hsv[..., 1] = np.uint8(rng.integers(128, 256))
    hsv[..., 2] = np.where(on, np.uint8(rng.integers(160, 256)), 0).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def render_system(
    maps: np.ndarray,
    probs: np.ndarray,
    settings: RenderSettings,
    points_seed: int,
    mask_rng: np.random.Generator,
    color_rng: np.random.Generator,
) -> np.ndarray:
    """Render one IFS under the settings (no flip); the randomness comes from the arguments."""
    count = settings.color == "hue"
    size = settings.image_size
    hits, _ = draw_points(
        maps, probs, size, settings.points, points_seed, settings.pad * size, count=count
    )
    if settings.mode == "patch":
        stamped = np.zeros_like(hits)
        stamp(hits, patch_mask(mask_rng), stamped)
        hits = stamped
    return _colorize(hits, settings, color_rng)


@dataclass(frozen=True)
class InstanceInputs:
    """Everything one (category, instance) render draws on: the CPU and GPU renderers share it."""

    maps: np.ndarray  # (N, 6) affine coefficients of the instance's parameter variant
    probs: np.ndarray  # (N,) map probabilities
    points_seed: int  # seed of the chaos game's point stream
    mask_rng: np.random.Generator  # draws the patch mask
    color_rng: np.random.Generator  # draws the colour
    flip: int  # bit 0: up-down, bit 1: left-right


def instance_inputs(
    category: Category, category_index: int, instance: int, settings: RenderSettings
) -> InstanceInputs:
    """Derive the parameters and random streams of one instance (no rendering)."""
    meta = instance_meta(settings, instance)
    maps = variant_maps(category, settings, category_index, meta["variant"])
    key = (settings.seed, category_index, meta["variant"], meta["render"])
    return InstanceInputs(
        maps=maps,
        probs=category.probs,
        points_seed=derive_seed(key[0], TAG_POINTS, *key[1:]),
        mask_rng=derive_rng(key[0], TAG_MASK, *key[1:]),
        color_rng=derive_rng(key[0], TAG_COLOR, *key[1:]),
        flip=meta["flip"],
    )


def render_category_instance(
    category: Category, category_index: int, instance: int, settings: RenderSettings
) -> np.ndarray:
    """Render instance `instance` of one category; see `render_instance`."""
    inputs = instance_inputs(category, category_index, instance, settings)
    image = render_system(
        inputs.maps,
        inputs.probs,
        settings,
        points_seed=inputs.points_seed,
        mask_rng=inputs.mask_rng,
        color_rng=inputs.color_rng,
    )
    if inputs.flip & 1:
        image = image[::-1]
    if inputs.flip & 2:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def render_instance(
    categories: CategorySet, category: int, instance: int, settings: RenderSettings
) -> np.ndarray:
    """Render one image: a pure function of (category set, category, instance, settings).

    Returns uint8 HxW (gray) or HxWx3 RGB. The same arguments give the same bytes on any
    machine, in any process or thread.
    """
    if not 0 <= category < len(categories):
        raise IndexError(f"category {category} out of range [0, {len(categories)})")
    return render_category_instance(categories[category], category, instance, settings)
