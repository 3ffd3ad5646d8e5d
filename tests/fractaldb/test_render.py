"""Renderer: determinism, instance schemes, modes, divergent systems."""

from __future__ import annotations

import numpy as np
import pytest

from fractaldb.categories import Category, CategorySet
from fractaldb.ifs import det_probs
from fractaldb.instances import instance_meta, variant_maps
from fractaldb.render import choice_table, draw_points, render_instance
from fractaldb.settings import RenderSettings

SIERPINSKI = np.array(
    [[0.5, 0, 0, 0.5, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0], [0.5, 0, 0, 0.5, 0.25, 0.5]], float
)
SQUARE = np.array(
    [[0.5, 0, 0, 0.5, x, y] for x in (0.0, 0.5) for y in (0.0, 0.5)], dtype=float
)  # attractor: the whole unit square


def make_set(*systems: np.ndarray) -> CategorySet:
    cats = tuple(Category(maps=m, probs=det_probs(m), fill_rate=0.0) for m in systems)
    return CategorySet(categories=cats, sampler="fractaldb")


CATS = make_set(SIERPINSKI, SQUARE)
SMALL = RenderSettings(image_size=64, points=5_000)


def test_same_inputs_same_bytes():
    a = render_instance(CATS, 0, 7, SMALL)
    b = render_instance(CATS, 0, 7, SMALL)
    assert a.dtype == np.uint8 and a.shape == (64, 64)
    assert a.tobytes() == b.tobytes()
    assert a.any()


@pytest.mark.parametrize(
    "other",
    [
        dict(category=1, instance=7, settings=SMALL),
        dict(category=0, instance=8, settings=SMALL),  # next render (other mask/points)
        dict(category=0, instance=7, settings=SMALL.replace(seed=1)),
    ],
)
def test_different_instance_category_or_seed_gives_different_image(other):
    base = render_instance(CATS, 0, 7, SMALL)
    img = render_instance(CATS, other["category"], other["instance"], other["settings"])
    assert img.tobytes() != base.tobytes()


def test_four_flips_are_mirror_images_of_one_render():
    s = SMALL.replace(mode="point")
    imgs = [render_instance(CATS, 0, i, s) for i in range(4)]
    assert np.array_equal(imgs[1], imgs[0][::-1])
    assert np.array_equal(imgs[2], imgs[0][:, ::-1])
    assert np.array_equal(imgs[3], imgs[0][::-1, ::-1])
    assert not np.array_equal(imgs[0], imgs[1])


def test_fractaldb_instance_scheme_covers_25_variants_10_renders_4_flips():
    s = RenderSettings()
    metas = [instance_meta(s, i) for i in range(1000)]
    triples = {(m["variant"], m["render"], m["flip"]) for m in metas}
    assert len(triples) == 1000
    assert {m["variant"] for m in metas} == set(range(25))
    assert {m["render"] for m in metas} == set(range(10))
    assert {m["flip"] for m in metas} == set(range(4))


def test_fractaldb_variant_scales_one_coefficient_of_every_map():
    s = RenderSettings(factors=(0.8, 0.9, 1.1, 1.2))
    cat = CATS[1]
    assert np.array_equal(variant_maps(cat, s, 1, 0), cat.maps)
    v = 1 + 4 * 4 + 3  # coefficient e (index 4), factor 1.2
    scaled = variant_maps(cat, s, 1, v)
    expected = cat.maps.copy()
    expected[:, 4] *= 1.2
    assert np.array_equal(scaled, expected)


def test_jitter_scheme_stays_within_band_and_differs_per_instance():
    s = RenderSettings(scheme="jitter", jitter=0.05, flips=False)
    cat = CATS[1]
    m1, m2 = variant_maps(cat, s, 1, 1), variant_maps(cat, s, 1, 2)
    nz = cat.maps != 0
    ratio = m1[nz] / cat.maps[nz]
    assert np.all((ratio >= 0.95) & (ratio <= 1.05))
    assert not np.array_equal(m1, m2)
    assert instance_meta(s, 5) == {"variant": 5, "render": 0, "flip": 0}


def test_patch_mode_covers_point_mode_pixels():
    point = render_instance(CATS, 1, 0, SMALL.replace(mode="point"))
    patch = render_instance(CATS, 1, 0, SMALL.replace(mode="patch"))
    assert np.count_nonzero(patch) >= np.count_nonzero(point)
    assert set(np.unique(patch)) <= {0, 127}


@pytest.mark.parametrize("color", ["color", "hue"])
def test_colour_modes_give_rgb(color):
    img = render_instance(CATS, 1, 3, SMALL.replace(color=color))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert img.any()
    lit = img.max(axis=2) > 0
    gray = render_instance(CATS, 1, 3, SMALL)
    assert np.array_equal(lit, gray > 0)  # colour never changes the shape


def test_choice_table_is_proportional_and_keeps_rare_maps():
    table = choice_table(np.array([0.7, 0.299, 0.001]))
    assert table.shape == (256,) and table.dtype == np.uint8
    counts = np.bincount(table, minlength=3)
    assert counts.sum() == 256 and counts.min() >= 1
    assert abs(counts[0] / 256 - 0.7) < 2 / 256


def test_point_count_matches_request_on_a_filling_system():
    hits, escapes = draw_points(SQUARE, det_probs(SQUARE), 512, 1003, seed=5, count=True)
    assert escapes == 0
    # The warm-up bounding box is approximate, so a few edge points may fall outside.
    assert 990 <= int(hits.sum()) <= 1003


@pytest.mark.parametrize("scale", [1.5, 3.0, 1e6])
def test_divergent_systems_give_no_nan_and_no_crash(scale):
    maps = np.array([[scale, 0.3, -0.2, scale, 1, 0], [scale, 0, 0, -scale, 0, 1]])
    hits, escapes = draw_points(maps, det_probs(maps), 64, 20_000, seed=3)
    assert escapes > 0
    assert hits.dtype == np.uint8 and np.isin(hits, [0, 1]).all()
    cats = make_set(maps)
    img = render_instance(cats, 0, 0, SMALL.replace(color="hue"))
    assert img.dtype == np.uint8


def test_nan_coefficients_do_not_leak():
    maps = np.array([[np.nan, 0, 0, 0.5, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0.5]])
    hits, escapes = draw_points(maps, np.array([0.5, 0.5]), 32, 1000, seed=1)
    assert escapes > 0 and hits.dtype == np.uint8


def test_settings_reject_unknown_and_invalid_values():
    from fractaldb.core.errors import FractalDBError

    with pytest.raises(FractalDBError, match="unknown render setting"):
        RenderSettings.from_dict({"image_size": 64, "colour": "gray"})
    with pytest.raises(FractalDBError, match="mode must be one of"):
        RenderSettings(mode="splat")
    assert RenderSettings.from_dict(SMALL.to_dict()) == SMALL
