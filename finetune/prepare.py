"""Assemble a fine-tuning run from CLI options: recipe, data, model, initial weights, results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fractaldb.errors import FractalDBError

from .datasets import DownstreamData, build_datasets
from .model import create_model, freeze_for_linear_probe
from .recipe import load_recipe, scaled_lr
from .results import new_results
from .transforms import build_transforms
from .weights import load_init, resolve_init


@dataclass
class FinetuneOptions:
    """Everything the `finetune` command was asked to do."""

    dataset: str
    data_root: str
    init: str
    model: str | None = None
    recipe: str = "deit-cifar-sgd"
    download: bool = False
    test_root: str | None = None
    val_split: float | None = None
    linear_probe: bool = False
    img_size: int | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None


@dataclass
class FinetuneSetup:
    """A ready-to-train fine-tuning run."""

    options: FinetuneOptions
    recipe: dict[str, Any]
    data: DownstreamData
    model: Any
    model_name: str
    model_args: dict[str, Any]
    img_size: int
    epochs: int
    batch_size: int
    lr: float
    init_summary: dict[str, Any]
    trainable: list[str]
    results: dict[str, Any]


def pretrain_model(config: dict[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    """Model name and constructor args recorded in a pre-training run's config, if any."""
    if not isinstance(config, dict):
        return None, {}
    model = config.get("model")
    if isinstance(model, str):
        return model, dict(config.get("model_args") or {})
    if isinstance(model, dict):
        return model.get("name"), dict(model.get("args") or model.get("model_args") or {})
    return None, {}


def normalization(recipe: dict[str, Any], config: dict[str, Any] | None) -> tuple[list, list]:
    """Mean/std of the pre-training run when recorded (inputs must match it), else the recipe's."""
    for block in (config or {}, recipe):
        if (
            isinstance(block, dict)
            and block.get("mean") is not None
            and block.get("std") is not None
        ):
            return list(block["mean"]), list(block["std"])
    return [0.5] * 3, [0.5] * 3


def prepare(opts: FinetuneOptions, echo: Callable[[str], None] = print) -> FinetuneSetup:
    """Resolve the recipe, build transforms, datasets and model, and load the initial weights."""
    recipe = load_recipe(opts.recipe)
    init_info = resolve_init(opts.init)
    pre_name, pre_args = pretrain_model(init_info["config"])
    model_name = opts.model or pre_name
    if not model_name:
        raise FractalDBError("no --model given and none recorded in --init; fix: pass --model NAME")
    model_args = dict(recipe.get("model_args") or {})
    if model_name == pre_name:
        # same architecture as pre-trained; head, size and regularisation are the fine-tune's own
        skip = {"num_classes", "img_size", "drop_path_rate", "drop_rate", "pretrained"}
        model_args.update({k: v for k, v in pre_args.items() if k not in skip})
    model_args.update(opts.model_args)
    img_size = int(opts.img_size or recipe.get("img_size") or 224)
    epochs = int(opts.epochs or recipe["epochs"])
    batch_size = int(opts.batch_size or recipe["batch_size"])
    lr = float(opts.lr) if opts.lr is not None else scaled_lr(recipe, batch_size)
    if min(epochs, batch_size, img_size) <= 0 or lr <= 0:
        raise FractalDBError(
            "--epochs, --batch-size, --img-size and --lr must be positive; fix: check them"
        )

    mean, std = normalization(recipe, init_info["config"])
    train_tf, eval_tf = build_transforms(img_size, recipe, mean=mean, std=std)
    data = build_datasets(
        opts.dataset,
        opts.data_root,
        train_transform=train_tf,
        eval_transform=eval_tf,
        download=opts.download,
        test_root=opts.test_root,
        val_split=opts.val_split,
    )
    # a frozen backbone gets no stochastic depth: it only adds noise to the probed features
    drop_path = 0.0 if opts.linear_probe else float(recipe.get("drop_path") or 0.0)
    model = create_model(
        model_name, data.num_classes, img_size=img_size, drop_path=drop_path, model_args=model_args
    )
    init_summary = load_init(model, opts.init, model_name=model_name, echo=echo)
    trainable = freeze_for_linear_probe(model) if opts.linear_probe else [
        n for n, p in model.named_parameters() if p.requires_grad
    ]  # fmt: skip
    results = new_results(
        dataset=data.name,
        dataset_splits=data.splits,
        num_classes=data.num_classes,
        classes=data.classes,
        model=model_name,
        model_args=model_args,
        img_size=img_size,
        init=init_summary,
        recipe=recipe["name"],
        recipe_source=recipe["source"],
        linear_probe=opts.linear_probe,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        normalize={"mean": mean, "std": std},
    )
    return FinetuneSetup(
        opts, recipe, data, model, model_name, model_args, img_size, epochs, batch_size, lr,
        init_summary, trainable, results,
    )  # fmt: skip
