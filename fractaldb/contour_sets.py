"""Contour category parameters (VisualAtom, RCDB): their JSON form, limits and samplers.

A contour category is a handful of numbers; the ranges of what differs per instance (start
radius, ellipse aspects, centre) are stored with it, so one renderer serves both families:
VisualAtom fixes radius and aspects per category (ranges of one value), RCDB draws them per
instance. Category j of a set is a pure function of (seed, j), like an IFS search candidate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fractaldb.core.errors import FractalDBError
from fractaldb.core.seeding import TAG_SEARCH, derive_rng
from fractaldb.settings import CONTOUR_SAMPLERS

__all__ = ["CONTOUR_SAMPLERS", "ContourCategory", "ContourSampler", "make_contour_sampler"]

# Sane limits of every parameter (a file or --set value outside them is refused).
LIMITS: dict[str, tuple[float, float]] = {
    "vertices": (3, 10_000),
    "orbits": (1, 1_000),
    "eta": (0.0, 16.0),
    "offset": (0.0, 4.0),
    "radius": (0, 1_024),
    "aspect": (0.1, 10.0),
    "frequency": (0, 100),
    "centre": (0.0, 1.0),
    "vertices_mean": (1.0, 10_000.0),
    "noise_gain": (0.0, 4.0),
}
INTEGER = {"vertices", "orbits", "radius", "frequency"}


def _check(name: str, value: Any, limit: str | None = None) -> float:
    """Return value as a number if it lies within the limits of `limit` (default: name)."""
    lo, hi = LIMITS[limit or name]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and (limit or name) in INTEGER:
        ok = float(value).is_integer()
    if not ok or not lo <= value <= hi:  # NaN fails the comparison
        kind = "an integer" if (limit or name) in INTEGER else "a number"
        raise ValueError(f"{name} must be {kind} in [{lo:g}, {hi:g}], got {value!r}")
    return int(value) if (limit or name) in INTEGER else float(value)


def _number(text: str) -> float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _check_range(name: str, value: Any, limit: str | None = None) -> tuple[float, float]:
    """Parse a range given as [lo, hi] or "lo:hi" and check both ends."""
    if isinstance(value, str) and ":" in value:
        try:
            value = [_number(v) for v in value.split(":")]
        except ValueError:
            raise ValueError(f"{name} must be a range LO:HI, got {value!r}") from None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{name} must be a range LO:HI (e.g. {name}=1:200), got {value!r}")
    lo, hi = _check(name, value[0], limit), _check(name, value[1], limit)
    if lo > hi:
        raise ValueError(f"{name} range {lo:g}:{hi:g} is empty (LO > HI)")
    return lo, hi


@dataclass(frozen=True)
class ContourCategory:
    """One contour category: polygon, orbits, noise and wave, and the per-instance ranges."""

    vertices: int
    orbits: int
    eta: float  # Perlin noise strength
    offset: float  # radial offset c added per orbit
    n1: int  # sinusoid frequencies (0: none)
    n2: int
    noise_gain: float  # vertex moves by eta (1 - gain p): VisualAtom 1, RCDB 2
    radius: tuple[int, int]  # start radius range, in pixels at 512 px
    aspect_x: tuple[float, float]
    aspect_y: tuple[float, float]
    centre: tuple[float, float]  # range of the centre's coordinates, as fractions of the size

    def __post_init__(self) -> None:
        for name in ("vertices", "orbits", "eta", "offset", "noise_gain"):
            object.__setattr__(self, name, _check(name, getattr(self, name)))
        for name in ("n1", "n2"):
            object.__setattr__(self, name, _check(name, getattr(self, name), "frequency"))
        for name, limit in (("radius", None), ("aspect_x", "aspect"), ("aspect_y", "aspect")):
            object.__setattr__(self, name, _check_range(name, getattr(self, name), limit))
        object.__setattr__(self, "centre", _check_range("centre", self.centre))

    @property
    def summary(self) -> str:
        """A few words for a contact sheet's label."""
        waves = f", waves {self.n1}/{self.n2}" if self.n1 or self.n2 else ""
        return f"{self.vertices} vertices, {self.orbits} orbits, eta {self.eta:.2f}{waves}"

    def to_dict(self, index: int) -> dict[str, Any]:
        """Return the JSON form of this category."""
        d = {"index": index, **asdict(self)}
        for key in ("eta", "offset"):
            d[key] = round(d[key], 6)
        for key in ("aspect_x", "aspect_y", "centre"):
            d[key] = [round(v, 6) for v in d[key]]
        d["radius"] = list(d["radius"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContourCategory:
        """Parse and validate the JSON form of a category."""
        if "maps" in d:
            raise ValueError("it holds IFS maps, but its sampler names a contour family")
        fields = {k: v for k, v in d.items() if k != "index"}
        return cls(**fields)


@dataclass(frozen=True)
class ContourSampler:
    """The published ranges of one contour family; `sample(rng)` draws one category."""

    family: str
    vertices: tuple[float, float]
    orbits: tuple[float, float] = (1, 200)
    eta: tuple[float, float] = (0.0, 4.0)
    offset: tuple[float, float] = (0.0, 0.1)
    radius: tuple[float, float] = (10, 60)
    aspect: tuple[float, float] = (1.0, 2.0)
    frequency: tuple[float, float] = (0, 20)
    centre: tuple[float, float] = (0.0, 1.0)
    vertices_mean: float = 100.0

    def __post_init__(self) -> None:
        for name in ("vertices", "orbits", "eta", "offset", "radius", "aspect", "frequency",
                     "centre"):  # fmt: skip
            object.__setattr__(self, name, _check_range(name, getattr(self, name)))
        object.__setattr__(self, "vertices_mean", _check("vertices_mean", self.vertices_mean))
        f_lo, f_hi = self.frequency
        if self.family == "visualatom" and f_lo == f_hi != 0:
            raise ValueError(
                f"frequency range {f_lo}:{f_hi} has one non-zero value, so n1 != n2 is impossible"
            )

    def settings(self) -> dict[str, Any]:
        """Return the JSON form of the ranges (the set's sampler_settings)."""
        d = asdict(self)
        d.pop("family")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def _vertices(self, rng: np.random.Generator) -> int:
        lo, hi = self.vertices
        if self.family == "visualatom":
            return int(rng.integers(lo, hi + 1))
        # RCDB: int(Exp(mean)) kept when in [lo, hi], i.e. Exp truncated to [lo, hi + 1),
        # drawn by inverting its CDF (one draw, no rejection loop).
        u, m = rng.random(), self.vertices_mean
        x = lo - m * math.log1p(-u * -math.expm1(-(hi + 1 - lo) / m))
        return int(min(max(math.floor(x), lo), hi))

    def sample(self, rng: np.random.Generator) -> ContourCategory:
        """Draw one category from the ranges."""
        vertices = self._vertices(rng)
        orbits = int(rng.integers(self.orbits[0], self.orbits[1] + 1))
        eta = float(rng.uniform(*self.eta))
        offset = float(rng.uniform(*self.offset))
        if self.family == "rcdb":
            return ContourCategory(vertices, orbits, eta, offset, 0, 0, 2.0, self.radius,
                                   self.aspect, self.aspect, self.centre)  # fmt: skip
        radius = int(rng.integers(self.radius[0], self.radius[1] + 1))
        ax, ay = (float(rng.uniform(*self.aspect)) for _ in range(2))
        f_lo, f_hi = int(self.frequency[0]), int(self.frequency[1])
        n1 = int(rng.integers(f_lo, f_hi + 1))
        if n1 == 0:
            n2 = int(rng.integers(f_lo, f_hi + 1))
        else:  # uniform over the range without n1, as the original's redraw-until-different
            n2 = int(rng.integers(f_lo, f_hi))
            n2 += n2 >= n1
        return ContourCategory(vertices, orbits, eta, offset, n1, n2, 1.0, (radius, radius),
                               (ax, ax), (ay, ay), self.centre)  # fmt: skip


# The published ranges (REFERENCE section 10): VisualAtom's "best practice", RCDB's script.
DEFAULTS: dict[str, dict[str, Any]] = {
    "visualatom": {"vertices": (200, 1000), "radius": (10, 60), "centre": (0.0, 1.0)},
    "rcdb": {"vertices": (3, 200), "radius": (0, 100), "centre": (56 / 512, 456 / 512)},
}


def make_contour_sampler(name: str, **settings: Any) -> ContourSampler:
    """Return the sampler of a contour family with the published defaults and overrides;
    a bad setting raises a one-line FractalDBError."""
    known = [k for k in ContourSampler.__dataclass_fields__ if k != "family"]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise FractalDBError(
            f"unknown sampler setting(s) {', '.join(unknown)} for {name!r}; known: "
            f"{', '.join(known)}"
        )
    try:
        return ContourSampler(family=name, **{**DEFAULTS[name], **settings})
    except ValueError as exc:
        raise FractalDBError(
            f"--set for sampler {name!r}: {exc}; fix: a range inside those limits, e.g. "
            "--set orbits=1:200"
        ) from None


def sample_contour_categories(
    num_categories: int, sampler: str, seed: int, **settings: Any
) -> tuple[tuple[ContourCategory, ...], dict[str, Any]]:
    """Draw the categories and return them with the sampler's settings (for the JSON header)."""
    smp = make_contour_sampler(sampler, **settings)
    cats = tuple(smp.sample(derive_rng(seed, TAG_SEARCH, j)) for j in range(num_categories))
    return cats, smp.settings()
