"""Contour sets through the whole pipeline: presets, shards, verify, preview, on-the-fly
training data, the GPU kernel in the simulator, golden bytes.

If the golden table fails after a deliberate renderer change, bump the format version (see
tests/shards/test_golden.py) and regenerate it with
`uv run python tests/fractaldb/test_contour_pipeline.py`.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fractaldb import gpu
from fractaldb.cli import main
from fractaldb.render import Renderer
from fractaldb.search import search_categories
from fractaldb.settings import RenderSettings
from shards.onthefly import OnTheFlyDataset
from shards.presets import Layout, load_preset
from shards.verify import regenerate_samples, verify_dataset
from shards.writer import write_shards
from tests.helpers import assert_one_line_error
from tests.shards.test_golden import _sha256_images

# ---- GOLDEN TABLE (sha256 hex) ------------------------------------------------------------
GOLDEN: dict[str, str] = {
    "categories-visualatom": "34213ccb048aa04fc7dff914e1275115c7bc1d722338ee96b86f07d24c28c373",
    "render-visualatom-gray": "37a61a2813b696bb72ac4864fc4c70c1735514e923197b08fd0bca55338d7655",
    "render-visualatom-color": "bea4cce40d114cce689f032cde5ceb8dfadff29bd2b461640831b16edaae36b1",
    "categories-rcdb": "44c0bad652e7d960015008141420bc0f1455b4c8d626c0f1e58b36dd5d78204e",
    "render-rcdb-gray": "9de3f1d47952629a74f06eca8e386ddb4b1c6e9436a001b1d2c7bdaa17197a09",
    "render-rcdb-color": "02c5cbcf9d2e2eda03a5ffda79438a54c97027c3bcedbd3e26878202daea4bfe",
    "shard-000000.tar": "eaf2955ce6acd58366fad94dd2fd49518bd3a3048bfadc99cb4a639cef8a4b09",
}
# ---- end of GOLDEN TABLE ------------------------------------------------------------------

SMALL = {"vertices": (12, 40), "orbits": (2, 8)}  # tiny polygons keep the tests fast
SETTINGS = RenderSettings(image_size=40, seed=7)
LAYOUT = Layout(instances_per_category=5, samples_per_shard=4, format="png")


def small_set(sampler: str, k: int = 3):
    return search_categories(k, sampler, seed=3, **SMALL)


def golden_hashes(tmp: Path) -> dict[str, str]:
    """Compute every value of the golden table (writes one small dataset under `tmp`)."""
    hashes = {}
    for sampler in ("visualatom", "rcdb"):
        # the published ranges: the categories file is part of what users reproduce
        hashes[f"categories-{sampler}"] = search_categories(4, sampler, seed=1).sha256
        cats = small_set(sampler)
        for color in ("gray", "color"):
            renderer = Renderer(cats, SETTINGS.replace(color=color))
            images = [renderer.render(c, i) for c in range(3) for i in (0, 1, 9)]
            hashes[f"render-{sampler}-{color}"] = _sha256_images(images)
    report = write_shards(small_set("visualatom"), SETTINGS, LAYOUT, tmp / "s", progress=False)
    hashes["shard-000000.tar"] = report.manifest["shards"][0]["sha256"]
    return hashes


def test_rendered_bytes_match_the_golden_table(tmp_path):
    got = golden_hashes(tmp_path)
    changed = sorted(k for k in got.keys() | GOLDEN.keys() if got.get(k) != GOLDEN.get(k))
    assert not changed, (
        f"contour bytes changed for {changed}: if deliberate, bump the format version and "
        "regenerate the table with `uv run python tests/fractaldb/test_contour_pipeline.py`"
    )


def _shard_hashes(out: Path, workers: int, device: str = "cpu", color: str = "gray"):
    report = write_shards(
        small_set("visualatom"), SETTINGS.replace(color=color), LAYOUT, out,
        workers=workers, progress=False, device=device,
    )  # fmt: skip
    return [r["sha256"] for r in report.manifest["shards"]]


def test_shards_are_identical_with_1_and_3_workers_and_verify(tmp_path):
    one = _shard_hashes(tmp_path / "one", 1)
    three = _shard_hashes(tmp_path / "three", 3)
    assert one == three and len(one) == 4  # 15 samples, 4 per shard
    assert verify_dataset(tmp_path / "three") == []
    checked, mismatches = regenerate_samples(tmp_path / "three", 6, progress=False)
    assert checked == 6 and mismatches == []


def test_the_on_the_fly_dataset_draws_the_shard_pixels(tmp_path):
    cats = small_set("rcdb")
    write_shards(cats, SETTINGS, LAYOUT, tmp_path, progress=False)
    data = OnTheFlyDataset(cats, SETTINGS, LAYOUT.instances_per_category, image_mode="L")
    seen = 0
    for shard in sorted(tmp_path.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in (m for m in tar.getmembers() if m.name.endswith(".png")):
                c, i = (int(part[1:]) for part in member.name[:-4].split("_"))  # c000001_i000004
                stored = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())))
                assert stored.any() and np.array_equal(data.image(c, i), stored)
                seen += 1
    assert seen == 15


def test_presets_render_verify_and_preview_through_the_console(tmp_path):
    preset = load_preset("visualatom-1k")
    assert preset.search["sampler"] == "visualatom" and preset.render.image_size == 512
    assert load_preset("rcdb-1k").search["sampler"] == "rcdb"
    run = CliRunner().invoke
    cats = tmp_path / "va.json"
    res = run(main, ["search", "-k", "2", "--sampler", "visualatom", "--set", "orbits=1:6",
                     "--set", "vertices=20:40", "--out", str(cats)])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = tmp_path / "data"
    res = run(main, ["render", "--preset", "visualatom-1k", "--categories", str(cats),
                     "--instances-per-category", "3", "--image-size", "48", "--out", str(out),
                     "--quiet", "--workers", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (out / "preview.png").stat().st_size > 0 and (out / "manifest.json").is_file()
    res = run(main, ["shards", "verify", str(out), "--regenerate", "6"])
    assert res.exit_code == 0 and "match" in res.output, res.output


@pytest.mark.parametrize(
    ("preset", "sampler", "needle"),
    [
        ("visualatom-1k", "fractaldb", "renders contour categories (visualatom), but the"),
        ("fractaldb-1k", "rcdb", "renders ifs categories (fractaldb), but the"),
    ],
)
def test_a_preset_refuses_categories_of_the_other_family(tmp_path, preset, sampler, needle):
    cats = tmp_path / "cats.json"
    search_categories(2, sampler, seed=1).save(cats)
    out = tmp_path / "data"
    res = CliRunner().invoke(
        main, ["render", "--preset", preset, "--categories", str(cats), "--out", str(out)]
    )
    assert_one_line_error(res, needle, "fix:")
    assert not out.exists()


@pytest.mark.parametrize("color", ["gray", "color"])
@pytest.mark.parametrize("sampler", ["visualatom", "rcdb"])
def test_the_gpu_kernel_equals_the_cpu_in_the_simulator(sampler, color):
    cats = small_set(sampler)
    settings = SETTINGS.replace(image_size=24, color=color)
    cells = [(0, 0), (1, 4), (2, 2), (0, 11)]
    cpu = [Renderer(cats, settings).render(c, i) for c, i in cells]
    assert all(img.any() for img in cpu)
    assert all(np.array_equal(g, c) for g, c in zip(gpu.render_batch_to_host(cats, cells,
               settings), cpu, strict=True))  # fmt: skip
    on_device = gpu.render_batch(cats, cells, settings).copy_to_host()
    assert all(np.array_equal(g, c) for g, c in zip(on_device, cpu, strict=True))


def test_gpu_shards_equal_cpu_shards_in_the_simulator(tmp_path):
    assert _shard_hashes(tmp_path / "g", 1, "cuda") == _shard_hashes(tmp_path / "c", 1)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        table = golden_hashes(Path(folder))
    print("GOLDEN: dict[str, str] = {")
    for key, value in table.items():
        print(f'    "{key}": "{value}",')
    print("}")
