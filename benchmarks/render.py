"""Renderer speed on one core, against a plain reference chaos game run in the same process.

Workload: 256x256 images, 100,000 points, gray; `point` mode for points/s and images/s, and
`patch` mode images/s. The reference is the usual compiled implementation: one serial chain,
`np.random.random()` inside numba, a linear search over the cumulative probabilities for the
map choice, and the same warm-up bounding box and splat. Usage:

    uv run python benchmarks/render.py [--seconds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from numba import njit

from fractaldb.core.machine import describe_machine
from fractaldb.render import draw_points, render_instance, warmup_steps
from fractaldb.search import search_categories
from fractaldb.settings import RenderSettings


@njit(cache=True, nogil=True)
def reference_chaos_game(coef, cumprobs, n_points, seed, out, pad, warmup):
    """The usual way: one chain, np.random inside numba, linear search for the map."""
    np.random.seed(seed)
    x, y = 0.0, 0.0
    xmin, xmax, ymin, ymax = np.inf, -np.inf, np.inf, -np.inf
    n_maps = coef.shape[0]
    for i in range(32 + warmup):
        u = np.random.random()
        k = 0
        while k < n_maps - 1 and u >= cumprobs[k]:
            k += 1
        x, y = (
            coef[k, 0] * x + coef[k, 1] * y + coef[k, 4],
            coef[k, 2] * x + coef[k, 3] * y + coef[k, 5],
        )
        if i >= 32:
            xmin, xmax, ymin, ymax = min(xmin, x), max(xmax, x), min(ymin, y), max(ymax, y)
    height, width = out.shape
    sx = (width - 2 * pad) / max(xmax - xmin, 1e-12)
    sy = (height - 2 * pad) / max(ymax - ymin, 1e-12)
    for _ in range(n_points):
        u = np.random.random()
        k = 0
        while k < n_maps - 1 and u >= cumprobs[k]:
            k += 1
        x, y = (
            coef[k, 0] * x + coef[k, 1] * y + coef[k, 4],
            coef[k, 2] * x + coef[k, 3] * y + coef[k, 5],
        )
        px = (x - xmin) * sx + pad
        py = (y - ymin) * sy + pad
        if px >= 0 and px < width and py >= 0 and py < height:
            out[int(py), int(px)] = 1


def rate(fn, seconds: float) -> float:
    """Calls of fn per second over about `seconds` (after one warm-up call)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()

    size, points = 256, 100_000
    cats = search_categories(16, "fractaldb", seed=1)
    point = RenderSettings(image_size=size, points=points, mode="point", color="gray")
    patch = point.replace(mode="patch")
    counter = {"i": 0}

    def next_point_image(settings: RenderSettings):
        i = counter["i"] = counter["i"] + 1
        return render_instance(cats, i % len(cats), i % 1000, settings)

    def kernel_only():
        i = counter["i"] = counter["i"] + 1
        c = cats[i % len(cats)]
        draw_points(c.maps, c.probs, size, points, i, pad=6 / 512 * size)

    coefs = [np.ascontiguousarray(c.maps) for c in cats.categories]
    cums = [np.cumsum(c.probs) for c in cats.categories]

    def reference():
        i = counter["i"] = counter["i"] + 1
        out = np.zeros((size, size), np.uint8)
        k = i % len(cats)
        reference_chaos_game(
            coefs[k], cums[k], points, i, out, 6 / 512 * size, warmup_steps(points) * 8
        )

    kernel_rate = rate(kernel_only, args.seconds)
    ref_rate = rate(reference, args.seconds)
    result = {
        "machine": describe_machine(),
        "image_size": size,
        "points": points,
        "points_per_s": kernel_rate * points,
        "images_per_s": rate(lambda: next_point_image(point), args.seconds),
        "patch_images_per_s": rate(lambda: next_point_image(patch), args.seconds),
        "reference_points_per_s": ref_rate * points,
        "speedup": kernel_rate / ref_rate,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"renderer benchmark, one core, {size}x{size}, {points:,} points, gray ({result['machine']})"
    )
    print(f"  kernel        {result['points_per_s'] / 1e6:8.1f} M points/s")
    print(f"  point mode    {result['images_per_s']:8.0f} images/s (full render_instance)")
    print(f"  patch mode    {result['patch_images_per_s']:8.0f} images/s")
    print(f"  reference     {result['reference_points_per_s'] / 1e6:8.1f} M points/s")
    print(f"  speed-up      {result['speedup']:8.1f}x over the reference")


if __name__ == "__main__":
    main()
