"""`fractaldb pretrain supervised|mae`: command-line front end of the training engine.

No torch import at module level: `fractaldb --help` must stay fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import click

from fractaldb.core.errors import FractalDBError
from fractaldb.settings import COLORS, GPU_MODES, MODES, RENDER_DEVICES, SCHEMES
from pretrain.engine.options import (
    ENGINE_OVERRIDES,
    OnlyWith,
    build_config,
    check_options,
    engine_options,
    refuse_ignored,
    startup_notice,
)

# options that override the configuration key of the same name when given, beside the
# engine's (pretrain.engine.options.ENGINE_OVERRIDES)
DATA_OVERRIDES = ("data", "val_data", "on_the_fly", "render_device", "gpu_mode")
MAE_OVERRIDES = ("mask_ratio", "decoder_dim", "decoder_depth", "decoder_heads", "norm_pix_loss")


def data_options(f: Callable) -> Callable:
    """Where pre-training reads its images: shards, synthetic patterns, or the renderer."""
    opts = [
        click.option(
            "--data",
            help="Training shards: a folder from `fractaldb render`, a brace "
            "URL pattern, or `synthetic[:CLASSES]` (in-memory patterns, smoke tests).",
        ),
        click.option(
            "--val-data",
            help="Held-out shards (other instances of the same categories), evaluated every "
            "epoch: top-1/top-5 accuracy (supervised), masked reconstruction loss (MAE).",
        ),
        click.option(
            "--on-the-fly",
            "on_the_fly",
            metavar="CATEGORIES_JSON",
            help="Render training images instead of reading shards: on the GPU when training "
            "on CUDA (fractaldb[cuda]), else in loader workers.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


# --on-the-fly render options -> render setting (merged into the config's `render` dict).
RENDER_OPTIONS = {
    "image_size": "image_size",
    "points": "points",
    "render_mode": "mode",
    "color": "color",
    "scheme": "scheme",
}


# options that do nothing without --on-the-fly, or beside synthetic data: refused there
ONLY_WITH = (
    OnlyWith(
        "--on-the-fly rendering",
        lambda o: bool(o.get("on_the_fly")),
        {
            "image_size": "--image-size",
            "points": "--points",
            "render_mode": "--mode",
            "color": "--color",
            "scheme": "--scheme",
            "render_device": "--render-device",
            "gpu_mode": "--gpu-mode",
        },
        fix="drop it (shards keep the settings they were rendered with: `fractaldb shards "
        "inspect DIR`)",
        fixes={"image_size": "--img-size {value} sets the model input size for --data"},
    ),
    OnlyWith(
        "shards or --on-the-fly training data",
        lambda o: not str(o.get("data") or "").startswith("synthetic"),
        {"val_data": "--val-data"},
        fix="drop it (synthetic data brings its own held-out set)",
    ),
)


def render_options(f: Callable) -> Callable:
    """--on-the-fly options: render settings over the preset's, and where to render."""
    opts = [
        click.option(
            "--image-size",
            type=int,
            help="--on-the-fly: rendered image side (the model input is --img-size).",
        ),
        click.option("--points", type=int, help="--on-the-fly: chaos-game points per image."),
        click.option(
            "--mode",
            "render_mode",
            type=click.Choice(MODES),
            help="--on-the-fly: point or 3x3 patch stamps.",
        ),
        click.option("--color", type=click.Choice(COLORS), help="--on-the-fly: colouring."),
        click.option(
            "--scheme",
            type=click.Choice(SCHEMES),
            help="--on-the-fly: how instances of a category differ.",
        ),
        click.option(
            "--render-device",
            type=click.Choice(("auto", *RENDER_DEVICES)),
            help="--on-the-fly: render on the GPU in the training process (cuda; needs "
            "fractaldb[cuda]) or in loader workers (cpu); auto = cuda when training on CUDA.",
        ),
        click.option(
            "--gpu-mode",
            type=click.Choice(GPU_MODES),
            help="--on-the-fly on the GPU: exact (the CPU renderer's pixels) or fast (many "
            "chains per image: same distribution, other pixels).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def pretrain_config(task: Any, opts: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """The shared resolution (pretrain.engine.options.build_config), then what only
    pre-training has: the --on-the-fly render options, settled into the configuration."""
    from pretrain.sources import resolve_onthefly

    cfg = build_config(task, opts, (*ENGINE_OVERRIDES, *DATA_OVERRIDES, *overrides))
    refuse_ignored({**opts, "on_the_fly": cfg["on_the_fly"], "data": cfg["data"]}, ONLY_WITH)
    render = {key: opts[o] for o, key in RENDER_OPTIONS.items() if opts.get(o) is not None}
    cfg["render"] = {**cfg["render"], **render}
    resolve_onthefly(cfg)
    return cfg


def run_task(task: Any, opts: dict[str, Any], overrides: Iterable[str] = ()) -> None:
    """Resolve the configuration, open the data and run the engine (shared by subcommands)."""
    from fractaldb.core.errors import check_writable, writing_to
    from pretrain.engine import distributed as D
    from pretrain.engine.config import dump_config
    from pretrain.engine.loop import train
    from pretrain.engine.runfolder import remove_if_failed_early
    from pretrain.sources import open_shards_source

    cfg = pretrain_config(task, opts, overrides)
    if opts.get("print_config"):
        click.echo(dump_config(cfg), nl=False)
        return
    check_writable(opts["out"], "run folder")
    try:
        with writing_to(opts["out"], "run folder"), remove_if_failed_early(opts["out"]):
            data = open_shards_source(cfg, task.train_transform(cfg), task.eval_transform(cfg))
            train(cfg, task, data, opts["out"], resume=opts.get("resume"),
                  verbose=bool(opts.get("verbose")))  # fmt: skip
    finally:
        D.cleanup()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def pretrain() -> None:
    """Pre-train vision transformers on FractalDB (one CPU to multi-node GPU clusters).

    \b
    Multi-GPU / multi-node: launch the same command under torchrun, e.g.
      torchrun --nproc-per-node 8 --no-python fractaldb pretrain supervised ...
    (see examples/slurm/pretrain.sbatch). --batch-size is always the GLOBAL batch.
    """


@pretrain.command()
@data_options
@engine_options
@render_options
def supervised(**opts: Any) -> None:
    """Supervised classification pre-training (DeiT recipe) on fractal categories.

    \b
    Examples:
      # the AAAI 2022 DeiT-Tiny recipe on rendered shards, with a held-out set
      fractaldb pretrain supervised --recipe deit-tiny-fractaldb \\
          --data data/fdb1k --val-data data/fdb1k-val --out runs/deit-tiny
      # a 2-layer ViT at 32 px on CPU, in seconds
      fractaldb pretrain supervised --recipe tiny-cpu --data synthetic:10 --out runs/tiny
      # CvT-13 from Hugging Face transformers (pip install 'fractaldb[hf]'); RUN/hf loads
      # with CvtForImageClassification.from_pretrained
      fractaldb pretrain supervised --recipe deit-tiny-fractaldb --model hf:cvt-13 \\
          --data data/fdb1k --out runs/cvt13
      # straight from the GPU renderer (no loader workers, no disk), 128 px renders
      fractaldb pretrain supervised --recipe deit-tiny-fractaldb \\
          --on-the-fly categories.json --image-size 128 --points 50000 --out runs/otf
      # override anything; continue an interrupted run exactly
      fractaldb pretrain supervised --recipe deit-tiny-fractaldb --data data/fdb1k \\
          --batch-size 2048 --blr 5e-4 --set mixup=0.5 --out runs/a --resume auto
    """
    if not opts.get("recipe") and not opts.get("model"):
        raise FractalDBError(
            "no model; fix: --recipe deit-tiny-fractaldb (or tiny-cpu) or --model NAME"
        )
    check_options(opts)
    startup_notice("pretrain supervised", opts)
    from pretrain.supervised import SupervisedTask

    run_task(SupervisedTask(), opts)


MAE_DEFAULT_RECIPE = "mae-vit-tiny-fractal"


@pretrain.command()
@data_options
@engine_options
@render_options
@click.option(
    "--mask-ratio",
    type=float,
    help="Fraction of patches masked per image, in (0, 1) (recipe default 0.75).",
)
@click.option("--decoder-dim", type=int, help="Decoder width (multiple of 4 and of heads).")
@click.option("--decoder-depth", type=int, help="Decoder transformer blocks.")
@click.option("--decoder-heads", type=int, help="Decoder attention heads.")
@click.option(
    "--norm-pix-loss/--no-norm-pix-loss",
    default=None,
    help="Regress per-patch normalised pixels (MAE default) or raw pixels.",
)
def mae(**opts: Any) -> None:
    """Masked-autoencoder (MAE) self-supervised pre-training of a timm ViT encoder.

    Labels are ignored: the same shards, or the on-the-fly renderer, serve. Without --recipe
    the mae-vit-tiny-fractal recipe is used. RUN/model.safetensors holds the encoder only
    (load with timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=...),
    num_classes=0, **model_args); RUN/model.json lists the args); RUN/reconstruction-epochNNN.png
    shows original / masked / reconstruction every recon_every epochs.

    \b
    Examples:
      # MAE ViT-Tiny on rendered shards (He et al. 2022 values scaled to a tiny encoder)
      fractaldb pretrain mae --data data/fdb1k --val-data data/fdb1k-val --out runs/mae-t
      # ViT-Small, 8 GPUs, straight from the renderer
      torchrun --nproc-per-node 8 --no-python fractaldb pretrain mae \\
          --recipe mae-vit-small-fractal --on-the-fly categories.json --out runs/mae-s
      # a 2-layer MAE at 32 px on CPU, in seconds
      fractaldb pretrain mae --recipe mae-tiny-cpu --data synthetic --out runs/mae-cpu
      # continue an interrupted run exactly (same settings), overriding the recipe
      fractaldb pretrain mae --data data/fdb1k --mask-ratio 0.6 --decoder-depth 2 \\
          --no-norm-pix-loss --out runs/mae-t2 --resume auto
    """
    check_options(opts, (*ENGINE_OVERRIDES, *MAE_OVERRIDES))
    startup_notice("pretrain mae", opts)
    from pretrain.mae_task import MAETask

    if not opts.get("recipe"):
        opts["recipe"] = MAE_DEFAULT_RECIPE
    run_task(MAETask(), opts, MAE_OVERRIDES)


if __name__ == "__main__":
    pretrain()
