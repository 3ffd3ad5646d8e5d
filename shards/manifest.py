"""Dataset metadata: manifest.json (provenance + per-shard hashes) and timm's _info.json.

Each node records the shards it completed in its own partial manifest
(`manifest.node-R-of-K.json`, rewritten atomically after every shard), so nodes sharing a
folder never write the same file; `finalize` merges them into manifest.json and _info.json.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fractaldb.core.atomic import remove_stale_temporaries, write_bytes_atomically
from fractaldb.core.errors import FractalDBError
from shards.layout import SHARD_PREFIX, SHARD_SUFFIX, num_shards, shard_name, shard_pattern

MANIFEST = "manifest.json"
INFO = "_info.json"
CATEGORIES = "categories.json"
PARTIAL_GLOB = "manifest.node-*.json"
# 2: per-image seeds from integer hashes (fractaldb.core.seeding.hash_seed), unfiltered RLE PNGs,
#    no per-sample .json; 1: SeedSequence seeds, OpenCV's default PNG filter, .json members.
FORMAT_VERSION = 2
SPLIT = "train"


def package_version() -> str:
    """Return the installed fractaldb version."""
    try:
        return version("fractaldb")
    except PackageNotFoundError:
        return "unknown"


def dependency_versions() -> dict[str, str]:
    """Versions of the libraries the bytes depend on: NumPy (Generator streams), Numba
    (kernels) and OpenCV (its bundled zlib, libjpeg and libwebp encode the images)."""
    import cv2

    found = {"opencv": str(cv2.__version__)}
    for name in ("numpy", "numba"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "unknown"
    return {k: found[k] for k in ("numpy", "numba", "opencv")}


def canonical_json(obj: Any) -> bytes:
    """Return sorted, compact JSON bytes (the form that is hashed)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def dataset_header(
    name: str,
    categories_sha256: str,
    num_categories: int,
    settings: dict[str, Any],
    layout: dict[str, Any],
) -> dict[str, Any]:
    """Return the part of the manifest that determines every byte of every shard."""
    n = num_categories * layout["instances_per_category"]
    spec = {
        "format_version": FORMAT_VERSION,
        "categories_sha256": categories_sha256,
        "num_categories": num_categories,
        "settings": settings,
        "layout": layout,
    }
    return {
        "name": name,
        "dataset_id": hashlib.sha256(canonical_json(spec)).hexdigest(),
        **spec,
        "num_samples": n,
        "num_shards": num_shards(n, layout["samples_per_shard"]),
        "shard_pattern": shard_pattern(num_shards(n, layout["samples_per_shard"])),
    }


def partial_name(node_rank: int, num_nodes: int) -> str:
    """Return the file name of one node's partial manifest."""
    return f"manifest.node-{node_rank:05d}-of-{num_nodes:05d}.json"


def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Read a JSON object, raising a one-line error if it is unreadable."""
    # `fractaldb render` refuses a folder whose manifest it cannot read: start it afresh
    fix = f"delete the folder {str(Path(path).parent)!r} and render it again"
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise FractalDBError(f"cannot read {what} {str(path)!r} ({exc}); fix: {fix}") from None
    if not isinstance(data, dict):
        raise FractalDBError(f"{what} {str(path)!r} is not a JSON object; fix: {fix}")
    return data


def existing_records(out: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Return (headers found, shard records by file name) from manifest.json and partials."""
    headers, records = [], {}
    paths = sorted(glob.glob(str(out / PARTIAL_GLOB)))
    if (out / MANIFEST).is_file():
        paths.insert(0, str(out / MANIFEST))
    for p in paths:
        data = read_json(p, "manifest")
        headers.append(data)
        for rec in data.get("shards", []):
            records[rec["filename"]] = rec
    return headers, records


def check_same_dataset(out: Path, header: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Refuse a folder holding another dataset's shards; return its known shard records."""
    headers, records = existing_records(out)
    for h in headers:
        if h.get("dataset_id") != header["dataset_id"]:
            diff = [
                k
                for k in (
                    "format_version",
                    "categories_sha256",
                    "num_categories",
                    "settings",
                    "layout",
                )
                if h.get(k) != header[k]
            ]
            raise FractalDBError(
                f"{str(out)!r} holds shards of another dataset (different "
                f"{', '.join(diff) or 'dataset id'}); fix: choose a new --out folder or delete it"
            )
    if not headers and glob.glob(str(out / f"{SHARD_PREFIX}*{SHARD_SUFFIX}")):
        raise FractalDBError(
            f"{str(out)!r} holds {SHARD_PREFIX}*{SHARD_SUFFIX} files but no manifest, so they "
            "may belong to another dataset; fix: choose a new --out folder or delete them"
        )
    return records


def write_partial(
    out: Path, header: dict[str, Any], node_rank: int, num_nodes: int, records: list[dict]
) -> None:
    """Atomically (re)write one node's partial manifest."""
    body = {
        **header,
        "package_version": package_version(),
        "dependency_versions": dependency_versions(),
        "node": {"rank": node_rank, "num_nodes": num_nodes},
        "shards": sorted(records, key=lambda r: r["index"]),
    }
    write_bytes_atomically(
        out / partial_name(node_rank, num_nodes), json.dumps(body, indent=1).encode()
    )


def info_json(header: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the _info.json that timm's WebDataset reader (ReaderWds) reads."""
    return {
        "name": header["name"],
        "num_classes": header["num_categories"],
        "splits": {
            SPLIT: {
                "name": SPLIT,
                "num_samples": sum(r["num_samples"] for r in records),
                "filenames": [r["filename"] for r in records],
                "shard_lengths": [r["num_samples"] for r in records],
            }
        },
    }


def finalize(out: str | os.PathLike) -> dict[str, Any]:
    """Merge partial manifests into manifest.json and _info.json once every shard is done."""
    out = Path(out)
    headers, records = existing_records(out)
    if not headers:
        raise FractalDBError(
            f"{str(out)!r} holds no manifest; fix: run `fractaldb render --out {out}` first"
        )
    header = {k: headers[0][k] for k in dataset_header_keys()}
    ids = {h.get("dataset_id") for h in headers}
    if len(ids) > 1:
        raise FractalDBError(
            f"{str(out)!r} mixes manifests of different datasets; fix: delete the folder and re-render"
        )
    wanted = [shard_name(i) for i in range(header["num_shards"])]
    missing = [f for f in wanted if f not in records or not (out / f).is_file()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FractalDBError(
            f"{len(missing)} of {len(wanted)} shards are not done ({', '.join(missing[:3])}{more}); "
            f"fix: run (or re-run) every node's `fractaldb render ... --out {out}`, then finalize"
        )
    shards = [records[f] for f in wanted]
    remove_stale_temporaries(out / MANIFEST, out / INFO)  # of a finalize that was killed
    manifest = {
        **header,
        "package_version": package_version(),
        "dependency_versions": dependency_versions(),
        # Where the pixels were rendered (GPU records name their device; CPU ones do not).
        "render_devices": sorted({r.get("device", "cpu") for r in shards}),
        "shards": shards,
    }
    write_bytes_atomically(out / MANIFEST, json.dumps(manifest, indent=1).encode())
    write_bytes_atomically(out / INFO, json.dumps(info_json(header, shards), indent=1).encode())
    for p in glob.glob(str(out / PARTIAL_GLOB)):
        os.remove(p)
    return manifest


def dataset_header_keys() -> tuple[str, ...]:
    """Return the keys of a dataset header (see `dataset_header`)."""
    return (
        "format_version",
        "name",
        "dataset_id",
        "categories_sha256",
        "num_categories",
        "settings",
        "layout",
        "num_samples",
        "num_shards",
        "shard_pattern",
    )


def load_manifest(out: str | os.PathLike) -> dict[str, Any]:
    """Read a finalized manifest.json, with a one-line error if missing."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        partial = glob.glob(str(Path(out) / PARTIAL_GLOB))
        hint = (
            f"run `fractaldb shards finalize {out}` after all nodes finish"
            if partial
            else "point at a folder written by `fractaldb render`"
        )
        raise FractalDBError(f"{str(path)!r} not found; fix: {hint}")
    return read_json(path, "manifest")
