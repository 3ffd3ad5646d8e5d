"""The command-line options every training command shares, declared once, and how options,
recipe and --set overrides become a run's configuration.

`fractaldb pretrain supervised|mae` (pretrain.cli) and `fractaldb finetune` (finetune.cli) each
stack `engine_options` under their own data options; `build_config` turns the parsed options
into the resolved configuration. No torch import here: `fractaldb --help` must stay fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import click

from fractaldb.core.errors import FractalDBError
from fractaldb.core.options import parse_key_values
from pretrain.engine.config import AMP_MODES, AUGMENT_MODES, resolve_config

# options of `engine_options` that override the configuration key of the same name when given
ENGINE_OVERRIDES = (
    "model",
    "epochs",
    "batch_size",
    "micro_batch",
    "lr",
    "blr",
    "img_size",
    "workers",
    "augment",
    "amp",
    "compile",
    "ema",
    "device",
    "seed",
    "log_every",
    "save_every",
    "samples_per_epoch",
    "max_bad_samples",
)


def engine_options(f: Callable) -> Callable:
    """The options every engine-driven command shares (supervised, mae, finetune): run folder,
    recipe, model, batch and schedule, numerics, resume. Each command adds its own data options."""
    opts = [
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
            type=click.Choice(AUGMENT_MODES),
            help="Where training images are augmented: device = whole uint8 batches on the "
            "training device (workers only decode), cpu = timm's PIL transform in the workers; "
            "auto = device on CUDA, cpu on CPU.",
        ),
        click.option(
            "--amp",
            type=click.Choice(AMP_MODES),
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
        click.option(
            "--verbose",
            is_flag=True,
            help="Print the whole resolved configuration at start (default: a short summary; "
            "all of it is in RUN/config.yaml either way).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


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


def check_options(opts: dict[str, Any], overrides: Iterable[str] = ENGINE_OVERRIDES) -> None:
    """Refuse out-of-range numeric options (--epochs -1, --lr nan...) before torch is imported:
    the recipe's own values are checked again with the full configuration."""
    from pretrain.engine.config import check_ranges

    check_ranges({name: opts[name] for name in overrides if opts.get(name) is not None})


def build_config(task: Any, opts: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Resolve recipe + --set + the options named in `overrides` (each overriding the config key
    of its name, when given) + --model-arg into the run's configuration."""
    values = parse_key_values(opts.get("sets") or (), "--set")
    for name in overrides:
        if opts.get(name) is not None:
            values[name] = opts[name]
    model_args = parse_key_values(opts.get("model_arg") or (), "--model-arg")
    cfg = resolve_config(task.defaults, opts.get("recipe"), values, task.name)
    cfg["model_args"].update(model_args)
    return cfg


@dataclass(frozen=True)
class OnlyWith:
    """Options that do something in one mode only (`active`, read from the options): given in
    another mode they are refused, not silently ignored. `fixes` per option, `{value}` is the
    value given; `fix` for the others."""

    mode: str
    active: Callable[[dict[str, Any]], bool]
    flags: dict[str, str]  # parameter name -> the option as typed
    fix: str = "drop it"
    fixes: dict[str, str] = field(default_factory=dict)


def refuse_ignored(opts: dict[str, Any], rules: Iterable[OnlyWith]) -> None:
    """One line for the first option given where it would do nothing, naming what applies."""
    for rule in rules:
        if rule.active(opts):
            continue
        for name, flag in rule.flags.items():
            value = opts.get(name)
            if value is None or value is False:
                continue
            given = flag if value is True else f"{flag} {value}"
            fix = rule.fixes.get(name, rule.fix).format(value=value)
            raise FractalDBError(
                f"{given} only applies to {rule.mode}, here it would be ignored; fix: {fix}"
            )
