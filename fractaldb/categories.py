"""Category sets: the small JSON file that is the dataset (parameters, not pixels)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fractaldb.contour_sets import CONTOUR_SAMPLERS, ContourCategory
from fractaldb.core.atomic import replace_atomically
from fractaldb.core.errors import FractalDBError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Category:
    """One category: an IFS of N affine maps `x' = a x + b y + e`, `y' = c x + d y + f`."""

    maps: np.ndarray  # (N, 6) float64: a, b, c, d, e, f per map
    probs: np.ndarray  # (N,) float64, sums to 1
    fill_rate: float

    @property
    def num_maps(self) -> int:
        """Number of affine maps in the system."""
        return int(self.maps.shape[0])

    @property
    def summary(self) -> str:
        """A few words for a contact sheet's label."""
        return f"{self.num_maps} maps, fill {self.fill_rate:.2f}"

    def to_dict(self, index: int) -> dict[str, Any]:
        """Return the JSON form of this category."""
        return {
            "index": index,
            "num_maps": self.num_maps,
            "fill_rate": round(float(self.fill_rate), 6),
            "probs": [float(p) for p in self.probs],
            "maps": [[float(v) for v in row] for row in self.maps],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Category:
        """Parse and validate the JSON form of a category."""
        if "maps" not in d and "vertices" in d:
            raise ValueError("it holds contour categories, but its sampler names an IFS family")
        maps = np.asarray(d["maps"], dtype=np.float64)
        probs = np.asarray(d["probs"], dtype=np.float64)
        if maps.ndim != 2 or maps.shape[1] != 6 or maps.shape[0] < 1:
            raise ValueError("maps must be a non-empty list of [a, b, c, d, e, f]")
        if probs.shape != (maps.shape[0],) or not np.all(probs >= 0) or probs.sum() <= 0:
            raise ValueError("probs must be one non-negative weight per map")
        if not (np.all(np.isfinite(maps)) and np.all(np.isfinite(probs))):
            raise ValueError("maps and probs must be finite numbers")
        return cls(maps=maps, probs=probs, fill_rate=float(d.get("fill_rate", 0.0)))


@dataclass(frozen=True)
class CategorySet:
    """An ordered list of categories with the sampler settings and seed that produced it.

    The sampler names the family: IFS categories (`Category`) or, for a contour sampler
    (visualatom, rcdb), `ContourCategory`.
    """

    categories: tuple[Category, ...] | tuple[ContourCategory, ...]
    sampler: str
    sampler_settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    search_stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.categories)

    def __getitem__(self, index: int) -> Category:
        return self.categories[index]

    @property
    def family(self) -> str:
        """The image family its renderer draws: "contour" or "ifs"."""
        return family_of(self.sampler)

    def to_json_bytes(self) -> bytes:
        """Return the canonical file contents: a header and one line per category."""
        header = {
            "format_version": FORMAT_VERSION,
            "sampler": self.sampler,
            "sampler_settings": self.sampler_settings,
            "seed": self.seed,
            "num_categories": len(self),
            "search": self.search_stats,
        }
        lines = ["{"]
        lines += [f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}," for k, v in header.items()]
        lines.append('  "categories": [')
        rows = [json.dumps(c.to_dict(i)) for i, c in enumerate(self.categories)]
        lines.append(",\n".join("    " + r for r in rows))
        lines += ["  ]", "}", ""]
        return "\n".join(lines).encode()

    @property
    def sha256(self) -> str:
        """Hex sha256 of the canonical JSON bytes (independent of the file's whitespace)."""
        return hashlib.sha256(self.to_json_bytes()).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the category set atomically."""
        replace_atomically(path, lambda tmp: tmp.write_bytes(self.to_json_bytes()))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CategorySet:
        """Build a category set from parsed JSON, validating it."""
        if not isinstance(data, dict):
            raise ValueError(
                f"it holds a JSON {type(data).__name__}, not an object with format_version, "
                "sampler and categories"
            )
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"format_version {version!r} is not supported (expected 1)")
        parse = ContourCategory if family_of(str(data["sampler"])) == "contour" else Category
        cats = tuple(parse.from_dict(c) for c in data["categories"])
        if not cats:
            raise ValueError("it holds no categories")
        return cls(
            categories=cats,
            sampler=str(data["sampler"]),
            sampler_settings=dict(data.get("sampler_settings", {})),
            seed=int(data.get("seed", 0)),
            search_stats=dict(data.get("search", {})),
        )


def family_of(sampler: str) -> str:
    """The image family of a sampler's categories: "contour" or "ifs"."""
    return "contour" if sampler in CONTOUR_SAMPLERS else "ifs"


def load_categories(path: str | os.PathLike) -> CategorySet:
    """Load a categories JSON file, raising a one-line FractalDBError if it is missing or bad."""
    path = Path(path)
    if not path.is_file():
        raise FractalDBError(
            f"categories file {str(path)!r} not found; create one with "
            "`fractaldb search --num-categories K --out categories.json`"
        )
    try:
        categories = CategorySet.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FractalDBError(
            f"categories file {str(path)!r} is malformed ({type(exc).__name__}: {exc}); "
            "regenerate it with `fractaldb search`"
        ) from None
    if categories.family == "ifs":
        refuse_divergent(categories, str(path))
    return categories


def refuse_other_family(categories: CategorySet, sampler: str, preset: str) -> None:
    """Raise a one-line error if the categories are not of the family the preset renders."""
    want = family_of(sampler)
    if categories.family != want:
        raise FractalDBError(
            f"preset {preset!r} renders {want} categories ({sampler}), but the categories "
            f"file holds {categories.family} categories ({categories.sampler}); fix: pass a "
            f"file from `fractaldb search --sampler {sampler}`, or a preset of that family"
        )


def refuse_divergent(categories: CategorySet, source: str) -> None:
    """Raise a one-line error naming the categories whose attractor is unbounded.

    Such a system renders into a near-empty image (its points fly off the frame); search
    rejects them, so they come from hand-edited or foreign files.
    """
    from fractaldb.ifs import divergent_categories

    bad = divergent_categories(categories)
    if bad:
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise FractalDBError(
            f"categories file {source!r}: {len(bad)} categor{'y' if len(bad) == 1 else 'ies'} "
            f"diverge (maps that expand, so the attractor is unbounded and renders empty): "
            f"index {shown}; fix: remove or rescale them, or regenerate the file with "
            "`fractaldb search` (which rejects divergent systems)"
        )
