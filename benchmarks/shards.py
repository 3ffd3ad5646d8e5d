"""Shard generation, shard loading and on-the-fly rendering speed, against the issue's floors.

Workloads (issue 2): generation = render + PNG encode + tar + manifest with the fractaldb-1k
instance scheme at 256x256, 100,000 points, patch, gray, on all cores (divided by cores), and
the same run with one worker: `generate_scaling` is the ratio (issue 13; worker start-up
included, so it needs enough images per worker to mean anything);
loading = read + OpenCV decode (as stored: gray stays one channel; also reported decoded to
RGB) + RandomResizedCrop 224 + tensor with one data-loader worker per core; on-the-fly = the same transform on images rendered in one worker. Usage:

    uv run python benchmarks/shards.py [--images 2000] [--generate-images 96000] [--seconds 3]
        [--generate-only] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

# This script is named like the `shards` package: keep its folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

FLOORS = {
    "generate_images_per_s_per_core": 500,
    "generate_scaling": 1.8,
    "load_images_per_s_per_core": 1500,
    "on_the_fly_images_per_s_per_worker": 400,
}
FRACTALDB_1K_IMAGES = 1_000_000


def main(argv: list[str] | None = None) -> None:
    """Run the measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images to load")
    parser.add_argument(
        "--generate-images",
        type=int,
        default=96000,
        # each worker process starts once per run (~1 s: imports, cached kernels); a real
        # dataset (1M images) amortises that, a run of a few seconds would not
        help="images to generate (per run)",
    )
    parser.add_argument("--generate-only", action="store_true", help="skip loading, on-the-fly")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3.0, help="time for on-the-fly")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)

    from fractaldb.core.machine import describe_machine
    from fractaldb.search import search_categories
    from shards.presets import Layout, load_preset
    from shards.writer import write_shards

    cores = args.cores
    cats = search_categories(16, "fractaldb", seed=1, workers=cores)
    settings = load_preset("fractaldb-1k").render.replace(
        image_size=args.image_size, points=args.points
    )
    gen_per_cat = -(-args.generate_images // len(cats))
    gen_layout = Layout(instances_per_category=gen_per_cat, samples_per_shard=250, format="png")
    gen_images = gen_per_cat * len(cats)
    per_cat = -(-args.images // len(cats))
    layout = Layout(instances_per_category=per_cat, samples_per_shard=250, format="png")
    n_images = per_cat * len(cats)

    def cpu_seconds() -> float:
        """CPU time of this process and its finished children (the worker processes)."""
        own, kids = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def generate_rate(workers: int) -> tuple[float, float, int]:
        """(images/s, CPU ms/image, bytes on disk) of a fresh run with `workers` processes."""
        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), cpu_seconds()
            write_shards(cats, settings, gen_layout, tmp, workers=workers, progress=False)
            rate = gen_images / (time.perf_counter() - t0)
            cpu_ms = (cpu_seconds() - c0) / gen_images * 1e3
            return rate, cpu_ms, sum(p.stat().st_size for p in Path(tmp).glob("fractaldb-*.tar"))

    # A warm-up run loads the compiled kernels into this process, as any real `render` has.
    with tempfile.TemporaryDirectory() as tmp:
        write_shards(cats, settings, Layout(instances_per_category=1), tmp, progress=False)
    gen_one, cpu_one, _ = generate_rate(1)
    gen_rate, cpu_all, disk = generate_rate(cores)
    result = {
        "machine": describe_machine(),
        "cores": cores,
        "workload": f"fractaldb-1k scheme, {args.image_size} px, {args.points} points, patch, "
        "gray, png",
        "generate_images": gen_images,
        "generate_images_per_s_one_worker": gen_one,
        "generate_images_per_s_per_core": gen_rate / cores,
        "generate_scaling": gen_rate / gen_one,
        # CPU time per image (worker start-up included): equal figures mean the processes
        # add no per-image work, whatever the load; the scaling needs a quiet machine.
        "generate_cpu_ms_per_image_one_worker": cpu_one,
        "generate_cpu_ms_per_image_all_cores": cpu_all,
        "bytes_per_image": disk / gen_images,
        "fractaldb_1k_estimate_minutes": FRACTALDB_1K_IMAGES / gen_rate / 60,
        "fractaldb_1k_estimate_gb": disk / gen_images * FRACTALDB_1K_IMAGES / 1e9,
    }
    if not args.generate_only:
        result.update(measure_loading(args, cats, settings, layout, n_images, cores))
    floors = {k: v for k, v in FLOORS.items() if k in result}
    result["meets_floors"] = {k: result[k] >= v for k, v in floors.items()}
    if args.json:
        print(json.dumps(result))
        return
    print(f"shards benchmark on {cores} cores ({result['machine']}); {result['workload']}")
    for k, floor in floors.items():
        mark = "ok" if result["meets_floors"][k] else "BELOW FLOOR"
        print(f"  {k:38s} {result[k]:8.2f}  (floor {floor}, {mark})")
    print(f"  {'generate_images_per_s_one_worker':38s} "
          f"{result['generate_images_per_s_one_worker']:8.0f}  ({gen_images} images per run)")  # fmt: skip
    print(f"  CPU ms/image: {cpu_one:.2f} with one worker, {cpu_all:.2f} with {cores}")
    if "load_rgb_images_per_s_per_core" in result:
        print(f"  {'load_rgb_images_per_s_per_core':38s} "
              f"{result['load_rgb_images_per_s_per_core']:8.0f}"
              "  (gray decoded to 3 channels on the CPU)")  # fmt: skip
    print(
        f"  {result['bytes_per_image'] / 1e3:.1f} kB/image; FractalDB-1k "
        f"(1M images) estimate: {result['fractaldb_1k_estimate_minutes']:.1f} min, "
        f"{result['fractaldb_1k_estimate_gb']:.1f} GB on this machine"
    )


def measure_loading(args, cats, settings, layout, n_images: int, cores: int) -> dict:
    """Loader and on-the-fly figures (images/s per core and per worker)."""
    import torch  # imported here: generation alone needs no torch
    from torchvision import transforms

    from shards.loader import make_train_loader
    from shards.onthefly import OnTheFlyDataset
    from shards.writer import write_shards

    torch.set_num_threads(1)
    per_cat = layout.instances_per_category
    transform = transforms.Compose(
        [transforms.RandomResizedCrop(224, antialias=True), transforms.PILToTensor()]
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds"
        write_shards(cats, settings, layout, out, workers=cores, progress=False)

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

    return {
        "load_images_per_s_per_core": load_native / cores,
        "load_rgb_images_per_s_per_core": load_rgb / cores,
        "on_the_fly_images_per_s_per_worker": rendered / otf_s,
    }


if __name__ == "__main__":
    main()
