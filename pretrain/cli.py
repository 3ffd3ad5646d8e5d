"""`fractaldb pretrain supervised|mae`: command-line front end of the training engine.

No torch import at module level: `fractaldb --help` must stay fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from fractaldb.errors import FractalDBError

# option name -> config key, for options that override a recipe value when given.
_OVERRIDES = {
    "data": "data",
    "val_data": "val_data",
    "on_the_fly": "on_the_fly",
    "model": "model",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "micro_batch": "micro_batch",
    "lr": "lr",
    "blr": "blr",
    "img_size": "img_size",
    "workers": "workers",
    "augment": "augment",
    "amp": "amp",
    "compile": "compile",
    "ema": "ema",
    "device": "device",
    "seed": "seed",
    "log_every": "log_every",
    "save_every": "save_every",
    "samples_per_epoch": "samples_per_epoch",
    "max_bad_samples": "max_bad_samples",
    "render_device": "render_device",
    "gpu_mode": "gpu_mode",
    # mae only
    "mask_ratio": "mask_ratio",
    "decoder_dim": "decoder_dim",
    "decoder_depth": "decoder_depth",
    "decoder_heads": "decoder_heads",
    "norm_pix_loss": "norm_pix_loss",
}


def common_options(f: Callable) -> Callable:
    """Options shared by every engine-driven command (supervised, mae, fine-tuning)."""
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
        click.option(
            "--out",
            required=True,
            type=click.Path(file_okay=False),
            help="Run folder: config.yaml, metrics.jsonl, tb/, last.pt, model.safetensors.",
        ),
        click.option(
            "--recipe",
            help="Shipped recipe name or a YAML file (e.g. an old "
            "RUN/config.yaml); explicit options override it.",
        ),
        click.option(
            "--model",
            help="timm model name, e.g. deit_tiny_patch16_224, or a Hugging Face model: "
            "hf:cvt-13, hf:cvt-21 (needs fractaldb[hf]).",
        ),
        click.option(
            "--model-arg",
            "model_arg",
            multiple=True,
            metavar="KEY=VALUE",
            help="Extra timm.create_model argument (repeatable), e.g. patch_size=8.",
        ),
        click.option("--epochs", type=int),
        click.option("--batch-size", type=int, help="GLOBAL batch over all ranks."),
        click.option(
            "--micro-batch",
            type=int,
            help="Per-rank micro-batch; the rest of the "
            "per-rank batch is reached by gradient accumulation.",
        ),
        click.option("--lr", type=float, help="Absolute learning rate (overrides --blr)."),
        click.option("--blr", type=float, help="Base lr; lr = blr x batch / lr_base_size."),
        click.option("--img-size", type=int),
        click.option("--workers", type=int, help="Data-loading worker processes per rank."),
        click.option(
            "--augment",
            type=click.Choice(["auto", "cpu", "device"]),
            help="Where training images are augmented: device = whole uint8 batches on the "
            "training device (workers only decode), cpu = timm's PIL transform in the workers; "
            "auto = device on CUDA, cpu on CPU.",
        ),
        click.option(
            "--amp",
            type=click.Choice(["auto", "bf16", "fp16", "none"]),
            help="Autocast dtype; auto = bf16 on GPU, none on CPU.",
        ),
        click.option(
            "--compile/--no-compile",
            default=None,
            help="torch.compile the model (default: on for CUDA, off on CPU).",
        ),
        click.option("--ema/--no-ema", default=None, help="Keep an EMA of the weights."),
        click.option("--device", help="auto, cpu, cuda or cuda:N (torchrun: one GPU per rank)."),
        click.option("--seed", type=int),
        click.option(
            "--resume",
            metavar="auto|PATH",
            help="Continue a run: `auto` = RUN/last.pt if present, else start fresh.",
        ),
        click.option("--log-every", type=int, help="Optimizer steps between metric lines."),
        click.option(
            "--save-every",
            type=int,
            help="Keep a checkpoint every N epochs (RUN/last.pt is rewritten every epoch).",
        ),
        click.option("--samples-per-epoch", type=int),
        click.option(
            "--max-bad-samples",
            type=int,
            help="Undecodable images (or unreadable shards) skipped and counted per epoch "
            "before the run stops (recipe default 100; 0 = stop at the first).",
        ),
        click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override any configuration key (repeatable), e.g. --set mixup=0.",
        ),
        click.option(
            "--print-config", is_flag=True, help="Print the resolved configuration and exit."
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def check_options(opts: dict[str, Any]) -> None:
    """Refuse out-of-range numeric options (--epochs -1, --lr nan...) before torch is imported:
    the recipe's own values are checked again with the full configuration."""
    from pretrain.config import check_ranges

    check_ranges(
        {key: opts[name] for name, key in _OVERRIDES.items() if opts.get(name) is not None}
    )


def startup_notice(command: str, opts: dict[str, Any]) -> None:
    """Say at once, on an interactive terminal, that the slow imports are under way.

    torch, torchvision (which pulls in torch._dynamo) and timm take 10-15 s to import on a cold
    start; without this line the command looks hung. Not printed with --print-config, on
    ranks other than 0, or when stderr is a pipe or a file (logs keep one line per error).
    """
    import os
    import sys

    if opts.get("print_config") or os.environ.get("RANK", "0") != "0":
        return
    if not sys.stderr.isatty():
        return
    click.echo(
        f"fractaldb {command} -> {opts.get('out')}: loading torch and timm, then the data "
        "(10-20 s on a first start)...",
        err=True,
    )


# --on-the-fly render options -> render setting (merged into the config's `render` dict).
RENDER_OPTIONS = {
    "image_size": "image_size",
    "points": "points",
    "render_mode": "mode",
    "color": "color",
    "scheme": "scheme",
}


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
            type=click.Choice(["point", "patch"]),
            help="--on-the-fly: point or 3x3 patch stamps.",
        ),
        click.option(
            "--color", type=click.Choice(["gray", "color", "hue"]), help="--on-the-fly: colouring."
        ),
        click.option(
            "--scheme",
            type=click.Choice(["fractaldb", "jitter", "none"]),
            help="--on-the-fly: how instances of a category differ.",
        ),
        click.option(
            "--render-device",
            type=click.Choice(["auto", "cpu", "cuda"]),
            help="--on-the-fly: render on the GPU in the training process (cuda; needs "
            "fractaldb[cuda]) or in loader workers (cpu); auto = cuda when training on CUDA.",
        ),
        click.option(
            "--gpu-mode",
            type=click.Choice(["exact", "fast"]),
            help="--on-the-fly on the GPU: exact (the CPU renderer's pixels) or fast (many "
            "chains per image: same distribution, other pixels).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def build_config(task: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """Resolve recipe + --set + explicit options into the run's configuration."""
    from pretrain.config import parse_key_values, resolve_config

    overrides = parse_key_values(opts.get("sets") or (), "--set")
    for name, key in _OVERRIDES.items():
        if opts.get(name) is not None:
            overrides[key] = opts[name]
    model_args = parse_key_values(opts.get("model_arg") or (), "--model-arg")
    cfg = resolve_config(task.defaults, opts.get("recipe"), overrides, task.name)
    cfg["model_args"].update(model_args)
    from pretrain.augment import resolve_augment

    # recorded resolved, so a resume on another machine keeps the same data path; batches
    # rendered on the GPU are augmented where they are
    gpu_rendered = cfg.get("on_the_fly") and cfg.get("render_device") == "cuda"
    if cfg["augment"] == "auto" and gpu_rendered:
        cfg["augment"] = "device"
    cfg["augment"] = resolve_augment(cfg["augment"], cfg["device"])
    if cfg.get("on_the_fly") and not cfg.get("render_preset"):
        from pretrain.config import ONTHEFLY_PRESET

        cfg["render_preset"] = ONTHEFLY_PRESET  # recorded: config.yaml says what was rendered
    render = {key: opts[o] for o, key in RENDER_OPTIONS.items() if opts.get(o) is not None}
    cfg["render"] = {**cfg["render"], **render}
    return cfg


def run_task(task: Any, opts: dict[str, Any]) -> None:
    """Resolve the configuration, open the data and run the engine (shared by subcommands)."""
    from fractaldb.errors import check_writable, writing_to
    from pretrain import distributed as D
    from pretrain.config import dump_config
    from pretrain.engine import train
    from pretrain.runfolder import remove_if_failed_early
    from pretrain.shards_source import open_shards_source

    cfg = build_config(task, opts)
    if opts.get("print_config"):
        click.echo(dump_config(cfg), nl=False)
        return
    check_writable(opts["out"], "run folder")
    try:
        with writing_to(opts["out"], "run folder"), remove_if_failed_early(opts["out"]):
            data = open_shards_source(cfg, task.train_transform(cfg), task.eval_transform(cfg))
            train(cfg, task, data, opts["out"], resume=opts.get("resume"))
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
@common_options
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
@common_options
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
    check_options(opts)
    startup_notice("pretrain mae", opts)
    from pretrain.mae_task import MAETask

    if not opts.get("recipe"):
        opts["recipe"] = MAE_DEFAULT_RECIPE
    run_task(MAETask(), opts)


if __name__ == "__main__":
    pretrain()
