"""The options of the fine-tuning stage's commands (what to evaluate on, from which weights,
how to fine-tune) and the names they choose from; torch-free, the console reads them for
--help. The training options `fractaldb finetune` shares with pre-training are
pretrain.engine.options.engine_options."""

from __future__ import annotations

from collections.abc import Callable

import click

from pretrain.engine.options import OnlyWith

# DeiT's distillation losses (finetune.distill); none = plain fine-tuning
DISTILLATIONS = ("none", "hard", "soft")

# dataset options that do nothing for some datasets: refused there (refuse_ignored); the
# folder-only ones are refused by finetune.datasets.build_datasets
ONLY_WITH = (
    OnlyWith(
        "the torchvision datasets (cifar10, cifar100, pets, flowers102)",
        lambda o: o.get("dataset") != "folder",
        {"download": "--download"},
        fix="drop it (an image folder is read where it is; --data-root names it)",
    ),
)


def dataset_options(f: Callable) -> Callable:
    """What to evaluate on and from which weights (`fractaldb finetune` and `fractaldb probe`)."""
    opts = [
        click.option(
            "--dataset", required=True, help="cifar10, cifar100, pets, flowers102 or folder."
        ),
        click.option("--data-root", required=True, type=click.Path(), help="Dataset root folder."),
        click.option(
            "--init", "init", required=True, help="Run folder, weights file, 'timm' or 'scratch'."
        ),
        click.option("--download", is_flag=True, help="Let torchvision download the dataset."),
        click.option(
            "--test-root", type=click.Path(), default=None, help="folder: separate test folder."
        ),
        click.option(
            "--val-split",
            type=float,
            default=None,
            help="folder: hold out this fraction of each class.",
        ),
        click.option(
            "--val-per-class",
            type=int,
            default=None,
            help="folder: hold out the last N images (sorted by path) of each class.",
        ),
        click.option(
            "--train-per-class",
            type=int,
            default=None,
            help="folder: train on the first N images (sorted by path) of each class's "
            "training part (a low-data transfer set).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def finetune_options(f: Callable) -> Callable:
    """How `fractaldb finetune` trains: linear probe, DeiT distillation from a teacher."""
    opts = [
        click.option("--linear-probe", is_flag=True, help="Train only the classifier head."),
        click.option(
            "--teacher",
            metavar="RUN|FILE",
            help="Teacher for DeiT distillation: a fractaldb run folder or its model.safetensors.",
        ),
        click.option(
            "--distillation",
            type=click.Choice(DISTILLATIONS),
            help="DeiT's distillation loss on a *_distilled_* model (recipe default: none).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f
