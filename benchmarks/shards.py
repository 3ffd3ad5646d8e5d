"""Shard generation, shard loading and on-the-fly rendering speed, against the issue's floors.

Workloads (issue 2): generation = render + PNG encode + tar + manifest with the fractaldb-1k
instance scheme at 256x256, 100,000 points, patch, gray, on all cores (divided by cores);
loading = read + OpenCV decode (as stored: gray stays one channel; also reported decoded to
RGB) + RandomResizedCrop 224 + tensor with one data-loader worker per core; on-the-fly = the same transform on images rendered in one worker. Usage:

    uv run python benchmarks/shards.py [--images 2000] [--seconds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# This script is named like the `shards` package: keep its folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

FLOORS = {
    "generate_images_per_s_per_core": 500,
    "load_images_per_s_per_core": 1500,
    "on_the_fly_images_per_s_per_worker": 400,
}
FRACTALDB_1K_IMAGES = 1_000_000


def main() -> None:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images to generate and load")
    parser.add_argument("--seconds", type=float, default=3.0, help="time for on-the-fly")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()

    import torch
    from torchvision import transforms

    from fractaldb.machine import describe_machine
    from fractaldb.search import search_categories
    from shards.loader import make_train_loader
    from shards.onthefly import OnTheFlyDataset
    from shards.presets import Layout, load_preset
    from shards.writer import write_shards

    torch.set_num_threads(1)
    cores = args.cores
    cats = search_categories(16, "fractaldb", seed=1, workers=cores)
    settings = load_preset("fractaldb-1k").render.replace(image_size=256, points=100_000)
    per_cat = -(-args.images // len(cats))
    layout = Layout(instances_per_category=per_cat, samples_per_shard=250, format="png")
    n_images = per_cat * len(cats)
    transform = transforms.Compose(
        [transforms.RandomResizedCrop(224, antialias=True), transforms.PILToTensor()]
    )

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds"
        t0 = time.perf_counter()
        write_shards(cats, settings, layout, out, workers=cores, progress=False)
        gen_s = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in out.glob("fractaldb-*.tar"))

        def load_rate(image_mode: str | None) -> float:
            """Images/s through the real training loader, decoding to `image_mode`."""
            loader = make_train_loader(
                out, batch_size=64, num_workers=cores, transform=transform, seed=0,
                samples_per_epoch=max(2 * n_images, 3200 * cores), image_mode=image_mode,
            )  # fmt: skip
            it = iter(loader)  # worker start-up and the first batch are not timed
            next(it)
            t0, loaded = time.perf_counter(), 0
            for images, _ in it:
                loaded += images.shape[0]
            return loaded / (time.perf_counter() - t0)

        # The shards are gray: decoding them as stored (one channel) is the fast path; the
        # expansion to three channels, where a model wants it, is free on the GPU.
        load_native = load_rate(None)
        load_rgb = load_rate("RGB")

    otf = OnTheFlyDataset(
        cats, settings, per_cat, transform=transform, samples_per_epoch=10**9, image_mode=None
    )
    it = iter(otf)
    next(it)
    t0, rendered = time.perf_counter(), 0
    while time.perf_counter() - t0 < args.seconds:
        next(it)
        rendered += 1
    otf_s = time.perf_counter() - t0

    gen_rate = n_images / gen_s
    result = {
        "machine": describe_machine(),
        "cores": cores,
        "workload": "fractaldb-1k scheme, 256 px, 100k points, patch, gray, png",
        "generate_images_per_s_per_core": gen_rate / cores,
        "load_images_per_s_per_core": load_native / cores,
        "load_rgb_images_per_s_per_core": load_rgb / cores,
        "on_the_fly_images_per_s_per_worker": rendered / otf_s,
        "bytes_per_image": disk / n_images,
        "fractaldb_1k_estimate_minutes": FRACTALDB_1K_IMAGES / gen_rate / 60,
        "fractaldb_1k_estimate_gb": disk / n_images * FRACTALDB_1K_IMAGES / 1e9,
    }
    result["meets_floors"] = {k: result[k] >= v for k, v in FLOORS.items()}
    if args.json:
        print(json.dumps(result))
        return
    print(f"shards benchmark on {cores} cores ({result['machine']}); {result['workload']}")
    for k, floor in FLOORS.items():
        mark = "ok" if result["meets_floors"][k] else "BELOW FLOOR"
        print(f"  {k:38s} {result[k]:8.0f}  (floor {floor}, {mark})")
    print(f"  {'load_rgb_images_per_s_per_core':38s} {result['load_rgb_images_per_s_per_core']:8.0f}"
          "  (gray decoded to 3 channels on the CPU)")  # fmt: skip
    print(
        f"  {n_images} images, {result['bytes_per_image'] / 1e3:.1f} kB/image; FractalDB-1k "
        f"(1M images) estimate: {result['fractaldb_1k_estimate_minutes']:.1f} min, "
        f"{result['fractaldb_1k_estimate_gb']:.1f} GB on this machine"
    )


if __name__ == "__main__":
    main()
