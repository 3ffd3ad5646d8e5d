"""Batched augmentation images/s: this project's ops (pretrain/engine/augment.py) against kornia's
augmentation module on the same batches and device, with timm's per-image PIL chain (one
process) as the reference the device path replaces.

Two workloads, each a uint8 batch of gray 362 px fractal-like images -> 224 px, 3 channels:
  crop      RandomResizedCrop (0.08-1, bicubic) + horizontal flip + normalise (MAE-like)
  recipe    the DeiT/FractalDB recipe: the above + RandAugment m9 n2 + random erasing 0.25
kornia is optional (`uv pip install kornia`); without it only ours and PIL are timed.

    uv run python benchmarks/augment_batch.py --device cuda --batch 256 --json
    uv run python benchmarks/augment_batch.py --device cpu --batch 32 --size 362 --out 224
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch  # noqa: E402

from pretrain.engine.augment import AugmentConfig, BatchAugment  # noqa: E402


def device_name(device: torch.device) -> str:
    """The GPU's name, else the CPU's with its usable cores."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU {platform.processor() or platform.machine()} ({cores} cores)"


def sample_batch(n: int, size: int, device: torch.device) -> torch.Tensor:
    """Sparse bright points on black, like a FractalDB render, as uint8 (n, 1, size, size)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 1, size, size, generator=g) > 0.9).to(torch.uint8) * 255
    return x.to(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Seconds per call, after one warm-up call, synchronising the device around the timing."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / repeats


def ours(workload: str, out: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """This project's batched augmentation for the workload."""
    cfg = AugmentConfig(img_size=out, scale=(0.08, 1.0), hflip=0.5)
    if workload == "recipe":
        cfg = AugmentConfig(img_size=out, hflip=0.5, auto_augment="rand-m9-mstd0.5", reprob=0.25)
    return BatchAugment(cfg)


def kornia_pipeline(workload: str, out: int, device: torch.device):
    """kornia's equivalent: RandomResizedCrop + flip (+ RandAugment + RandomErasing)."""
    import kornia.augmentation as K
    from kornia.augmentation.auto import RandAugment

    steps = [
        K.RandomResizedCrop((out, out), scale=(0.08, 1.0), resample="BICUBIC"),
        K.RandomHorizontalFlip(p=0.5),
    ]
    if workload == "recipe":
        steps += [RandAugment(n=2, m=9), K.RandomErasing(p=0.25)]
    seq = K.AugmentationSequential(*steps).to(device)
    mean = torch.tensor([0.5, 0.5, 0.5], device=device).view(1, 3, 1, 1)

    def run(images: torch.Tensor) -> torch.Tensor:
        x = images.float().div(255).expand(-1, 3, -1, -1)
        return (seq(x) - mean) / mean

    return run


def pil_rate(workload: str, size: int, out: int, n: int) -> float:
    """Images/s of timm's PIL transform in this one process (gray -> RGB as the old loader)."""
    import numpy as np
    from PIL import Image
    from timm.data import create_transform

    tf = create_transform(
        out, is_training=True, scale=(0.08, 1.0), hflip=0.5, interpolation="bicubic",
        auto_augment="rand-m9-mstd0.5" if workload == "recipe" else None,
        re_prob=0.25 if workload == "recipe" else 0.0, color_jitter=None,
        mean=(0.5,) * 3, std=(0.5,) * 3,
    )  # fmt: skip
    arr = sample_batch(1, size, torch.device("cpu"))[0, 0].numpy()
    rgb = np.repeat(arr[..., None], 3, axis=2)
    t0 = time.perf_counter()
    for _ in range(n):
        tf(Image.fromarray(rgb))
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    """Time each implementation and workload; print a table or one JSON line."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=362, help="source image size")
    p.add_argument("--out", type=int, default=224, help="output size")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--pil-images", type=int, default=64, help="images for the PIL reference")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    images = sample_batch(args.batch, args.size, device)
    try:
        import kornia  # noqa: F401

        have_kornia = True
    except ImportError:
        have_kornia = False
    results = []
    for workload in ("crop", "recipe"):
        row = {"workload": workload}
        fn = ours(workload, args.out)
        row["ours_images_per_s"] = args.batch / timed(lambda f=fn: f(images), device, args.repeats)
        if have_kornia:
            k = kornia_pipeline(workload, args.out, device)
            sec = timed(lambda k=k: k(images), device, args.repeats)
            row["kornia_images_per_s"] = args.batch / sec
            row["ours_over_kornia"] = row["ours_images_per_s"] / row["kornia_images_per_s"]
        row["pil_one_process_images_per_s"] = pil_rate(
            workload, args.size, args.out, args.pil_images
        )
        results.append(row)
    report = {
        "device": device_name(device),
        "batch": args.batch,
        "size": args.size,
        "out": args.out,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": results,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"device: {report['device']} | batch {args.batch} | {args.size} -> {args.out} px")
        for r in results:
            line = f"  {r['workload']:<7} ours {r['ours_images_per_s']:9.0f} img/s"
            if "kornia_images_per_s" in r:
                line += f"  kornia {r['kornia_images_per_s']:9.0f} img/s"
                line += f"  (ours/kornia {r['ours_over_kornia']:.2f})"
            line += f"  PIL 1 process {r['pil_one_process_images_per_s']:7.0f} img/s"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
