"""Samplers of iterated function systems and the fill-rate acceptance test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fractaldb.chaos import draw_points
from fractaldb.core.errors import FractalDBError
from fractaldb.settings import SAMPLERS


@dataclass(frozen=True)
class FractalDBSampler:
    """FractalDB's sampler (Kataoka et al. 2020): N ~ U{n_min..n_max}, a..f ~ U(-r, r).

    Maps are chosen with probability proportional to |det|; there is no contractivity check,
    so systems are filtered by fill rate (and divergent ones rejected).
    """

    n_min: int = 2
    n_max: int = 7
    param_range: float = 1.0
    min_fill: float = 0.2

    def __post_init__(self) -> None:
        _check_int(self, "n_min", 1)
        _check_int(self, "n_max", 1)
        _check_number(self, "param_range", 0.0, strict=True)
        _check_number(self, "min_fill", 0.0, upper=1.0)
        if self.n_min > self.n_max:
            raise FractalDBError(
                f"sampler setting n_min={self.n_min} is larger than n_max={self.n_max}; "
                f"fix: --set n_min=N --set n_max=M with N <= M"
            )

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw one system: (maps (N, 6), probs (N,))."""
        n = int(rng.integers(self.n_min, self.n_max + 1))
        maps = rng.uniform(-self.param_range, self.param_range, size=(n, 6))
        return maps, det_probs(maps)


@dataclass(frozen=True)
class SigmaSampler:
    """Contractive sigma-factor sampler of Anderson & Farrell (WACV 2022).

    Each map is `R(theta) diag(s1, s2) R(phi) D` plus a translation in U(-1, 1), with
    0 <= s2 <= s1 <= 1 and D a random sign flip, so every map is contractive. The sigma factor
    `sum_i (s1_i + 2 s2_i)` is drawn from U[(sigma_lo + N) / 2, (sigma_hi + N) / 2] (the paper's
    band is lo=5, hi=6), or from U[sigma_min, sigma_max] when both are given (e.g. 3.5 for 1p-frac).
    """

    n_choices: tuple[int, ...] = (2, 3, 4)
    sigma_lo: float = 5.0
    sigma_hi: float = 6.0
    sigma_min: float | None = None
    sigma_max: float | None = None
    min_fill: float = 0.0

    def __post_init__(self) -> None:
        choices = self.n_choices
        if (
            isinstance(choices, (str, bytes))
            or not hasattr(choices, "__iter__")
            or not choices
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in choices)
        ):
            raise FractalDBError(
                f"sampler setting n_choices must be a list of positive integers, got "
                f"{choices!r}; fix: e.g. --set n_choices=[2,3,4]"
            )
        for name in ("sigma_lo", "sigma_hi"):
            _check_number(self, name, 0.0)
        for name in ("sigma_min", "sigma_max"):
            if getattr(self, name) is not None:
                _check_number(self, name, 0.0)
        _check_number(self, "min_fill", 0.0, upper=1.0)
        for lo, hi in (("sigma_lo", "sigma_hi"), ("sigma_min", "sigma_max")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise FractalDBError(
                    f"sampler setting {lo}={a} is larger than {hi}={b}; "
                    f"fix: --set {lo}=X --set {hi}=Y with X <= Y"
                )
        if (self.sigma_min is None) != (self.sigma_max is None):
            raise FractalDBError(
                "sampler settings sigma_min and sigma_max go together; fix: set both or neither"
            )

    def sigma_band(self, n: int) -> tuple[float, float]:
        """The interval the sigma factor of an N-map system is drawn from."""
        if self.sigma_min is not None and self.sigma_max is not None:
            lo, hi = self.sigma_min, self.sigma_max
        else:
            lo, hi = (self.sigma_lo + n) / 2, (self.sigma_hi + n) / 2
        # A sigma factor above 3N cannot be met with singular values <= 1.
        return min(lo, 3.0 * n), min(hi, 3.0 * n)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw one system: (maps (N, 6), probs (N,))."""
        n = int(rng.choice(self.n_choices))
        lo, hi = self.sigma_band(n)
        svs = sample_singular_values(n, float(rng.uniform(lo, hi)), rng)
        maps = np.empty((n, 6))
        for i, (s1, s2) in enumerate(svs):
            theta, phi = rng.uniform(0, 2 * np.pi, size=2)
            signs = rng.choice([-1.0, 1.0], size=2)
            a = rotation(theta) @ np.diag([s1, s2]) @ rotation(phi) @ np.diag(signs)
            maps[i, :4] = a.ravel()
            maps[i, 4:] = rng.uniform(-1, 1, size=2)
        return maps, det_probs(maps)


def _check_int(sampler: object, name: str, lower: int) -> None:
    """Refuse a sampler setting that is not an integer >= lower (one line naming it)."""
    value = getattr(sampler, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < lower:
        raise FractalDBError(
            f"sampler setting {name} must be an integer >= {lower}, got {value!r}; "
            f"fix: e.g. --set {name}={getattr(type(sampler), name)}"
        )


def _check_number(
    sampler: object, name: str, lower: float, upper: float | None = None, strict: bool = False
) -> None:
    """Refuse a sampler setting that is not a number in range (one line naming it)."""
    value = getattr(sampler, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > lower if strict else value >= lower)
    ok = ok and (upper is None or value <= upper)
    if not ok:
        bound = f"> {lower}" if strict else f">= {lower}"
        if upper is not None:
            bound += f" and <= {upper}"
        raise FractalDBError(
            f"sampler setting {name} must be a number {bound}, got {value!r}; "
            f"fix: e.g. --set {name}={getattr(type(sampler), name)}"
        )


def rotation(angle: float) -> np.ndarray:
    """2x2 rotation matrix."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def sample_singular_values(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Draw (s1, s2) for n maps with 0 <= s2 <= s1 <= 1 and sum(s1 + 2 s2) == alpha."""
    out = np.empty((n, 2))
    remaining = alpha
    for k in range(n):
        left = n - k - 1  # maps still to draw after this one; each adds at most 3
        lo, hi = max(0.0, remaining - 3.0 * left), min(3.0, remaining)
        c = remaining if left == 0 else float(rng.uniform(lo, hi))
        # s1 + 2 s2 = c with s2 <= s1 <= 1 and s2 >= 0  <=>  s1 in [c / 3, min(1, c)].
        s1 = float(rng.uniform(c / 3.0, min(1.0, c)))
        out[k] = s1, (c - s1) / 2.0
        remaining -= c
    return out


def det_probs(maps: np.ndarray) -> np.ndarray:
    """Map probabilities proportional to |det| (uniform if every map is singular)."""
    det = np.abs(maps[:, 0] * maps[:, 3] - maps[:, 1] * maps[:, 2])
    if det.sum() <= 0 or not np.isfinite(det.sum()):
        return np.full(len(maps), 1.0 / len(maps))
    return det / det.sum()


def make_sampler(name: str, **settings: object) -> FractalDBSampler | SigmaSampler:
    """Build a sampler by name with keyword settings."""
    if name == "fractaldb":
        return FractalDBSampler(**settings)  # type: ignore[arg-type]
    if name == "sigma":
        if isinstance(settings.get("n_choices"), list):
            settings["n_choices"] = tuple(settings["n_choices"])
        return SigmaSampler(**settings)  # type: ignore[arg-type]
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


FILL_SIZE = 512
FILL_POINTS = 100_000
FILL_PAD = 6.0


@dataclass(frozen=True)
class FillResult:
    """Outcome of the acceptance render of one candidate system."""

    fill_rate: float
    escapes: int

    @property
    def divergent(self) -> bool:
        """True if some chain left the escape box (the system has no bounded attractor)."""
        return self.escapes > 0


def measure_fill(maps: np.ndarray, probs: np.ndarray, seed: int) -> FillResult:
    """FractalDB's acceptance render: 100,000 points, one pixel each, 512x512, 6 px padding.

    FractalDB frames the fill render with the bounding box of all its points, rare far
    excursions included, so the warm-up here is as long as the render itself.
    """
    hits, escapes = draw_points(
        maps, probs, FILL_SIZE, FILL_POINTS, seed, pad=FILL_PAD, warmup=FILL_POINTS // 8
    )
    return FillResult(fill_rate=float(np.count_nonzero(hits)) / hits.size, escapes=escapes)


# The load-time boundedness check: short, but an expanding system (a map with scale 2, a
# coefficient of 1e30) leaves the escape box within a few dozen steps of its 8 chains.
BOUNDED_CHECK_STEPS = 2048


def divergent_categories(categories) -> list[int]:
    """Indices of the categories whose chaos game escapes (no bounded attractor to render)."""
    bad = []
    for index, category in enumerate(categories):
        _, escapes = draw_points(
            category.maps, category.probs, 8, 8, seed=index, warmup=BOUNDED_CHECK_STEPS
        )
        if escapes:
            bad.append(index)
    return bad
