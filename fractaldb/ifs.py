"""Samplers of iterated function systems and the fill-rate acceptance test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fractaldb.render import draw_points

SAMPLERS = ("fractaldb", "sigma")


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
        if "n_choices" in settings:
            settings["n_choices"] = tuple(int(n) for n in settings["n_choices"])  # type: ignore[union-attr]
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
