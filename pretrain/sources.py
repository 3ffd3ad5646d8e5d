"""Which DataSource a pre-training run reads, from its configuration: shards, `synthetic`, or
the on-the-fly renderer (in loader workers, or on the GPU); and what on-the-fly settles first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fractaldb.core.errors import FractalDBError
from fractaldb.settings import GPU_MODES, RENDER_DEVICES
from pretrain.engine.data import synthetic_data
from pretrain.gpu_source import GpuOnTheFlyData
from pretrain.shards_source import OnTheFlyData, ShardsData
from shards.presets import load_preset

# The render settings of --on-the-fly runs that name no render_preset.
ONTHEFLY_PRESET = "fractaldb-1k"


def check_exists(value: str, option: str) -> str:
    """The path or URL, after checking that a local path exists (one-line error otherwise)."""
    # URLs, brace patterns and pipes are the loader's business; local paths we check up front.
    if "://" in value or "{" in value or value.startswith("pipe:"):
        return value
    if not Path(value).exists():
        raise FractalDBError(f"{option} {value}: no such file or folder; fix: check the path")
    return value


def trains_on_cuda(cfg: dict[str, Any]) -> bool:
    """True if the run's training device is a CUDA GPU (`auto` included, where one is seen)."""
    device = str(cfg["device"])
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def resolve_render_device(cfg: dict[str, Any]) -> str:
    """Where --on-the-fly renders: "cuda" (in the training process) or "cpu" (loader workers)."""
    choice, gpu_mode = cfg["render_device"], cfg["gpu_mode"]
    if choice not in ("auto", *RENDER_DEVICES):
        raise FractalDBError(
            f"unknown render device {choice!r}; fix: --render-device auto, cpu or cuda"
        )
    if gpu_mode not in GPU_MODES:
        raise FractalDBError(
            f"unknown GPU render mode {gpu_mode!r}; fix: --gpu-mode {' or '.join(GPU_MODES)}"
        )
    if choice == "auto":
        from fractaldb.gpu import cuda_available

        hue = (cfg["render"] or {}).get("color") == "hue"
        choice = "cpu"
        if trains_on_cuda(cfg) and not hue:
            if cuda_available():
                choice = "cuda"
            else:
                from fractaldb.gpu import cuda_unavailable_reason
                from pretrain.engine.config import record_fallback

                reason, _, fix = cuda_unavailable_reason().partition("; fix: ")
                record_fallback(
                    cfg,
                    "render_device",
                    f"--on-the-fly renders on the CPU in loader workers, not on the GPU "
                    f"(slower): {reason}; fix: {fix}",
                )
    if choice == "cpu" and gpu_mode != "exact":
        raise FractalDBError(
            f"--gpu-mode {gpu_mode} renders on the GPU only; fix: --render-device cuda on a "
            "CUDA machine, or --gpu-mode exact"
        )
    return choice


def resolve_onthefly(cfg: dict[str, Any]) -> None:
    """Settle what --on-the-fly renders, into the configuration (before anything is opened):
    the preset, every render setting (not only the overridden ones) and where to render, so
    RUN/config.yaml records them and the data source only reads them."""
    if not cfg.get("on_the_fly"):
        return
    cfg["render_preset"] = cfg.get("render_preset") or ONTHEFLY_PRESET
    cfg["render"] = load_preset(cfg["render_preset"]).render.replace(**cfg["render"]).to_dict()
    cfg["render_device"] = resolve_render_device(cfg)


def open_shards_source(cfg: dict[str, Any], train_transform: Any, eval_transform: Any) -> Any:
    """Pick the DataSource for cfg `data` (shards, or `synthetic[:CLASSES]`) / `on_the_fly`;
    reads the configuration, never writes it (resolve_onthefly settled it)."""
    data, fly = cfg["data"], cfg["on_the_fly"]
    if data and fly:
        raise FractalDBError("--data and --on-the-fly both given; fix: use one of them")
    if not data and not fly:
        raise FractalDBError(
            "no training data; fix: --data SHARD_DIR (from `fractaldb render`) or "
            "--on-the-fly categories.json"
        )
    if data and str(data).startswith("synthetic"):
        _, _, n = str(data).partition(":")
        try:
            classes = int(n or 10)
        except ValueError:
            classes = 0
        if classes < 2:
            raise FractalDBError(
                f"--data {data}: synthetic data needs a whole number of classes, at least 2; "
                "fix: --data synthetic or synthetic:10"
            )
        per_class = max(int(cfg["samples_per_epoch"] or 64 * classes) // classes, 2)
        channels = int(cfg["model_args"].get("in_chans", 3))  # the model's, as for shards
        return synthetic_data(
            classes, per_class, int(cfg["img_size"]), seed=int(cfg["seed"]), channels=channels
        )
    if fly:
        if cfg["render_device"] not in RENDER_DEVICES or not cfg["render_preset"]:
            raise ValueError("--on-the-fly is not settled; call resolve_onthefly(cfg) first")
        check_exists(fly, "--on-the-fly")
        if cfg["val_data"]:
            check_exists(str(cfg["val_data"]), "--val-data")
        args = (
            fly,
            cfg["val_data"],
            eval_transform,
            cfg["render_preset"],
            cfg["instances_per_category"],
            train_transform,
            int(cfg["workers"]),
            cfg["samples_per_epoch"],
            cfg["max_bad_samples"],
        )
        kwargs = {"render_overrides": cfg["render"], "gpu_mode": cfg["gpu_mode"]}
        if cfg["render_device"] == "cuda":
            return GpuOnTheFlyData(*args, cfg=cfg, **kwargs)
        return OnTheFlyData(*args, **kwargs)
    check_exists(str(data), "--data")
    if cfg["val_data"]:
        check_exists(str(cfg["val_data"]), "--val-data")
    return ShardsData(
        str(data),
        cfg["val_data"],
        train_transform,
        eval_transform,
        int(cfg["workers"]),
        cfg["samples_per_epoch"],
        cfg["max_bad_samples"],
    )
