"""Render settings: everything that, with the category set, determines every pixel."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fractaldb.core.errors import FractalDBError

MODES = ("point", "patch")
COLORS = ("gray", "color", "hue")
SCHEMES = ("fractaldb", "jitter", "none")
# the IFS samplers of `fractaldb search` (fractaldb.ifs.make_sampler)
SAMPLERS = ("fractaldb", "sigma")
# the contour samplers (fractaldb.contour_sets), drawn from the published ranges, no search
CONTOUR_SAMPLERS = ("visualatom", "rcdb")
# how the GPU renderer draws (fractaldb.gpu): exact = the CPU's pixels, fast = many chains per image
GPU_MODES = ("exact", "fast")
# where images are rendered (`render --device`, `pretrain --render-device`, auto = cuda if it can)
RENDER_DEVICES = ("cpu", "cuda")


MAX_FACTOR = 4.0  # FractalDB's widest published factors are 0.2 and 1.8
# FractalDB draws 1e5-2e5 points per image; 1e9 already takes ~5 s of a core per image
MAX_POINTS = 1_000_000_000
# categories one search may find: ten times FractalDB-10k (at 1 draw in 50 accepted, days)
MAX_CATEGORIES = 100_000


@dataclass(frozen=True)
class RenderSettings:
    """How to turn a category (an IFS) and an instance index into an image.

    `scheme` chooses how instances differ: `fractaldb` (FractalDB's parameter variants: the
    original system plus one of a..f scaled by one of `factors`, re-drawn patch masks),
    `jitter` (every coefficient times U(1 - jitter, 1 + jitter), as 1p-frac) or `none` (the
    original system only; instances differ by their point sequence and patch mask). With
    `flips`, instance i is flip i % 4 (none, up-down, left-right, both) of the same render.
    """

    image_size: int = 256
    points: int = 100_000
    mode: str = "patch"
    color: str = "gray"
    scheme: str = "fractaldb"
    factors: tuple[float, ...] = (0.8, 0.9, 1.1, 1.2)
    jitter: float = 0.1
    flips: bool = True
    seed: int = 0
    pad: float = field(default=6 / 512)

    def __post_init__(self) -> None:
        problems = []
        try:
            if isinstance(self.factors, (str, bytes)):
                raise TypeError("a string is not a list")
            object.__setattr__(self, "factors", tuple(float(f) for f in self.factors))
        except (TypeError, ValueError):
            raise FractalDBError(
                f"invalid render settings: factors must be a list of positive numbers, got "
                f"{self.factors!r}; fix: e.g. --set factors=[0.8,0.9,1.1,1.2]"
            ) from None
        if not isinstance(self.image_size, int) or not 8 <= self.image_size <= 4096:
            problems.append(f"image_size must be an integer in [8, 4096], got {self.image_size!r}")
        if not isinstance(self.points, int) or not 1 <= self.points <= MAX_POINTS:
            problems.append(
                f"points must be an integer in [1, {MAX_POINTS:,}] per image, got "
                f"{self.points!r} (fix: e.g. --points 100000)"
            )
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.color not in COLORS:
            problems.append(f"color must be one of {', '.join(COLORS)}, got {self.color!r}")
        if self.scheme not in SCHEMES:
            problems.append(f"scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        # a factor scales one IFS coefficient: NaN draws black images, a huge one near-empty ones
        if not self.factors or not all(0 < f <= MAX_FACTOR for f in self.factors):
            problems.append(
                f"factors must be finite numbers in (0, {MAX_FACTOR:g}], got "
                f"{list(self.factors)!r} (fix: e.g. --set factors=[0.8,0.9,1.1,1.2])"
            )
        if not 0 <= self.jitter < 1:
            problems.append(f"jitter must be in [0, 1), got {self.jitter!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            problems.append(f"seed must be a non-negative integer, got {self.seed!r}")
        if not 0 <= self.pad < 0.25:
            problems.append(f"pad must be a fraction in [0, 0.25), got {self.pad!r}")
        if problems:
            raise FractalDBError("invalid render settings: " + "; ".join(problems))

    @property
    def channels(self) -> int:
        """Number of image channels: 1 for gray, 3 for colour modes."""
        return 1 if self.color == "gray" else 3

    @property
    def num_variants(self) -> int:
        """Parameter variants per category in the `fractaldb` scheme (25 with four factors)."""
        return 1 + 6 * len(self.factors)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["factors"] = list(self.factors)
        return d

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Return the names of all settings."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RenderSettings:
        """Build settings from a dict, rejecting unknown keys."""
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise FractalDBError(
                f"unknown render setting(s) {', '.join(unknown)}; "
                f"known settings: {', '.join(cls.field_names())}"
            )
        return cls(**d)

    def replace(self, **overrides: Any) -> RenderSettings:
        """Return a validated copy with some settings changed."""
        return RenderSettings.from_dict({**self.to_dict(), **overrides})
