"""Golden bytes: the README promises every image is a pure function of (categories, settings,
seed, index), the same bytes on any machine. Two things outside the project can break that
silently: NumPy guarantees a Generator stream only on the same NumPy build, and the PNG bytes
come from the zlib bundled in the OpenCV wheel. This test renders a fixed small set and one
shard and compares their sha256 with the committed values, so such an upgrade fails CI.

If it fails after a dependency upgrade or a deliberate change to the renderer, the shards
written by older versions are no longer reproduced: bump the format version
(shards/manifest.py FORMAT_VERSION, and fractaldb/categories.py FORMAT_VERSION if the search
changed), say why in the commit, then regenerate the table below with

    uv run python tests/shards/test_golden.py
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fractaldb.render import render_instance
from fractaldb.search import search_categories
from fractaldb.settings import RenderSettings
from shards.presets import Layout
from shards.writer import write_shards

# ---- GOLDEN TABLE (sha256 hex) ------------------------------------------------------------
# Regenerate: `uv run python tests/shards/test_golden.py` prints this table. A change to any value
# changes the bytes users get: it requires a format-version bump (see the module docstring).
GOLDEN: dict[str, str] = {
    "categories": "edd348b066e112037d284a461fa0d9b3212834d9ad76a3fe9584cfbe3e2077fb",
    "render-point-gray-fractaldb": "c22dda3b9be62783ef2c41dfd9c4a1f85b1f240310ffe084a75b2d2d61f5aa8e",
    "render-patch-gray-fractaldb": "c5f660796996d88e302d5f34a8e2ec077aac85f613d1b60fc5860382ab8de45f",
    "render-patch-color-fractaldb": "2be5e1e4f0a118c0c09a865bfd993a45566a274bc700f1d5aeec41f162aaf919",
    "render-point-hue-jitter": "03c5936bbc3e83e379c27fdb44698b7ca3f3d71eff32dd6cf72bcd33a2c5c5a5",
    "render-patch-hue-jitter": "5e4b00e3f2dd0d62c27b6986c29e0fd82dceadedb564e64d4d4a39aaa908b528",
    "render-patch-color-jitter": "d559f7325fe723cdacb8d6f7be5cad3fe42920e7efe0cd82afe0a8bcb6f61b16",
    "shard-000000.tar": "861770b2f058dfeca3b9f4b418c76b1faf550b680c84b17b754e882bb755bd97",
}
# ---- end of GOLDEN TABLE ------------------------------------------------------------------

NUM_CATEGORIES = 3
INSTANCES = (0, 1, 2, 3, 7, 30)  # four flips of one variant, then other variants
# (mode, color, scheme): point and patch, gray, colour and hue, both instance schemes
CASES = (
    ("point", "gray", "fractaldb"),
    ("patch", "gray", "fractaldb"),
    ("patch", "color", "fractaldb"),
    ("point", "hue", "jitter"),
    ("patch", "hue", "jitter"),
    ("patch", "color", "jitter"),
)
BASE = RenderSettings(image_size=64, points=4_000, seed=11)
SHARD_LAYOUT = Layout(instances_per_category=4, samples_per_shard=12, format="png")


def _sha256_images(images: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.dtype}{image.shape}".encode())
        digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def golden_hashes(tmp: Path) -> dict[str, str]:
    """Compute every value of the golden table (writes one small dataset under `tmp`)."""
    categories = search_categories(NUM_CATEGORIES, sampler="sigma", seed=5)
    hashes = {"categories": categories.sha256}
    for mode, color, scheme in CASES:
        settings = BASE.replace(mode=mode, color=color, scheme=scheme)
        images = [
            render_instance(categories, c, i, settings)
            for c in range(NUM_CATEGORIES)
            for i in INSTANCES
        ]
        hashes[f"render-{mode}-{color}-{scheme}"] = _sha256_images(images)
    report = write_shards(
        categories,
        BASE.replace(mode="patch", color="color"),
        SHARD_LAYOUT,
        tmp / "shards",
        workers=1,
        progress=False,
    )
    hashes["shard-000000.tar"] = report.manifest["shards"][0]["sha256"]
    return hashes


def test_rendered_bytes_match_the_golden_table(tmp_path):
    got = golden_hashes(tmp_path)
    changed = sorted(k for k in got.keys() | GOLDEN.keys() if got.get(k) != GOLDEN.get(k))
    assert not changed, (
        f"rendered bytes changed for {changed}: a dependency upgrade (NumPy Generator streams, "
        "OpenCV's zlib) or a renderer change broke reproducibility. If deliberate, bump the "
        "format version and regenerate the table with `uv run python tests/shards/test_golden.py`."
    )


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        table = golden_hashes(Path(folder))
    print("GOLDEN: dict[str, str] = {")
    for key, value in table.items():
        print(f'    "{key}": "{value}",')
    print("}")
