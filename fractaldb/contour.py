"""The contour renderer's Python API (VisualAtom, RCDB): (category set, category, instance,
settings) -> image, as `fractaldb.render` is for IFS sets.

`Renderer(categories, settings)` returns a `ContourRenderer` for a contour set (this module
does not import `fractaldb.render`: no import circle), so the shard writer, verifier, preview
and on-the-fly dataset use it unchanged. Per category, the vertex
angles' cosines, sines and sinusoid (`prepare_contour`, once); per instance, the centre,
start radius, aspects and the seeds of the noise and ink streams (`plan_contour`, a few integer
hashes of (seed, category, instance)), so an image is the same bytes in any process, on any
node, and on the GPU. Geometry is in pixels at 512 px (the published size) and scaled to the
image size. Gray: one level per contour; colour: one RGB per contour; black background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fractaldb.categories import CategorySet
from fractaldb.contour_kernels import draw_contours
from fractaldb.contour_sets import ContourCategory
from fractaldb.core.errors import FractalDBError
from fractaldb.core.seeding import hash_seed, substream, uniform_array
from fractaldb.settings import RenderSettings

REFERENCE_SIZE = 512  # the published renders' size: the unit of radius, noise and offset
# stream tags of one contour instance (its base seed has three keys, an IFS image's four)
TAG_SHAPE, TAG_NOISE, TAG_INK = 16, 17, 18


@dataclass(frozen=True)
class PreparedContour:
    """The per-category tables: cosine, sine and radial wave of every vertex angle."""

    category: ContourCategory
    index: int
    cos_t: np.ndarray  # (q,) float64
    sin_t: np.ndarray
    wave: np.ndarray  # 0.5 sin(n1 t) + 0.5 sin(n2 t) + offset


def prepare_contour(category: ContourCategory, index: int) -> PreparedContour:
    """Hoist the per-category trigonometry out of the image loop."""
    q = category.vertices
    step = 2.0 * math.pi / q
    # math (the C library), not numpy: numpy may dispatch sin/cos to SIMD code that differs
    # in the last bit between CPUs, and the tables must be the same on every machine
    theta = [step * v for v in range(q)]
    wave = [
        0.5 * math.sin(t * category.n1) + 0.5 * math.sin(t * category.n2) + category.offset
        for t in theta
    ]
    return PreparedContour(
        category,
        index,
        np.array([math.cos(t) for t in theta]),
        np.array([math.sin(t) for t in theta]),
        np.array(wave),
    )


@dataclass(frozen=True)
class ContourPlan:
    """One image's inputs: the category's tables, where it starts, its noise and ink seeds."""

    prepared: PreparedContour
    instance: int
    start_x: float  # radius times aspect, at 512 px
    start_y: float
    cx: float  # centre in pixels of the target image
    cy: float
    noise_seed: int
    ink_seed: int


def _pick(lo: float, hi: float, u: float, integer: bool = False) -> float:
    if integer:
        return float(min(int(lo + u * (hi - lo + 1)), int(hi)))
    return lo + u * (hi - lo)


def plan_contour(prepared: PreparedContour, settings: RenderSettings, instance: int) -> ContourPlan:
    """Return the inputs of image (category, instance): a pure function of its arguments."""
    if instance < 0:
        raise ValueError(f"instance must be non-negative, got {instance}")
    cat, size = prepared.category, settings.image_size
    base = hash_seed(settings.seed, prepared.index, instance)
    u = uniform_array(substream(base, TAG_SHAPE), 5)
    radius = _pick(*cat.radius, u[2], integer=True)
    return ContourPlan(
        prepared,
        instance,
        radius * _pick(*cat.aspect_x, u[3]),
        radius * _pick(*cat.aspect_y, u[4]),
        _pick(*cat.centre, u[0]) * size,
        _pick(*cat.centre, u[1]) * size,
        substream(base, TAG_NOISE),
        substream(base, TAG_INK),
    )


def check_contour_settings(settings: RenderSettings) -> None:
    """Refuse settings the contour renderer cannot draw, in one line."""
    if settings.color == "hue":
        raise FractalDBError(
            "hue colour maps IFS hit densities; contour images have one colour per contour; "
            "fix: --color gray or --color color"
        )


def render_contour_plan(plan: ContourPlan, settings: RenderSettings) -> np.ndarray:
    """Render one image from its plan on the CPU; uint8 HxW (gray) or HxWx3 RGB."""
    prep, size = plan.prepared, settings.image_size
    out = np.zeros((size, size, settings.channels), dtype=np.uint8)
    draw_contours(
        prep.cos_t,
        prep.sin_t,
        prep.wave,
        prep.category.eta,
        prep.category.noise_gain,
        prep.category.orbits,
        plan.start_x,
        plan.start_y,
        plan.cx,
        plan.cy,
        size / REFERENCE_SIZE,
        np.uint64(plan.noise_seed),
        np.uint64(plan.ink_seed),
        out,
    )
    return out[:, :, 0] if settings.channels == 1 else out


class ContourRenderer:
    """Renders images of one contour category set, preparing each category once (the
    interface of `fractaldb.render.Renderer`, which returns one for a contour set)."""

    def __init__(self, categories: CategorySet, settings: RenderSettings) -> None:
        if categories.family != "contour":
            raise FractalDBError(
                f"the contour renderer draws visualatom or rcdb categories; this set's sampler "
                f"is {categories.sampler!r} (IFS); fix: render it with fractaldb.render"
            )
        check_contour_settings(settings)
        self.categories, self.settings = categories, settings
        self._prepared: list[PreparedContour | None] = [None] * len(categories)

    def prepared(self, category: int) -> PreparedContour:
        """Return the prepared category (computed on first use)."""
        if not 0 <= category < len(self.categories):
            raise IndexError(f"category {category} out of range [0, {len(self.categories)})")
        prep = self._prepared[category]
        if prep is None:
            prep = prepare_contour(self.categories[category], category)
            self._prepared[category] = prep
        return prep

    def plan(self, category: int, instance: int) -> ContourPlan:
        """Return the inputs of image (category, instance)."""
        return plan_contour(self.prepared(category), self.settings, instance)

    def render(self, category: int, instance: int) -> np.ndarray:
        """Render image (category, instance)."""
        return render_contour_plan(self.plan(category, instance), self.settings)

    render_one = render
