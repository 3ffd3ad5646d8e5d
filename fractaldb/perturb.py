"""One fractal, many classes: perturbed copies of a single system (1p-frac, ECCV 2024).

Each class is the base system with every coefficient multiplied by its own U(1 - D, 1 + D)
draw (D the perturbation size; 1p-frac finds 0.05-0.2 useful and 0.01 far too small). Copies are
drawn from a seeded generator, one per class in order, so the set is fixed by (base, D, seed);
a copy whose chaos game escapes is drawn again.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fractaldb.categories import Category, CategorySet
from fractaldb.core.errors import FractalDBError

MAX_REDRAWS = 100


def perturbed_copies(base: CategorySet, num_classes: int, delta: float, seed: int) -> CategorySet:
    """A category set of `num_classes` perturbed copies of base's first system."""
    from fractaldb.ifs import divergent_categories

    if not (np.isfinite(delta) and 0.0 < delta < 1.0):
        raise FractalDBError(f"--perturb {delta}; fix: a perturbation size in (0, 1), e.g. 0.1")
    source = base[0]
    rng = np.random.default_rng([seed, 0x1F4AC])
    copies = []
    for index in range(num_classes):
        for _ in range(MAX_REDRAWS):
            factors = rng.uniform(1.0 - delta, 1.0 + delta, size=source.maps.shape)
            copy = Category(source.maps * factors, source.probs.copy(), source.fill_rate)
            one = dataclasses.replace(base, categories=(copy,))
            if not divergent_categories(one):
                break
        else:
            raise FractalDBError(
                f"class {index}: {MAX_REDRAWS} perturbed copies in a row diverge; fix: a smaller "
                "--perturb or another base system (--seed)"
            )
        copies.append(copy)
    settings = {**base.sampler_settings, "perturb": delta, "perturb_of_sha256": base.sha256}
    return dataclasses.replace(
        base, categories=tuple(copies), sampler_settings=settings, seed=base.seed
    )
