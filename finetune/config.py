"""A fine-tuning run's configuration: the engine's recipe resolution, plus what --init implies.

Recipes are the engine's flat YAML files (shipped ones in finetune/recipes/); explicit options
override them, and a pre-training run given as --init supplies the model, its architecture
arguments, its image size and its input normalisation unless they are set explicitly.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fractaldb.core.errors import FractalDBError
from fractaldb.core.options import parse_key_values
from pretrain.engine.options import ENGINE_OVERRIDES, build_config

from .distill import check_distillation, describe_teacher
from .weights import _read_weights, resolve_init

DEFAULT_RECIPE = "deit-cifar-sgd"
# constructor arguments that belong to the fine-tune, not to the pre-trained architecture
# (in_chans: downstream photos are RGB; gray-pretrained kernels are adapted when loaded)
_NOT_ARCH = {"num_classes", "img_size", "drop_path_rate", "drop_rate", "pretrained", "in_chans"}
# option name -> task config key, applied when given
_TASK_OPTIONS = (
    "dataset", "init", "val_split", "val_per_class", "train_per_class", "teacher", "distillation",
)  # fmt: skip


def recipe_path(name_or_path: str) -> str:
    """The YAML file of a shipped fine-tuning recipe name, or the given recipe file."""
    from pretrain.engine.config import load_recipe

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FractalDBError(f"recipe file {path} not found; fix: check the --recipe path")
        return str(path)
    load_recipe(name_or_path, "finetune")  # one-line error naming the shipped recipes
    return str(resources.files("finetune") / "recipes" / f"{name_or_path}.yaml")


def pretrain_model(config: dict[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    """Model name and constructor args recorded in a pre-training run's config, if any."""
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        return None, {}
    return config["model"], dict(config.get("model_args") or {})


def finetune_config(task: Any, opts: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Resolve recipe + options + --init run into the engine config; return (cfg, recipe name)."""
    recipe = opts.get("recipe") or DEFAULT_RECIPE
    engine_opts = {
        **opts,
        "recipe": recipe_path(recipe),
        # the engine's data keys record where the data came from (free to change on resume)
        "data": str(opts["data_root"]),
        "val_data": opts.get("test_root"),
    }
    # the engine's data keys are set from --data-root / --test-root
    cfg = build_config(task, engine_opts, (*ENGINE_OVERRIDES, "data", "val_data"))
    cfg.update({k: opts[k] for k in _TASK_OPTIONS if opts.get(k) is not None})
    if opts.get("linear_probe"):
        cfg["linear_probe"] = True
    if cfg.get("init_weights"):
        # pre-training's warm start loads every matching tensor, the classifier head included
        raise FractalDBError(
            f"--set init_weights={cfg['init_weights']} would keep that checkpoint's classifier "
            "head; fix: --init RUN_OR_WEIGHTS (the trunk is loaded, the head starts fresh)"
        )

    init = resolve_init(cfg["init"])
    pre_name, pre_args = pretrain_model(init["config"])
    cfg["model"] = cfg["model"] or pre_name
    if not cfg["model"]:
        if init["weights"] is not None:
            # a corrupt or foreign file is the real problem: say that, not "no --model"
            _read_weights(Path(init["weights"]))
        raise FractalDBError(
            f"no --model given and none recorded by --init {cfg['init']}; fix: --model NAME"
        )
    # a distilled DeiT takes a plain ViT's weights: same architecture, plus a distillation token
    if cfg["model"] == pre_name or (pre_name and "_distilled_" in cfg["model"]):
        # the weights need the pre-trained architecture; --model-arg still has the last word
        cli_args = parse_key_values(opts.get("model_arg") or (), "--model-arg")
        arch = {k: v for k, v in pre_args.items() if k not in _NOT_ARCH}
        cfg["model_args"] = {**cfg["model_args"], **arch, **cli_args}
    explicit = set(parse_key_values(opts.get("sets") or (), "--set"))
    pre = init["config"] or {}
    if pre.get("img_size") and opts.get("img_size") is None and "img_size" not in explicit:
        # the pre-trained position embeddings were learned at this size
        cfg["img_size"] = int(pre["img_size"])
    if pre.get("mean") is not None and pre.get("std") is not None:
        # inputs must be normalised as in pre-training (a gray run's one value for every channel)
        channels = int(cfg["model_args"].get("in_chans", 3))
        for key in ("mean", "std"):
            if key not in explicit:
                values = list(pre[key])
                cfg[key] = values * channels if len(values) == 1 else values
    check_distillation(cfg["distillation"], cfg["teacher"])
    cfg["teacher_info"] = describe_teacher(cfg["teacher"]) if cfg["teacher"] else None
    if cfg["linear_probe"]:
        cfg["drop_path"] = 0.0  # stochastic depth only adds noise to frozen features
    return cfg, Path(recipe).stem
