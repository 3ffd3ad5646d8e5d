"""Pack an image folder (ROOT/CLASS/IMAGE) into training shards, for natural-image controls.

The same readers then serve photos and fractals: `fractaldb pretrain supervised|mae --data OUT`
trains on photos with exactly the model, resolution, steps and augmentation of a fractal run.
Which photos go in follows fine-tuning's split rule, so a control never sees the images a
downstream validation holds out: per class, sorted by path, the last `hold_out_per_class` are
left out and the first `per_class` of the rest are packed. The sample order is a seeded
permutation (classes mixed within every shard); bytes are kept as they are unless
`image_size` asks for a square resize (INTER_AREA, PNG).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fractaldb.core.atomic import write_text_atomically
from fractaldb.core.errors import FractalDBError
from shards.layout import sample_key, shard_name
from shards.manifest import INFO, SPLIT
from shards.tario import write_tar_atomically

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
PACKED = "packed.json"


def class_files(root: Path) -> tuple[list[str], list[list[Path]]]:
    """Class names (sorted sub-folders holding images) and each class's images, sorted."""
    if not root.is_dir():
        raise FractalDBError(f"{root} is not a folder; fix: pass ROOT holding CLASS/IMAGE files")
    classes, files = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(f for f in sub.iterdir() if f.suffix.lower() in PHOTO_SUFFIXES)
        if images:
            classes.append(sub.name)
            files.append(images)
    if len(classes) < 2:
        raise FractalDBError(
            f"{root} holds {len(classes)} class folder(s) with images; fix: one sub-folder per "
            "class, e.g. ROOT/cat/0001.jpg, ROOT/dog/0001.jpg"
        )
    return classes, files


def select(
    files: list[list[Path]], per_class: int | None, hold_out_per_class: int
) -> list[tuple[int, Path]]:
    """(class, path) of the packed photos: per class, the first `per_class` of those left
    after holding out the last `hold_out_per_class`."""
    picked = []
    for label, images in enumerate(files):
        kept = images[: len(images) - hold_out_per_class] if hold_out_per_class else images
        if not kept:
            raise FractalDBError(
                f"--hold-out-per-class {hold_out_per_class} leaves nothing of class {label} "
                f"({len(images)} images); fix: a smaller hold-out"
            )
        picked += [(label, p) for p in kept[:per_class]]
    return picked


def encode_photo(path: Path, image_size: int | None) -> tuple[str, bytes] | None:
    """(extension, bytes) of one photo, resized to a square PNG when asked; None if unreadable."""
    data = path.read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        return None
    if image_size is None:
        ext = path.suffix.lower().lstrip(".")
        return ("jpg" if ext == "jpeg" else ext), data
    small = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
    ok, png = cv2.imencode(".png", small)
    return "png", png.tobytes()


def pack_image_folder(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    per_class: int | None = None,
    hold_out_per_class: int = 0,
    image_size: int | None = None,
    samples_per_shard: int = 1000,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write OUT/*.tar, OUT/_info.json and OUT/packed.json; return packed.json's contents.
    `progress(done, total)` is called after each photo.

    Written into a temporary sibling and renamed, so OUT is complete or absent."""
    root, out = Path(root), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FractalDBError(f"{out} exists and is not empty; fix: another --out, or delete it")
    if per_class is not None and per_class < 1:
        raise FractalDBError(f"--per-class {per_class}; fix: 1 or more")
    if hold_out_per_class < 0:
        raise FractalDBError(f"--hold-out-per-class {hold_out_per_class}; fix: 0 or more")
    if image_size is not None and not 8 <= image_size <= 4096:
        raise FractalDBError(f"--image-size {image_size}; fix: 8 to 4096")
    classes, files = class_files(root)
    picked = select(files, per_class, hold_out_per_class)
    order = np.random.default_rng(seed).permutation(len(picked))
    tmp = out.with_name(f".{out.name}.packing-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        names, lengths, unreadable, members, index = [], [], [], [], 0
        counts = [0] * len(classes)

        def flush() -> None:
            name = shard_name(len(names))
            write_tar_atomically(tmp / name, members)
            names.append(name)
            lengths.append(len(members) // 2)
            members.clear()

        for n, i in enumerate(order):
            label, path = picked[i]
            encoded = encode_photo(path, image_size)
            if encoded is None:
                unreadable.append(str(path.relative_to(root)))
            else:
                key = sample_key(label, counts[label])
                counts[label] += 1
                members += [
                    (f"{key}.{encoded[0]}", encoded[1]),
                    (f"{key}.cls", str(label).encode()),
                ]
                index += 1
                if len(members) // 2 == samples_per_shard:
                    flush()
            if progress is not None:
                progress(n + 1, len(order))
        if members:
            flush()
        if not names:
            raise FractalDBError(f"no readable photos in {root}; fix: point at readable images")
        info = {
            "name": out.name,
            "num_classes": len(classes),
            "splits": {
                SPLIT: {
                    "name": SPLIT,
                    "num_samples": index,
                    "filenames": names,
                    "shard_lengths": lengths,
                }
            },
        }
        packed = {
            "kind": "image-folder",
            "source": str(root.resolve()),
            "classes": classes,
            "per_class": per_class,
            "hold_out_per_class": hold_out_per_class,
            "image_size": image_size,
            "seed": seed,
            "num_samples": index,
            "samples_per_class": counts,
            "unreadable": unreadable,
        }
        write_text_atomically(tmp / INFO, json.dumps(info, indent=2) + "\n")
        write_text_atomically(tmp / PACKED, json.dumps(packed, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return packed
