"""The renderer's Python API: (category set, category, instance, settings) -> image.

Per-image inputs come from `fractaldb.instances.plan_instance` (pure, shared with other
backends); `render_plan` turns one plan into pixels with the Numba kernels. `Renderer`
prepares each category once, for loops over many images of the same set.
"""

from __future__ import annotations

import cv2
import numpy as np

from fractaldb.categories import CategorySet
from fractaldb.chaos import choice_table, draw_points, run_chaos_game, warmup_steps
from fractaldb.instances import (
    GRAY_VALUE,
    InstancePlan,
    PreparedCategory,
    plan_instance,
    prepare_category,
)
from fractaldb.kernels import stamp
from fractaldb.settings import RenderSettings

__all__ = [
    "GRAY_VALUE",
    "Renderer",
    "choice_table",
    "draw_points",
    "render_instance",
    "render_plan",
    "warmup_steps",
]


def colorize(hits: np.ndarray, settings: RenderSettings, color: tuple[float, ...]) -> np.ndarray:
    """Turn a hit image into the final uint8 image (gray HxW or RGB HxWx3)."""
    on = hits > 0
    if settings.color == "gray":
        return on.view(np.uint8) * np.uint8(color[0])
    if settings.color == "color":
        return on.view(np.uint8)[..., None] * np.array(color, dtype=np.uint8)[None, None, :]
    # "hue": hit density to hue over the instance's shift, its saturation and value
    # (Anderson & Farrell 2022).
    shift, sat, val = color
    density = np.log1p(hits.astype(np.float32))
    density /= max(float(density.max()), 1e-6)
    hsv = np.empty(hits.shape + (3,), dtype=np.uint8)
    hsv[..., 0] = ((shift + density * 179.0) % 180).astype(np.uint8)
    hsv[..., 1] = np.uint8(sat)
    hsv[..., 2] = on.view(np.uint8) * np.uint8(val)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def render_plan(plan: InstancePlan, settings: RenderSettings) -> np.ndarray:
    """Render one image from its plan on the CPU; uint8 HxW (gray) or HxWx3 RGB."""
    size = settings.image_size
    hits, _ = run_chaos_game(
        plan.maps,
        plan.table,
        size,
        settings.points,
        plan.points_seed,
        settings.pad * size,
        settings.color == "hue",
        warmup_steps(settings.points),
    )
    if settings.mode == "patch":
        stamped = np.zeros_like(hits)
        stamp(hits, plan.mask, stamped)
        hits = stamped
    image = colorize(hits, settings, plan.color)
    if plan.flip & 1:
        image = image[::-1]
    if plan.flip & 2:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


class Renderer:
    """Renders images of one category set under one settings, preparing each category once.

    The one place where the family is chosen: for a contour set (visualatom, rcdb) the
    constructor returns a `fractaldb.contour.ContourRenderer`, with the same methods.
    """

    def __new__(cls, categories: CategorySet, settings: RenderSettings) -> Renderer:
        if cls is Renderer and categories.family == "contour":
            from fractaldb.contour import ContourRenderer

            # not a Renderer subclass (contour.py stays below render.py): built here, and
            # Python skips Renderer.__init__ for it
            return ContourRenderer(categories, settings)  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, categories: CategorySet, settings: RenderSettings) -> None:
        self.categories, self.settings = categories, settings
        self._prepared: list[PreparedCategory | None] = [None] * len(categories)

    def prepared(self, category: int) -> PreparedCategory:
        """Return the prepared category (computed on first use)."""
        if not 0 <= category < len(self.categories):
            raise IndexError(f"category {category} out of range [0, {len(self.categories)})")
        prep = self._prepared[category]
        if prep is None:
            prep = prepare_category(self.categories[category], category, self.settings)
            self._prepared[category] = prep
        return prep

    def plan(self, category: int, instance: int) -> InstancePlan:
        """Return the inputs of image (category, instance)."""
        return plan_instance(self.prepared(category), self.settings, instance)

    def render(self, category: int, instance: int) -> np.ndarray:
        """Render image (category, instance)."""
        return render_plan(self.plan(category, instance), self.settings)

    def render_one(self, category: int, instance: int) -> np.ndarray:
        """Render one image without preparing its category's whole variant table."""
        if not 0 <= category < len(self.categories):
            raise IndexError(f"category {category} out of range [0, {len(self.categories)})")
        cat = self.categories[category]
        prepared = PreparedCategory(cat, category, choice_table(cat.probs), None)
        return render_plan(plan_instance(prepared, self.settings, instance), self.settings)


def render_instance(
    categories: CategorySet, category: int, instance: int, settings: RenderSettings
) -> np.ndarray:
    """Render one image: a pure function of (category set, category, instance, settings).

    Returns uint8 HxW (gray) or HxWx3 RGB. The same arguments give the same bytes on any
    machine, in any process or thread. Loops over many images should use a `Renderer`.
    """
    return Renderer(categories, settings).render_one(category, instance)
