"""Issue 17: DeiT distillation through attention and CvT-13 (Hugging Face) on fractal pre-training.

On a small real-photo task (an ImageFolder tar: the 12-class flower photos by default, the last
`--val-per-class` photos of each class held out for validation), every arm is fine-tuned with the
SAME short AdamW recipe (only the model, the init and the teacher differ):
  deit-scratch      DeiT-Tiny from random init
  deit-fdb          DeiT-Tiny from supervised fractal pre-training
  deit-dist-fdb     distilled DeiT-Tiny from the same fractal pre-training (the distillation
                    token and head start new), hard distillation from the CNN teacher
  cnn-teacher       ResNet-18 from scratch (the teacher)
  cvt-scratch       CvT-13 (hf:cvt-13) from random init
  cvt-fdb           CvT-13 from supervised fractal pre-training on the same shards
Both transformers keep their full architecture (DeiT-Tiny 12 x 192, CvT-13 [1, 2, 10] blocks);
the images are small (budget `cpu`: 32 px, DeiT patch 4 = 8 x 8 tokens, the grid of CvT's first
stage at patch 4; the cpu budget uses patch 8 to fit its time). OUT/summary.md: best/last top-1, parameters and training images/s (from each run's
metrics.jsonl; measured on whatever else the machine was doing, so compare them within a run).

Usage (photos are extracted to a temporary folder, never into the repository):
    uv run --extra hf python benchmarks/vit_family.py --budget cpu --out /tmp/vit-family
    uv run --extra hf python benchmarks/vit_family.py --budget smoke --out /tmp/vit-family-smoke
Re-running the same line skips finished steps and resumes interrupted runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run as a file: see benchmarks/compute_curve.py
    sys.path[0] = str(REPO)

from benchmarks import transfer as T  # noqa: E402

DEFAULT_TAR = REPO.parent / "shared" / "data" / "flowers12-train-jpg.tar.gz"


def run_step(args: list[str], done: Path | None, log: list[str]) -> None:
    """Run `fractaldb ARGS` (benchmarks.transfer's restartable step) unless `done` exists; log it."""
    step = T.Step(args[0], args, done)
    log.append(step.shown)
    T.run_steps([step])


@dataclass(frozen=True)
class Budget:
    """Sizes of one budget."""

    categories: int
    instances: int
    render_size: int
    img_size: int
    deit_args: tuple[str, ...]
    cvt_args: tuple[str, ...]
    teacher: str
    teacher_args: tuple[str, ...]
    pre_epochs: int
    pre_samples: int  # images per pre-training epoch (drawn from the shards)
    pre_batch: int
    pre_lr: float
    ft_epochs: int
    ft_samples: int | None  # photos per fine-tuning epoch (None: the whole training part)
    ft_batch: int
    ft_lr: float
    workers: int


_LIGHT = ("auto_augment=null", "reprob=0", "mixup=0", "cutmix=0", "scale=[0.35,1.0]", "drop_path=0")
BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        categories=3,
        instances=8,
        render_size=32,
        img_size=32,
        deit_args=("patch_size=8", "depth=1", "embed_dim=32", "num_heads=2"),
        cvt_args=("depth=[1,2,3]", "embed_dim=[16,32,48]", "num_heads=[1,1,2]"),
        teacher="test_resnet",
        teacher_args=(),
        pre_epochs=1,
        pre_samples=24,
        pre_batch=8,
        pre_lr=1e-3,
        ft_epochs=1,
        ft_samples=None,
        ft_batch=8,
        ft_lr=5e-4,
        workers=0,
    ),
    # ~40 minutes on 2 CPU cores shared with ~10 other training processes (~1-6 images/s per
    # model): the full CvT-13 and DeiT-Tiny train at ~1-2 images/s there, so this budget keeps
    # their widths and shortens them (CvT-13 layout with depth [1, 2, 3]; DeiT-Tiny with 4 blocks)
    "cpu": Budget(
        categories=16,
        instances=64,
        render_size=64,
        img_size=32,
        deit_args=("patch_size=8", "depth=4"),
        cvt_args=("depth=[1,2,3]",),
        teacher="resnet18",
        teacher_args=(),
        pre_epochs=2,
        pre_samples=512,
        pre_batch=64,
        pre_lr=1e-3,
        ft_epochs=2,
        ft_samples=240,
        ft_batch=60,
        ft_lr=1e-3,
        workers=1,
    ),
}
# the same, three times longer (about 20 minutes once the machine is less loaded)
BUDGETS["cpu6"] = dataclasses.replace(BUDGETS["cpu"], pre_epochs=6, ft_epochs=6)
DEIT, DEIT_DISTILLED, CVT = "deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "hf:cvt-13"


def model_opts(name: str, args: tuple[str, ...]) -> list[str]:
    """--model NAME --model-arg A ..."""
    return ["--model", name, *[x for a in args for x in ("--model-arg", a)]]


def common(b: Budget, seed: int) -> list[str]:
    """Options shared by every training command."""
    return ["--img-size", str(b.img_size), "--device", "cpu", "--amp", "none", "--workers",
            str(b.workers), "--seed", str(seed), "--resume", "auto"]  # fmt: skip


def pretrain_steps(b: Budget, out: Path, seed: int, log: list[str]) -> dict[str, Path]:
    """Search, render and pre-train DeiT-Tiny and CvT-13 on the same fractal shards."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    cats = data / f"fractaldb-{b.categories}.json"
    shards = data / f"fractaldb-{b.categories}x{b.instances}-{b.render_size}px"
    run_step(["search", "-k", str(b.categories), "--sampler", "fractaldb", "--seed", "1",
                "--out", str(cats)], cats, log)  # fmt: skip
    run_step(["render", "--preset", "quickstart", "--categories", str(cats),
                "--instances-per-category", str(b.instances), "--image-size", str(b.render_size),
                "--points", "4000", "--mode", "point", "--color", "gray", "--seed", str(seed),
                "--quiet", "--out", str(shards)], shards / "manifest.json", log)  # fmt: skip
    runs = {}
    for arm, model, args in (("cvt", CVT, b.cvt_args), ("deit", DEIT, b.deit_args)):
        run = out / "pretrain" / f"{arm}-fdb"
        run_step(["pretrain", "supervised", "--recipe", "deit-tiny-fractaldb", "--data",
                    str(shards), *model_opts(model, args), "--epochs", str(b.pre_epochs),
                    "--samples-per-epoch", str(b.pre_samples), "--batch-size", str(b.pre_batch), "--lr", str(b.pre_lr),
                    "--set", "warmup_epochs=0", *T.sets(_LIGHT), *common(b, seed),
                    "--out", str(run)], run / "model.safetensors", log)  # fmt: skip
        runs[arm] = run
    return runs


def finetune_arms(b: Budget, pre: dict[str, Path], teacher: Path) -> dict[str, list[str]]:
    """Arm name -> its model/init/teacher options (order: cheapest and most telling first)."""
    return {
        "cnn-teacher": [*model_opts(b.teacher, b.teacher_args), "--init", "scratch"],
        "cvt-fdb": ["--init", str(pre["cvt"])],
        "cvt-scratch": [*model_opts(CVT, b.cvt_args), "--init", "scratch"],
        "deit-fdb": ["--init", str(pre["deit"])],
        "deit-dist-fdb": [
            "--model",
            DEIT_DISTILLED,
            "--init",
            str(pre["deit"]),
            "--teacher",
            str(teacher),
            "--distillation",
            "hard",
        ],  # fmt: skip
        "deit-scratch": [*model_opts(DEIT, b.deit_args), "--init", "scratch"],
    }


def finetune_steps(
    b: Budget, out: Path, seed: int, pre: dict[str, Path], tar: Path, vpc: int, log: list[str]
) -> dict[str, Path]:
    """Fine-tune every arm with one recipe; return {arm: run folder}."""
    teacher = out / "finetune" / "cnn-teacher"
    arms = finetune_arms(b, pre, teacher)
    runs = {arm: out / "finetune" / arm for arm in arms}
    pending = [r for r in runs.values() if not (r / "model.safetensors").exists()]
    tmp = tempfile.mkdtemp(prefix="vit-family-") if pending else None
    try:
        if tmp:
            print(f"# extracting {tar} to {tmp}", flush=True)
            with __import__("tarfile").open(tar, "r:*") as t:
                t.extractall(tmp, filter="data")
        found = sorted(Path(tmp).glob("**/train")) if tmp else []
        root = found[0] if found else Path("<extracted tar>/train")
        common_ft = ["--samples-per-epoch", str(b.ft_samples)] if b.ft_samples else []
        for arm, opts in arms.items():
            run = runs[arm]
            run_step(["finetune", "--dataset", "folder", "--data-root", str(root),
                        "--val-per-class", str(vpc), "--recipe", "adamw-cifar", *opts,
                        "--epochs", str(b.ft_epochs), *common_ft, "--batch-size", str(b.ft_batch),
                        "--lr", str(b.ft_lr), "--set", "warmup_epochs=0", *T.sets(_LIGHT),
                        "--set", f"eval_every={b.ft_epochs}",
                        *common(b, seed), "--out", str(run)], run / "model.safetensors", log)  # fmt: skip
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return runs


def row(arm: str, run: Path) -> dict:
    """Top-1, parameters and training images/s of one fine-tuning run."""
    from safetensors.torch import load_file

    res = json.loads((run / "results.json").read_text())
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ips = [e["images_per_s"] for e in epochs if e.get("type") == "epoch" and "images_per_s" in e]
    state = load_file(str(run / "model.safetensors"))
    # parameters only: batch-norm statistics are buffers
    params = sum(
        v.numel() for k, v in state.items() if "running_" not in k and "num_batches" not in k
    )
    teacher = res.get("teacher") or {}
    return {
        "arm": arm,
        "model": res["model"],
        "init": res["init"]["kind"],
        "teacher": teacher.get("model"),
        "params_m": params / 1e6,
        "best_top1": res["best"]["top1"],
        "last_top1": res["last"]["top1"],
        "train_images_per_s": sum(ips) / len(ips) if ips else None,
    }


FULL_SIZE = {
    "DeiT-Tiny (patch 8 at 32 px)": (DEIT, {"patch_size": 8}),
    "distilled DeiT-Tiny (patch 8)": (DEIT_DISTILLED, {"patch_size": 8}),
    "CvT-13": (CVT, {}),
    "ResNet-18": ("resnet18", {}),
}


def full_size_throughput(img_size: int, batch: int = 32, rounds: int = 4) -> list[dict]:
    """Parameters and training images/s (AdamW step on synthetic tensors, best step) of the
    full-size models in this process. The models take turns, one step each per round, so that a
    change in the machine's load hits them alike: compare them as ratios."""
    import torch

    from pretrain.engine.models import create_model

    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, img_size, img_size), torch.randint(0, 12, (batch,))
    models = {
        label: create_model(name, img_size=img_size, num_classes=12, **args)
        for label, (name, args) in FULL_SIZE.items()
    }
    optims = {label: torch.optim.AdamW(m.parameters()) for label, m in models.items()}
    best = dict.fromkeys(models, float("inf"))
    for _ in range(rounds):  # the first round also warms up allocators and kernels
        for label, model in models.items():
            t0 = time.perf_counter()
            logits = model(x)
            logits = logits[0] if isinstance(logits, tuple) else logits
            torch.nn.functional.cross_entropy(logits, y).backward()
            optims[label].step()
            optims[label].zero_grad(set_to_none=True)
            best[label] = min(best[label], time.perf_counter() - t0)
    return [
        {
            "model": label,
            "params_m": sum(p.numel() for p in m.parameters()) / 1e6,
            "train_images_per_s": batch / best[label],
        }
        for label, m in models.items()
    ]


def throughput_table(rows: list[dict], img_size: int) -> str:
    """Markdown table of full_size_throughput rows."""
    lines = [f"| full-size model at {img_size} px | params (M) | train img/s |", "|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params_m']:.2f} | {r['train_images_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def table(rows: list[dict]) -> str:
    """Markdown table of the rows."""
    lines = ["| arm | model | init | teacher | params (M) | best top-1 | last top-1 | train img/s |",
             "|---|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        ips = f"{r['train_images_per_s']:.0f}" if r["train_images_per_s"] else "-"
        lines.append(
            f"| {r['arm']} | {r['model']} | {r['init']} | {r['teacher'] or '-'} | "
            f"{r['params_m']:.2f} | {r['best_top1']:.1f} | {r['last_top1']:.1f} | {ips} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="smoke")
    parser.add_argument("--out", type=Path, required=True, help="output folder (restartable)")
    parser.add_argument("--tar", type=Path, default=DEFAULT_TAR, help="tar of train/<class>/*.jpg")
    parser.add_argument("--val-per-class", type=int, default=15, help="held-out photos per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="also print the rows as one JSON line")
    args = parser.parse_args(argv)
    if not args.tar.is_file():
        print(
            f"error: {args.tar} not found; fix: --tar PATH to an image-folder tar", file=sys.stderr
        )
        return 2
    b, out, log = BUDGETS[args.budget], args.out, []
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    try:
        pre = pretrain_steps(b, out, args.seed, log)
        runs = finetune_steps(b, out, args.seed, pre, args.tar, args.val_per_class, log)
    except T.StepFailed as err:
        print(f"error: {err}; fix: see the output above, then re-run the same line to resume")
        return 1
    from fractaldb.core.machine import describe_machine

    rows = [row(arm, run) for arm, run in runs.items()]
    speed = full_size_throughput(b.img_size)
    text = (
        f"# ViT family on fractals (issue 17)\n\nbudget `{args.budget}`, seed {args.seed}, "
        f"data {args.tar.name} (last {args.val_per_class} photos per class held out), machine: "
        f"{describe_machine()}; images/s measured under whatever load the machine had.\n\n"
        + table(rows)
        + "\n"
        + throughput_table(speed, b.img_size)
        + "\nCommands:\n\n```\n"
        + "\n".join(log)
        + "\n```\n"
    )
    (out / "summary.md").write_text(text)
    print(table(rows) + "\n" + throughput_table(speed, b.img_size), end="")
    if args.json:
        print(json.dumps({"budget": args.budget, "rows": rows, "full_size": speed}))
    print(f"# done in {(time.time() - start) / 60:.1f} min: {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
