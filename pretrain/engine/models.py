"""timm model creation with friendly errors, and safetensors export that timm can load back."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from torch import nn

from fractaldb.core.atomic import replace_atomically, write_text_atomically
from fractaldb.core.errors import FractalDBError
from pretrain.engine.hf_models import (
    HFClassifier,
    check_hf_name,
    create_hf_model,
    hf_folder_for,
    is_hf_model,
    save_hf_folder,
)


def check_model_name(name: str | None) -> str:
    """Return `name` if timm knows it, else raise an error suggesting close names."""
    if not name:
        raise FractalDBError("no model given; fix: --model deit_tiny_patch16_224 (or a --recipe)")
    if is_hf_model(name):
        return check_hf_name(name)
    if timm.is_model(name):
        return name
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise FractalDBError(
        f"unknown timm model {name!r}; {hint}fix: pick a name from timm.list_models()"
    )


def create_model(name: str, img_size: int | None = None, **kwargs: Any) -> nn.Module:
    """`timm.create_model(name, img_size=..., **kwargs)` with one-line errors for bad arguments.

    img_size is dropped for architectures that do not take it (CNNs are size-agnostic).
    """
    check_model_name(name)
    if is_hf_model(name):
        return create_hf_model(name, **kwargs)  # size-agnostic (convolutional embeddings)
    args = dict(kwargs)
    if img_size is not None:
        args["img_size"] = img_size
    try:
        try:
            model = timm.create_model(name, **args)
        except TypeError as e:
            if img_size is None or "img_size" not in str(e):
                raise
            args.pop("img_size")
            model = timm.create_model(name, **args)
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        shown = {k: v for k, v in args.items() if k not in ("num_classes", "drop_path_rate")}
        raise FractalDBError(
            f"timm could not build {name} with {shown}: {e}; fix: check the --model-arg values"
        ) from e
    check_patch_grid(model, name, img_size)
    # Remember the architecture arguments so the export can record how to rebuild the model.
    model.fractaldb_model_args = {
        k: v for k, v in args.items() if k not in ("num_classes", "drop_path_rate")
    }
    return model


def check_patch_grid(model: nn.Module, name: str, img_size: int | None) -> None:
    """Refuse an image size that the patch size does not divide (timm would crop silently)."""
    embed = getattr(model, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    if img_size is None or patch is None or getattr(embed, "dynamic_img_pad", False):
        return
    p = int(patch[0]) if isinstance(patch, (tuple, list)) else int(patch)
    if img_size % p:
        divisors = [d for d in range(2, img_size + 1) if img_size % d == 0]
        near = min(divisors, key=lambda d: (abs(d - p), d)) if divisors else 1
        raise FractalDBError(
            f"{name}: patch size {p} does not divide img_size {img_size} (the last "
            f"{img_size % p} pixel rows and columns would be dropped); fix: --model-arg "
            f"patch_size={near} or --img-size {img_size - img_size % p}"
        )


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def export_safetensors(
    model: nn.Module, path: Path, name: str, model_args: dict[str, Any], num_classes: int | None
) -> Path:
    """Write weights as safetensors plus `<stem>.json` recording how to rebuild the model.

    The file loads with
    `timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path,
    num_classes=num_classes), **model_args)`; num_classes must be in the overlay because timm
    drops the classifier when it differs from the architecture's default pretrained_cfg.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    meta_st = {"architecture": name, "format": "pt"}
    replace_atomically(path, lambda tmp: save_file(state, str(tmp), metadata=meta_st))
    meta = {
        "architecture": name,
        "num_classes": num_classes,
        "model_args": model_args,
        "load_with": (
            f"timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict("
            f"file={path.name!r}, num_classes={num_classes!r}), **model_args)"
        ),
    }
    inner = unwrap(model)
    if isinstance(inner, HFClassifier):
        folder = save_hf_folder(inner, hf_folder_for(path))
        meta["load_with"] = (
            f"transformers.AutoModelForImageClassification.from_pretrained({folder.name!r}); "
            f"or fractaldb's load_exported({path.name!r})"
        )
    text = json.dumps(meta, indent=2) + "\n"
    write_text_atomically(path.with_suffix(".json"), text)
    return path


def load_exported(path: str | Path, **overrides: Any) -> nn.Module:
    """Rebuild a model written by export_safetensors through timm's own pretrained loading."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FractalDBError(f"{path} or {meta_path} is missing; fix: point at a finished run")
    meta = json.loads(meta_path.read_text())
    args = {**meta["model_args"], **overrides}
    overlay: dict[str, Any] = {"file": str(path)}
    if meta.get("num_classes") is not None and "num_classes" not in overrides:
        overlay["num_classes"] = meta["num_classes"]
    if is_hf_model(meta["architecture"]):
        from safetensors.torch import load_file

        num_classes = args.pop("num_classes", meta.get("num_classes"))
        model = create_hf_model(meta["architecture"], num_classes=num_classes, **args)
        model.load_state_dict(load_file(str(path)))
        return model
    with torch.device("cpu"):
        return timm.create_model(
            meta["architecture"], pretrained=True, pretrained_cfg_overlay=overlay, **args
        )


def load_matching_weights(model: nn.Module, source: str | Path) -> tuple[int, int]:
    """Copy every tensor of a safetensors file (or RUN/model.safetensors) whose name and shape
    match `model`'s; return (loaded, skipped). A file that matches nothing is refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FractalDBError(
            f"init_weights {source}: no such weights file; fix: a run folder holding "
            "model.safetensors, or a .safetensors file"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise FractalDBError(
            f"init_weights {path} is not a readable safetensors file ({err}); fix: point at a "
            "run's model.safetensors"
        ) from None
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not keep:
        raise FractalDBError(
            f"init_weights {path}: no tensor matches {type(model).__name__}'s names and shapes; "
            "fix: weights of the same architecture (--model and --model-arg)"
        )
    model.load_state_dict(keep, strict=False)
    return len(keep), len(state) - len(keep)
