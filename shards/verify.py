"""Check shards against the manifest, re-render samples to check a machine reproduces them,
and summarise a dataset."""

from __future__ import annotations

import os
import tarfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fractaldb.core.errors import FractalDBError
from shards.codec import IMAGE_EXTS, decode_image
from shards.manifest import CATEGORIES, load_manifest
from shards.tario import file_sha256


def check_shard(path: Path, record: dict[str, Any]) -> str | None:
    """Return None if the shard matches its record, else a short description of the problem."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != record["bytes"]:
        return f"size {size} != {record['bytes']}"
    if file_sha256(path) != record["sha256"]:
        return "sha256 mismatch"
    keys, image = set(), None
    try:
        with tarfile.open(path, mode="r:") as tar:
            for m in tar:
                key, _, ext = m.name.partition(".")
                keys.add(key)
                if image is None and ext in IMAGE_EXTS:
                    image = tar.extractfile(m).read()
    except (tarfile.TarError, OSError) as exc:
        return f"unreadable tar ({exc})"
    if len(keys) != record["num_samples"]:
        return f"{len(keys)} samples != {record['num_samples']}"
    if image is None:
        return "no image"
    try:
        decode_image(image, None)
    except ValueError:
        return "undecodable image"
    return None


def verify_dataset(out: str | os.PathLike, workers: int = 1) -> list[tuple[str, str]]:
    """Check every shard in the manifest; return (filename, problem) for each bad one."""
    out = Path(out)
    manifest = load_manifest(out)
    records = manifest["shards"]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = list(pool.map(lambda r: check_shard(out / r["filename"], r), records))
    return [(r["filename"], p) for r, p in zip(records, problems, strict=True) if p is not None]


@dataclass(frozen=True)
class Mismatch:
    """A stored sample that this machine does not reproduce."""

    shard: str
    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.key} in {self.shard} ({self.problem})"


def pick_positions(num_samples: int, k: int, seed: int) -> list[int]:
    """K distinct global sample positions chosen by `seed`, one in each of K equal strata, so
    they spread evenly over the shards (which hold consecutive positions)."""
    k = max(0, min(int(k), num_samples))
    if k == 0:
        return []
    edges = np.linspace(0, num_samples, k + 1)
    offsets = np.random.default_rng(seed).random(k)
    picks = np.floor(edges[:-1] + offsets * np.diff(edges)).astype(np.int64)
    return np.minimum(picks, num_samples - 1).tolist()


def _read_members(path: Path, names: set[str]) -> dict[str, bytes]:
    """The bytes of the named members of a tar shard (absent names are left out)."""
    found = {}
    with tarfile.open(path, mode="r:") as tar:
        for m in tar:
            if m.name in names:
                found[m.name] = tar.extractfile(m).read()
    return found


def compare_sample(stored: dict[str, bytes], regenerated: list[tuple[str, bytes]]) -> str | None:
    """None if the stored sample decodes to the regenerated pixels and label, else the problem."""
    (image_name, image), (label_name, label) = regenerated[0], regenerated[1]
    if image_name not in stored or label_name not in stored:
        return "missing from the shard"
    if stored[label_name] != label:
        return f"label {stored[label_name].decode(errors='replace')} != {label.decode()}"
    try:
        have = decode_image(stored[image_name], None)
    except ValueError:
        return "stored image undecodable"
    want = decode_image(image, None)
    if have.shape != want.shape:
        return f"image shape {have.shape} != {want.shape}"
    diff = np.abs(have.astype(np.int16) - want.astype(np.int16))
    if diff.any():
        return f"pixels differ: {int(np.count_nonzero(diff))} values, max |diff| {int(diff.max())}"
    return None


def regenerate_samples(
    out: str | os.PathLike, k: int, seed: int = 0, workers: int = 1, progress: bool = True
) -> tuple[int, list[Mismatch]]:
    """Re-render K samples (chosen by `seed`, spread over shards) and compare them with the
    stored ones; return (samples checked, mismatches)."""
    from tqdm import tqdm

    from fractaldb.categories import load_categories
    from fractaldb.render import Renderer
    from fractaldb.settings import RenderSettings
    from shards.layout import sample_key, shard_name
    from shards.presets import Layout
    from shards.writer import sample_members, shard_cells

    out = Path(out)
    manifest = load_manifest(out)
    categories = load_categories(out / CATEGORIES)
    if categories.sha256 != manifest["categories_sha256"]:
        raise FractalDBError(
            f"{str(out / CATEGORIES)!r} is not the category set in manifest.json; fix: restore "
            "the dataset's categories.json"
        )
    settings = RenderSettings.from_dict(manifest["settings"])
    renderer = Renderer(categories, settings)  # its per-category cache is safe to share
    layout = Layout(**manifest["layout"])
    per_shard = layout.samples_per_shard
    by_shard: dict[int, list[int]] = defaultdict(list)
    for pos in pick_positions(manifest["num_samples"], k, seed):
        by_shard[pos // per_shard].append(pos % per_shard)
    jobs = []  # (shard name, cell, stored members): each shard is read once
    for index, members in sorted(by_shard.items()):
        in_shard = shard_cells(index, len(categories), settings, layout)
        cells = [in_shard[j] for j in members]
        names = {f"{sample_key(*c)}.{ext}" for c in cells for ext in (layout.format, "cls")}
        stored = _read_members(out / shard_name(index), names)
        jobs.extend((shard_name(index), cell, stored) for cell in cells)

    def check(job: tuple[str, tuple[int, int], dict[str, bytes]]) -> Mismatch | None:
        name, cell, stored = job
        problem = compare_sample(stored, sample_members(renderer, layout, cell))
        return None if problem is None else Mismatch(name, sample_key(*cell), problem)

    bar = tqdm(total=len(jobs), unit="img", desc="regenerate", disable=not progress)
    mismatches = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for result in pool.map(check, jobs):
            bar.update(1)
            if result is not None:
                mismatches.append(result)
    bar.close()
    return len(jobs), mismatches


def summarize(out: str | os.PathLike) -> str:
    """Return a human-readable summary of a dataset folder."""
    out = Path(out)
    m = load_manifest(out)
    shards = m["shards"]
    total = sum(r["bytes"] for r in shards)
    lengths = [r["num_samples"] for r in shards]
    s, lay = m["settings"], m["layout"]
    lines = [
        f"dataset       {m['name']} ({out})",
        f"dataset id    {m['dataset_id']}",
        f"categories    {m['num_categories']} (sha256 {m['categories_sha256'][:16]}...)",
        f"instances     {lay['instances_per_category']} per category",
        f"samples       {m['num_samples']}",
        f"shards        {len(shards)} x <= {lay['samples_per_shard']} samples "
        f"({min(lengths)}..{max(lengths)}), {m['shard_pattern']}",
        f"size          {total / 1e6:.1f} MB ({total / max(1, m['num_samples']) / 1e3:.1f} kB/image)",
        f"images        {lay['format']} (quality {lay['quality']}), {s['image_size']} px, "
        f"{s['color']}, {s['mode']} mode, {s['points']} points",
        f"instances     scheme {s['scheme']}, flips {s['flips']}, seed {s['seed']}",
        f"package       fractaldb {m.get('package_version', '?')}"
        + "".join(f", {k} {v}" for k, v in m.get("dependency_versions", {}).items()),
    ]
    return "\n".join(lines)
