"""Arms: the initialisations compared and the rendered sets they pre-train on."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.transfer.budgets import FULL_AUG, Budget
from fractaldb.settings import CONTOUR_SAMPLERS


@dataclass(frozen=True)
class FractalSet:
    """A rendered pre-training set: `fractaldb search` (optionally 1p-frac perturbation classes
    of one system), then `fractaldb render`."""

    name: str
    sampler: str
    classes: int
    instances: int
    preset: str
    render_opts: tuple[str, ...]
    search_sets: tuple[str, ...] = ()
    perturb: float | None = None
    render_scale: int = 1  # render at this multiple of the budget's size (more points alike)
    categories_of: str | None = None  # reuse another set's categories file

    @property
    def contour(self) -> bool:
        """Whether it is a contour family (VisualAtom, RCDB): no IFS render settings apply."""
        return self.sampler in CONTOUR_SAMPLERS


@dataclass(frozen=True)
class Arm:
    """One initialisation to compare: how it is pre-trained and on what."""

    name: str
    kind: str  # scratch, sup or mae
    data: str = ""  # a FractalSet name, "natural" (CIFAR-10 photos) or "target" (the set itself)
    saw: str = ""  # what pre-training saw, for the table
    sets: tuple[str, ...] = ()  # extra --set of its pre-training (after the budget's)
    init: str | None = None  # the arm whose weights start this one's pre-training
    on_the_fly: bool = False  # render every image new instead of reading the rendered set
    group: str = "core"
    epochs_x: int = 1  # pre-training epochs x N (an equal-cost control of a two-stage arm)
    versus: str = ""  # an arm it is also compared with in the report (besides scratch)


# what --arms accepts besides arm names
GROUPS = ("core", "variant", "practice", "contour")


_GRAY_POINTS = ("--mode", "point", "--color", "gray")


def fractal_sets(b: Budget) -> dict[str, FractalSet]:
    """Every rendered set of a budget; all variants hold about the same number of images."""
    n = b.categories * b.instances
    few = max(2, n // 3)
    one_p = ("n_choices=[2]", "sigma_min=3.5", "sigma_max=3.5")
    out = [
        # FractalDB's fill-rate >= 0.2 systems drawn as 3x3 patches are solid blobs at 64 px
        # (nothing but a silhouette to learn); single points keep their texture
        FractalSet("fractaldb", "fractaldb", b.categories, b.instances, "quickstart",
                   _GRAY_POINTS, b.search_sets),
        FractalSet("sigma", "sigma", b.categories, b.instances, "sigma-1k", (), b.search_sets),
        FractalSet("many", "fractaldb", few, 3, "quickstart", _GRAY_POINTS, b.search_sets),
        FractalSet("ofdb", "fractaldb", n, 1, "quickstart", (*_GRAY_POINTS, "--scheme", "none"),
                   b.search_sets),
        # rendered at twice the size with FractalDB's 3x3 patch stamps, then trained at the
        # budget's size (the loader's crop resizes): against points drawn at the final size
        FractalSet("hq", "fractaldb", b.categories, b.instances, "quickstart",
                   ("--mode", "patch", "--color", "gray"), b.search_sets, render_scale=2,
                   categories_of="fractaldb"),
    ]  # fmt: skip
    for delta in (0.05, 0.1, 0.2):
        out.append(
            FractalSet(f"1p-{delta:g}", "sigma", few, 3, "quickstart",
                       (*_GRAY_POINTS, "--scheme", "none"), one_p, perturb=delta)
        )  # fmt: skip
    # the contour families at fractaldb's categories, instances and size, each drawn by its
    # preset (gray 1-px contours); the IFS search and render settings do not apply to them
    for family in CONTOUR_SAMPLERS:
        out.append(FractalSet(family, family, b.categories, b.instances, f"{family}-1k", ()))
    return {f.name: f for f in out}


def arms_of(b: Budget) -> list[Arm]:
    """Every arm, in table order: the core comparison, then the supervised variants."""
    f = fractal_sets(b)

    def seen(name: str) -> str:
        s = f[name]
        return f"{s.classes} x {s.instances} {name}"

    n = b.categories * b.instances
    core = [
        Arm("scratch", "scratch", saw="nothing"),
        Arm("fractaldb-sup", "sup", "fractaldb", seen("fractaldb")),
        Arm("sigma-sup", "sup", "sigma", seen("sigma")),
        Arm("sigma-mae", "mae", "sigma", seen("sigma")),
        Arm("natural-sup", "sup", "natural", f"{n} CIFAR-10 photos, labels"),
        Arm("natural-mae", "mae", "natural", f"{n} CIFAR-10 photos"),
        Arm("target-mae", "mae", "target", "the downstream training photos"),
    ]
    v = "variant"
    variants = [
        Arm("many-sup", "sup", "many", seen("many"), group=v),
        Arm("ofdb-sup", "sup", "ofdb", seen("ofdb"), group=v),
        *(
            Arm(f"1p-frac-{d:g}-sup", "sup", f"1p-{d:g}", f"{f[f'1p-{d:g}'].classes} "
                f"perturbations (D {d:g}) of 1 system x 3", group=v)
            for d in (0.05, 0.1, 0.2)
        ),
        Arm("full-aug-sup", "sup", "fractaldb", seen("fractaldb") + ", full augmentation",
            FULL_AUG, group=v),
        Arm("many-full-aug-sup", "sup", "many", seen("many") + ", full augmentation", FULL_AUG,
            group=v),
        Arm("on-the-fly-sup", "sup", "fractaldb",
            f"{b.categories} fractaldb categories, every image rendered new", on_the_fly=True,
            group=v),
        Arm("hq-render-sup", "sup", "hq", seen("fractaldb") + f", {2 * b.render_size} px patches "
            "downsampled", group=v),
        Arm("mae-then-sup", "sup", "fractaldb", "sigma-mae, then " + seen("fractaldb"),
            init="sigma-mae", group=v),
        Arm("sup-then-mae", "mae", "sigma", "fractaldb-sup, then MAE on " + seen("sigma"),
            init="fractaldb-sup", group=v),
    ]  # fmt: skip
    # what a user with a small photo set and no natural weights could run: does fractal
    # pre-training add to MAE on the photos themselves, at the same total steps?
    p, photos = "practice", "MAE on the downstream training photos"
    practice = [
        Arm("sigma-mae+target-mae", "mae", "target", f"sigma-mae, then {photos}",
            init="sigma-mae", group=p),
        Arm("fractaldb-sup+target-mae", "mae", "target", f"fractaldb-sup, then {photos}",
            init="fractaldb-sup", group=p),
        Arm("target-mae-long", "mae", "target", f"{photos}, twice the epochs (the steps of "
            "sigma-mae+target-mae)", group=p, epochs_x=2),
    ]  # fmt: skip
    # the contour families, as fractaldb-sup is pre-trained (and as sigma-mae for MAE):
    # compared with fractaldb-sup too, the literature's order
    c, fdb = "contour", "fractaldb-sup"
    contour = [
        Arm("visualatom-sup", "sup", "visualatom", seen("visualatom"), group=c, versus=fdb),
        Arm("rcdb-sup", "sup", "rcdb", seen("rcdb"), group=c, versus=fdb),
        Arm("visualatom-mae", "mae", "visualatom", seen("visualatom"), group=c, versus=fdb),
    ]
    return core + variants + practice + contour


def arm_names(b: Budget) -> list[str]:
    """Every arm of a budget, in table order (see arms_of)."""
    return [a.name for a in arms_of(b)]
