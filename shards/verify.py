"""Check shards against the manifest, and summarise a dataset."""

from __future__ import annotations

import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shards.codec import IMAGE_EXTS, decode_image
from shards.manifest import load_manifest
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
        f"package       fractaldb {m.get('package_version', '?')}",
    ]
    return "\n".join(lines)
