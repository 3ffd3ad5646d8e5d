"""Build the fine-tuning model with timm and freeze it for linear probing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fractaldb.errors import FractalDBError


def parse_model_args(items: Iterable[str]) -> dict[str, Any]:
    """Parse repeated KEY=VALUE options; values are YAML scalars (8 -> int, true -> bool)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise FractalDBError(
                f"--model-arg {item!r} is not KEY=VALUE; fix: e.g. --model-arg depth=6"
            )
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise FractalDBError(f"--model-arg {item!r}: bad value ({err}); fix: quote it") from err
    return out


def create_model(
    name: str,
    num_classes: int,
    *,
    img_size: int | None = None,
    drop_path: float = 0.0,
    model_args: Mapping[str, Any] | None = None,
) -> Any:
    """Create timm model `name` with a fresh `num_classes` head at `img_size` (random weights)."""
    import timm

    if not timm.is_model(name):
        raise FractalDBError(f"unknown timm model {name!r}; fix: see `timm.list_models('*vit*')`")
    kwargs = dict(model_args or {})
    if img_size is not None:
        kwargs.setdefault("img_size", img_size)
    try:
        return timm.create_model(
            name, pretrained=False, num_classes=num_classes, drop_path_rate=drop_path, **kwargs
        )
    except TypeError as err:  # an unknown --model-arg reaches the model constructor
        raise FractalDBError(
            f"model {name} rejects its arguments ({err}); fix: check --model-arg"
        ) from err


def freeze_for_linear_probe(model: Any) -> list[str]:
    """Freeze everything except the classifier head; return the names left trainable."""
    head = model.get_classifier()
    head_ids = {id(p) for p in head.parameters()}
    if not head_ids:
        raise FractalDBError("model has no classifier head to probe; fix: use a timm classifier")
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(id(param) in head_ids)
        if param.requires_grad:
            trainable.append(name)
    return trainable
