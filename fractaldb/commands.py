"""Renderer-side subcommands: `search` and `preview` (no torch imported)."""

from __future__ import annotations

import os
import sys
import time

import click

from fractaldb.core.errors import FractalDBError, check_writable, writing_to
from fractaldb.core.options import parse_key_values
from fractaldb.core.workers import check_workers, usable_cores
from fractaldb.settings import COLORS, CONTOUR_SAMPLERS, MAX_CATEGORIES, MODES, SAMPLERS, SCHEMES

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def run_search(
    num_categories: int, sampler: str, seed: int, workers: int, settings: dict[str, object]
):
    """Run a category search with a progress bar; return the CategorySet."""
    import dataclasses

    from tqdm import tqdm

    from fractaldb.ifs import make_sampler
    from fractaldb.search import ESTIMATE_AFTER_DRAWS, long_search_warning, search_categories

    if sampler in CONTOUR_SAMPLERS:
        from fractaldb.contour_sets import make_contour_sampler

        make_contour_sampler(sampler, **settings)  # a bad setting: one line before the bar
    try:
        if sampler not in CONTOUR_SAMPLERS:
            known = [f.name for f in dataclasses.fields(make_sampler(sampler))]
            make_sampler(sampler, **settings)
    except TypeError:
        unknown = sorted(set(settings) - set(known))
        raise FractalDBError(
            f"unknown sampler setting(s) {', '.join(unknown)} for {sampler!r}; "
            f"known: {', '.join(known)}"
        ) from None
    bar = tqdm(total=num_categories, desc="search", unit="cat", dynamic_ncols=True)
    started, judged = time.perf_counter(), []  # projected once, after the first few draws

    def progress(accepted: int, candidates: int) -> None:
        bar.update(accepted - bar.n)
        bar.set_postfix(candidates=candidates, acceptance=f"{accepted / max(candidates, 1):.1%}")
        if not judged and candidates >= ESTIMATE_AFTER_DRAWS:
            judged.append(candidates)
            seconds = time.perf_counter() - started
            warning = long_search_warning(num_categories, accepted, candidates, seconds)
            if warning is not None:
                bar.write(warning, file=sys.stderr)

    try:
        return search_categories(
            num_categories, sampler, seed, workers, progress=progress, **settings
        )
    except RuntimeError as exc:  # too few candidates accepted
        raise FractalDBError(str(exc)) from None
    finally:
        bar.close()


@click.command()
@click.option(
    "--num-categories",
    "-k",
    type=click.IntRange(1, MAX_CATEGORIES),  # a bigger search would run for days
    default=100,
    show_default=True,
)
@click.option(
    "--sampler",
    type=click.Choice(SAMPLERS + CONTOUR_SAMPLERS),
    default="fractaldb",
    show_default=True,
    help="IFS search (fractaldb, sigma) or contour family drawn from its published ranges "
    "(visualatom, rcdb).",
)
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, help="[all cores]")
@click.option(
    "--set",
    "sampler_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Sampler setting, e.g. min_fill=0.2, n_max=7, n_choices=[2,3], sigma_min=3.5; "
    "contour ranges LO:HI, e.g. orbits=1:200, vertices=200:1000, eta=0:4, frequency=0:20.",
)
@click.option(
    "--perturb",
    type=float,
    default=None,
    metavar="D",
    help="1p-frac: search one system, then write K classes, each the system with every "
    "coefficient times U(1-D, 1+D) (e.g. 0.1).",
)
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True)
def search(num_categories, sampler, seed, workers, sampler_args, perturb, out) -> None:
    """Search IFS categories and write them as a small JSON file.

    \b
    Examples:
      fractaldb search --num-categories 1000 --out fractaldb-1k.json      # FractalDB-1k
      fractaldb search -k 1000 --sampler sigma --out sigma-1k.json
      fractaldb search -k 100 --set min_fill=0.1 --set n_max=4 --out small.json
      fractaldb search -k 1000 --sampler visualatom --out visualatom-1k.json  # VisualAtom
      fractaldb search -k 1000 --sampler rcdb --set orbits=1:100 --out rcdb.json
      # 1p-frac: one 2-map system (sigma-factor 3.5), 1,000 perturbation classes
      fractaldb search -k 1000 --sampler sigma --set n_choices=[2] --set sigma_min=3.5 \\
          --set sigma_max=3.5 --perturb 0.1 --out 1p-frac.json
    The file is byte-identical for any --workers.
    """

    settings = parse_key_values(sampler_args, "--set")
    check_writable(out, "categories file")
    workers = workers or usable_cores()  # not os.cpu_count(): a Slurm job may hold 4 of 128
    check_workers(workers)
    t0 = time.perf_counter()
    if perturb is not None and sampler in CONTOUR_SAMPLERS:
        raise FractalDBError(
            f"--perturb perturbs an IFS; sampler {sampler!r} draws contour categories; fix: "
            "drop --perturb or use --sampler fractaldb/sigma"
        )
    if perturb is not None:
        from fractaldb.perturb import perturbed_copies

        base = run_search(1, sampler, seed, workers, settings)
        cats = perturbed_copies(base, num_categories, perturb, seed)
    else:
        cats = run_search(num_categories, sampler, seed, workers, settings)
    with writing_to(out, "categories file"):
        cats.save(out)
    s = cats.search_stats
    how = (
        f"drawn from {sampler}'s ranges"
        if sampler in CONTOUR_SAMPLERS
        else f"{s['candidates']} candidates: {s['rejected_fill']} below fill rate, "
        f"{s['rejected_divergent']} divergent"
    )
    click.echo(
        f"wrote {len(cats)} categories to {out} in {time.perf_counter() - t0:.1f}s ({how}); "
        f"sha256 {cats.sha256[:16]}"
    )


@click.command()
@click.option("--categories", "-c", type=click.Path(dir_okay=False), required=True)
@click.option(
    "--out", "-o", type=click.Path(dir_okay=False), default="preview.png", show_default=True
)
@click.option("--num-categories", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--first-category", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--instances", default="0,1,2,3,4,40,80,400", show_default=True)
@click.option("--image-size", type=click.IntRange(8, 4096), default=256, show_default=True)
@click.option("--points", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option("--mode", type=click.Choice(MODES), default="patch", show_default=True)
@click.option("--color", type=click.Choice(COLORS), default="gray", show_default=True)
@click.option(
    "--scheme",
    type=click.Choice(SCHEMES),
    default="fractaldb",
    show_default=True,
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--tile", type=click.IntRange(16, 1024), default=128, show_default=True)
def preview(categories, out, num_categories, first_category, instances, tile, **render) -> None:
    """Write a labelled contact sheet (categories x instances) of a category set.

    \b
    Examples:
      fractaldb preview -c categories.json -o preview.png
      fractaldb preview -c sigma.json --color hue --instances 0,1,2,3 --num-categories 16
    """
    from fractaldb.categories import load_categories
    from fractaldb.preview import contact_sheet, save_image
    from fractaldb.settings import RenderSettings

    cats = load_categories(categories)
    ext = os.path.splitext(out)[1].lower()
    if ext not in IMAGE_EXTENSIONS:  # OpenCV picks the format by the extension
        raise FractalDBError(
            f"--out {out}: {ext or 'no extension'} is not an image format; fix: end the name "
            f"in {', '.join(IMAGE_EXTENSIONS)}, e.g. --out preview.png"
        )
    check_writable(out, "preview")
    try:
        inst = [int(i) for i in instances.split(",")]
    except ValueError:
        raise FractalDBError(
            f"--instances must be comma-separated integers, got {instances!r}; fix: e.g. 0,1,2,3"
        ) from None
    if any(i < 0 for i in inst):
        raise FractalDBError(
            f"--instances {instances}: instance indices start at 0; fix: e.g. --instances 0,1,2,3"
        )
    ids = list(range(first_category, min(first_category + num_categories, len(cats))))
    if not ids:
        raise FractalDBError(
            f"--first-category {first_category} is past the {len(cats)} categories"
        )
    sheet = contact_sheet(cats, RenderSettings(**render), ids, inst, tile=tile)
    with writing_to(out, "preview"):
        save_image(out, sheet)
    click.echo(f"wrote {out} ({len(ids)} categories x {len(inst)} instances)")
