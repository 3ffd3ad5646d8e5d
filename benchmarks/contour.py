"""Contour families (VisualAtom, RCDB): ours against a plain Python + PIL reference, side by side.

The reference is written from REFERENCE section 10's algorithm: Python's `random` for every
draw, a pure-Python `pnoise1` (the `noise` package's definition, in doubles), `math.sin` /
`math.cos` per vertex and orbit, one Pillow `ImageDraw.line` call per segment. It renders the
same category parameters as ours; what differs is the random streams, so the comparison is of
what the images measure: ink fraction, radial profile of the contours around their centre,
number of distinct gray levels. Parts (all by default):

  fidelity   statistics of both on visualatom-1k's and rcdb-1k's first categories, and both
             contact sheets side by side in benchmarks/results/contour_reference_vs_ours.png
  speed      one core at the published setting (512 px, 1,000 vertices, 200 orbits): ours, the
             reference, and the reference with its noise as one C call per vertex (what the
             original costs with the C `noise` extension: a conservative ratio), images/s
  scaling    visualatom-1k images on 1 and 2 threads (the kernels release the GIL)
  small      224 and 64 px: drawing at the target size vs rendering at 512 px and area
             downsampling (time, ink, mean level, mean difference)

    uv run python benchmarks/contour.py [--parts fidelity,speed,scaling,small] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from fractaldb.categories import CategorySet
from fractaldb.contour_kernels import PERM
from fractaldb.contour_sets import ContourCategory
from fractaldb.core.machine import describe_machine
from fractaldb.render import Renderer
from fractaldb.search import search_categories
from fractaldb.settings import RenderSettings

RESULTS = Path(__file__).resolve().parent / "results"
SHEET = RESULTS / "contour_reference_vs_ours.png"
PUBLISHED = ContourCategory(1000, 200, 2.0, 0.05, 5, 12, 1.0, (35, 35), (1.5, 1.5), (1.2, 1.2),
                            (0.0, 1.0))  # fmt: skip
HPCA_BATCHED_MS = 0.019  # hpca-uji/fdsl-gpu-pipeline: CUDA, batches of 128, per image


# ----------------------------------------------------------------------------------------
# The reference: plain Python + PIL


def _grad1(h: int, x: float) -> float:
    return -x if h & 8 else ((h & 7) + 1) * x


def _noise1(x: float, repeat: int, base: int) -> float:
    fl = math.floor(x)
    i, ii = fl % repeat, (fl % repeat + 1) % repeat
    f = x - fl
    fade = f * f * f * (f * (f * 6 - 15) + 10)
    a, b = _grad1(PERM[(i & 255) + base], f), _grad1(PERM[(ii & 255) + base], f - 1)
    return (a + fade * (b - a)) * 0.4


def pnoise1_py(
    x: float,
    octaves: int = 1,
    persistence: float = 0.5,
    lacunarity: float = 2.0,
    repeat: int = 1024,
    base: int = 0,
) -> float:
    """`noise.pnoise1` in pure Python: x rounded to float32 as `noise` takes it, then doubles
    (within a few 1e-6 of the float32 arithmetic)."""
    x = float(np.float32(x))
    if octaves == 1:
        return _noise1(x, repeat, base)
    freq, amp, peak, total = 1.0, 1.0, 0.0, 0.0
    for _ in range(octaves):
        total += _noise1(x * freq, int(repeat * freq), base) * amp
        peak += amp
        freq *= lacunarity
        amp *= persistence
    return total / peak


def reference_image(
    cat: ContourCategory, size: int, rng: random.Random, color: bool = False, noise=pnoise1_py
) -> np.ndarray:
    """One image by REFERENCE section 10's algorithm, drawn with Pillow; `noise(u)` maps a
    U(0, 10000) position to the Perlin sample."""
    scale = size / 512
    cx, cy = size * rng.uniform(*cat.centre), size * rng.uniform(*cat.centre)
    radius = rng.randint(int(cat.radius[0]), int(cat.radius[1]))
    ax, ay = rng.uniform(*cat.aspect_x), rng.uniform(*cat.aspect_y)
    q, step = cat.vertices, 2 * math.pi / cat.vertices
    xs = [math.cos(step * v) * radius * ax for v in range(q)]
    ys = [math.sin(step * v) * radius * ay for v in range(q)]
    img = Image.new("RGB" if color else "L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    eta, gain = cat.eta, cat.noise_gain
    for _ in range(cat.orbits):
        level = tuple(rng.randint(0, 255) for _ in range(3)) if color else rng.randint(0, 255)
        px = [noise(rng.uniform(0, 10000)) for _ in range(q)]
        py = [noise(rng.uniform(0, 10000)) for _ in range(q)]
        for v in range(q):
            t = step * v
            wave = 0.5 * math.sin(cat.n1 * t) + 0.5 * math.sin(cat.n2 * t) + cat.offset
            xs[v] += math.cos(t) * (eta * (1 - gain * px[v]) + wave)
            ys[v] += math.sin(t) * (eta * (1 - gain * py[v]) + wave)
        pts = [(cx + scale * x, cy + scale * y) for x, y in zip(xs, ys, strict=True)]
        for v in range(q):
            draw.line((pts[v], pts[(v + 1) % q]), fill=level, width=1)
    return np.asarray(img)


# ----------------------------------------------------------------------------------------
# What the images measure


def image_stats(img: np.ndarray, centre: tuple[float, float], rings: int = 16) -> dict:
    """Ink fraction, radial ink profile around the centre (rings out to half the size) and
    the number of distinct non-zero gray levels."""
    gray = img if img.ndim == 2 else img.max(axis=2)
    size = gray.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx + 0.5 - centre[0], yy + 0.5 - centre[1]) / (size / 2)
    ring = np.minimum((r * rings).astype(int), rings)  # the last bin: beyond half the size
    ink = gray > 0
    counts = np.bincount(ring.ravel(), minlength=rings + 1)
    profile = np.bincount(ring.ravel(), weights=ink.ravel(), minlength=rings + 1)
    return {
        "ink": float(ink.mean()),
        "profile": profile / np.maximum(counts, 1),
        "levels": int(len(np.unique(gray[ink]))),
    }


def centred(cat: ContourCategory) -> ContourCategory:
    """The category with its centre fixed in the middle (the statistics' common frame)."""
    return replace(cat, centre=(0.5, 0.5))


def compare(cats: list[ContourCategory], size: int, instances: int, seed: int = 0) -> list[dict]:
    """Per category: the mean statistics of `instances` images of each renderer (centred)."""
    rows = []
    for k, cat in enumerate(cats):
        cat = centred(cat)
        rng = random.Random(seed * 1000 + k)
        ref = [image_stats(reference_image(cat, size, rng), (size / 2, size / 2))
               for _ in range(instances)]  # fmt: skip
        renderer = Renderer(CategorySet((cat,), "visualatom"), RenderSettings(size, seed=seed))
        ours = [image_stats(renderer.render(0, i), (size / 2, size / 2))
                for i in range(instances)]  # fmt: skip
        row = {"category": k, "vertices": cat.vertices, "orbits": cat.orbits}
        for name, stats in (("reference", ref), ("ours", ours)):
            row[f"{name}_ink"] = float(np.mean([s["ink"] for s in stats]))
            row[f"{name}_levels"] = float(np.mean([s["levels"] for s in stats]))
            row[f"{name}_profile"] = np.mean([s["profile"] for s in stats], axis=0)
        a, b = row["reference_profile"], row["ours_profile"]
        row["profile_l1"] = float(np.abs(a - b).sum() / max(a.sum(), 1e-9))
        rows.append(row)
    return rows


def _tile(img: np.ndarray, tile: int) -> np.ndarray:
    rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
    return cv2.resize(rgb, (tile, tile), interpolation=cv2.INTER_AREA)


def _label(width: int, text: str, shade: int = 255) -> np.ndarray:
    bar = np.full((18, width, 3), shade, np.uint8)
    cv2.putText(bar, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def contact_sheets(
    sets: list[tuple[str, CategorySet]], per_set: int, instances: int, size: int, tile: int
) -> np.ndarray:
    """Reference (left) and ours (right), one row per category, instances across."""
    half = tile * instances
    rows = [np.concatenate([_label(half, "reference (Python + PIL)", 230),
                            _label(half, "ours (fractaldb.contour)", 230)], axis=1)]  # fmt: skip
    for name, cats in sets:
        renderer = Renderer(cats, RenderSettings(size, seed=0))
        for c in range(per_set):
            rng = random.Random(c)
            ref = [_tile(reference_image(cats[c], size, rng), tile) for _ in range(instances)]
            ours = [_tile(renderer.render(c, i), tile) for i in range(instances)]
            rows.append(_label(2 * half, f"{name} category {c}: {cats[c].summary}"))
            rows.append(np.concatenate(ref + ours, axis=1))
    return np.concatenate(rows, axis=0)


def part_fidelity(args: argparse.Namespace) -> dict[str, Any]:
    """Statistics and contact sheets on the first categories of both 1k sets."""
    va = search_categories(args.categories, "visualatom", seed=1)
    rc = search_categories(args.categories, "rcdb", seed=1)
    rows = compare(list(va.categories) + list(rc.categories), args.size, args.instances)
    sheet = contact_sheets([("visualatom-1k", va), ("rcdb-1k", rc)], min(3, args.categories),
                           4, args.size, 96)  # fmt: skip
    if args.sheet:
        RESULTS.mkdir(exist_ok=True)
        # gray images, black labels: one channel, smallest png (it is committed)
        gray = cv2.cvtColor(sheet, cv2.COLOR_RGB2GRAY)
        cv2.imwrite(str(args.sheet), gray, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    ink_ratio = [r["ours_ink"] / max(r["reference_ink"], 1e-9) for r in rows]
    return {
        "fidelity_size": args.size,
        "fidelity_categories": len(rows),
        "ink_ratio_mean": float(np.mean(ink_ratio)),
        "ink_ratio_min": float(np.min(ink_ratio)),
        "ink_ratio_max": float(np.max(ink_ratio)),
        "profile_l1_mean": float(np.mean([r["profile_l1"] for r in rows])),
        "levels_reference_mean": float(np.mean([r["reference_levels"] for r in rows])),
        "levels_ours_mean": float(np.mean([r["ours_levels"] for r in rows])),
        "sheet": str(args.sheet) if args.sheet else None,
    }


# ----------------------------------------------------------------------------------------
# Speed


def _rate(fn, minimum: int, seconds: float) -> float:
    """Calls per second of fn(i) over at least `minimum` calls and `seconds`."""
    n, t0 = 0, time.perf_counter()
    while n < minimum or time.perf_counter() - t0 < seconds:
        fn(n)
        n += 1
    return n / (time.perf_counter() - t0)


def part_speed(args: argparse.Namespace) -> dict[str, Any]:
    """One core at the published setting: ours, the reference, the reference's lower bound."""
    cats = CategorySet((args.published,), "visualatom")
    renderer = Renderer(cats, RenderSettings(args.speed_size, seed=0))
    renderer.render(0, 0)  # compile (or load the cache)
    ours = _rate(lambda i: renderer.render(0, i), 5, args.seconds)
    rng = random.Random(0)
    ref = _rate(lambda i: reference_image(args.published, args.speed_size, rng), 1, 0)
    # the original calls the C `noise` extension once per sample: a C call as cheap as one
    c_noise = _rate(lambda i: reference_image(args.published, args.speed_size, rng,
                                              noise=math.sin), 1, 0)  # fmt: skip
    return {
        "speed_setting": f"{args.speed_size} px, {args.published.vertices} vertices, "
        f"{args.published.orbits} orbits",
        "ours_images_per_s_per_core": ours,
        "ours_ms_per_image": 1e3 / ours,
        "reference_images_per_s": ref,
        "reference_c_noise_images_per_s": c_noise,
        "ratio_vs_reference": ours / ref,
        "ratio_vs_reference_c_noise": ours / c_noise,
        "ratio_vs_published_210ms": ours * 0.210,
    }


def part_scaling(args: argparse.Namespace) -> dict[str, Any]:
    """visualatom-1k images (its first categories) on 1 and 2 threads."""
    cats = search_categories(16, "visualatom", seed=1)
    renderer = Renderer(cats, RenderSettings(args.speed_size, seed=0))
    cells = [(c, i) for i in range(args.scaling_images // 16 + 1) for c in range(16)]
    cells = cells[: args.scaling_images]
    for c in range(16):
        renderer.prepared(c)
    renderer.render(0, 0)
    rates, busy = {}, {}
    for threads in (1, 2):
        t0, c0 = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda cell: renderer.render(*cell), cells))
        wall = time.perf_counter() - t0
        rates[threads], busy[threads] = len(cells) / wall, (time.process_time() - c0) / wall
    # on a shared machine the wall-clock ratio is capped by the cores other jobs leave free;
    # images per CPU-second equal on 1 and 2 threads mean nothing serialises the threads
    per_cpu = {t: rates[t] / busy[t] for t in rates}
    return {
        "scaling_images": len(cells),
        "visualatom_images_per_s_1_core": rates[1],
        "visualatom_images_per_s_2_cores": rates[2],
        "scaling_2_over_1": rates[2] / rates[1],
        "cores_busy_1_thread": busy[1],
        "cores_busy_2_threads": busy[2],
        "images_per_cpu_second_2_over_1": per_cpu[2] / per_cpu[1],
    }


def part_small(args: argparse.Namespace) -> dict[str, Any]:
    """Drawing at the target size against rendering at 512 px and area downsampling."""
    cats = search_categories(8, "visualatom", seed=1)
    big = Renderer(cats, RenderSettings(512, seed=0))
    out: dict[str, Any] = {}
    for size in (224, 64):
        small = Renderer(cats, RenderSettings(size, seed=0))
        small.render(0, 0)
        cells = [(c, i) for c in range(8) for i in range(2)]
        t0 = time.perf_counter()
        direct = [small.render(c, i) for c, i in cells]
        t1 = time.perf_counter()
        down = [cv2.resize(big.render(c, i), (size, size), interpolation=cv2.INTER_AREA)
                for c, i in cells]  # fmt: skip
        t2 = time.perf_counter()
        out[f"direct_{size}_ms"] = 1e3 * (t1 - t0) / len(cells)
        out[f"downsampled_{size}_ms"] = 1e3 * (t2 - t1) / len(cells)
        out[f"direct_{size}_ink"] = float(np.mean([(d > 0).mean() for d in direct]))
        out[f"downsampled_{size}_ink"] = float(np.mean([(d > 0).mean() for d in down]))
        out[f"direct_{size}_mean_level"] = float(np.mean(direct))
        out[f"downsampled_{size}_mean_level"] = float(np.mean(down))
        out[f"mean_abs_difference_{size}"] = float(np.mean(
            [np.abs(d.astype(int) - e.astype(int)).mean() for d, e in zip(direct, down, strict=True)]
        ))  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------
# GPU (benchmarks/gpu_suite.py's contour part)


def gpu_figures(smoke: bool, seconds: float = 3.0) -> dict[str, Any]:
    """Batched CUDA time per image at the published setting (batches of 128, as hpca-uji's
    figure, and of 8,192: one thread per image needs many), one CPU core's in the same run,
    and exact equality with the CPU."""
    from numba import cuda

    from fractaldb.gpu import render_batch, render_batch_to_host

    cat, size, batches = PUBLISHED, 512, {"small": 128, "large": 8192}
    if smoke:  # the simulator: tiny, figures meaningless
        cat, size, batches, seconds = replace(PUBLISHED, vertices=12, orbits=3), 16, {
            "small": 2, "large": 4}, 0.0  # fmt: skip
    cats = CategorySet((cat,), "visualatom")
    settings = RenderSettings(size, seed=0)
    renderer = Renderer(cats, settings)
    figures: dict[str, Any] = {
        "setting": f"{size} px, {cat.vertices} vertices, {cat.orbits} orbits",
        "hpca_uji_batched_ms": HPCA_BATCHED_MS,
    }
    start = 0
    for name, batch in batches.items():
        render_batch(renderer, [(0, i) for i in range(batch)], settings)  # compile, warm up
        cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < seconds:
            start += batch
            render_batch(renderer, [(0, start + i) for i in range(batch)], settings)
            n += batch
            cuda.synchronize()
        figures[f"{name}_batch"] = batch
        figures[f"{name}_batch_ms_per_image"] = 1e3 * (time.perf_counter() - t0) / n
    renderer.render(0, 0)
    cpu = _rate(lambda i: renderer.render(0, i), 3, 0.0 if smoke else 1.0)
    figures["cpu_ms_per_image"] = 1e3 / cpu
    sample = [(0, 10**6 + i) for i in range(4 if smoke else 16)]
    gpu = render_batch_to_host(renderer, sample, settings)
    equal = sum(np.array_equal(g, renderer.render(*c)) for g, c in zip(gpu, sample, strict=True))
    figures["images_equal_fraction"] = equal / len(sample)
    best = min(figures["small_batch_ms_per_image"], figures["large_batch_ms_per_image"])
    figures["best_ms_per_image"] = best
    figures["gpu_over_cpu_core"] = figures["cpu_ms_per_image"] / best
    figures["ratio_vs_hpca_uji"] = HPCA_BATCHED_MS / best
    return figures


# ----------------------------------------------------------------------------------------

PARTS = {"fidelity": part_fidelity, "speed": part_speed, "scaling": part_scaling,
         "small": part_small}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts")
    p.add_argument("--size", type=int, default=512, help="fidelity image size")
    p.add_argument("--categories", type=int, default=4, help="fidelity categories per family")
    p.add_argument("--instances", type=int, default=3, help="fidelity images per category")
    p.add_argument("--speed-size", type=int, default=512, help="speed and scaling image size")
    p.add_argument("--seconds", type=float, default=3.0, help="time per measured rate")
    p.add_argument("--scaling-images", type=int, default=480, help="images per scaling run")
    p.add_argument("--sheet", type=Path, default=SHEET, help="contact sheet path")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    args = p.parse_args(argv)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    bad = [s for s in args.parts if s not in PARTS]
    if bad:
        p.error(f"unknown part(s) {', '.join(bad)}; choose from {', '.join(PARTS)}")
    args.published = PUBLISHED
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen parts; one dict of figures."""
    report: dict[str, Any] = {"machine": describe_machine()}
    for name in args.parts:
        t0 = time.perf_counter()
        report.update(PARTS[name](args))
        report[f"{name}_seconds"] = time.perf_counter() - t0
    return report


def main(argv: list[str] | None = None) -> int:
    """Print the figures (a table, or one JSON line with --json)."""
    report = run(parse_args(argv))
    if "--json" in (argv if argv is not None else sys.argv[1:]):
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(
                f"  {key:36s} {value:.4g}" if isinstance(value, float) else f"  {key:36s} {value}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
