"""`fractaldb render` and `fractaldb shards verify|inspect|finalize` (no torch imported)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from fractaldb.core.errors import FractalDBError, writing_to
from fractaldb.core.options import parse_key_values
from fractaldb.core.workers import check_workers, usable_cores
from fractaldb.settings import COLORS, MODES, RENDER_DEVICES, SCHEMES
from shards.lock import folder_lock, lock_name
from shards.presets import DEFAULT_PRESET, FORMATS, Layout, all_presets, load_preset

CONTEXT = {"help_option_names": ["-h", "--help"]}
CORES = usable_cores()  # Slurm and containers restrict the affinity mask
# CLI option -> render setting
SETTING_OPTIONS = ("image_size", "points", "mode", "color", "scheme", "seed", "jitter", "flips")


def node_from_env(env: Mapping[str, str]) -> tuple[int, int] | None:
    """Return (num_nodes, node_rank) from Slurm's array or task variables, if present."""
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return int(env["SLURM_ARRAY_TASK_COUNT"]), int(env["SLURM_ARRAY_TASK_ID"]) - first
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"])
    return None


def resolve_settings(preset, overrides: dict[str, Any]):
    """Apply explicit options over the preset; an option with no effect under it is an error."""
    settings = preset.render.replace(**overrides)
    if "jitter" in overrides and settings.scheme != "jitter":
        raise FractalDBError(
            f"--jitter has no effect with scheme {settings.scheme!r} (preset {preset.name!r}); "
            "fix: add --scheme jitter or drop --jitter"
        )
    if "factors" in overrides and settings.scheme != "fractaldb":
        raise FractalDBError(
            f"factors have no effect with scheme {settings.scheme!r} (preset {preset.name!r}); "
            "fix: add --scheme fractaldb or drop the factors"
        )
    return settings


@click.command(context_settings=CONTEXT)
@click.option(
    "--preset",
    "preset_name",
    default=DEFAULT_PRESET,
    show_default=True,
    help=f"Named preset ({', '.join(all_presets())}) or a preset .json file.",
)
@click.option(
    "--categories",
    "categories_path",
    type=click.Path(dir_okay=False),
    help="Categories file from `fractaldb search`; omitted: run the preset's search "
    "(or reuse OUT/categories.json).",
)
@click.option("--instances-per-category", type=int, help="Images per category.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Output folder (shared by all nodes). Default: data/<preset>.",
)
@click.option("--image-size", type=int, help="Image side in pixels.")
@click.option("--points", type=int, help="Chaos-game points per image.")
@click.option("--mode", type=click.Choice(MODES), help="Point or 3x3 patch stamps.")
@click.option("--color", type=click.Choice(COLORS), help="Colouring.")
@click.option(
    "--scheme",
    type=click.Choice(SCHEMES),
    help="How instances of a category differ.",
)
@click.option("--jitter", type=float, help="Coefficient jitter D of the jitter scheme.")
@click.option("--flips/--no-flips", default=None, help="Instances in 4 flips of each render.")
@click.option("--seed", type=int, help="Render seed (instances and sample order).")
@click.option(
    "--set",
    "set_items",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other render setting, e.g. --set factors=[0.2,0.6,1.4,1.8].",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Image encoding.")
@click.option(
    "--quality", type=int, help="png: zlib level 0-9; jpg: 0-100; webp: 1-100, 101 = lossless."
)
@click.option("--samples-per-shard", type=int, help="Samples per tar shard.")
@click.option(
    "--workers",
    type=int,
    default=CORES,
    show_default=True,
    help="Render processes on this node, each writing whole shards (the output does not "
    "depend on it).",
)
@click.option(
    "--device",
    type=click.Choice(RENDER_DEVICES),
    default="cpu",
    show_default=True,
    help="Render on the CPU or on the GPU (needs fractaldb[cuda]; the same bytes).",
)
@click.option("--num-nodes", type=int, help="Nodes sharing the job (default: from Slurm, else 1).")
@click.option("--node-rank", type=int, help="This node's rank (default: from Slurm, else 0).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def render(
    preset_name: str,
    categories_path: str | None,
    instances_per_category: int | None,
    out: str | None,
    set_items: tuple[str, ...],
    fmt: str | None,
    quality: int | None,
    samples_per_shard: int | None,
    workers: int,
    device: str,
    num_nodes: int | None,
    node_rank: int | None,
    quiet: bool,
    **setting_options: Any,
) -> None:
    """Render fractal categories into WebDataset shards (byte-reproducible, resumable).

    \b
    Examples:
      fractaldb render                                  # quickstart preset: seconds
      fractaldb render --preset fractaldb-1k --categories categories.json --out data/fdb1k
      fractaldb render --categories cats.json --instances-per-category 100 \\
          --image-size 128 --points 20000 --format webp --out data/small
      sbatch --array=0-15 examples/slurm/render_array.sbatch   # 16 nodes, one folder
      fractaldb render --preset fractaldb-1k --categories cats.json --device cuda
    With --device cuda the GPU renders (exact mode: byte-identical shards) and --workers
    threads encode. Re-running the same command skips complete shards and regenerates missing
    or damaged ones; a multi-node run ends with `fractaldb shards finalize OUT` (done automatically by
    the last node to finish).
    """
    from fractaldb.categories import load_categories, refuse_other_family
    from shards.writer import write_shards

    preset = load_preset(preset_name)
    overrides = {k: v for k, v in setting_options.items() if v is not None}
    overrides.update(parse_key_values(set_items, "--set"))
    settings = resolve_settings(preset, overrides)
    layout_opts = {
        k: v
        for k, v in {
            "instances_per_category": instances_per_category,
            "samples_per_shard": samples_per_shard,
            "format": fmt,
            "quality": quality,
        }.items()
        if v is not None
    }
    if "format" in layout_opts and "quality" not in layout_opts:
        layout_opts["quality"] = None  # the preset's quality belongs to the preset's format
    layout = Layout(**{**preset.layout, **layout_opts})

    env_nodes = node_from_env(os.environ)
    if num_nodes is None:
        num_nodes = env_nodes[0] if env_nodes and node_rank is None else 1
    if node_rank is None:
        node_rank = env_nodes[1] if env_nodes and env_nodes[0] == num_nodes else 0
    if workers < 1:
        raise FractalDBError(f"--workers must be >= 1, got {workers}")
    check_workers(workers)

    if device == "cuda":
        from fractaldb.gpu import require_cuda

        require_cuda("--device cuda")  # before any search or rendering
    out_dir = Path(out) if out else Path("data") / preset.name
    categories = load_categories(categories_path) if categories_path is not None else None
    if categories is not None and preset.name != DEFAULT_PRESET:
        refuse_other_family(categories, preset.search.get("sampler", "fractaldb"), preset.name)
    then = "; then re-run the same command (it keeps the complete shards)"
    with (
        writing_to(out_dir, "shards into", then),
        folder_lock(out_dir, lock_name(node_rank, num_nodes), "fractaldb render"),
    ):
        if categories is None and (out_dir / "categories.json").is_file():
            categories = load_categories(out_dir / "categories.json")
        elif categories is None:
            categories = run_search(preset.search, workers, quiet)
        t0 = time.perf_counter()
        # a failed write (full disk...) leaves no temporary behind: the atomic writer removes it
        report = write_shards(
            categories,
            settings,
            layout,
            out_dir,
            name=preset.name,
            workers=workers,
            num_nodes=num_nodes,
            node_rank=node_rank,
            progress=not quiet,
            device=device,
            notice=lambda line: click.echo(line, err=True),
        )
        elapsed = time.perf_counter() - t0
        preview = None
        if node_rank == 0:
            preview = write_preview(out_dir, categories, settings, layout.instances_per_category)
    n = report.samples_written
    click.echo(
        f"{out_dir}: node {node_rank}/{num_nodes} wrote {report.written} shard(s), kept "
        f"{report.skipped} complete, of {report.num_shards} in {elapsed:.1f}s"
        + (f" (~{n / elapsed:.0f} images/s)" if report.written and elapsed > 0 else "")
    )
    if report.finalized:
        click.echo(f"{out_dir}: complete; manifest.json and _info.json written")
    else:
        click.echo(
            f"{out_dir}: waiting for other nodes; then run `fractaldb shards finalize {out_dir}`"
        )
    if preview is not None:
        click.echo(f"preview: {preview}")


def run_search(search: dict[str, Any], workers: int, quiet: bool):
    """Run a preset's deterministic category search."""
    from fractaldb.search import search_categories

    num = int(search.get("num_categories", 1000))
    if not quiet:
        click.echo(
            f"searching {num} categories (sampler {search.get('sampler', 'fractaldb')}, "
            f"seed {search.get('seed', 0)})",
            err=True,
        )
    return search_categories(
        num,
        sampler=search.get("sampler", "fractaldb"),
        seed=int(search.get("seed", 0)),
        workers=workers,
        **search.get("sampler_settings", {}),
    )


def write_preview(out: Path, categories, settings, instances_per_category: int) -> Path | None:
    """Write OUT/preview.png (a contact sheet) once, if the renderer provides one; its path."""
    path = out / "preview.png"
    if path.exists():
        return path
    try:
        from fractaldb.preview import contact_sheet, save_image
    except ImportError:
        return None
    from fractaldb.core.atomic import remove_stale_temporaries

    remove_stale_temporaries(path)  # of a run killed while writing it
    picks = [i for i in (0, 1, 2, 3, 4, 40, 80, 400) if i < instances_per_category]
    save_image(path, contact_sheet(categories, settings, instances=picks))
    return path


@click.group(context_settings=CONTEXT)
def shards() -> None:
    """Check, summarise and finalize a folder of shards written by `fractaldb render`.

    \b
    Examples:
      fractaldb shards verify data/fractaldb-1k
      fractaldb shards inspect data/fractaldb-1k
      fractaldb shards finalize data/fractaldb-1k   # after a multi-node render
    """


@shards.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--workers", type=int, default=CORES, show_default=True)
@click.option(
    "--regenerate",
    type=int,
    default=0,
    metavar="K",
    help="Also re-render K samples (spread over the shards) and compare their decoded pixels "
    "and labels with the stored ones: does this machine reproduce the dataset?",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Which samples --regenerate picks."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def verify(
    ctx: click.Context, folder: str, workers: int, regenerate: int, seed: int, quiet: bool
) -> None:
    """Check every shard against manifest.json: sample count, sha256, a decodable image.

    \b
    Examples:
      fractaldb shards verify data/quickstart
      fractaldb shards verify data/fractaldb-1k --regenerate 200   # re-render 200 samples
    Exits with code 2 naming the bad shards; re-running the render command that wrote the
    folder regenerates them. With --regenerate K, a re-rendered sample that differs from the
    stored one is named and the exit code is 1: this machine (its NumPy, Numba or OpenCV,
    see `fractaldb shards inspect`) does not reproduce the dataset.
    """
    from shards.manifest import load_manifest
    from shards.verify import regenerate_samples, verify_dataset

    if regenerate < 0:
        raise FractalDBError(
            f"--regenerate must be >= 0, got {regenerate}; fix: e.g. --regenerate 100"
        )
    bad = verify_dataset(folder, workers=workers)
    n = len(load_manifest(folder)["shards"])
    if bad:
        listed = ", ".join(f"{f} ({p})" for f, p in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise FractalDBError(
            f"{len(bad)} of {n} shards are bad: {listed}{more}; fix: re-run the same "
            "`fractaldb render ...` command to regenerate them"
        )
    click.echo(f"{folder}: all {n} shards OK")
    if not regenerate:
        return
    checked, mismatches = regenerate_samples(
        folder, regenerate, seed=seed, workers=workers, progress=not quiet
    )
    if mismatches:
        listed = ", ".join(str(m) for m in mismatches[:5])
        more = f" and {len(mismatches) - 5} more" if len(mismatches) > 5 else ""
        click.echo(
            f"Error: {len(mismatches)} of {checked} re-rendered samples differ from the stored "
            f"ones: {listed}{more}; this machine does not reproduce the dataset (compare its "
            "numpy/numba/opencv versions with `fractaldb shards inspect`)",
            err=True,
        )
        ctx.exit(1)
    click.echo(f"{folder}: {checked} re-rendered samples match the stored pixels and labels")


@shards.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest header as JSON.")
def inspect(folder: str, as_json: bool) -> None:
    """Summarise a dataset: size, settings, layout, provenance.

    \b
    Example:
      fractaldb shards inspect data/quickstart
    """
    from shards.manifest import load_manifest
    from shards.verify import summarize

    if as_json:
        m = load_manifest(folder)
        m["shards"] = len(m["shards"])
        click.echo(json.dumps(m, indent=1))
    else:
        click.echo(summarize(folder))


@shards.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(file_okay=False))
def finalize(folder: str) -> None:
    """Merge the nodes' partial manifests into manifest.json and _info.json.

    \b
    Example (after every node of a Slurm array finished):
      fractaldb shards finalize data/fractaldb-1k
    """
    from shards.manifest import finalize as merge

    m = merge(folder)
    click.echo(f"{folder}: {len(m['shards'])} shards, {m['num_samples']} samples finalized")


@shards.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="New folder.")
@click.option("--per-class", type=int, default=None, help="Photos per class (default all).")
@click.option(
    "--hold-out-per-class",
    type=int,
    default=0,
    show_default=True,
    help="Leave out the last N photos of each class (sorted by path), as finetune "
    "--val-per-class N holds them out.",
)
@click.option("--image-size", type=int, default=None, help="Resize to PX x PX (default: keep).")
@click.option("--samples-per-shard", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Sample order.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def pack(folder, out, per_class, hold_out_per_class, image_size, samples_per_shard, seed, quiet):
    """Pack an image folder (FOLDER/CLASS/IMAGE) into shards that pre-training reads.

    \b
    Natural-image controls train on photos with the same command as on fractals:
      fractaldb shards pack cifar10/train --per-class 320 --hold-out-per-class 500 \\
          --out data/cifar-3200
      fractaldb pretrain supervised --data data/cifar-3200 ... --out runs/natural-sup
    Photos held out for a downstream validation (--hold-out-per-class, the same rule as
    finetune --val-per-class) never enter the shards.
    """
    from tqdm import tqdm

    from shards.pack import pack_image_folder

    bars: list[Any] = []  # opened at the first photo: a refused input prints one line only

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="pack", unit="img", disable=quiet))
        bars[0].update(done - bars[0].n)

    try:
        packed = pack_image_folder(
            folder, out, per_class=per_class, hold_out_per_class=hold_out_per_class,
            image_size=image_size, samples_per_shard=samples_per_shard, seed=seed,
            progress=progress,
        )  # fmt: skip
    finally:
        for bar in bars:
            bar.close()
    skipped = len(packed["unreadable"])
    click.echo(
        f"packed {packed['num_samples']} photos of {len(packed['classes'])} classes into {out}"
        + (f" ({skipped} unreadable skipped, named in packed.json)" if skipped else "")
    )
