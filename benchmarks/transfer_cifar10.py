"""Issue 6 end to end: does fractal pre-training beat training from scratch on real CIFAR-10 photos?

Arms, all fine-tuned with the SAME recipe and budget on the CIFAR-10 JPEG training folder minus
the last `--val-per-class` images of each class, and evaluated on those held-out images:
  scratch        random init
  fractaldb-sup  supervised pre-training on FractalDB-style categories (FractalDB search and
                 instance scheme), gray points rendered at 64 px
  sigma-sup      supervised pre-training on sigma-sampler (Anderson & Farrell) categories,
                 hue-coloured points rendered at 64 px
  sigma-mae      MAE pre-training on the same sigma set
Every model sees 32 px crops: the pre-training resolution is the fine-tuning one. The model is
timm's vit_tiny_patch16_224 at img_size 32, patch 4 (64 tokens); the cpu budget uses 6 of its
12 blocks, the smoke budget a 1-block toy. `fractaldb report` then writes OUT/results.md and
OUT/results.png; OUT/summary.md adds budget, seed, machine and commands.

Usage (the photos are extracted to a temporary folder, never into the repository):
    uv run python benchmarks/transfer_cifar10.py --budget gpu --out runs/transfer-gpu   # ~20 min H100
    uv run python benchmarks/transfer_cifar10.py --budget cpu --out runs/transfer-cpu   # ~1 h, 2 cores
    uv run python benchmarks/transfer_cifar10.py --budget smoke --out /tmp/transfer-smoke
Every command is printed before it runs; re-running the same line skips finished steps
(search files, complete shard folders, runs with model.safetensors) and continues interrupted
runs with `--resume auto`.

Fine-tuning hyperparameters were fixed once, before any run, and are identical for every arm
(only the init differs); nothing was tuned on anything but the validation split. Base: the
shipped `adamw-cifar` recipe (AdamW, wd 0.05, cosine, smoothing 0.1, hflip), with the schedule
shortened to the budget and, because these budgets are a few to ~15 epochs rather than 1,000:
  - lr 5e-4 at batch 128 (cpu) / 1e-3 at batch 512 (gpu), 1-2 warm-up epochs: the usual
    AdamW range for small ViTs; the recipe's 7.5e-6 x batch/512 is meant for 1,000 epochs.
  - RandomResizedCrop scale (0.35, 1): at 32 px an 8 % crop leaves a few pixels of object.
  - mixup/cutmix off: they pay off only over long schedules.
  - cpu: RandAugment, random erasing and drop-path off (4 short epochs); gpu: RandAugment
    rand-m9-mstd0.5-inc1, random erasing 0.25, drop-path 0.1 as in the recipe.
Pre-training uses the shipped `deit-tiny-fractaldb` and `mae-vit-tiny-fractal` recipes at 32 px
with the same shortening (absolute lr, short warm-up, crops from 35 %, no mixup/cutmix on cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TAR = REPO.parent / "shared" / "data" / "cifar10-train-jpg.tar.gz"
MODEL = "vit_tiny_patch16_224"
IMG_SIZE = 32


@dataclass(frozen=True)
class Budget:
    """Sizes of one budget; the fine-tuning recipe inside a budget is shared by every arm."""

    categories: int
    instances: int
    render_size: int
    points: int
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
    ft_epochs: int
    ft_batch: int
    ft_lr: float
    ft_warmup: int
    ft_samples_per_epoch: int | None
    ft_sets: tuple[str, ...]
    search_sets: tuple[str, ...] = field(default=())
    pre_samples_per_epoch: int | None = None


_LIGHT_AUG = ("auto_augment=null", "reprob=0", "mixup=0", "cutmix=0", "scale=[0.35,1.0]")
VIT32 = ("patch_size=4",)
# How each sampler's set is rendered. FractalDB's fill-rate >= 0.2 systems drawn as 3x3 patches
# at 32 px are solid blobs (nothing but a silhouette to learn); single points at 64 px keep
# their texture, and the 32 px crops the model sees are anti-aliased by the resize, as the
# CIFAR photos were. The sigma set uses its preset's hue colouring.
RENDER: dict[str, tuple[str, list[str]]] = {
    "fractaldb": ("quickstart", ["--mode", "point", "--color", "gray"]),
    "sigma": ("sigma-1k", []),
}

BUDGETS: dict[str, Budget] = {
    # seconds: a 1-block toy on a few hundred images, to test the pipeline end to end
    "smoke": Budget(
        categories=4,
        instances=16,
        render_size=32,
        points=1000,
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
        ft_epochs=1,
        ft_batch=16,
        ft_lr=5e-4,
        ft_warmup=0,
        ft_samples_per_epoch=64,
        ft_sets=(*_LIGHT_AUG, "drop_path=0", "color_jitter=0"),
        search_sets=("min_fill=0.1",),
        pre_samples_per_epoch=64,
    ),
    # ~1 hour on 2 CPU cores: 32 categories x 250 images per sampler (a 100-category set
    # stayed at chance loss for the first epochs), a 6-block ViT pre-trained for 12 epochs
    # (MAE 20), then 4 fine-tuning epochs of 6,000 photos each
    "cpu": Budget(
        categories=32,
        instances=250,
        render_size=64,
        points=4000,
        model_args=(*VIT32, "depth=6"),
        samplers=("fractaldb", "sigma"),
        mae_sampler="sigma",
        device="cpu",
        amp="none",
        workers=1,
        pre_epochs=12,
        pre_batch=128,
        pre_lr=1e-3,
        pre_warmup=1,
        pre_sets=(*_LIGHT_AUG, "drop_path=0"),
        mae_epochs=20,
        mae_lr=1.5e-3,
        mae_decoder=(128, 2, 4),
        ft_epochs=4,
        ft_batch=128,
        ft_lr=5e-4,
        ft_warmup=1,
        ft_samples_per_epoch=6000,
        ft_sets=(*_LIGHT_AUG, "drop_path=0"),
    ),
    # ~20 minutes on one H100: 1,000 categories x 100 images per sampler, the full 12-block
    # ViT-Tiny, 15 fine-tuning epochs over the 45,000 training photos
    "gpu": Budget(
        categories=1000,
        instances=100,
        render_size=64,
        points=4000,
        model_args=VIT32,
        samplers=("fractaldb", "sigma"),
        mae_sampler="sigma",
        device="cuda",
        amp="bf16",
        workers=12,
        pre_epochs=15,
        pre_batch=512,
        pre_lr=1e-3,
        pre_warmup=2,
        pre_sets=("mixup=0", "cutmix=0", "scale=[0.35,1.0]"),
        mae_epochs=30,
        mae_lr=1.5e-3,
        mae_decoder=(192, 4, 6),
        ft_epochs=15,
        ft_batch=512,
        ft_lr=1e-3,
        ft_warmup=2,
        ft_samples_per_epoch=None,
        ft_sets=("mixup=0", "cutmix=0", "scale=[0.35,1.0]", "auto_augment=rand-m9-mstd0.5-inc1"),
    ),
}


class StepFailed(Exception):
    """A command of the pipeline exited with a non-zero status."""


def fractaldb_exe() -> list[str]:
    """The `fractaldb` console script of this interpreter's environment."""
    local = Path(sys.executable).parent / "fractaldb"
    if local.is_file():
        return [str(local)]
    found = shutil.which("fractaldb")
    if found:
        return [found]
    return [sys.executable, "-c", "from fractaldb.cli import main; main()"]


def execute(args: list[str]) -> int:
    """Run `fractaldb ARGS` in a child process (isolated memory, threads and CUDA state)."""
    return subprocess.run([*fractaldb_exe(), *args]).returncode


def run_step(args: list[str], done: Path | None, log: list[str]) -> None:
    """Print and run `fractaldb ARGS` unless `done` exists (then print that it is skipped)."""
    shown = "fractaldb " + shlex.join(args)
    log.append(shown)
    if done is not None and done.exists():
        print(f"# skip (done: {done})\n#   {shown}", flush=True)
        return
    print(f"+ {shown}", flush=True)
    rc = execute(args)
    if rc != 0:
        raise StepFailed(f"step failed with exit code {rc}: {shown}")


def engine_args(b: Budget, seed: int) -> list[str]:
    """Options shared by every pre-training and fine-tuning command."""
    out = ["--model", MODEL, "--img-size", str(IMG_SIZE)]
    for a in b.model_args:
        out += ["--model-arg", a]
    out += ["--device", b.device, "--amp", b.amp, "--workers", str(b.workers)]
    return out + ["--seed", str(seed), "--resume", "auto"]


def sets(pairs: tuple[str, ...]) -> list[str]:
    """--set KEY=VALUE for each pair."""
    return [x for p in pairs for x in ("--set", p)]


def fractal_steps(b: Budget, out: Path, seed: int, log: list[str]) -> dict[str, Path]:
    """Search, render and pre-train; return {arm name: pre-training run folder}."""
    runs: dict[str, Path] = {}
    data = out / "data"
    pre_common = ["--batch-size", str(b.pre_batch)]
    if b.pre_samples_per_epoch:
        pre_common += ["--samples-per-epoch", str(b.pre_samples_per_epoch)]
    for sampler in b.samplers:
        preset, render_opts = RENDER[sampler]
        cats = data / f"{sampler}-{b.categories}.json"
        shards = data / f"{sampler}-{b.categories}x{b.instances}-{b.render_size}px"
        cats.parent.mkdir(parents=True, exist_ok=True)
        run_step(
            ["search", "-k", str(b.categories), "--sampler", sampler, "--seed", "1"]
            + sets(b.search_sets)
            + ["--out", str(cats)],
            cats,
            log,
        )
        run_step(
            ["render", "--preset", preset, "--categories", str(cats)]
            + ["--instances-per-category", str(b.instances), "--image-size", str(b.render_size)]
            + ["--points", str(b.points), *render_opts, "--seed", str(seed), "--quiet"]
            + ["--out", str(shards)],
            shards / "manifest.json",
            log,
        )
        pre = ["--data", str(shards), *pre_common]
        sup = out / "pretrain" / f"{sampler}-sup"
        run_step(
            ["pretrain", "supervised", "--recipe", "deit-tiny-fractaldb", *pre]
            + ["--epochs", str(b.pre_epochs)]
            + ["--lr", str(b.pre_lr), "--set", f"warmup_epochs={b.pre_warmup}"]
            + sets(b.pre_sets)
            + engine_args(b, seed)
            + ["--out", str(sup)],
            sup / "model.safetensors",
            log,
        )
        runs[f"{sampler}-sup"] = sup
        if sampler == b.mae_sampler:
            mae = out / "pretrain" / f"{sampler}-mae"
            dim, depth, heads = b.mae_decoder
            run_step(
                ["pretrain", "mae", "--recipe", "mae-vit-tiny-fractal", *pre]
                + ["--epochs", str(b.mae_epochs)]
                + ["--lr", str(b.mae_lr), "--set", f"warmup_epochs={b.pre_warmup}"]
                + ["--decoder-dim", str(dim), "--decoder-depth", str(depth)]
                + ["--decoder-heads", str(heads), "--set", "scale=[0.35,1.0]"]
                + engine_args(b, seed)
                + ["--out", str(mae)],
                mae / "model.safetensors",
                log,
            )
            runs[f"{sampler}-mae"] = mae
    return runs


def extract(tar_path: Path, into: Path) -> Path:
    """Extract the CIFAR-10 JPEG tar into `into`; return its train/ folder."""
    print(f"# extracting {tar_path} to {into}", flush=True)
    start = time.time()
    with tarfile.open(tar_path, "r:*") as tar:
        tar.extractall(into, filter="data")
    root = into / "train"
    if not root.is_dir():
        raise StepFailed(f"{tar_path} has no train/ folder; fix: a tar of train/<class>/NNNN.jpg")
    print(f"# extracted in {time.time() - start:.0f}s", flush=True)
    return root


def finetune_steps(
    b: Budget,
    out: Path,
    seed: int,
    inits: dict[str, str],
    tar_path: Path,
    val_per_class: int,
    log: list[str],
) -> list[Path]:
    """Fine-tune every arm with one recipe; return the run folders."""
    runs = [out / "finetune" / name for name in inits]
    pending = [r for r in runs if not (r / "model.safetensors").exists()]
    tmp = tempfile.mkdtemp(prefix="cifar10-jpg-") if pending else None
    try:
        root = extract(tar_path, Path(tmp)) if tmp else Path("<extracted tar>/train")
        for init, run in zip(inits.values(), runs, strict=True):
            ft = ["finetune", "--dataset", "folder", "--data-root", str(root)]
            ft += ["--val-per-class", str(val_per_class), "--init", init]
            ft += ["--recipe", "adamw-cifar", "--epochs", str(b.ft_epochs)]
            ft += ["--batch-size", str(b.ft_batch), "--lr", str(b.ft_lr)]
            ft += ["--set", f"warmup_epochs={b.ft_warmup}", *sets(b.ft_sets)]
            if b.ft_samples_per_epoch:
                ft += ["--samples-per-epoch", str(b.ft_samples_per_epoch)]
            run_step(
                ft + engine_args(b, seed) + ["--out", str(run)], run / "model.safetensors", log
            )
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return runs


def summary(out: Path, budget: str, seed: int, table: str, log: list[str]) -> str:
    """Markdown: what was run (budget, seed, machine, commands) and the results table."""
    from fractaldb.machine import describe_machine

    device = describe_machine()
    if BUDGETS[budget].device.startswith("cuda"):
        try:
            import torch

            device = f"{torch.cuda.get_device_name(0)}; {device}"
        except Exception:  # no GPU visible to this process: the CPU line still says where
            pass
    lines = [
        "# CIFAR-10 transfer (issue 6)",
        "",
        f"budget `{budget}`, seed {seed}, machine: {device}; validation = last images of each "
        "class of the CIFAR-10 training photos (top-1 %, `best` over epochs, `last` at the end).",
        "",
        table.rstrip("\n"),
        "",
        "![best top-1](results.png)",
        "",
        "Commands:",
        "",
        "```",
        *log,
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; return the exit status."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="e.g. uv run python benchmarks/transfer_cifar10.py --budget cpu --out runs/t-cpu",
    )
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="smoke")
    parser.add_argument("--out", type=Path, required=True, help="output folder (restartable)")
    parser.add_argument("--cifar-tar", type=Path, default=DEFAULT_TAR, help="train/<class>/*.jpg")
    parser.add_argument("--val-per-class", type=int, default=500, help="held-out photos/class")
    parser.add_argument("--seed", type=int, default=0, help="render, training and fine-tuning seed")
    args = parser.parse_args(argv)

    b = BUDGETS[args.budget]
    if not args.cifar_tar.is_file():
        print(
            f"error: {args.cifar_tar} not found; fix: --cifar-tar PATH to the CIFAR-10 JPEG tar",
            file=sys.stderr,
        )
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    start = time.time()
    try:
        pre = fractal_steps(b, out, args.seed, log)
        inits = {"scratch": "scratch", **{k: str(v) for k, v in pre.items()}}
        runs = finetune_steps(b, out, args.seed, inits, args.cifar_tar, args.val_per_class, log)
        md, png = out / "results.md", out / "results.png"
        report = ["report", *map(str, runs), "--out-md", str(md), "--out-png", str(png)]
        run_step(report, None, log)  # cheap: always rewritten from the runs' results.json
    except StepFailed as err:
        print(f"error: {err}; fix: see the output above, then re-run the same line to resume")
        return 1
    (out / "summary.md").write_text(summary(out, args.budget, args.seed, md.read_text(), log))
    (out / "transfer.json").write_text(
        json.dumps({"budget": args.budget, "seed": args.seed, "commands": log}, indent=2) + "\n"
    )
    print(f"# done in {(time.time() - start) / 60:.1f} min: {out / 'summary.md'}, {png}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
