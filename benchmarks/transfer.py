"""Does fractal pre-training beat training from scratch, and natural photos, on real photos?

Every arm is pre-trained once per budget, then measured on each `--dataset` three ways, with
the same recipe for every arm (only the init differs): fine-tuned end to end (once per
`--ft-seeds` seed; the recipe tuned for scratch on validation, long enough that scratch has
plateaued: OUT/curve-DATASET.png shows it), and on frozen features by a linear probe and a
k-NN vote (`fractaldb probe`; no schedule to tune, no seeds). The arms (`--arms` names them, or
the groups `core` and `variant`):
  scratch            random init
  fractaldb-sup      supervised on FractalDB-style categories (gray points at 64 px)
  sigma-sup          supervised on sigma-sampler (Anderson & Farrell) categories, hue colour
  sigma-mae          MAE on the same sigma set
  natural-sup        supervised on CIFAR-10 training photos: as many images and steps as the
                     fractal arms, CIFAR-10's validation photos left out (in-domain on cifar10)
  natural-mae        MAE on the same photos
  target-mae         MAE on the downstream set's own training photos (same steps)
  variants of supervised fractal pre-training at about the same image count: many-sup
  (classes / 3 x 3), ofdb-sup (one image per class), 1p-frac-D-sup (one 2-map system, D
  perturbation classes, D 0.05 / 0.1 / 0.2), full-aug-sup and many-full-aug-sup (crops from
  8 %, flips, RandAugment, mixup/cutmix, erasing), on-the-fly-sup (no image seen twice),
  hq-render-sup (rendered at twice the size with patch stamps, downsampled), mae-then-sup and
  sup-then-mae (one pre-training after the other).
`--scale N` multiplies every pre-training's epochs (same images): the compute curve.
Datasets: `cifar10` and `flowers12` (the archives in `--data-dir`, ../shared/data by default:
cifar10-train-jpg.tar.gz, flowers12-train-jpg.tar.gz), or any image folder or `.tar.gz` of
one (<class>/<image> below some folder). Each is split per class: the last `--val-per-class`
images (sorted by path) are held out for validation (cifar10 100, flowers12 15, other sets
20 % unless given); cifar10 fine-tunes on the first 100 photos per class of the rest (a
low-data transfer set that converges on a CPU). Archives are extracted to a temporary folder,
never into OUT.

The model is timm's vit_tiny_patch16_224 with patch 8, pre-trained at 64 px (64 tokens): the
cpu budget uses 4 of its 12 blocks at width 96 (3 heads), the gpu budget the full model, the
smoke budget a 1-block toy.
Fine-tuning runs at each dataset's resolution (cpu: 64 px for both sets, so CIFAR's 32 px
photos are upsampled and a token covers 4x4 photo pixels as with patch 4 at 32 px; gpu:
flowers at 112 px, position embeddings resampled from the 8x8 pre-training grid).

OUT/results-DATASET.md holds a table per dataset (mean and sample standard deviation over the
fine-tuning seeds), OUT/results.png one chart for all, OUT/summary.md budget, machine and
commands, OUT/transfer.json the figures (`--json` also prints them as one line).

Usage (re-running the same line skips finished steps and resumes interrupted runs):
    uv run python benchmarks/transfer.py --budget cpu --dataset flowers12 --ft-seeds 0 1 2 \\
        --out runs/transfer-cpu
    uv run python benchmarks/transfer.py --budget gpu --dataset cifar10 flowers12 \\
        --ft-seeds 0 1 2 --parallel-arms 4 --out runs/transfer-gpu
    uv run python benchmarks/transfer.py --budget smoke --dataset cifar10 --out /tmp/t-smoke
    uv run python benchmarks/transfer.py --budget cpu --dataset flowers12 --ft-seeds 0 \
        --arms fractaldb-sup sigma-mae natural-sup natural-mae --scale 4 --out runs/cpu-x4
`--parallel-arms N` runs up to N steps that do not depend on each other at once (each its
own process, sharing one GPU; the data-loading workers are split between them), in list
order: renders, pre-trainings, probes, then the fine-tunes (each waits for its arm's
pre-training only; scratch's start at once).
Variants of a budget, each into its own OUT: `--arms` runs only the named arms (and the steps
they need), `--sup-epochs N` pre-trains the supervised arms N epochs instead of the budget's,
`--ft-img-size PX` fine-tunes every set at PX instead of its recipe's resolution:
    uv run python benchmarks/transfer.py --budget cpu --dataset flowers12 --ft-seeds 0 1 2 \\
        --arms fractaldb-sup sigma-sup --sup-epochs 15 --out runs/transfer-cpu-sup15
    uv run python benchmarks/transfer.py --budget cpu --dataset flowers12 --ft-seeds 0 1 2 \\
        --arms scratch sigma-mae --ft-img-size 96 --out runs/transfer-cpu-96px

Nothing was tuned on anything but validation. Base: the shipped `adamw-cifar` fine-tuning
recipe (AdamW, wd 0.05, cosine, smoothing 0.1, hflip; cpu flowers12: 40 epochs at lr 2e-3,
cpu cifar10: 60 epochs of 1,000 photos at 5e-4, each chosen by a sweep for scratch, docs/results.md) and the
`deit-tiny-fractaldb` / `mae-vit-tiny-fractal` pre-training recipes, shortened to the budget:
absolute lr (the recipes' batch-scaled values are meant for hundreds of epochs), 1-2 warm-up
epochs, RandomResizedCrop from 35 % (small crops of small images leave a few pixels of
object), no mixup/cutmix (they pay off only over long schedules); cpu: no RandAugment, random
erasing or drop-path either (a few short epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:
    # run as a file: import the benchmarks package from the repository, and never this folder's
    # modules as top-level ones (benchmarks/shards.py would shadow the shards package)
    sys.path[0] = str(REPO)

from benchmarks.photos import find_image_folder, is_archive  # noqa: E402
from benchmarks.steps import Step, StepFailed, needed, run_steps, sets  # noqa: E402, F401

DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
ARCHIVES = {"cifar10": "cifar10-train-jpg.tar.gz", "flowers12": "flowers12-train-jpg.tar.gz"}
MODEL = "vit_tiny_patch16_224"
USAGE = """examples:
  uv run python benchmarks/transfer.py --budget cpu --dataset flowers12 --ft-seeds 0 1 2 \\
      --out runs/transfer-cpu
  uv run python benchmarks/transfer.py --budget gpu --dataset cifar10 flowers12 \\
      --ft-seeds 0 1 2 --parallel-arms 4 --out runs/transfer-gpu
  uv run python benchmarks/transfer.py --budget smoke --dataset photos.tar.gz --out /tmp/t
  uv run python benchmarks/transfer.py --budget cpu --dataset flowers12 --ft-seeds 0 1 2 \\
      --arms fractaldb-sup sigma-sup --sup-epochs 15 --out runs/transfer-cpu-sup15
re-running the same line skips finished steps and resumes interrupted ones"""


@dataclass(frozen=True)
class FineTune:
    """One dataset's fine-tuning recipe inside a budget, shared by every arm."""

    img_size: int
    epochs: int
    batch: int
    lr: float
    warmup: int
    sets: tuple[str, ...]
    samples_per_epoch: int | None = None
    val_per_class: int | None = None  # None: hold out 20 % of each class
    recipe: str = "adamw-cifar"
    train_per_class: int | None = None  # train on the first N of each class (None: all)


@dataclass(frozen=True)
class Budget:
    """Sizes of one budget: the pre-training of every arm and a recipe per dataset."""

    categories: int
    instances: int
    render_size: int
    points: int
    img_size: int  # pre-training resolution
    model_args: tuple[str, ...]
    samplers: tuple[str, ...]  # one rendered set and one supervised arm per sampler
    mae_sampler: str  # the set MAE pre-trains on
    device: str
    amp: str
    workers: int
    pre_epochs: int
    pre_batch: int
    pre_lr: float
    pre_warmup: int
    pre_sets: tuple[str, ...]
    mae_epochs: int
    mae_lr: float
    mae_decoder: tuple[int, int, int]  # dim, depth, heads
    finetune: dict[str, FineTune]  # "cifar10", "flowers12", and "folder" for any other set
    search_sets: tuple[str, ...] = field(default=())
    pre_samples_per_epoch: int | None = None


_LIGHT_AUG = ("auto_augment=null", "reprob=0", "mixup=0", "cutmix=0", "scale=[0.35,1.0]")
_GPU_AUG = ("mixup=0", "cutmix=0", "scale=[0.35,1.0]", "auto_augment=rand-m9-mstd0.5-inc1")
# The full augmentation stack of OFDB / 1p-frac pre-training (REFERENCE.md section 9), for the
# variant arms that test it: crops from 8 %, flips, RandAugment, mixup/cutmix, erasing
FULL_AUG = (
    "scale=[0.08,1.0]", "hflip=0.5", "auto_augment=rand-m9-mstd0.5-inc1", "mixup=0.8",
    "cutmix=1.0", "smoothing=0.1", "reprob=0.25",
)  # fmt: skip


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
    return core + variants


_SMOKE_FT = FineTune(32, 1, 16, 5e-4, 0, (*_LIGHT_AUG, "drop_path=0", "color_jitter=0"), 64)
# cifar10 at the smoke budget trains on a low-data part, as the cpu budget does
_SMOKE_CIFAR = FineTune(32, 1, 16, 5e-4, 0, _SMOKE_FT.sets, 64, train_per_class=2)
# flowers: 540 training photos; batch 32 gives 17 steps an epoch. Tuned for scratch on
# validation (60-epoch sweep, docs/results.md): AdamW lr 5e-4 / 1e-3 / 2e-3 reached 70.6 / 71.7 /
# 76.1, SGD 1e-2 65.0, RandAugment (+ mixup/cutmix) lower; scratch's curve is flat from about
# epoch 40 of 60, so 40 epochs at 2e-3
_CPU_FLOWERS = FineTune(
    64, 40, 32, 2e-3, 3, (*_LIGHT_AUG, "drop_path=0", "train_eval_samples=180"), None, 15
)
_GPU_FLOWERS = FineTune(112, 40, 64, 5e-4, 3, (*_GPU_AUG, "reprob=0.25"), None, 15)
# cifar10, low-data: 1,000 training photos (the first 100 per class; the full 45,000 do not
# converge in CPU minutes) and 1,000 validation photos (the last 100 per class). Tuned for
# scratch on validation (60-epoch sweep, docs/results.md): AdamW lr 2.5e-4 / 5e-4 / 1e-3 /
# 2e-3 / 4e-3 reached 37.5 / 40.7 / 37.6 / 34.4 / 26.4 (last epoch); lr 5e-4 is
# flat from about epoch 45 of 60 (40.7 at 45, 40.7 at 60). 60 epochs: a 40-epoch cosine run
# of the same recipe left scratch at 37.3 (3 seeds), 3.4 points short of what it reaches
_CPU_CIFAR = FineTune(
    64, 60, 32, 5e-4, 3, (*_LIGHT_AUG, "drop_path=0", "train_eval_samples=200"), None, 100,
    train_per_class=100,
)  # fmt: skip

BUDGETS: dict[str, Budget] = {
    # seconds: a 1-block toy on a few hundred images, to test the pipeline end to end
    "smoke": Budget(
        categories=4,
        instances=16,
        render_size=32,
        points=1000,
        img_size=32,
        model_args=("patch_size=8", "depth=1", "embed_dim=32", "num_heads=2"),
        samplers=("fractaldb", "sigma"),
        mae_sampler="sigma",
        device="cpu",
        amp="none",
        workers=0,
        pre_epochs=1,
        pre_batch=16,
        pre_lr=1e-3,
        pre_warmup=0,
        pre_sets=(*_LIGHT_AUG, "drop_path=0", "color_jitter=0"),
        mae_epochs=1,
        mae_lr=1e-3,
        mae_decoder=(32, 1, 2),
        finetune={
            "cifar10": _SMOKE_CIFAR,
            # a larger fine-tuning resolution: the position embeddings are resampled
            "flowers12": FineTune(48, 1, 8, 5e-4, 0, _SMOKE_FT.sets, 16, 1),
            "folder": _SMOKE_FT,
        },
        search_sets=("min_fill=0.1",),
        pre_samples_per_epoch=64,
    ),
    # 2 CPU cores, sized for flowers12 with 3 fine-tuning seeds: 32 categories x 100 images
    # per sampler (a 100-category set stayed at chance loss for the first epochs on the former
    # cifar budget), a narrow 4-block ViT (width 96, 3 heads) at 64 px / patch 8 pre-trained
    # for 5 epochs (MAE 10), then the converged recipes above (flowers 40 epochs, about 2.5
    # CPU-minutes a fine-tune; cifar10 60 epochs, about 8)
    "cpu": Budget(
        categories=32,
        instances=100,
        render_size=64,
        points=4000,
        img_size=64,
        model_args=("patch_size=8", "depth=4", "embed_dim=96", "num_heads=3"),
        samplers=("fractaldb", "sigma"),
        mae_sampler="sigma",
        device="cpu",
        amp="none",
        workers=1,
        pre_epochs=5,
        pre_batch=64,
        pre_lr=1e-3,
        pre_warmup=1,
        pre_sets=(*_LIGHT_AUG, "drop_path=0"),
        mae_epochs=10,
        mae_lr=1.5e-3,
        mae_decoder=(64, 2, 2),
        finetune={
            "cifar10": _CPU_CIFAR,
            "flowers12": _CPU_FLOWERS,
            "folder": _CPU_FLOWERS,
        },
    ),
    # aimed at one 10-minute call on one H100/H200 with --parallel-arms 4 (not yet measured):
    # 1,000 categories x 50 images per sampler, the full 12-block ViT-Tiny
    "gpu": Budget(
        categories=1000,
        instances=50,
        render_size=64,
        points=4000,
        img_size=64,
        model_args=("patch_size=8",),
        samplers=("fractaldb", "sigma"),
        mae_sampler="sigma",
        device="cuda",
        amp="bf16",
        workers=12,
        pre_epochs=10,
        pre_batch=512,
        pre_lr=1e-3,
        pre_warmup=1,
        pre_sets=("mixup=0", "cutmix=0", "scale=[0.35,1.0]"),
        mae_epochs=20,
        mae_lr=1.5e-3,
        mae_decoder=(192, 4, 6),
        finetune={
            # the cpu budget's protocol (not tuned on a GPU yet) on 5x the photos
            "cifar10": replace(_CPU_CIFAR, batch=64, train_per_class=500),
            "flowers12": _GPU_FLOWERS,
            "folder": _GPU_FLOWERS,
        },
    ),
}


def engine_args(b: Budget, img_size: int, seed: int, workers: int) -> list[str]:
    """Options shared by every pre-training and fine-tuning command."""
    out = ["--model", MODEL, "--img-size", str(img_size)]
    for a in b.model_args:
        out += ["--model-arg", a]
    out += ["--device", b.device, "--amp", b.amp, "--workers", str(workers)]
    return out + ["--seed", str(seed), "--resume", "auto"]


def arm_names(b: Budget) -> list[str]:
    """Every arm of a budget, in table order (see arms_of)."""
    return [a.name for a in arms_of(b)]


def with_variant(
    b: Budget, sup_epochs: int | None, ft_img_size: int | None, scale: int = 1
) -> Budget:
    """The budget with the supervised pre-training epochs and/or every set's fine-tuning
    resolution replaced (None keeps the budget's); `scale` multiplies every pre-training's
    epochs (the compute curve: same images, N times the steps)."""
    if scale != 1:
        b = replace(b, pre_epochs=b.pre_epochs * scale, mae_epochs=b.mae_epochs * scale)
    if sup_epochs is not None:
        b = replace(b, pre_epochs=sup_epochs)
    if ft_img_size is not None:
        recipes = {k: replace(r, img_size=ft_img_size) for k, r in b.finetune.items()}
        b = replace(b, finetune=recipes)
    return b


def variant_flags(args: argparse.Namespace) -> list[str]:
    """The command-line options that change the budget's plan, as typed."""
    flags = []
    if args.arms:
        flags += ["--arms", *args.arms]
    if args.sup_epochs is not None:
        flags += ["--sup-epochs", str(args.sup_epochs)]
    if args.ft_img_size is not None:
        flags += ["--ft-img-size", str(args.ft_img_size)]
    if args.scale != 1:
        flags += ["--scale", str(args.scale)]
    return flags


def n_images(b: Budget) -> int:
    """Images of every pre-training set (natural and target controls see as many per epoch)."""
    return b.categories * b.instances


def data_steps(b: Budget, out: Path, seed: int, need: set[str]) -> tuple[list[Step], dict]:
    """Search and render steps of the fractal sets in `need`; and {set: (shards, step, cats)}."""
    steps: list[Step] = []
    made: dict[str, tuple[Path, str, Path]] = {}
    data = out / "data"
    sets_ = fractal_sets(b)
    searched: dict[str, tuple[Path, str]] = {}
    wanted = [n for n in sets_ if n in need]
    for name in dict.fromkeys(sets_[n].categories_of or n for n in wanted):
        f = sets_[name]
        cats = data / f"{name}-{f.classes}.json"
        search = ["search", "-k", str(f.classes), "--sampler", f.sampler, "--seed", "1"]
        if f.perturb is not None:
            search += ["--perturb", f"{f.perturb:g}"]
        search += [*sets(f.search_sets), "--out", str(cats)]
        steps.append(Step(f"search-{name}", search, cats))
        searched[name] = (cats, f"search-{name}")
    for name in wanted:
        f = sets_[name]
        cats, search_step = searched[f.categories_of or name]
        size, points = b.render_size * f.render_scale, b.points * f.render_scale**2
        shards = data / f"{name}-{f.classes}x{f.instances}-{size}px"
        render = ["render", "--preset", f.preset, "--categories", str(cats)]
        render += ["--instances-per-category", str(f.instances), "--image-size", str(size)]
        render += ["--points", str(points), *f.render_opts, "--seed", str(seed), "--quiet"]
        steps.append(
            Step(f"render-{name}", render + ["--out", str(shards)], shards / "manifest.json",
                 (search_step,))
        )  # fmt: skip
        made[name] = (shards, f"render-{name}", cats)
    for name in need - set(made):  # on the fly: the categories only
        if name in searched:
            made[name] = (Path(), searched[name][1], searched[name][0])
    return steps, made


def root_arg(ds: Downstream) -> str:
    """The extracted class folder, or a placeholder until it is extracted (plans are made
    twice: first to learn what still needs the photos)."""
    return str(ds.root) if ds.root else f"<{ds.name} images>"


def photo_pack_step(
    name: str, ds: Downstream, out: Path, per_class: int | None
) -> tuple[Step, Path]:
    """`fractaldb shards pack` of a photo set, leaving out its validation photos (the
    fine-tuning split's rule: the last N of each class)."""
    shards = out / "data" / name
    hold_out = ds.val_per_class or 0
    args = ["shards", "pack", root_arg(ds), "--out", str(shards)]
    if per_class is not None:
        args += ["--per-class", str(per_class)]
    args += ["--hold-out-per-class", str(hold_out), "--quiet"]
    return Step(f"pack-{name}", args, shards / "_info.json"), shards  # fmt: skip


def pretrain_args(
    b: Budget, arm: Arm, data: list[str], init: Path | None, common: list[str], samples: int | None
) -> list[str]:
    """The `fractaldb pretrain` command of one arm (without --out)."""
    pre = [*data, "--batch-size", str(b.pre_batch)]
    if samples or b.pre_samples_per_epoch:
        pre += ["--samples-per-epoch", str(samples or b.pre_samples_per_epoch)]
    if arm.kind == "sup":
        args = ["pretrain", "supervised", "--recipe", "deit-tiny-fractaldb", *pre]
        args += ["--epochs", str(b.pre_epochs), "--lr", str(b.pre_lr)]
        args += ["--set", f"warmup_epochs={b.pre_warmup}", *sets(b.pre_sets)]
    else:
        dim, depth, heads = b.mae_decoder
        args = ["pretrain", "mae", "--recipe", "mae-vit-tiny-fractal", *pre]
        args += ["--epochs", str(b.mae_epochs), "--lr", str(b.mae_lr)]
        args += ["--set", f"warmup_epochs={b.pre_warmup}"]
        args += ["--decoder-dim", str(dim), "--decoder-depth", str(depth)]
        args += ["--decoder-heads", str(heads), "--set", "scale=[0.35,1.0]"]
    args += sets(arm.sets)
    if init is not None:
        args += ["--set", f"init_weights={init}"]
    return args + common


def pretrain_steps(
    b: Budget,
    out: Path,
    seed: int,
    workers: int,
    chosen: list[Arm],
    dss: list[Downstream],
    natural: Downstream | None,
) -> tuple[list[Step], dict]:
    """Data and pre-training steps of the chosen arms; and {arm: {dataset: (run, step)}}
    (("scratch", "") for scratch; target-mae has its own run per dataset)."""
    by_name = {a.name: a for a in arms_of(b)}
    need = {by_name[a.init].data for a in chosen if a.init} | {a.data for a in chosen}
    steps, made_sets = data_steps(b, out, seed, need)
    common = engine_args(b, b.img_size, seed, workers)
    n = n_images(b)
    runs: dict[str, dict[str, tuple[Path | str, str]]] = {}

    made_runs: dict[str, tuple[Path, str]] = {}

    def pretrain(
        arm: Arm, run_name: str, data: list[str], after: tuple[str, ...], samples: int | None
    ) -> tuple[Path, str]:
        init = None
        if arm.init:
            init, parent_step = ensure(by_name[arm.init])
            after = (*after, parent_step)
        run = out / "pretrain" / run_name
        args = pretrain_args(b, arm, data, init, common, samples) + ["--out", str(run)]
        steps.append(Step(f"pretrain-{run_name}", args, run / "model.safetensors", after))
        return run, f"pretrain-{run_name}"

    def ensure(arm: Arm) -> tuple[Path, str]:
        """The arm's pre-training run and step, planned once (an init may ask first)."""
        if arm.name in made_runs:
            return made_runs[arm.name]
        if arm.data == "natural":
            if natural is None:
                raise BadInput(f"arm {arm.name} needs the CIFAR-10 photos (none resolved)")
            pack, shards = photo_pack_step("natural", natural, out, n // 10)
            if all(s.name != pack.name for s in steps):  # natural-sup and natural-mae share it
                steps.append(pack)
            made = pretrain(arm, arm.name, ["--data", str(shards)], (pack.name,), n)
        elif arm.on_the_fly:
            _, _, cats = made_sets[arm.data]
            data = ["--on-the-fly", str(cats), "--image-size", str(b.render_size)]
            data += ["--points", str(b.points), "--mode", "point", "--color", "gray"]
            made = pretrain(arm, arm.name, data, (f"search-{arm.data}",), n)
        else:
            shards, render_step, _ = made_sets[arm.data]
            made = pretrain(arm, arm.name, ["--data", str(shards)], (render_step,), None)
        made_runs[arm.name] = made
        return made

    for arm in chosen:
        if arm.kind == "scratch":
            runs[arm.name] = {ds.name: ("scratch", "") for ds in dss}
        elif arm.data == "target":
            runs[arm.name] = {}
            for ds in dss:
                # the fine-tuning's training photos exactly (the same first N of each class)
                pack, shards = photo_pack_step(
                    f"target-{ds.name}", ds, out, ds.recipe.train_per_class
                )
                steps.append(pack)
                runs[arm.name][ds.name] = pretrain(
                    arm, f"{arm.name}-{ds.name}", ["--data", str(shards)], (pack.name,), n
                )
        else:
            runs[arm.name] = {ds.name: ensure(arm) for ds in dss}
    return steps, runs


@dataclass
class Downstream:
    """A dataset to fine-tune on: its name, where its images are and how it is split."""

    name: str
    source: Path  # an image folder or a .tar/.tar.gz of one
    recipe: FineTune
    val_per_class: int | None
    root: Path | None = None  # the class folder, once extracted

    def split_args(self) -> list[str]:
        """--val-per-class N, or --val-split 0.2 when no count is known; and the recipe's
        --train-per-class."""
        held = ["--val-split", "0.2"] if self.val_per_class is None else [
            "--val-per-class", str(self.val_per_class)]  # fmt: skip
        if self.recipe.train_per_class is not None:
            held += ["--train-per-class", str(self.recipe.train_per_class)]
        return held


class BadInput(Exception):
    """The command line names something that is not there (one-line error, exit 2)."""


def resolve_dataset(spec: str, b: Budget, data_dir: Path, val_per_class: int | None) -> Downstream:
    """`cifar10`, `flowers12` (archives in data_dir) or a folder/archive path -> Downstream."""
    if spec in ARCHIVES:
        source, name, recipe = data_dir / ARCHIVES[spec], spec, b.finetune[spec]
        fix = f"--data-dir DIR holding {ARCHIVES[spec]}"
    else:
        source = Path(spec)
        name = source.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz")
        recipe, fix = (
            b.finetune["folder"],
            "--dataset cifar10, flowers12, an image folder or .tar.gz",
        )
    if not (source.is_dir() or is_archive(source)):
        raise BadInput(f"{source} not found (dataset {spec!r}); fix: {fix}")
    held_out = val_per_class if val_per_class is not None else recipe.val_per_class
    return Downstream(name, source, recipe, held_out)


def prepare(ds: Downstream, tmp: Path) -> Path:
    """Extract ds.source into tmp if it is an archive; return its class folder."""
    folder = ds.source
    if is_archive(ds.source):
        print(f"# extracting {ds.source} to {tmp}", flush=True)
        start = time.time()
        with tarfile.open(ds.source, "r:*") as tar:
            tar.extractall(tmp, filter="data")
        print(f"# extracted in {time.time() - start:.0f}s", flush=True)
        folder = tmp
    root = find_image_folder(folder)
    if root is None:
        raise StepFailed(
            f"{ds.source} holds no <class>/<image> folder; fix: an ImageFolder layout "
            "such as train/<class>/0001.jpg"
        )
    return root


def ft_run(out: Path, dataset: str, arm: str, seed: int) -> Path:
    """Run folder of one fine-tune."""
    return out / "finetune" / dataset / arm / f"seed{seed}"


def finetune_steps(
    b: Budget, out: Path, ds: Downstream, runs: dict, ft_seeds: list[int], workers: int
) -> list[Step]:
    """One frozen-feature probe per arm (k-NN and linear; deterministic, so no seeds: cheap,
    first), then one fine-tune per (seed, arm) with the dataset's recipe; seed-major, so that
    an interrupted run has every arm at the first seeds."""
    r = ds.recipe
    steps = []
    data = ["--dataset", "folder", "--data-root", root_arg(ds), *ds.split_args()]
    for arm, per_dataset in runs.items():
        init, after = per_dataset[ds.name]
        folder = probe_run(out, ds.name, arm)
        pr = ["probe", *data, "--init", str(init), "--recipe", r.recipe]
        pr += ["--model", MODEL, "--img-size", str(r.img_size)]
        pr += [x for a in b.model_args for x in ("--model-arg", a)]
        pr += ["--device", b.device, "--workers", str(workers), "--batch-size", "256"]
        deps = (after,) if after else ()
        steps.append(
            Step(f"probe-{ds.name}-{arm}", [*pr, "--out", str(folder)], folder / "probe.json",
                 deps)
        )  # fmt: skip
    for seed in ft_seeds:
        for arm, per_dataset in runs.items():
            init, after = per_dataset[ds.name]
            run = ft_run(out, ds.name, arm, seed)
            ft = ["finetune", *data, "--init", str(init), "--recipe", r.recipe]
            ft += ["--epochs", str(r.epochs), "--batch-size", str(r.batch), "--lr", str(r.lr)]
            ft += ["--set", f"warmup_epochs={r.warmup}", *sets(r.sets)]
            if r.samples_per_epoch:
                ft += ["--samples-per-epoch", str(r.samples_per_epoch)]
            ft += engine_args(b, r.img_size, seed, workers) + ["--out", str(run)]
            deps = (after,) if after else ()
            steps.append(
                Step(f"finetune-{ds.name}-{arm}-{seed}", ft, run / "model.safetensors", deps)
            )
    return steps


def probe_run(out: Path, dataset: str, arm: str) -> Path:
    """Folder of one arm's frozen-feature probe on a dataset."""
    return out / "probe" / dataset / arm


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(
    out: Path, dataset: str, arms: list[str], ft_seeds: list[int], saw: dict[str, str] | None = None
) -> list[dict]:
    """Per arm: last-epoch and best validation top-1, train top-1 and the per-epoch validation
    curve over the finished seeds; the frozen-feature probe's k-NN and linear top-1."""
    from finetune.report import load_run

    rows = []
    for arm in arms:
        runs = [ft_run(out, dataset, arm, s) for s in ft_seeds]
        seeds = [
            s for s, r in zip(ft_seeds, runs, strict=True) if (r / "model.safetensors").exists()
        ]
        done = [load_run(ft_run(out, dataset, arm, s)) for s in seeds]
        probe_file = probe_run(out, dataset, arm) / "probe.json"
        probe = json.loads(probe_file.read_text()) if probe_file.exists() else None
        if not done and probe is None:
            continue
        ends = [r["history"][-1] for r in done]
        epochs = min((len(r["history"]) for r in done), default=0)
        curve = [statistics.fmean(r["history"][e]["top1"] for r in done) for e in range(epochs)]
        rows.append({
            "arm": arm,
            "saw": (saw or {}).get(arm, ""),
            "seeds": seeds,
            "last": [r["last"]["top1"] for r in done],
            "best": [r["best"]["top1"] for r in done],
            "train": [h["train_top1"] for h in ends if "train_top1" in h],
            "curve": curve,
            "knn": probe["knn_top1"] if probe else None,
            "linear": probe["linear_top1"] if probe else None,
            "img_size": done[0]["img_size"] if done else probe["img_size"],
            "epochs": done[0]["epochs"] if done else None,
        })  # fmt: skip
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(rows: list[dict], in_domain: bool = False) -> str:
    """Table: what each arm saw; fine-tuned top-1 (mean ± sd of last and best epoch), gain
    over scratch; linear-probe and k-NN top-1 on frozen features; train top-1; the seeds."""
    scratch = next(
        (statistics.fmean(r["last"]) for r in rows if r["arm"] == "scratch" and r["last"]), None
    )
    lines = [
        "| init | pre-training saw | fine-tuned, last epoch | best epoch | vs scratch | "
        "linear probe | k-NN | train top-1 | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        saw = r.get("saw", "")
        if in_domain and r["arm"].startswith(("natural-", "target-")):
            saw += " (in-domain)"
        if r["last"]:
            last, best = mean_sd(r["last"]), mean_sd(r["best"])
            ft = f"{last[0]:.2f} ± {last[1]:.2f}"
            bst = f"{best[0]:.2f} ± {best[1]:.2f}"
            gain = statistics.fmean(r["last"]) - scratch if scratch is not None else None
        else:
            ft = bst = "-"
            gain = None
        gain_s = "" if r["arm"] == "scratch" or gain is None else f"{gain:+.2f}"
        train = f"{statistics.fmean(r['train']):.1f}" if r["train"] else "-"
        seeds = " ".join(f"{v:.1f}" for v in r["last"])
        lines.append(
            f"| {r['arm']} | {saw} | {ft} | {bst} | {gain_s} | {_pct(r.get('linear'))} | "
            f"{_pct(r.get('knn'))} | {train} | {len(r['last'])}: {seeds} |"
        )
    return "\n".join(lines) + "\n"


def curve_chart(dataset: str, rows: list[dict], path: Path) -> Path:
    """Validation top-1 against fine-tuning epoch (mean over seeds), one line per arm, scratch
    in black: whether the recipe is long enough for scratch to plateau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fractaldb.core.atomic import replace_atomically

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for r in rows:
        if not r.get("curve"):
            continue
        epochs = range(1, len(r["curve"]) + 1)
        style = {"color": "black", "linewidth": 2.2} if r["arm"] == "scratch" else {"alpha": 0.7}
        ax.plot(epochs, r["curve"], label=r["arm"], **style)
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(f"{dataset}: validation during fine-tuning (mean over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    try:
        return replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)


def chart(tables: dict[str, list[dict]], path: Path) -> Path:
    """One grouped bar chart: mean last-epoch top-1 per dataset and arm, sd as error bars and
    each seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from fractaldb.core.atomic import replace_atomically

    datasets = list(tables)
    arms = list(dict.fromkeys(r["arm"] for rows in tables.values() for r in rows))
    width = 0.8 / max(1, len(arms))
    fig, ax = plt.subplots(figsize=(max(4.0, 2.2 * len(datasets) + 1), 3.4))
    x = np.arange(len(datasets))
    for i, arm in enumerate(arms):
        rows = [next((r for r in tables[d] if r["arm"] == arm and r["last"]), None)
                for d in datasets]  # fmt: skip
        pos = x + (i - (len(arms) - 1) / 2) * width
        # an arm a group did not run (a variant with --arms): NaN draws no bar, no error bar
        means = [mean_sd(r["last"])[0] if r else float("nan") for r in rows]
        sds = [mean_sd(r["last"])[1] if r else float("nan") for r in rows]
        bars = ax.bar(pos, means, width, yerr=sds, capsize=3, label=arm)
        labels = [f"{m:.1f}" if r else "" for m, r in zip(means, rows, strict=True)]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
        for p, r in zip(pos, rows, strict=True):
            if r:
                ax.plot([p] * len(r["last"]), r["last"], "k.", markersize=3)
    ax.set_xticks(x, datasets)
    ax.set_ylabel("val top-1 (%), last epoch")
    ax.set_ylim(0, 100)
    ax.legend(title="init", fontsize=7, title_fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    try:
        return replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)


def machine_line(b: Budget) -> str:
    """Where it ran: the GPU's name when the budget uses one, then the CPU line."""
    from fractaldb.core.machine import describe_machine

    device = describe_machine()
    if b.device.startswith("cuda"):
        try:
            import torch

            device = f"{torch.cuda.get_device_name(0)}; {device}"
        except Exception:  # no GPU visible to this process: the CPU line still says where
            pass
    return device


def summary(
    budget: str,
    dss: list[Downstream],
    tables: dict[str, list[dict]],
    ft_seeds: list[int],
    log: list[str],
    minutes: float,
    variant: list[str] | None = None,
) -> str:
    """Markdown: what was run (budget and its variant options, seeds, machine, commands) and a
    table per dataset."""
    shown = f"`{budget}`" + (f" (variant: `{shlex.join(variant)}`)" if variant else "")
    lines = [
        "# Transfer from fractal pre-training",
        "",
        f"budget {shown}, fine-tuning seeds {' '.join(map(str, ft_seeds))}, "
        f"{minutes:.0f} min, machine: {machine_line(BUDGETS[budget])}.",
        "Top-1 (%) on the held-out images, mean ± sample sd over the fine-tuning seeds; "
        "train top-1 on a fixed subset of the training images under the evaluation transform.",
    ]
    for ds in dss:
        r = ds.recipe
        lines += [
            "",
            f"## {ds.name}",
            "",
            f"{ds.source.name}: {' '.join(ds.split_args())}; fine-tuned at {r.img_size} px, "
            f"{r.epochs} epochs, batch {r.batch}, lr {r.lr:g}.",
            "",
            markdown(tables[ds.name], ds.name == "cifar10").rstrip("\n"),
        ]
    lines += ["", "![val top-1](results.png)", "", "Commands:", "", "```", *log, "```", ""]
    return "\n".join(lines)


def chosen_arms(args: argparse.Namespace, b: Budget) -> list[Arm]:
    """The arms --arms names (arm names or the groups `core` / `variant`), in table order."""
    arms = arms_of(b)
    if not args.arms:
        return arms
    return [a for a in arms if a.name in args.arms or a.group in args.arms]


def plan(
    args: argparse.Namespace, b: Budget, dss: list[Downstream], natural: Downstream | None = None
) -> tuple[list[Step], list[str]]:
    """Every step of the benchmark, in the order a single worker runs them; and the arms."""
    workers = max(0, b.workers // max(1, args.parallel_arms)) if b.workers else 0
    chosen = chosen_arms(args, b)
    steps, runs = pretrain_steps(b, args.out, args.seed, workers, chosen, dss, natural)
    for ds in dss:
        steps += finetune_steps(b, args.out, ds, runs, args.ft_seeds, workers)
    return steps, [a.name for a in chosen]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=USAGE,
    )
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="smoke")
    parser.add_argument("--out", type=Path, required=True, help="output folder (restartable)")
    parser.add_argument(
        "--dataset", nargs="+", default=["cifar10"],
        help="cifar10, flowers12, or an image folder / .tar.gz path (several allowed)",
    )  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the archives")
    parser.add_argument(
        "--val-per-class", type=int, default=None, help="held-out images per class (all sets)"
    )
    parser.add_argument("--seed", type=int, default=0, help="render and pre-training seed")
    parser.add_argument("--ft-seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds")
    parser.add_argument(
        "--parallel-arms", type=int, default=1, help="independent steps run at once (one GPU)"
    )
    parser.add_argument(
        "--arms", nargs="+", default=None,
        help="run only these arms, or the groups core / variant (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--sup-epochs", type=int, default=None,
        help="supervised pre-training epochs (default: the budget's)",
    )  # fmt: skip
    parser.add_argument(
        "--ft-img-size", type=int, default=None,
        help="fine-tuning resolution for every set (default: each recipe's)",
    )  # fmt: skip
    parser.add_argument(
        "--scale", type=int, default=1,
        help="pre-training epochs x N, same images (the compute curve: 1, 4, 16)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    return parser.parse_args(argv)


def check_variant(args: argparse.Namespace, b: Budget) -> None:
    """Raise BadInput for an unknown arm or a non-positive epoch count, scale or resolution."""
    known = arm_names(b)
    unknown = [a for a in args.arms or [] if a not in known and a not in ("core", "variant")]
    if unknown:
        raise BadInput(
            f"--arms {' '.join(unknown)} unknown; fix: core, variant or some of {' '.join(known)}"
        )
    if args.sup_epochs is not None and args.sup_epochs < 1:
        raise BadInput(f"--sup-epochs {args.sup_epochs}; fix: 1 or more")
    if args.scale < 1:
        raise BadInput(f"--scale {args.scale}; fix: 1 or more (pre-training epochs x N)")
    if args.ft_img_size is not None and args.ft_img_size < 8:
        raise BadInput(f"--ft-img-size {args.ft_img_size}; fix: 8 px or more")


def resolve_natural(
    args: argparse.Namespace, b: Budget, dss: list[Downstream]
) -> Downstream | None:
    """The CIFAR-10 photos the natural-image arms pre-train on (None when no arm needs them);
    the downstream cifar10 itself when it is one of the sets."""
    if not any(a.data == "natural" for a in chosen_arms(args, b)):
        return None
    same = next((d for d in dss if d.name == "cifar10"), None)
    if same is not None:
        return same
    path = args.data_dir / ARCHIVES["cifar10"]
    if not path.is_file():
        raise BadInput(
            f"the natural-image arms pre-train on CIFAR-10 photos, and {path} is not there; fix: "
            f"--data-dir DIR holding {ARCHIVES['cifar10']}, or --arms without natural-sup "
            "natural-mae"
        )
    return resolve_dataset("cifar10", b, args.data_dir, args.val_per_class)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    try:
        if args.parallel_arms < 1:
            raise BadInput(f"--parallel-arms {args.parallel_arms}; fix: 1 or more")
        check_variant(args, BUDGETS[args.budget])
        if len(set(args.dataset)) < len(args.dataset):
            raise BadInput(f"--dataset {' '.join(args.dataset)} names a set twice; fix: once each")
        b = with_variant(BUDGETS[args.budget], args.sup_epochs, args.ft_img_size, args.scale)
        dss = [resolve_dataset(d, b, args.data_dir, args.val_per_class) for d in args.dataset]
        if len({d.name for d in dss}) < len(dss):
            raise BadInput(f"--dataset {' '.join(args.dataset)} names a set twice; fix: once each")
        natural = resolve_natural(args, b, dss)
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="transfer-photos-"))
    try:
        steps, arms = plan(args, b, dss, natural)
        photo_sets = dss + ([natural] if natural is not None and natural not in dss else [])
        for ds in photo_sets:
            if any(root_arg(ds) in s.args and not s.done.exists() for s in steps):
                (tmp / ds.name).mkdir()
                ds.root = prepare(ds, tmp / ds.name)
        steps, arms = plan(args, b, dss, natural)  # again, now with the extracted folders
        run_steps(steps, args.parallel_arms)
        log = [s.shown for s in steps]
        seen = {a.name: a.saw for a in arms_of(b)}
        tables = {ds.name: summarize(out, ds.name, arms, args.ft_seeds, seen) for ds in dss}
    except StepFailed as err:
        print(f"error: {err}; fix: see the output above, then re-run the same line to resume")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for ds in dss:
        in_domain = ds.name == "cifar10"
        (out / f"results-{ds.name}.md").write_text(markdown(tables[ds.name], in_domain))
    png = chart(tables, out / "results.png")
    curves = [curve_chart(ds.name, tables[ds.name], out / f"curve-{ds.name}.png") for ds in dss]
    minutes = (time.time() - start) / 60
    variant = variant_flags(args)
    (out / "summary.md").write_text(
        summary(args.budget, dss, tables, args.ft_seeds, log, minutes, variant)
    )
    figures = {
        "budget": args.budget,
        "variant": variant,
        "scale": args.scale,
        "pre_epochs": b.pre_epochs,
        "mae_epochs": b.mae_epochs,
        "seed": args.seed,
        "ft_seeds": args.ft_seeds,
        "minutes": round(minutes, 1),
        "results": tables,
        "commands": log,
    }
    (out / "transfer.json").write_text(json.dumps(figures, indent=2) + "\n")
    if args.json:
        print(json.dumps({k: v for k, v in figures.items() if k != "commands"}))
    shown = ", ".join(str(p) for p in [png, *curves])
    print(f"# done in {minutes:.1f} min: {out / 'summary.md'}, {shown}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
