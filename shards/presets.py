"""Named dataset presets (shards/presets.json): search settings, render settings, layout."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fractaldb.core.errors import FractalDBError
from fractaldb.settings import RenderSettings

PRESETS_FILE = Path(__file__).with_name("presets.json")
DEFAULT_PRESET = "quickstart"
FORMATS = ("png", "jpg", "webp")
SECTIONS = {"description", "search", "render", "shards"}
SEARCH_KEYS = {"num_categories", "sampler", "seed", "sampler_settings"}
LAYOUT_KEYS = {"instances_per_category", "samples_per_shard", "format", "quality"}
DEFAULT_QUALITY = {"png": 1, "jpg": 95, "webp": 101}  # png: zlib level; webp > 100: lossless
MAX_INSTANCES = 1_000_000  # per category; FractalDB renders 1,000


@dataclass(frozen=True)
class Layout:
    """How rendered images are stored: instances per category, shard size, image format."""

    instances_per_category: int
    samples_per_shard: int = 1000
    format: str = "png"
    quality: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.instances_per_category, int) or self.instances_per_category < 1:
            raise FractalDBError(
                f"instances per category must be a positive integer, got "
                f"{self.instances_per_category!r}; fix: pass --instances-per-category N (N >= 1)"
            )
        if self.instances_per_category > MAX_INSTANCES:
            raise FractalDBError(
                f"instances per category {self.instances_per_category:,} is over the limit of "
                f"{MAX_INSTANCES:,} (FractalDB renders 1,000); fix: a smaller "
                "--instances-per-category"
            )
        if not isinstance(self.samples_per_shard, int) or self.samples_per_shard < 1:
            raise FractalDBError(
                f"samples per shard must be a positive integer, got {self.samples_per_shard!r}; "
                "fix: pass --samples-per-shard N (N >= 1)"
            )
        if self.format not in FORMATS:
            raise FractalDBError(
                f"image format must be one of {', '.join(FORMATS)}, got {self.format!r}"
            )
        if self.quality is None:
            object.__setattr__(self, "quality", DEFAULT_QUALITY[self.format])
        limits = {"png": (0, 9), "jpg": (0, 100), "webp": (1, 101)}[self.format]
        if not limits[0] <= self.quality <= limits[1]:
            raise FractalDBError(
                f"quality for {self.format} must be in [{limits[0]}, {limits[1]}], "
                f"got {self.quality!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the layout as a JSON-ready dict."""
        return {
            "instances_per_category": self.instances_per_category,
            "samples_per_shard": self.samples_per_shard,
            "format": self.format,
            "quality": self.quality,
        }


@dataclass(frozen=True)
class Preset:
    """A named recipe: how to search categories, render them and lay out the shards."""

    name: str
    description: str
    search: dict[str, Any]
    render: RenderSettings
    layout: dict[str, Any] = field(default_factory=dict)


def _check_keys(where: str, got: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(got) - known)
    if unknown:
        raise FractalDBError(
            f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def all_presets() -> dict[str, dict[str, Any]]:
    """Return the raw preset table, by name."""
    return json.loads(PRESETS_FILE.read_text())


def parse_preset(name: str, raw: dict[str, Any]) -> Preset:
    """Validate one raw preset; any unknown key is an error, never ignored."""
    _check_keys(f"preset {name!r}", raw, SECTIONS)
    search = dict(raw.get("search", {}))
    _check_keys(f"preset {name!r} search", search, SEARCH_KEYS)
    layout = dict(raw.get("shards", {}))
    _check_keys(f"preset {name!r} shards", layout, LAYOUT_KEYS)
    return Preset(
        name=name,
        description=str(raw.get("description", "")),
        search=search,
        render=RenderSettings.from_dict(raw.get("render", {})),
        layout=layout,
    )


def load_preset(name_or_path: str) -> Preset:
    """Return a built-in preset by name, or a preset read from a JSON file path."""
    table = all_presets()
    if name_or_path in table:
        return parse_preset(name_or_path, table[name_or_path])
    path = Path(name_or_path)
    if name_or_path.endswith(".json") and path.is_file():
        try:
            raw = json.loads(path.read_text())
        except ValueError as exc:
            raise FractalDBError(
                f"preset file {name_or_path!r} is not valid JSON ({exc})"
            ) from None
        if not isinstance(raw, dict):
            raise FractalDBError(f"preset file {name_or_path!r} must hold a JSON object")
        return parse_preset(path.stem, raw)
    raise FractalDBError(
        f"unknown preset {name_or_path!r}; fix: use one of {', '.join(table)} "
        "or a path to a preset .json file"
    )
