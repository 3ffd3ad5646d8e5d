"""Encoding rendered samples into their tar members, shared by both rendering backends of
the shard writer (shards.writer's CPU one, shards.gpu_writer's GPU one)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import cv2
import numpy as np

from shards.layout import sample_key
from shards.presets import Layout

T = TypeVar("T")
R = TypeVar("R")


def encode_params(fmt: str, quality: int) -> list[int]:
    """Return OpenCV's imencode parameters for a format and quality."""
    if fmt == "png":
        # Fractals are runs of one colour: unfiltered rows and zlib's run-length strategy
        # encode about twice as fast as OpenCV's default (SUB filter, default strategy) and
        # give smaller files on gray and hue fractals.
        return [
            cv2.IMWRITE_PNG_COMPRESSION, quality,
            cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE,
            cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
        ]  # fmt: skip
    if fmt == "jpg":
        return [cv2.IMWRITE_JPEG_QUALITY, quality]
    return [cv2.IMWRITE_WEBP_QUALITY, quality]


def encode_image(image: np.ndarray, fmt: str, quality: int) -> bytes:
    """Encode a gray or RGB uint8 image with OpenCV."""
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode("." + fmt, bgr, encode_params(fmt, quality))
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {fmt} image")
    return buf.tobytes()


def encode_members(
    layout: Layout, cell: tuple[int, int], image: np.ndarray
) -> list[tuple[str, bytes]]:
    """Encode one rendered sample (here or on the GPU) into its tar members (image, .cls)."""
    category, instance = cell
    key = sample_key(category, instance)
    return [
        (f"{key}.{layout.format}", encode_image(image, layout.format, layout.quality)),
        (f"{key}.cls", str(category).encode()),
    ]


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], pool: ThreadPoolExecutor | None, window: int
) -> Iterator[R]:
    """Map in a thread pool, yielding results in input order with at most `window` in flight."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
