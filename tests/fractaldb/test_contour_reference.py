"""Faithful to the reference: benchmarks/contour.py's plain Python + PIL renderer (written from
REFERENCE section 10) and ours measure alike on the same category parameters."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from benchmarks import contour as bench
from fractaldb.contour import plan_contour, prepare_contour
from fractaldb.contour_kernels import pnoise1
from fractaldb.search import search_categories
from fractaldb.settings import RenderSettings

SIZE = 96


def small_categories(sampler: str, k: int = 3):
    # the published ranges, fewer vertices and orbits (the pure-Python reference is slow)
    cats = search_categories(k, sampler, seed=1, vertices=(30, 120), orbits=(10, 40))
    return list(cats.categories)


def test_the_pure_python_pnoise1_matches_ours():
    xs = np.random.default_rng(2).uniform(0, 10000, 300)
    assert max(abs(bench.pnoise1_py(x) - pnoise1(x)) for x in xs) < 4e-6  # float32 rounding
    assert bench.pnoise1_py(3.3, octaves=3) == pytest.approx(pnoise1(3.3, octaves=3), abs=1e-5)


@pytest.mark.parametrize("sampler", ["visualatom", "rcdb"])
def test_ink_radial_profile_and_gray_levels_agree_with_the_reference(sampler):
    cats = small_categories(sampler)
    if sampler == "rcdb":
        # RCDB draws radius and aspects per instance: a few instances of each renderer differ
        # by those draws far more than by the renderers (their distribution: the next test)
        cats = [replace(c, radius=(40, 40), aspect_x=(1.6, 1.6), aspect_y=(1.2, 1.2))
                for c in cats]  # fmt: skip
    rows = bench.compare(cats, SIZE, instances=6)
    for row in rows:
        ref, ours = row["reference_ink"], row["ours_ink"]
        assert abs(ours - ref) <= 0.1 * ref + 0.005, row
        assert row["profile_l1"] < 0.1, row
        # one level per contour drawn from 0..255 (repeats and level 0 included)
        assert abs(row["ours_levels"] - row["reference_levels"]) <= 0.15 * row["orbits"] + 2


def test_per_instance_shape_draws_are_uniform_over_their_ranges():
    prep = prepare_contour(small_categories("rcdb", 1)[0], 0)
    plans = [plan_contour(prep, RenderSettings(SIZE), i) for i in range(3000)]
    start = np.array([(p.start_x, p.start_y) for p in plans])
    centre = np.array([(p.cx, p.cy) for p in plans]) / SIZE
    # radius U{0..100} times aspect U(1, 2): mean 75, range [0, 200]
    assert np.allclose(start.mean(axis=0), 75, rtol=0.04) and start.max() <= 200
    lo, hi = 56 / 512, 456 / 512  # RCDB's centre range
    assert centre.min() >= lo and centre.max() <= hi
    assert np.allclose(centre.mean(axis=0), 0.5, atol=0.01)


def test_the_statistics_tell_other_parameters_apart():
    # the check has teeth: a category with 4x the noise measures unlike the original
    cat = small_categories("visualatom", 1)[0]
    louder = replace(cat, eta=min(16.0, 4 * cat.eta + 2))
    base = bench.compare([cat], SIZE, instances=6)[0]
    other = bench.compare([louder], SIZE, instances=6)[0]
    mixed_l1 = np.abs(base["reference_profile"] - other["ours_profile"]).sum() / max(
        base["reference_profile"].sum(), 1e-9
    )
    assert mixed_l1 > 2 * base["profile_l1"]


def test_reference_image_draws_closed_contours_with_one_level_each():
    cat = replace(small_categories("visualatom", 1)[0], eta=0.0, offset=3.0, orbits=3, n1=0, n2=0)
    img = bench.reference_image(bench.centred(cat), 256, random.Random(0))
    assert img.shape == (256, 256) and 1 <= len(np.unique(img[img > 0])) <= 3
