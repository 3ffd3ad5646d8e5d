"""Contour families (VisualAtom, RCDB): parameters, Perlin noise, line rasteriser, renderer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from fractaldb.categories import CategorySet, load_categories
from fractaldb.cli import main
from fractaldb.contour import ContourRenderer
from fractaldb.contour_kernels import PERM, line, pnoise1
from fractaldb.contour_sets import ContourCategory
from fractaldb.core.errors import FractalDBError
from fractaldb.render import Renderer, render_instance
from fractaldb.search import search_categories
from fractaldb.settings import RenderSettings
from tests.helpers import assert_one_line_error

TINY = RenderSettings(image_size=48, seed=3)


def tiny_set(sampler: str = "visualatom", k: int = 3) -> CategorySet:
    # few vertices and orbits keep the tests fast
    return search_categories(k, sampler, seed=2, vertices=(20, 60), orbits=(3, 12))


def test_pnoise1_follows_the_noise_package_definition():
    assert sorted(PERM[:256]) == list(range(256)) and list(PERM[256:]) == list(PERM[:256])
    # x = 0.5: lattice 0 and 1, PERM 151 -> g = 8, PERM 160 -> g = 1, fade 0.5
    assert pnoise1(0.5) == pytest.approx(0.4 * (8 * 0.5 + 0.5 * (-0.5 - 4.0)), abs=1e-7)
    assert pnoise1(7.0) == 0.0  # zero on the lattice
    assert pnoise1(0.25) == pnoise1(1024.25)  # repeat 1024 (both exact in float32)
    assert pnoise1(0.25, repeat=16) == pnoise1(16.25, repeat=16)
    assert pnoise1(0.5, base=5) != pnoise1(0.5)  # PERM[5] = 15: g = -1, not 8
    octaves = [pnoise1(3.3 * 2.0**o, repeat=int(1024 * 2**o)) for o in range(3)]
    expected = (octaves[0] + 0.5 * octaves[1] + 0.25 * octaves[2]) / 1.75
    assert pnoise1(3.3, octaves=3) == pytest.approx(expected, abs=1e-6)
    xs = np.random.default_rng(0).uniform(0, 10000, 2000)
    values = np.array([pnoise1(x) for x in xs])
    assert np.abs(values).max() <= 1.0 and abs(values.mean()) < 0.05


def test_line_draws_as_pillow_pixel_for_pixel():
    rng = np.random.default_rng(1)
    for t in range(400):
        size = int(rng.integers(4, 30))
        pts = rng.uniform(-8, size + 8, 4)
        if t % 3 == 0:
            pts = np.round(pts)  # integer end points, ties in the Bresenham error term
        ref = Image.new("L", (size, size), 0)
        ImageDraw.Draw(ref).line(tuple(float(p) for p in pts), fill=201, width=1)
        ours = np.zeros((size, size, 1), np.uint8)
        line(ours, *pts, np.array([201], np.uint8))
        assert np.array_equal(np.asarray(ref), ours[..., 0]), pts


def test_samplers_draw_within_the_published_ranges():
    va = search_categories(300, "visualatom", seed=1)
    for c in va.categories:
        assert 200 <= c.vertices <= 1000 and 1 <= c.orbits <= 200
        assert 0 <= c.eta <= 4 and 0 <= c.offset <= 0.1 and c.noise_gain == 1
        assert 10 <= c.radius[0] == c.radius[1] <= 60
        assert 1 <= c.aspect_x[0] == c.aspect_x[1] <= 2 and 1 <= c.aspect_y[0] <= 2
        assert 0 <= c.n1 <= 20 and 0 <= c.n2 <= 20 and (c.n1 != c.n2 or c.n1 == 0)
    assert len({c.n2 for c in va.categories if c.n1 == 0}) > 3
    rc = search_categories(2000, "rcdb", seed=1)
    q = np.array([c.vertices for c in rc.categories])
    assert q.min() == 3 and q.max() <= 200 and {c.n1 for c in rc.categories} == {0}
    # Exp(mean 100) truncated to [3, 201): P(q < 50) = 0.44, P(q >= 150) = 0.11, mean 70.8
    assert 0.38 < (q < 50).mean() < 0.5 and 0.07 < (q >= 150).mean() < 0.15
    assert 66 < q.mean() < 76
    assert all(c.radius == (0, 100) and c.noise_gain == 2 for c in rc.categories)
    assert search_categories(5, "rcdb", seed=1).sha256 == search_categories(5, "rcdb", 1).sha256


def test_search_writes_a_contour_file_that_loads_back(tmp_path):
    out = tmp_path / "va.json"
    res = CliRunner().invoke(
        main,
        [
            "search",
            "-k",
            "4",
            "--sampler",
            "visualatom",
            "--set",
            "orbits=1:9",
            "--out",
            str(out),
        ],  # fmt: skip
    )
    assert res.exit_code == 0, res.output
    cats = load_categories(out)
    assert cats.family == "contour" and len(cats) == 4
    assert all(c.orbits <= 9 for c in cats.categories)
    assert json.loads(out.read_text())["sampler_settings"]["orbits"] == [1, 9]


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("orbits=0:10", "orbits must be an integer in [1, 1000]"),
        ("vertices=-5:10", "vertices must be an integer"),
        ("vertices=nan:10", "vertices must be an integer"),
        ("eta=nan:1", "eta must be a number"),
        ("orbits=9:3", "is empty"),
        ("orbits=5", "must be a range LO:HI"),
        ("frequency=4:4", "n1 != n2 is impossible"),
        ("colour=1", "unknown sampler setting"),
    ],
)
def test_bad_contour_ranges_are_refused_in_one_line(tmp_path, setting, needle):
    out = tmp_path / "x.json"
    res = CliRunner().invoke(
        main, ["search", "--sampler", "visualatom", "--set", setting, "--out", str(out)]
    )
    assert_one_line_error(res, needle)
    assert not out.exists()


def _edited(tmp_path, src: CategorySet, **change) -> str:
    data = json.loads(src.to_json_bytes())
    data.update({k: v for k, v in change.items() if k == "sampler"})
    data["categories"][0].update({k: v for k, v in change.items() if k != "sampler"})
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data).replace("NaN", "NaN"))
    return str(path)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"vertices": 0}, "vertices must be an integer in [3"),
        ({"orbits": -2}, "orbits must be an integer in [1"),
        ({"eta": float("nan")}, "eta must be a number"),
        ({"sampler": "fractaldb"}, "holds contour categories, but its sampler names an IFS"),
    ],
)
def test_bad_contour_files_are_refused_in_one_line(tmp_path, change, needle):
    path = _edited(tmp_path, tiny_set(), **change)
    res = CliRunner().invoke(main, ["preview", "-c", path, "-o", str(tmp_path / "p.png")])
    assert_one_line_error(res, "malformed", needle)


def test_ifs_files_and_contour_renderer_do_not_mix(tmp_path):
    ifs = search_categories(2, "fractaldb", seed=1)
    with pytest.raises(FractalDBError, match="the contour renderer draws visualatom or rcdb"):
        ContourRenderer(ifs, TINY)
    data = json.loads(ifs.to_json_bytes())
    data["sampler"] = "visualatom"
    path = tmp_path / "ifs-as-contour.json"
    path.write_text(json.dumps(data))
    res = CliRunner().invoke(main, ["preview", "-c", str(path), "-o", str(tmp_path / "p.png")])
    assert_one_line_error(res, "holds IFS maps, but its sampler names a contour family")


def test_hue_colour_is_refused_for_contours():
    with pytest.raises(FractalDBError, match="fix: --color gray or --color color"):
        Renderer(tiny_set(), TINY.replace(color="hue"))


@pytest.mark.parametrize("sampler", ["visualatom", "rcdb"])
def test_an_image_is_a_pure_function_of_its_cell(sampler):
    cats = tiny_set(sampler)
    renderer = Renderer(cats, TINY)
    assert isinstance(renderer, ContourRenderer)
    first = renderer.render(1, 5)
    assert first.shape == (48, 48) and first.dtype == np.uint8 and first.any()
    # a fresh renderer, another order of work, the one-image API: the same bytes
    other = Renderer(cats, TINY)
    other.render(2, 0)
    assert np.array_equal(other.render(1, 5), first)
    assert np.array_equal(render_instance(cats, 1, 5, TINY), first)
    assert not np.array_equal(renderer.render(1, 6), first)
    assert not np.array_equal(Renderer(cats, TINY.replace(seed=4)).render(1, 5), first)
    colour = Renderer(cats, TINY.replace(color="color", image_size=33)).render(1, 5)
    assert colour.shape == (33, 33, 3) and len(np.unique(colour.reshape(-1, 3), axis=0)) > 2


def test_gray_levels_are_one_per_contour():
    cat = ContourCategory(60, 5, 0.0, 4.0, 0, 0, 1.0, (20, 20), (1, 1), (1, 1), (0.5, 0.5))
    cats = CategorySet(categories=(cat,), sampler="visualatom")
    img = Renderer(cats, RenderSettings(image_size=512)).render(0, 0)
    # no noise, offset 4 px: five rings at radius 24, 28, ..., 40, each of one level
    ys, xs = np.nonzero(img)
    ring = np.round((np.hypot(xs - 256, ys - 256) - 20) / 4).astype(int)
    assert set(ring) <= {1, 2, 3, 4, 5} and len(set(ring)) >= 4  # a level may be 0
    for k in set(ring):
        assert len(np.unique(img[ys[ring == k], xs[ring == k]])) == 1
