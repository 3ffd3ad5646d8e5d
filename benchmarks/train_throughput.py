"""Training images/s through the real engine: fed from shards by the real loader, or from
synthetic tensors already on the device (so the loader's cost is the gap between the two).

Sources: `synthetic` (batches already on the device), `shards` (workers decode to uint8, the
task augments whole batches on the device: --augment device) and `shards_cpu_augment` (timm's
PIL chain in the workers: --augment cpu). Each measurement is one short
`pretrain.engine.train` run (bf16 autocast on GPU, torch.compile on CUDA unless --no-compile,
the recipe's optimizer, augmentation, Mixup/CutMix or MAE masking); images/s is taken over the
steps after `--warmup`; `shards_ratio` = shards / synthetic. Usage:

    # supervised DeiT-Tiny at 224 px: shards (rendered into a temp dir unless --data) vs synthetic
    uv run python benchmarks/train_throughput.py --device cuda
    # MAE vit_tiny_patch16_224 and vit_base_patch16_224 at 224 px, synthetic on the device
    uv run python benchmarks/train_throughput.py --task mae --device cuda
    # DeiT-Tiny: synthetic, shards (device aug), shards (PIL aug); MAE tiny/base: synthetic,
    # shards (device aug); one JSON line
    uv run python benchmarks/train_throughput.py --suite --json
    # the same logic on CPU in seconds (tiny ViT at 32 px)
    uv run python benchmarks/train_throughput.py --device cpu --model vit_tiny_patch16_224 \\
        --img-size 32 --model-arg patch_size=8 --model-arg depth=2 --batch-size 16 --steps 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

# benchmarks/shards.py is named like the `shards` package: keep this folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch  # noqa: E402

from fractaldb.core.errors import FractalDBError  # noqa: E402

SUPERVISED_MODELS = ["deit_tiny_patch16_224"]
# source name -> the engine's --augment for it (synthetic batches are already model input)
SOURCE_AUGMENT = {"synthetic": "device", "shards": "device", "shards_cpu_augment": "cpu"}
MAE_MODELS = ["vit_tiny_patch16_224", "vit_base_patch16_224"]
# He et al. 2022's decoder for ViT-B and larger (512-d x 8 blocks x 16 heads).
PAPER_DECODER = {"decoder_dim": 512, "decoder_depth": 8, "decoder_heads": 16}


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def device_name(device: str) -> str:
    """The GPU's name (torch.cuda.get_device_name), else the CPU's."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FractalDBError(f"--device {device}: no CUDA GPU is visible; fix: --device cpu")
        return torch.cuda.get_device_name(dev)
    return f"CPU {platform.processor() or platform.machine()} ({cores()} cores)"


class DeviceBatches:
    """A DataSource yielding one random batch, created on the device once, `steps` times."""

    def __init__(self, steps: int, img_size: int, in_chans: int, num_classes: int, device: str):
        self.steps, self.img_size, self.in_chans = steps, img_size, in_chans
        self.num_classes = num_classes
        self.num_samples = 0
        self.manifest_sha256 = "synthetic-on-device"
        self.device = torch.device(
            "cuda" if device == "auto" and torch.cuda.is_available() else device
        )

    def train_loader(self, epoch: int, *, batch_size: int, seed: int, rank: int, world_size: int):
        """The same on-device batch `steps` times (no host work, no copies)."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn(batch_size, self.in_chans, self.img_size, self.img_size, generator=g)
        y = torch.randint(0, self.num_classes, (batch_size,), generator=g)
        batch = (x.to(self.device), y.to(self.device))
        return [batch] * self.steps

    def val_loader(self, *, batch_size: int, rank: int, world_size: int):
        """No validation in a benchmark."""
        return None


def render_shards(root: Path, img_size: int, categories: int, instances: int) -> Path:
    """Render a small shard set with the shards writer: FractalDB-1k's settings at >= 224 px
    (362 px images, decoded and cropped like the real data), tiny fast renders otherwise."""
    try:
        from shards.presets import Layout, load_preset
        from shards.writer import write_shards
    except ImportError:
        raise FractalDBError(
            "rendering benchmark shards needs the shards writer, which this checkout lacks; "
            "fix: pass --data SHARD_DIR (from `fractaldb render`) or --no-shards"
        ) from None
    from fractaldb.search import search_categories
    from fractaldb.settings import RenderSettings

    if img_size >= 224:
        render = load_preset("fractaldb-1k").render
        cats = search_categories(categories, sampler="fractaldb", seed=1, workers=cores())
    else:
        render = RenderSettings(image_size=img_size, points=2000, mode="patch", seed=1)
        cats = search_categories(categories, sampler="sigma", seed=2)
    layout = Layout(instances_per_category=instances, samples_per_shard=max(instances, 8))
    out = root / "shards"
    write_shards(cats, render, layout, out, workers=cores(), progress=False)
    return out


def make_config(task: Any, args: argparse.Namespace, model: str, **extra: Any) -> dict[str, Any]:
    """The recipe for `task`/`model`, shortened to one epoch of warmup + steps, no lr warm-up."""
    from pretrain.engine.config import parse_key_values, resolve_config

    if task.name == "mae":
        recipe = "mae-vit-small-fractal" if "small" in model else "mae-vit-tiny-fractal"
        if "base" in model or "large" in model or "huge" in model:
            extra = {**PAPER_DECODER, **extra}
    else:
        recipe = "deit-tiny-fractaldb"
    overrides = {
        "model": model,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "epochs": 1,
        "warmup_epochs": 0,
        "device": args.device,
        "augment": "device",
        "amp": args.amp,
        "compile": args.compile if args.compile is not None else "auto (on for CUDA)",
        "workers": args.workers,
        "log_every": 1,
        "save_every": 0,
        **parse_key_values(args.set, "--set"),
        **extra,
    }
    cfg = resolve_config(task.defaults, recipe, overrides, task.name)
    cfg["model_args"].update(parse_key_values(args.model_arg, "--model-arg"))
    return cfg


def steady_rate(run: Path, warmup: int) -> dict[str, float]:
    """images/s and ms per step over the logged steps after `warmup` (windows tile the time)."""
    entries = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    batch = next(e for e in entries if e["type"] == "setup")["global_batch"]
    steps = [e for e in entries if e["type"] == "train" and e["step"] > warmup]
    seconds = sum(batch / e["images_per_s"] for e in steps)
    return {
        "images_per_s": batch * len(steps) / seconds,
        "step_ms": 1e3 * seconds / len(steps),
        "data_ms": 1e3 * sum(e["data_time"] for e in steps) / len(steps),
        "steps": len(steps),
    }


def measure(
    task_name: str, model: str, source: str, args: argparse.Namespace, data_dir: str | None
):
    """One engine run of warmup + steps optimizer steps; returns its steady-state rate."""
    from pretrain.engine.loop import train
    from pretrain.sources import open_shards_source

    if task_name == "mae":
        from pretrain.mae_task import MAETask

        task: Any = MAETask()
    else:
        from pretrain.supervised import SupervisedTask

        task = SupervisedTask()
    total = args.warmup + args.steps
    with tempfile.TemporaryDirectory(prefix="fdb-throughput-") as tmp:
        if source.startswith("shards"):
            cfg = make_config(
                task, args, model, data=data_dir, samples_per_epoch=total * args.batch_size,
                augment=SOURCE_AUGMENT[source],
            )  # fmt: skip
            data = open_shards_source(cfg, task.train_transform(cfg), task.eval_transform(cfg))
        else:
            cfg = make_config(task, args, model)
            in_chans = int(cfg["model_args"].get("in_chans", 3))
            classes = args.num_classes
            data = DeviceBatches(total, int(cfg["img_size"]), in_chans, classes, args.device)
        # The engine's start-up report goes to stdout; keep the benchmark's own output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            train(cfg, task, data, Path(tmp) / "run")
        rate = steady_rate(Path(tmp) / "run", args.warmup)
    # what the engine fell back from on this machine (e.g. torch.compile -> eager)
    fallbacks = dict(cfg.get("fallbacks") or {})
    return {"task": task_name, "model": model, "source": source, **rate, "fallbacks": fallbacks}


def plan(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """(task, model, sources) to measure, from --task/--model/--suite/--data/--no-shards."""
    shards = [] if args.no_shards else ["shards", "shards_cpu_augment"]
    if args.suite:
        return [("supervised", SUPERVISED_MODELS[0], ["synthetic"] + shards)] + [
            ("mae", m, ["synthetic"] + shards[:1]) for m in MAE_MODELS
        ]
    if args.task == "mae":
        models = args.model or MAE_MODELS
        # MAE figures are synthetic unless shards are given explicitly.
        return [("mae", m, ["synthetic"] + (shards if args.data else [])) for m in models]
    return [("supervised", m, ["synthetic"] + shards) for m in args.model or SUPERVISED_MODELS]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure everything `plan` asks for; returns the JSON-able report."""
    name = device_name(args.device)
    jobs = plan(args)
    data_dir = args.data
    with tempfile.TemporaryDirectory(prefix="fdb-shards-") as tmp:
        if data_dir is None and any("shards" in s for _, _, s in jobs):
            print(f"rendering {args.render_categories * args.render_instances} images of "
                  f"benchmark shards...", file=sys.stderr)  # fmt: skip
            data_dir = str(render_shards(Path(tmp), args.img_size, args.render_categories,
                                         args.render_instances))  # fmt: skip
        if data_dir is not None and any("shards" in s for _, _, s in jobs):
            if "://" not in data_dir and not Path(data_dir).exists():
                raise FractalDBError(f"--data {data_dir}: no such folder; fix: check the path")
            try:
                from shards.loader import read_dataset_info
            except ImportError:
                raise FractalDBError(
                    "reading shards needs the shards loader, which this checkout lacks; "
                    "fix: --no-shards for synthetic figures only"
                ) from None
            # the synthetic runs get the same classifier as the shards runs
            args.num_classes = int(read_dataset_info(data_dir)["num_classes"])
        results = []
        for task, model, sources in jobs:
            entry: dict[str, Any] = {"task": task, "model": model}
            for source in sources:
                print(f"measuring {task} {model} from {source}...", file=sys.stderr)
                r = measure(task, model, source, args, data_dir)
                entry[f"{source}_images_per_s"] = r["images_per_s"]
                entry[f"{source}_step_ms"] = r["step_ms"]
                entry[f"{source}_data_ms"] = r["data_ms"]
            for source in sources[1:]:
                prefix = "shards" if source == "shards" else source
                entry[f"{prefix}_ratio"] = (
                    entry[f"{source}_images_per_s"] / entry["synthetic_images_per_s"]
                )
            results.append(entry)
    return {
        "device": name,
        "amp": args.amp,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "workers": args.workers,
        "compile": args.compile if args.compile is not None else "auto (on for CUDA)",
        "data": args.data or ("rendered" if data_dir else None),
        "torch": torch.__version__,
        "results": results,
    }


def print_report(report: dict[str, Any]) -> None:
    """Human-readable figures, the device named beside them."""
    print(f"device: {report['device']} | amp {report['amp']} | {report['img_size']} px | "
          f"global batch {report['batch_size']} | {report['steps']} steps after "
          f"{report['warmup']} warm-up | {report['workers']} loader workers")  # fmt: skip
    for e in report["results"]:
        parts = [f"{e['task']:<10} {e['model']:<24}"]
        for source in SOURCE_AUGMENT:
            if f"{source}_images_per_s" in e:
                parts.append(f"{source} {e[f'{source}_images_per_s']:9.1f} img/s "
                             f"({e[f'{source}_step_ms']:.1f} ms/step)")  # fmt: skip
        if "shards_ratio" in e:
            goal = "meets" if e["shards_ratio"] >= 0.9 else "below"
            parts.append(f"shards/synthetic {e['shards_ratio']:.3f} ({goal} the 0.9 goal)")
        print("  ".join(parts) + f"  [{report['device']}]")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--task", choices=["supervised", "mae"], default="supervised")
    p.add_argument("--model", action="append", help="timm model (repeatable); default per task")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any configuration key, e.g. --set mixup=0")  # fmt: skip
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256, help="global batch")
    p.add_argument("--steps", type=int, default=50, help="measured optimizer steps")
    p.add_argument("--warmup", type=int, default=10, help="unmeasured steps first")
    p.add_argument("--data", help="shard folder (default: render a small set into a temp dir)")
    p.add_argument("--no-shards", action="store_true", help="synthetic figures only")
    p.add_argument("--suite", action="store_true",
                   help="supervised deit_tiny shards vs synthetic; MAE vit_tiny, vit_base")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on for CUDA, off on CPU)")  # fmt: skip
    p.add_argument("--workers", type=int, default=cores(), help="loader workers")
    p.add_argument("--num-classes", type=int, default=1000, help="classes of synthetic labels")
    p.add_argument("--render-categories", type=int, default=16)
    p.add_argument("--render-instances", type=int, default=32)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("--steps >= 1, --warmup >= 0 and --batch-size >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; one-line error and exit code 2 on bad input."""
    args = parse_args(argv)
    try:
        report = run(args)
    except FractalDBError as e:
        print(f"Error: {e.format_message()}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
