"""Contact sheets: a labelled grid of categories x instances, to see what was generated."""

from __future__ import annotations

import os

import cv2
import numpy as np

from fractaldb.categories import CategorySet
from fractaldb.core.atomic import replace_atomically
from fractaldb.instances import FLIP_NAMES, instance_meta
from fractaldb.render import render_instance
from fractaldb.settings import RenderSettings

LABEL_HEIGHT = 18
# categories on a sheet when none are named: all of a quick-start set, a readable page of a big one
MAX_CATEGORIES = 32


def column_captions(settings: RenderSettings, instances: list[int]) -> list[tuple[str, str]]:
    """Two caption lines per instance column: its index, and either the render it mirrors
    (flips on: instance i is flip i % 4 of render i // 4) or that it is a render of its own."""
    captions = []
    for i in instances:
        flip = instance_meta(settings, i)["flip"]
        captions.append(
            (
                f"#{i}",
                f"= #{i - flip} {FLIP_NAMES[flip]}{' flips' * (flip == 3)}"
                if flip
                else "new render",
            )
        )
    return captions


def _text(image: np.ndarray, text: str, x: int, y: int, scale: float = 0.4, room: int = 0) -> None:
    """Draw `text` at (x, y), smaller where it would not fit in `room` pixels (default: to the
    image's right edge)."""
    room = room or image.shape[1] - x
    width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
    scale = max(0.25, scale * min(1.0, (room - 4) / max(width, 1)))
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def contact_sheet(
    categories: CategorySet,
    settings: RenderSettings,
    category_ids: list[int] | None = None,
    instances: list[int] | None = None,
    tile: int = 128,
) -> np.ndarray:
    """Return an RGB uint8 grid: one row per category (all of them, up to MAX_CATEGORIES, when
    none are named), one column per instance; a header says which categories are shown and
    labels each column, flips named as such."""
    if category_ids is None:
        category_ids = list(range(min(MAX_CATEGORIES, len(categories))))
    instances = [0, 1, 2, 3, 4, 40, 80, 400] if instances is None else instances
    width = tile * len(instances)
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
        label = np.full((LABEL_HEIGHT, width, 3), 255, np.uint8)
        _text(label, f"category {c}: {categories[c].summary}", 4, 13)
        rows += [label, np.concatenate(cells, axis=1)]
    header = np.full((3 * LABEL_HEIGHT, width, 3), 230, np.uint8)
    _text(header, _which(category_ids, len(categories)), 4, 13)
    for col, (index, what) in enumerate(column_captions(settings, instances)):
        _text(header, index, col * tile + 4, LABEL_HEIGHT + 13, room=tile - 4)
        _text(header, what, col * tile + 4, 2 * LABEL_HEIGHT + 11, room=tile - 4)
    return np.concatenate([header, *rows], axis=0)


def _which(category_ids: list[int], total: int) -> str:
    """The header's first line: which of the set's categories the rows are."""
    shown = len(category_ids)
    if shown == total:
        return f"all {total} categories; columns: instances"
    span = (
        f"{category_ids[0]}-{category_ids[-1]}"
        if category_ids == list(range(category_ids[0], category_ids[0] + shown))
        else ", ".join(map(str, category_ids))
    )
    return (
        f"categories {span} ({shown} of {total}; --first-category for others); columns: instances"
    )


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB or gray uint8 image with OpenCV, atomically."""
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    path = os.fspath(path)
    ext = os.path.splitext(path)[1] or ".png"
    ok, buf = cv2.imencode(ext, bgr)
    if not ok:
        raise ValueError(f"OpenCV cannot encode {ext!r} images")
    replace_atomically(path, lambda tmp: tmp.write_bytes(buf.tobytes()))
