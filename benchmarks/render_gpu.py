"""GPU renderer speed against the CPU renderer on every core of the same machine, and fidelity.

Workload (defaults): 256x256, 100,000 points, patch mode, gray, FractalDB instances of 64
searched categories. Figures: GPU images/s in the exact mode and the fast mode (host-side
preparation included, as in training; the preparation alone and the GPU work alone are
reported too), CPU images/s with one process per core, their ratio, the fraction of equal
pixels between GPU (exact) and CPU images on a sample, and FractalDB-1k's 1M images in
seconds at the exact rate (render only). `--train` adds on-the-fly pre-training throughput
(DeiT-Tiny supervised, MAE ViT-Base) against on-device synthetic batches, with
benchmarks/train_throughput.py's measurement. Usage (one call, well under 10 minutes):

    uv run --extra cuda python benchmarks/render_gpu.py [--json] [--train]

Without a usable CUDA GPU it prints one line and exits with code 2. Under Numba's simulator
(NUMBA_ENABLE_CUDASIM=1) it runs with tiny settings for smoke tests (figures meaningless).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

# benchmarks/shards.py is named like the `shards` package: keep this folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402

from fractaldb.categories import CategorySet  # noqa: E402
from fractaldb.core.errors import FractalDBError  # noqa: E402
from fractaldb.core.machine import describe_machine  # noqa: E402
from fractaldb.settings import RenderSettings  # noqa: E402

TRAIN_MODELS = "supervised:deit_tiny_patch16_224,mae:vit_base_patch16_224"
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def grid_cells(num_categories: int, start: int, n: int) -> list[tuple[int, int]]:
    """n (category, instance) cells, categories interleaved, instances counting up."""
    return [((start + i) % num_categories, (start + i) // num_categories) for i in range(n)]


def _cpu_render_chunk(payload: tuple[CategorySet, dict[str, Any], list[tuple[int, int]]]):
    """Worker: render cells on the CPU."""
    from fractaldb.render import render_instance

    cats, settings, cells = payload
    s = RenderSettings.from_dict(settings)
    return [render_instance(cats, c, i, s) for c, i in cells]


def cpu_render(
    pool: ProcessPoolExecutor, cats: CategorySet, settings: RenderSettings, cells: list
) -> list[np.ndarray]:
    """Render cells on every core (one chunk per core), in order."""
    chunks = [cells[k::CORES] for k in range(CORES)]
    parts = list(pool.map(_cpu_render_chunk, [(cats, settings.to_dict(), c) for c in chunks]))
    out: list[np.ndarray] = [None] * len(cells)  # type: ignore[list-item]
    for k, part in enumerate(parts):
        out[k::CORES] = part
    return out


def gpu_rate(cats: CategorySet, settings: RenderSettings, mode: str, batch: int, seconds: float):
    """images/s of render_batch (host preparation + GPU) over about `seconds`, synchronised."""
    from numba import cuda

    from fractaldb.gpu import render_batch

    render_batch(cats, grid_cells(len(cats), 0, batch), settings, mode)  # compile, warm up
    cuda.synchronize()
    n, start, t0 = 0, batch, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < seconds:
        render_batch(cats, grid_cells(len(cats), start, batch), settings, mode)
        start += batch
        n += batch
        if n % (8 * batch) == 0:
            cuda.synchronize()  # keep the clock honest: at most 8 batches in flight
    cuda.synchronize()
    return n / (time.perf_counter() - t0)


def split_rates(cats: CategorySet, settings: RenderSettings, mode: str, batch: int) -> dict:
    """The host preparation alone and the GPU work alone, images/s, on one batch."""
    from numba import cuda

    from fractaldb.gpu import prepare_batch, render_prepared

    cells = grid_cells(len(cats), 10**6, batch)
    t0 = time.perf_counter()
    prep = prepare_batch(cats, cells, settings)
    t1 = time.perf_counter()
    render_prepared(prep, settings, mode)
    cuda.synchronize()
    t2 = time.perf_counter()
    return {"host_prepare_images_per_s": batch / (t1 - t0), f"gpu_{mode}_only_images_per_s":
            batch / (t2 - t1)}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure everything; returns the JSON-able report."""
    from fractaldb.gpu import SIMULATOR, render_batch_to_host, require_cuda
    from fractaldb.search import search_categories
    from shards.gpu_writer import gpu_device_name

    require_cuda("benchmarks/render_gpu.py", alternative=None)
    cats = search_categories(args.categories, sampler="fractaldb", seed=1, workers=CORES)
    settings = RenderSettings(
        image_size=args.image_size, points=args.points, mode="patch", color="gray"
    )
    report: dict[str, Any] = {
        "gpu": gpu_device_name(),
        "simulator": SIMULATOR,
        "cpu": describe_machine(),
        "image_size": args.image_size,
        "points": args.points,
        "mode": "patch",
        "color": "gray",
        "batch": args.batch,
    }
    for mode in ("exact", "fast"):
        report[f"gpu_{mode}_images_per_s"] = gpu_rate(
            cats, settings, mode, args.batch, args.seconds
        )
        report.update(split_rates(cats, settings, mode, args.batch))
    report["gpu_images_per_s"] = report["gpu_exact_images_per_s"]

    with ProcessPoolExecutor(CORES) as pool:
        cpu_render(pool, cats, settings, grid_cells(len(cats), 0, CORES))  # JIT / cache warm-up
        n = args.cpu_images or CORES * 8
        t0 = time.perf_counter()
        cpu_render(pool, cats, settings, grid_cells(len(cats), 5_000, n))
        report["cpu_images_per_s_all_cores"] = n / (time.perf_counter() - t0)
        report["cpu_cores"] = CORES
        sample = grid_cells(len(cats), 20_000, args.sample)
        want = cpu_render(pool, cats, settings, sample)
    got: list[np.ndarray] = []
    for k in range(0, len(sample), args.batch):
        got += render_batch_to_host(cats, sample[k : k + args.batch], settings, "exact")
    equal = sum(int((g == w).sum()) for g, w in zip(got, want, strict=True))
    report["pixel_equal_fraction"] = equal / sum(w.size for w in want)
    report["images_equal"] = sum(g.tobytes() == w.tobytes() for g, w in zip(got, want, strict=True))
    report["sample_images"] = len(sample)
    report["ratio"] = report["gpu_images_per_s"] / report["cpu_images_per_s_all_cores"]
    report["fast_ratio"] = report["gpu_fast_images_per_s"] / report["cpu_images_per_s_all_cores"]
    report["fractaldb_1k_seconds"] = 1_000_000 / report["gpu_exact_images_per_s"]
    report["fractaldb_1k_seconds_fast"] = 1_000_000 / report["gpu_fast_images_per_s"]
    if args.train:
        report["train"] = onthefly_training(cats, args)
    return report


def _train_throughput_module():
    """benchmarks/train_throughput.py as a module (benchmarks/ is kept off sys.path)."""
    path = Path(__file__).with_name("train_throughput.py")
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def onthefly_training(cats: CategorySet, args: argparse.Namespace) -> list[dict[str, Any]]:
    """onthefly_gpu_images_per_s and onthefly_ratio (on-the-fly / synthetic) per model, with
    train_throughput.py's engine runs (on a GPU: compiled, bf16, 224 px)."""
    import tempfile

    tt = _train_throughput_module()
    results = []
    jobs = [tuple(job.split(":", 1)) for job in args.train_models.split(",")]
    with tempfile.TemporaryDirectory(prefix="fdb-otf-") as tmp:
        path = Path(tmp) / "categories.json"
        cats.save(path)
        for task_name, model in jobs:
            on_gpu = args.train_device.startswith("cuda")
            targs = tt.parse_args([
                "--device", args.train_device, "--img-size", str(args.train_img_size),
                "--batch-size", str(args.train_batch), "--steps", str(args.train_steps),
                "--warmup", str(args.train_warmup), "--workers", "0",
                *(["--compile"] if on_gpu else ["--amp", "none"]),
                *[a for kv in args.train_model_arg for a in ("--model-arg", kv)],
            ])  # fmt: skip
            targs.num_classes = len(cats)
            synthetic = tt.measure(task_name, model, "synthetic", targs, None)
            render = {"image_size": args.image_size, "points": args.points}
            rate = measure_onthefly(task_name, model, targs, path, render)
            results.append({
                "task": task_name,
                "model": model,
                "synthetic_images_per_s": synthetic["images_per_s"],
                "onthefly_gpu_images_per_s": rate["images_per_s"],
                "onthefly_ratio": rate["images_per_s"] / synthetic["images_per_s"],
            })  # fmt: skip
    return results


def measure_onthefly(
    task_name: str, model: str, targs: argparse.Namespace, cats_path: Path, render: dict
) -> dict[str, Any]:
    """One train_throughput.py-style engine run (warmup + steps) fed by `--on-the-fly` on the
    GPU (categories at `cats_path`, render settings `render`); its steady-state rate."""
    import contextlib
    import io
    import tempfile

    from pretrain.engine.loop import train
    from pretrain.sources import open_shards_source, resolve_onthefly

    tt = _train_throughput_module()
    if task_name == "mae":
        from pretrain.mae_task import MAETask

        task: Any = MAETask()
    else:
        from pretrain.supervised import SupervisedTask

        task = SupervisedTask()
    total = targs.warmup + targs.steps
    cfg = tt.make_config(task, targs, model, on_the_fly=str(cats_path), render_device="cuda",
                         samples_per_epoch=total * targs.batch_size, render=render)  # fmt: skip
    resolve_onthefly(cfg)
    data = open_shards_source(cfg, task.train_transform(cfg), task.eval_transform(cfg))
    with tempfile.TemporaryDirectory(prefix="fdb-otf-run-") as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            train(cfg, task, data, Path(tmp) / "run")
        rate = tt.steady_rate(Path(tmp) / "run", targs.warmup)
    return {**rate, "fallbacks": dict(cfg.get("fallbacks") or {})}


def print_report(r: dict[str, Any]) -> None:
    """Human-readable figures, with the machine beside them."""
    print(f"GPU renderer, {r['image_size']}px, {r['points']:,} points, patch, gray; "
          f"GPU {r['gpu']}; CPU {r['cpu']}")  # fmt: skip
    for mode in ("exact", "fast"):
        print(f"  GPU {mode:5s}  {r[f'gpu_{mode}_images_per_s']:10.0f} images/s "
              f"(GPU alone {r[f'gpu_{mode}_only_images_per_s']:.0f}; host preparation alone "
              f"{r['host_prepare_images_per_s']:.0f})")  # fmt: skip
    print(
        f"  CPU        {r['cpu_images_per_s_all_cores']:10.0f} images/s on {r['cpu_cores']} cores"
    )
    print(f"  ratio      {r['ratio']:10.1f}x exact, {r['fast_ratio']:.1f}x fast")
    print(f"  fidelity   {r['pixel_equal_fraction']:.6f} of pixels equal, {r['images_equal']}/"
          f"{r['sample_images']} images identical (exact mode vs CPU)")  # fmt: skip
    print(f"  FractalDB-1k (1M images, render only): {r['fractaldb_1k_seconds']:.0f} s exact, "
          f"{r['fractaldb_1k_seconds_fast']:.0f} s fast")  # fmt: skip
    for t in r.get("train", []):
        print(f"  on-the-fly {t['task']} {t['model']}: {t['onthefly_gpu_images_per_s']:.0f} "
              f"img/s vs synthetic {t['synthetic_images_per_s']:.0f} "
              f"(ratio {t['onthefly_ratio']:.3f}, goal 0.9)")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--points", type=int, default=100_000)
    p.add_argument("--categories", type=int, default=64, help="searched categories")
    p.add_argument("--batch", type=int, default=4096, help="images per GPU call")
    p.add_argument("--seconds", type=float, default=10.0, help="time per GPU measurement")
    p.add_argument("--cpu-images", type=int, default=None, help="[8 per core]")
    p.add_argument("--sample", type=int, default=1000, help="images compared pixel by pixel")
    p.add_argument("--train", action="store_true", help="also on-the-fly training throughput")
    p.add_argument("--train-batch", type=int, default=256, help="global batch (--train)")
    p.add_argument("--train-steps", type=int, default=30, help="measured steps (--train)")
    p.add_argument("--train-warmup", type=int, default=10, help="unmeasured steps (--train)")
    p.add_argument("--train-img-size", type=int, default=224, help="model input (--train)")
    p.add_argument("--train-device", default="cuda", help="training device (--train)")
    p.add_argument("--train-models", default=TRAIN_MODELS, help="TASK:MODEL,... (--train)")
    p.add_argument("--train-model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="timm model argument for --train (repeatable)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON line")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 2 with a one-line message when no CUDA GPU is usable."""
    args = parse_args(argv)
    try:
        report = run(args)
    except FractalDBError as exc:
        print(f"Error: {exc.format_message()}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
