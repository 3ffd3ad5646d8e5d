"""The contact sheet (render's preview.png, `fractaldb preview`): which categories, which flips."""

from __future__ import annotations

import numpy as np

from fractaldb.categories import Category, CategorySet
from fractaldb.ifs import det_probs
from fractaldb.preview import LABEL_HEIGHT, MAX_CATEGORIES, column_captions, contact_sheet
from fractaldb.settings import RenderSettings

SIERPINSKI = np.array(
    [[0.5, 0, 0, 0.5, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0], [0.5, 0, 0, 0.5, 0.25, 0.5]], float
)
SMALL = RenderSettings(image_size=64, points=2_000)
TILE = 32


def categories(n: int) -> CategorySet:
    cat = Category(maps=SIERPINSKI, probs=det_probs(SIERPINSKI), fill_rate=0.0)
    return CategorySet(categories=(cat,) * n, sampler="fractaldb")


def test_captions_name_the_flips():
    assert column_captions(SMALL, [0, 1, 2, 3, 4, 40]) == [
        ("#0", "new render"),
        ("#1", "= #0 up-down"),
        ("#2", "= #0 left-right"),
        ("#3", "= #0 both flips"),
        ("#4", "new render"),
        ("#40", "new render"),
    ]
    no_flips = RenderSettings(image_size=64, points=2_000, flips=False)
    assert {what for _, what in column_captions(no_flips, [0, 1, 2, 3])} == {"new render"}


def rows_of(sheet: np.ndarray) -> int:
    body = sheet.shape[0] - 3 * LABEL_HEIGHT  # the header: which categories, then two captions
    assert body % (LABEL_HEIGHT + TILE) == 0
    return body // (LABEL_HEIGHT + TILE)


def test_sheet_shows_every_category_of_a_small_set_and_a_page_of_a_big_one():
    assert rows_of(contact_sheet(categories(16), SMALL, instances=[0], tile=TILE)) == 16
    assert rows_of(contact_sheet(categories(40), SMALL, instances=[0], tile=TILE)) == MAX_CATEGORIES


def test_flip_columns_are_the_mirror_images_they_are_labelled():
    sheet = contact_sheet(categories(1), SMALL, instances=[0, 1, 2, 3], tile=TILE)
    cells = sheet[-TILE:].reshape(TILE, 4, TILE, 3).transpose(1, 0, 2, 3)
    assert cells[0].any()
    np.testing.assert_array_equal(cells[1], cells[0][::-1])
    np.testing.assert_array_equal(cells[2], cells[0][:, ::-1])
    np.testing.assert_array_equal(cells[3], cells[0][::-1, ::-1])
