"""What a render will cost, said before it starts when it is large: bytes on disk and hours.

The figure comes from a few of the run's own images, rendered and encoded here (per image:
seconds and bytes, tar headers included). Those are measured only when a cheap bound says the
run could be large (raw pixel bytes, points at a rate no CPU core reaches), so the everyday
render pays nothing.
"""

from __future__ import annotations

import time

from fractaldb.categories import CategorySet
from fractaldb.chaos import warmup_steps
from fractaldb.render import Renderer
from fractaldb.settings import RenderSettings
from shards.encode import encode_members
from shards.presets import Layout

LARGE_BYTES = 50e9  # a render writing more is announced
LONG_SECONDS = 3600.0  # ... and one running longer
POINTS_PER_SECOND_BOUND = 1e9  # chain points per second no CPU core reaches (~2e8 measured)
SAMPLE_IMAGES = 3  # images measured at most ...
SAMPLE_SECONDS = 2.0  # ... and for about this long
TAR_BYTES_PER_MEMBER = 1024  # a 512-byte header plus the padding of the member's last block


def could_be_large(settings: RenderSettings, samples: int, workers: int) -> bool:
    """Whether `samples` images might exceed LARGE_BYTES or LONG_SECONDS (an upper bound)."""
    raw = samples * (settings.image_size**2 * settings.channels + 2 * TAR_BYTES_PER_MEMBER)
    chain_points = settings.points + 8 * warmup_steps(settings.points)
    seconds = samples * chain_points / (POINTS_PER_SECOND_BOUND * max(1, workers))
    return raw > LARGE_BYTES or seconds > LONG_SECONDS


def measure_images(
    categories: CategorySet, settings: RenderSettings, layout: Layout, cells: list[tuple[int, int]]
) -> tuple[float, float, int]:
    """Render and encode up to SAMPLE_IMAGES of `cells` on this CPU; return (seconds per
    image, bytes per image, images measured)."""
    renderer = Renderer(categories, settings)
    t0, size, n = time.perf_counter(), 0, 0
    for category, instance in cells[:SAMPLE_IMAGES]:
        members = encode_members(layout, (category, instance), renderer.render(category, instance))
        size += sum(len(data) + TAR_BYTES_PER_MEMBER for _, data in members)
        n += 1
        if time.perf_counter() - t0 > SAMPLE_SECONDS:
            break
    return (time.perf_counter() - t0) / max(n, 1), size / max(n, 1), n


def large_render_warning(
    categories: CategorySet,
    settings: RenderSettings,
    layout: Layout,
    cells: list[tuple[int, int]],
    samples: int,
    workers: int,
    device: str = "cpu",
) -> str | None:
    """One line announcing a render of `samples` images that will write more than
    LARGE_BYTES or run for more than LONG_SECONDS (measured on the first `cells`); None for
    a smaller one. On the GPU only the bytes are estimated (the CPU's time would mislead)."""
    if not cells or not could_be_large(settings, samples, workers):
        return None
    seconds, size, n = measure_images(categories, settings, layout, cells)
    total = samples * size
    hours = samples * seconds / max(1, workers) / 3600 if device == "cpu" else 0.0
    if total <= LARGE_BYTES and hours * 3600 <= LONG_SECONDS:
        return None
    took = f" and about {hours:,.1f} h on {workers} worker(s)" if hours else ""
    return (
        f"warning: this render writes {samples:,} images, about {total / 1e9:,.0f} GB{took} "
        f"(measured on {n} of them); Ctrl-C stops it (re-running resumes), or render fewer "
        "with a smaller --instances-per-category or --points"
    )
