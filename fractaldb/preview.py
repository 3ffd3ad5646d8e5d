"""Contact sheets: a labelled grid of categories x instances, to see what was generated."""

from __future__ import annotations

import os

import cv2
import numpy as np

from fractaldb.categories import CategorySet
from fractaldb.core.atomic import replace_atomically
from fractaldb.render import render_instance
from fractaldb.settings import RenderSettings

LABEL_HEIGHT = 18


def contact_sheet(
    categories: CategorySet,
    settings: RenderSettings,
    category_ids: list[int] | None = None,
    instances: list[int] | None = None,
    tile: int = 128,
) -> np.ndarray:
    """Return an RGB uint8 grid: one row per category, one column per instance, labelled."""
    category_ids = list(range(min(8, len(categories)))) if category_ids is None else category_ids
    instances = [0, 1, 2, 3, 4, 40, 80, 400] if instances is None else instances
    rows = []
    for c in category_ids:
        cells = []
        for i in instances:
            img = render_instance(categories, c, i, settings)
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            cell = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
            cv2.rectangle(cell, (0, 0), (tile - 1, tile - 1), (60, 60, 60), 1)
            cells.append(cell)
        label = np.full((LABEL_HEIGHT, tile * len(instances), 3), 255, np.uint8)
        cat = categories[c]
        text = f"category {c}: {cat.num_maps} maps, fill {cat.fill_rate:.2f}"
        cv2.putText(label, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        rows += [label, np.concatenate(cells, axis=1)]
    header = np.full((LABEL_HEIGHT, tile * len(instances), 3), 230, np.uint8)
    text = "instances " + ", ".join(str(i) for i in instances)
    cv2.putText(header, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, *rows], axis=0)


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB or gray uint8 image with OpenCV, atomically."""
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    path = os.fspath(path)
    ext = os.path.splitext(path)[1] or ".png"
    ok, buf = cv2.imencode(ext, bgr)
    if not ok:
        raise ValueError(f"OpenCV cannot encode {ext!r} images")
    replace_atomically(path, lambda tmp: tmp.write_bytes(buf.tobytes()))
